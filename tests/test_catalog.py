"""Tests for the shipped template / verbalizer catalog (templates/*.yaml, verbalizers/*.yaml)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from promptkit.catalog import (
    catalog_dir,
    list_templates,
    list_verbalizers,
    load_template,
    load_verbalizer,
    paired_verbalizer,
    read_templates,
    read_verbalizers,
    task_schema,
)
from promptkit.errors import CatalogError
from promptkit.tasks import TASKS
from promptkit.template import Prompt

TEMPLATES = list_templates()
VERBALIZERS = list_verbalizers()
# Catalog tasks whose label words are Hanzi: two-character words are several tokens for
# byte-level BPE (SmolLM2 spells most Hanzi as 2-3 byte tokens), scored as multi-token words.
CHINESE = {"tnews", "ocnli", "zh_sentiment"}


def _task(name: str) -> str:
    return name.partition("/")[0]


def _render_example(name: str) -> Prompt:
    template = load_template(name)
    assert template.example is not None, f"{name}: the file has no example"
    return template.render(template.example)


def _mask_at_end(prompt: Prompt) -> bool:
    """Nothing but whitespace follows the mask."""
    return not "".join(s.text for s in prompt.after_mask).strip()


def _assert_same_labels(actual: tuple, expected: tuple) -> None:
    assert tuple(actual) == tuple(expected)
    assert [type(x) for x in actual] == [type(x) for x in expected]


# ------------------------------------------------------------------ catalog content
def test_catalog_covers_every_task():
    template_tasks = sorted(p.stem for p in catalog_dir("templates").glob("*.yaml"))
    verbalizer_tasks = sorted(p.stem for p in catalog_dir("verbalizers").glob("*.yaml"))
    assert set(TASKS) <= set(template_tasks)
    assert verbalizer_tasks == template_tasks
    task_free = set(template_tasks) - set(TASKS)
    assert task_free == {"zh_sentiment"}  # prompts for no registered task declare their fields and labels
    assert task_schema("zh_sentiment") == (("text",), (0, 1))


def test_task_free_file_without_fields_or_labels_is_refused(tmp_path, monkeypatch):
    import promptkit.catalog as catalog

    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "no_schema.yaml").write_text("task: no_schema\ntemplates: {}\n", encoding="utf-8")
    monkeypatch.setattr(catalog, "catalog_dir", lambda kind: tmp_path / kind)
    with pytest.raises(CatalogError, match="must declare the fields and labels.*'labels: \\[0, 1\\]'"):
        task_schema("no_schema")


@pytest.mark.parametrize("kind", ["templates", "verbalizers"])
def test_task_key_matches_file_name(kind):
    for path in catalog_dir(kind).glob("*.yaml"):
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        assert data["task"] == path.stem, path


class _NoDuplicatesLoader(yaml.SafeLoader):
    """yaml.safe_load silently keeps the last of two equal keys; this loader refuses them."""

    def construct_mapping(self, node, deep=False):
        keys = [self.construct_object(key, deep=deep) for key, _ in node.value]
        duplicates = {k for k in keys if keys.count(k) > 1}
        if duplicates:
            raise AssertionError(f"duplicate YAML keys {duplicates} at {node.start_mark}")
        return super().construct_mapping(node, deep=deep)


@pytest.mark.parametrize("kind", ["templates", "verbalizers"])
def test_no_duplicate_yaml_keys(kind):
    for path in catalog_dir(kind).glob("*.yaml"):
        yaml.load(path.read_text(encoding="utf-8"), Loader=_NoDuplicatesLoader)


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_renders_its_example(name):
    template = load_template(name)
    assert template.name == name
    assert template.description, f"{name} has no description"
    prompt = _render_example(name)
    assert sum(s.kind == "mask" for s in prompt.segments) == 1
    assert template.variables <= set(template.example), (
        f"{name} reads {sorted(template.variables)}, example has {sorted(template.example)}"
    )
    assert set(template.variables) <= set(task_schema(_task(name))[0])
    text = prompt.to_text()
    assert text == text.strip(), f"{name} renders leading or trailing whitespace: {text!r}"
    for segment in prompt.segments:
        if segment.kind == "text":
            for bad in ("  ", " \n", "\n "):
                assert bad not in segment.text, f"{name}: stray whitespace {bad!r} in {segment.text!r}"
    if template.chat:
        assert _mask_at_end(prompt), f"chat template {name} has text after the mask"


@pytest.mark.parametrize("name", TEMPLATES)
def test_end_mask_templates_end_exactly_at_the_mask(name):
    """A template whose mask ends the prompt has no trailing whitespace or punctuation at all."""
    prompt = _render_example(name)
    if _mask_at_end(prompt):
        assert prompt.segments[-1].kind == "mask", f"{name} has whitespace after the mask"


@pytest.mark.parametrize("name", TEMPLATES)
def test_example_label_is_a_task_label(name):
    template = load_template(name)
    labels = task_schema(_task(name))[1]
    label = template.example["label"]
    assert any(label == x and type(label) is type(x) for x in labels), (label, labels)


@pytest.mark.parametrize("name", TEMPLATES)
def test_paired_verbalizer_matches_task_labels(name):
    verbalizer_name = paired_verbalizer(name)
    assert _task(verbalizer_name) == _task(name)
    verbalizer = load_verbalizer(verbalizer_name)
    _assert_same_labels(verbalizer.labels, task_schema(_task(name))[1])


@pytest.mark.parametrize("name", TEMPLATES)
def test_template_entries_name_their_verbalizer(name):
    task, _, entry = name.partition("/")
    raw = yaml.safe_load((catalog_dir("templates") / f"{task}.yaml").read_text(encoding="utf-8"))
    assert raw["templates"][entry].get("verbalizer"), f"{name} has no 'verbalizer:' key"


@pytest.mark.parametrize("name", VERBALIZERS)
def test_verbalizer_covers_task_labels(name):
    verbalizer = load_verbalizer(name)
    assert verbalizer.name == name
    _assert_same_labels(verbalizer.labels, task_schema(_task(name))[1])
    words = [w for ws in verbalizer.words for w in ws]
    assert len(words) == len(set(words))


@pytest.mark.parametrize("task", sorted(TASKS))
def test_task_has_enough_templates(task):
    names = list_templates(task)
    prompts = {n: _render_example(n) for n in names}
    assert len(names) >= 4
    assert sum(_mask_at_end(p) for p in prompts.values()) >= 2, "need >= 2 templates with the mask at the end"
    assert sum(load_template(n).chat for n in names) >= 1, "need a chat template"
    assert len(list_verbalizers(task)) >= 2


@pytest.mark.parametrize("task", sorted(TASKS))
def test_example_is_a_real_row(task):
    """The file's example is copied from the task's default eval split."""
    from promptkit.errors import DataError
    from promptkit.tasks import load_task

    try:
        rows = load_task(task)
    except DataError as err:
        pytest.skip(f"benchmark data not available: {err}")
    example = load_template(list_templates(task)[0]).example
    keys = [*task_schema(task)[0], "label"]
    wanted = {k: example[k] for k in keys}
    assert any({k: row[k] for k in keys} == wanted for row in rows), f"{task} example not found in the data"


def test_all_templates_of_a_task_share_the_example():
    for task in {_task(name) for name in TEMPLATES}:
        examples = {repr(load_template(n).example) for n in list_templates(task)}
        assert len(examples) == 1


# ------------------------------------------------------------------ real tokenizer
@pytest.fixture(scope="module")
def smollm2_tokenizer(bpe_tokenizer):
    return bpe_tokenizer


@pytest.mark.parametrize("name", VERBALIZERS)
def test_label_words_tokenize(name, smollm2_tokenizer):
    from promptkit.label_words import LabelWordTable

    table = LabelWordTable(load_verbalizer(name), smollm2_tokenizer)
    after_space, after_newline = table.ids(True), table.ids(False)
    assert len(after_space) == len(after_newline) == len(table.words)
    assert all(after_space) and all(after_newline)


@pytest.mark.parametrize("name", TEMPLATES)
def test_paired_label_words_are_single_tokens_where_read(name, smollm2_tokenizer):
    """Paired label words are one token in the spelling the template reads them in; Chinese
    label words (several byte tokens each) are the word's own tokens, with no space token."""
    from promptkit.label_words import LabelWordTable

    template = load_template(name)
    prompt = _render_example(name)
    before = "".join(s.text for s in prompt.before_mask)
    space = before.endswith(" ") and not template.chat  # chat: the word starts the assistant turn
    table = LabelWordTable(load_verbalizer(paired_verbalizer(name)), smollm2_tokenizer)
    if _task(name) in CHINESE:
        assert not space, f"{name}: a Chinese template has a space before the mask"
        for word, ids in zip(table.words, table.ids(space)):
            assert smollm2_tokenizer.decode(list(ids)) == word
            assert list(ids) == smollm2_tokenizer(word, add_special_tokens=False)["input_ids"]
        return
    multi = [w for w, ids in zip(table.words, table.ids(space)) if len(ids) != 1]
    assert not multi, f"{name}: label words {multi} are several tokens (space={space})"


