"""promptsource import: safe YAML, conversion rules, skip reasons, the real prompt files, and
promptsource's jinja helpers inside promptkit's sandbox."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from promptkit import CatalogError, PromptModel, Template, TemplateError, Verbalizer, load_task, template_limits
from promptkit import promptsource as ps
from promptkit.promptsource_filters import HIGHLIGHT_CLOSE, HIGHLIGHT_OPEN

needs_promptsource = pytest.mark.skipif(
    importlib.util.find_spec("promptsource") is None, reason=f"promptsource is not installed ({ps.INSTALL})"
)


def write_dataset(root, name: str, body: str):
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "templates.yaml").write_text(textwrap.dedent(body), encoding="utf-8")
    return folder / "templates.yaml"


SYNTHETIC = """\
dataset: glue
subset: sst2
templates:
  id-fixed: !Template
    answer_choices: bad ||| good
    id: id-fixed
    jinja: 'Review: {{sentence}} Pick {{ answer_choices | join(" ||| ") }}. ||| {{ answer_choices[label] }}'
    metadata: !TemplateMetadata
      choices_in_prompt: true
      metrics: [Accuracy]
      original_task: true
    name: fixed
    reference: ''
  id-newline: !Template
    answer_choices: No ||| Yes
    id: id-newline
    jinja: "Is it good?\\n{{sentence}}\\n|||\\n{% if label %} {{ answer_choices[1] }} {% else %}\\
      \\ {{ answer_choices[0] }} {% endif %}"
    name: newline
    reference: ''
  id-inverted: !Template
    answer_choices: Positive ||| Negative
    id: id-inverted
    jinja: "{{sentence}} Positive or negative? ||| {% if label == 1 %}{{ answer_choices[0] }}{% else %}\\
      {{ answer_choices[1] }}{% endif %}"
    name: inverted
    reference: ''
  id-per-example: !Template
    answer_choices: '{{ sentence }} ||| other'
    id: id-per-example
    jinja: '{{sentence}} ||| {{ answer_choices[label] }}'
    name: per example
    reference: ''
  id-generation: !Template
    id: id-generation
    jinja: 'Write a review: ||| {{sentence}}'
    name: generation
    reference: ''
  id-leak: !Template
    answer_choices: bad ||| good
    id: id-leak
    jinja: '{{sentence}} (label {{label}}) ||| {{ answer_choices[label] }}'
    name: leak
    reference: ''
  id-other-target: !Template
    answer_choices: bad ||| good
    id: id-other-target
    jinja: '{{sentence}} ||| {{ sentence | upper }}'
    name: other target
    reference: ''
  id-idx: !Template
    answer_choices: bad ||| good
    id: id-idx
    jinja: 'Row {{idx}}: {{sentence}} ||| {{ answer_choices[label] }}'
    name: reads idx
    reference: ''
  id-shared: !Template
    answer_choices: no ||| no
    id: id-shared
    jinja: '{{sentence}} ||| {{ answer_choices[label] }}'
    name: shared
    reference: ''
  id-block: !Template
    answer_choices: bad ||| good
    id: id-block
    jinja: '{% if sentence %}{{sentence}} ||| {{ answer_choices[label] }}{% endif %}'
    name: block
    reference: ''