# ------------------------------------------------------------------ bad input
def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_unquoted_yaml_words_are_rejected(tmp_path):
    path = _write(tmp_path, "bad_words.yaml", "task: x\nverbalizers:\n  v:\n    label_words: {0: [Yes], 1: [No]}\n")
    with pytest.raises(CatalogError, match="quote"):
        read_verbalizers(path)


def test_quoted_yaml_words_are_accepted(tmp_path):
    path = _write(
        tmp_path, "ok_words.yaml", "task: x\nverbalizers:\n  v:\n    label_words: {0: ['Yes'], 1: [\"No\"]}\n"
    )
    assert read_verbalizers(path)["v"].words == (("Yes",), ("No",))


def test_verbalizer_entry_without_label_words(tmp_path):
    path = _write(tmp_path, "no_words.yaml", "task: x\nverbalizers:\n  v:\n    words: {0: ['a']}\n")
    with pytest.raises(CatalogError, match="label_words"):
        read_verbalizers(path)


def test_unknown_template_key(tmp_path):
    path = _write(
        tmp_path, "bad_key.yaml", "task: x\ntemplates:\n  t:\n    text: '{{ text }} {{ mask }}'\n    verbaliser: v\n"
    )
    with pytest.raises(CatalogError, match="verbaliser"):
        read_templates(path)