"""


@pytest.fixture
def synthetic(tmp_path):
    write_dataset(tmp_path, "glue/sst2", SYNTHETIC)
    return ps.load("glue/sst2", root=tmp_path)


def test_fixed_choices_convert_with_mask_at_the_end_and_task_fields(synthetic):
    fixed = synthetic["fixed"]
    assert fixed.verbalizer.labels == (0, 1) and fixed.verbalizer.words == (("bad",), ("good",))
    prompt = fixed.template.render({"text": "a gem."})
    assert prompt.to_text() == "Review: a gem. Pick bad ||| good. [MASK]"  # '|||' inside a tag is not the separator
    assert prompt.segments[-1].kind == "mask" and fixed.template.variables == {"text"}
    assert synthetic["id-fixed"] is fixed  # by id too
    assert (fixed.original_task, fixed.choices_in_prompt, fixed.label_field) == (True, True, "label")


def test_target_is_rendered_per_label_newline_kept_and_inverted_choices(synthetic):
    newline = synthetic["newline"]
    assert newline.template.render({"text": "fine"}).to_text() == "Is it good?\nfine\n[MASK]"
    assert dict(zip(newline.verbalizer.labels, newline.verbalizer.words)) == {0: ("No",), 1: ("Yes",)}
    inverted = synthetic["inverted"]  # label 1 -> answer_choices[0]
    assert dict(zip(inverted.verbalizer.labels, inverted.verbalizer.words)) == {0: ("Negative",), 1: ("Positive",)}
    assert inverted.template.render({"text": "x"}).to_text() == "x Positive or negative? [MASK]"


def test_unconvertible_templates_are_counted_by_reason(synthetic):
    assert synthetic.names() == ["fixed", "newline", "inverted"]
    reasons = {s.name: s.reason for s in synthetic.skipped}
    assert reasons == {
        "per example": "per-example answer choices",
        "generation": "no answer choices (generation)",
        "leak": "prompt reads the label",
        "other target": "target is not an answer choice",
        "reads idx": "reads a field the task lacks",
        "shared": "two labels share an answer choice",
        "block": "'|||' inside a jinja block",
    }
    assert sum(synthetic.reasons().values()) == 7
    with pytest.raises(CatalogError, match=r"did not convert \(prompt reads the label"):
        synthetic["leak"]
    with pytest.raises(CatalogError, match="Did you mean 'fixed'"):
        synthetic["fixd"]


def test_yaml_is_read_with_a_safe_loader_only(tmp_path):
    marker = tmp_path / "pwned"
    write_dataset(
        tmp_path,
        "evil",
        f"""\
        templates:
          x: !!python/object/apply:os.system ["touch {marker}"]
        """,
    )
    with pytest.raises(CatalogError, match="not valid YAML or uses a tag other than"):
        ps.load("evil", root=tmp_path)
    assert not marker.exists()
    write_dataset(tmp_path, "scalar", "templates:\n  x: !Template just text\n")
    with pytest.raises(CatalogError, match="must tag a mapping"):
        ps.load("scalar", root=tmp_path)


def test_dataset_without_a_task_keeps_its_fields_and_label_column(tmp_path):
    write_dataset(
        tmp_path,
        "guardian",
        """\
        templates:
          a: !Template
            answer_choices: Ann ||| Bob ||| Cy
            id: a
            jinja: 'Who wrote: {{article}} ||| {{ answer_choices[author] }}'
            name: who
        """,
    )
    collection = ps.load("guardian", root=tmp_path)
    who = collection["who"]
    assert collection.task is None and who.label_field == "author"
    assert who.verbalizer.labels == (0, 1, 2) and who.template.variables == {"article"}


def test_unknown_dataset_suggests_the_closest_and_bad_task_or_seed(tmp_path, monkeypatch):
    write_dataset(tmp_path, "glue/sst2", SYNTHETIC)
    with pytest.raises(CatalogError, match=r"unknown promptsource dataset 'glue/sst': .*Did you mean 'glue/sst2'"):
        ps.load("glue/sst", root=tmp_path)
    with pytest.raises(CatalogError, match="unknown promptsource dataset"):
        ps.load("../glue/sst2", root=tmp_path / "glue")
    with pytest.raises(CatalogError, match="no field mapping from promptsource's glue/sst2 to task 'rte'"):
        ps.load("glue/sst2", task="rte", root=tmp_path)
    with pytest.raises(CatalogError, match="seed must be an int"):
        ps.load("glue/sst2", seed="1", root=tmp_path)
    monkeypatch.setenv(ps.ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(CatalogError, match=r"PROMPTKIT_PROMPTSOURCE=.* is not a folder"):
        ps.load("glue/sst2")
    monkeypatch.setenv(ps.ENV_VAR, str(tmp_path))
    assert ps.load("sst2").names() == ["fixed", "newline", "inverted"]  # promptkit task names work too


def test_missing_package_names_the_install_command(monkeypatch):
    monkeypatch.delenv(ps.ENV_VAR, raising=False)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "site-packages" not in p])
    importlib.invalidate_caches()
    if importlib.util.find_spec("promptsource") is not None:
        pytest.skip("promptsource is importable from outside site-packages here")
    with pytest.raises(CatalogError, match="--no-deps --ignore-requires-python promptsource==0.2.3"):
        ps.load("glue/sst2")


# ----------------------------------------------------------------- the real files
REAL = {  # promptsource 0.2.3: templates per dataset; every one converts
    "glue/sst2": 5,
    "super_glue/rte": 10,
    "super_glue/cb": 15,
    "super_glue/boolq": 10,
    "ag_news": 7,
}


@needs_promptsource
@pytest.mark.parametrize("dataset", sorted(REAL))
def test_real_templates_convert_and_render_on_real_rows(dataset):
    collection = ps.load(dataset)
    assert len(collection) == REAL[dataset] and collection.skipped == []
    rows = load_task(collection.task, limit=5)
    assert collection.check(rows) == dict.fromkeys(collection.names())
    task_labels = set(ps.DATASETS[dataset].labels)
    for converted in collection:
        prompt = converted.template.render(rows[0])
        assert prompt.segments[-1].kind == "mask"
        assert set(converted.verbalizer.labels) == task_labels
        assert {w for words in converted.verbalizer.words for w in words} <= set(converted.answer_choices)
        assert converted.template.variables <= set(rows[0])


@needs_promptsource
def test_real_sst2_field_mapping_and_example():
    review = ps.load("glue/sst2")["review"]
    text = review.template.render({"text": "a gem."}).to_text()
    assert (
        text == 'I\'m reading a review that says "a gem.".\n\nDo you think the review is positive or negative? [MASK]'
    )
    assert dict(zip(review.verbalizer.labels, review.verbalizer.words)) == {0: ("negative",), 1: ("positive",)}
    ag = ps.load("ag_news")["classify_question_first"]
    rendered = ag.template.render({"title": "Title.", "description": "Body."}).to_text()
    assert rendered == "What label best describes this news article?\nTitle. Body.\n[MASK]"
    assert ag.verbalizer.labels == (1, 2, 3, 4)


@needs_promptsource
def test_every_real_file_loads_and_skips_only_with_a_reason():
    datasets = ps.list_datasets()
    assert len(datasets) > 250 and "glue/sst2" in datasets
    converted = skipped = 0
    for dataset in ("imdb", "super_glue/copa", "squad", "anli", "glue/mrpc", "emotion", "trec"):
        collection = ps.load(dataset)
        converted += len(collection)
        skipped += len(collection.skipped)
        assert all(s.reason and s.detail for s in collection.skipped)
    assert converted > 10 and skipped > 10


# ----------------------------------------------------------------- filters in the sandbox
def test_choice_is_seeded_per_example_and_stable():
    template = Template('{{ ["Is it", "Was it", "Could it be"] | choice }} {{ text }}? {{ mask }}')
    texts = [f"review {i}" for i in range(30)]
    first = [template.render({"text": t}).to_text() for t in texts]
    assert first == [template.render({"text": t}).to_text() for t in texts]  # same example, same prompt
    assert len({line.split(" review")[0] for line in first}) == 3  # the picks vary across examples
    seeded = Template('{{ ["Is it", "Was it", "Could it be"] | choice(seed=7) }} {{ text }}? {{ mask }}')
    assert [seeded.render({"text": t}).to_text() for t in texts] != first
    with pytest.raises(TemplateError, match="empty sequence"):
        Template("{{ [] | choice }} {{ mask }}").render({})
    with pytest.raises(TemplateError, match="int seed"):
        Template("{{ ['a'] | choice(seed='x') }} {{ mask }}").render({})


def test_seed_is_written_into_converted_templates(tmp_path):
    write_dataset(
        tmp_path,
        "glue/sst2",
        """\
        templates:
          a: !Template
            answer_choices: bad ||| good
            id: a
            jinja: '{{ ["Review", "Text"] | choice }}: {{sentence}} ||| {{ answer_choices[label] }}'
            name: chosen
        """,
    )
    assert "| choice }}" in ps.load("glue/sst2", root=tmp_path)["chosen"].template.text
    assert "| choice(seed=5) }}" in ps.load("glue/sst2", seed=5, root=tmp_path)["chosen"].template.text


def test_most_frequent_highlight_and_zip():
    template = Template(
        "{{ xs | most_frequent | join(',') }} {{ text | highlight }} "
        "{% for a, b in zip(xs, ys) %}{{ a }}{{ b }} {% endfor %}{{ mask }}"
    )
    text = template.render({"xs": ["p", "q", "q", "p", "r"], "ys": [1, 2, 3], "text": "t"}).to_text()
    assert text == f"p,q {HIGHLIGHT_OPEN}t{HIGHLIGHT_CLOSE} p1 q2 q3 [MASK]"
    assert Template("{{ xs | most_frequent }}{{ mask }}").render({"xs": []}).to_text() == "None[MASK]"


def test_zip_is_bounded(monkeypatch):
    monkeypatch.setattr(template_limits, "MAX_LENGTH", 100)
    template = Template("{% for a, b in zip(xs, xs) %}{{ a }}{% endfor %}{{ mask }}")
    with pytest.raises(TemplateError, match="MAX_LENGTH"):
        template.render({"xs": ["x"] * 200})


def test_converted_template_scores_saves_and_loads(tmp_path, tiny_causal, bpe_tokenizer):
    write_dataset(
        tmp_path, "glue/sst2", SYNTHETIC.replace("Review: {{sentence}}", '{{ ["A", "B"] | choice }}: {{sentence}}')
    )
    fixed = ps.load("glue/sst2", root=tmp_path / "")["fixed"]
    model = PromptModel(tiny_causal, bpe_tokenizer, fixed.template, fixed.verbalizer)
    rows = [{"text": "a gem."}, {"text": "a mess."}]
    before = model.predict_proba(rows)
    model.save_pretrained(str(tmp_path / "saved"))
    loaded = PromptModel.from_pretrained(str(tmp_path / "saved"))
    assert loaded.template.text == fixed.template.text and loaded.verbalizer == fixed.verbalizer
    assert torch.allclose(torch.tensor(loaded.predict_proba(rows)), torch.tensor(before), atol=1e-6)


def test_verbalizer_of_converted_template_is_plain_data(synthetic):
    fixed = synthetic["fixed"]
    assert Verbalizer.from_dict(fixed.verbalizer.to_dict()) == fixed.verbalizer
    assert Template.from_dict(fixed.template.to_dict()) == fixed.template


def test_chat_templates_for_instruction_tuned_backbones(synthetic, tmp_path):
    chat = ps.load("glue/sst2", chat=True, root=tmp_path)["fixed"]
    assert chat.template.chat and not synthetic["fixed"].template.chat
    prompt = chat.template.render({"text": "a gem."})
    assert prompt.chat and prompt.segments[-1].kind == "mask"
    with pytest.raises(CatalogError, match="chat must be True or False"):
        ps.load("glue/sst2", chat="yes", root=tmp_path)


def test_choices_with_quotes_and_unicode_survive_into_the_template(tmp_path):
    write_dataset(
        tmp_path,
        "glue/sst2",
        """\
        templates:
          a: !Template
            answer_choices: "it's bad ||| \\"café\\" \\\\ good"
            id: a
            jinja: '{{sentence}} {{ answer_choices | join(" or ") }}? ||| {{ answer_choices[label] }}'
            name: quoted
        """,
    )
    quoted = ps.load("glue/sst2", root=tmp_path)["quoted"]
    assert quoted.answer_choices == ("it's bad", '"café" \\ good')
    rendered = quoted.template.render({"text": "x ||| y"}).to_text()  # '|||' in data is plain text
    assert rendered == 'x ||| y it\'s bad or "café" \\ good? [MASK]'
    assert quoted.verbalizer.words == (("it's bad",), ('"café" \\ good',))


@pytest.mark.parametrize(
    "text",
    [
        "{{ zip.__globals__ }}",
        "{{ zip.__code__ }}",
        "{{ (xs | most_frequent).__class__.__mro__ }}",
        "{{ ('a' | highlight).__class__.__subclasses__() }}",
        "{{ xs | choice(seed=xs.__class__) }}",
    ],
)
def test_promptsource_helpers_give_no_way_out_of_the_sandbox(text):
    with pytest.raises(TemplateError):
        Template(text + " {{ mask }}").render({"xs": ["a", "b"]})


@needs_promptsource
def test_sst2_benchmark_runs_end_to_end_on_a_tiny_model(tiny_causal, bpe_tokenizer, tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from promptsource_sst2 import main

    folder = tmp_path / "tiny"
    tiny_causal.save_pretrained(folder)
    bpe_tokenizer.save_pretrained(folder)
    out = tmp_path / "out"
    payload = main(["--backbone", str(folder), "--limit", "4", "--templates", "review", "said", "--out", str(out)])
    assert payload["complete"] and payload["n_examples"] == 4
    assert [(r["template"], r["calibration"]) for r in payload["results"]] == [
        (t, c)
        for t in ("sst2/review_sentiment", "glue/sst2/review", "glue/sst2/said")
        for c in ("none", "content_free", "batch")
    ]
    assert json.loads((out / "promptsource_sst2_tiny_limit4.json").read_text())["results"] == payload["results"]
    assert "| glue/sst2/said | promptsource | sad / happy |" in (out / "promptsource_sst2_tiny_limit4.md").read_text()
    assert (out / "promptsource_sst2_tiny_limit4.png").stat().st_size > 0