def test_template_entry_without_text(tmp_path):
    path = _write(tmp_path, "no_text.yaml", "task: x\ntemplates:\n  t:\n    description: nothing\n")
    with pytest.raises(CatalogError, match="'text'"):
        read_templates(path)


def test_template_without_mask(tmp_path):
    path = _write(tmp_path, "no_mask.yaml", "task: x\ntemplates:\n  t:\n    text: '{{ text }} It was great.'\n")
    with pytest.raises(CatalogError, match="mask"):
        read_templates(path)


def test_chat_template_with_text_after_mask_fails_to_render(tmp_path):
    path = _write(
        tmp_path, "chat.yaml", "task: x\ntemplates:\n  t:\n    text: '{{ text }} {{ mask }}.'\n    chat: true\n"
    )
    template = read_templates(path)["t"]
    with pytest.raises(ValueError, match="after"):
        template.render({"text": "a"})


def test_invalid_yaml(tmp_path):
    path = _write(tmp_path, "broken.yaml", "task: x\ntemplates:\n  t: {text: 'unterminated\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        read_templates(path)


def test_yaml_that_is_not_a_mapping(tmp_path):
    path = _write(tmp_path, "list.yaml", "- a\n- b\n")
    with pytest.raises(CatalogError, match="mapping"):
        read_verbalizers(path)


def test_unknown_template_name_suggests_closest():
    with pytest.raises(CatalogError, match="Did you mean 'it_was'"):
        load_template("sst2/it_wass")


def test_unknown_task_suggests_closest():
    with pytest.raises(CatalogError, match="Did you mean 'sst2'"):
        load_template("sst22/it_was")


def test_unknown_verbalizer_name_suggests_closest():
    with pytest.raises(CatalogError, match="Did you mean 'great_terrible'"):
        load_verbalizer("sst2/great_terible")


def test_name_without_task():
    with pytest.raises(CatalogError, match="task/name"):
        load_template("it_was")


def test_file_level_mistakes_are_catalog_errors(tmp_path):
    from promptkit.catalog import read_templates

    cases = {
        "chat_str.yaml": 'task: t\ntemplates:\n  a: {text: "{{ x }} {{ mask }}", chat: "false"}\n',
        "list.yaml": "task: t\ntemplates:\n  - a\n",
        "chat_tail.yaml": (
            'task: t\nexample: {x: "1"}\ntemplates:\n  a: {text: "{{ x }} {{ mask }} tail", chat: true}\n'
        ),
        "missing_field.yaml": 'task: t\nexample: {y: "1"}\ntemplates:\n  a: {text: "{{ x }} {{ mask }}"}\n',
    }
    for name, body in cases.items():
        (tmp_path / name).write_text(body)
        with pytest.raises(CatalogError):
            read_templates(tmp_path / name)
    with pytest.raises(CatalogError, match="cannot read"):
        read_templates(tmp_path / "absent.yaml")


def test_catalog_is_found_in_the_installed_wheel_layout(tmp_path):
    """The wheel ships the YAML folders as promptkit/templates and promptkit/verbalizers."""
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    site = tmp_path / "site"
    shutil.copytree(root / "promptkit", site / "promptkit", ignore=shutil.ignore_patterns("__pycache__"))
    for kind in ("templates", "verbalizers"):
        shutil.copytree(root / kind, site / "promptkit" / kind)
    code = (
        "from promptkit.catalog import catalog_dir, list_templates; "
        "print(catalog_dir('templates'), len(list_templates()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == [str(site / "promptkit" / "templates"), str(len(list_templates()))]
