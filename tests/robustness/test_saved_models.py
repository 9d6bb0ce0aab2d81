"""Damaged, hand-edited, pickled, moved or misnamed saved models: a clear error naming the file, never a guess."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _train_worker import KEYWORD, TEMPLATE, VERBALIZER
from safetensors.torch import load_file, save_file

from promptkit import BackboneError, PromptModel, SavedModelError
from promptkit.persistence import MANIFEST

EXAMPLES = KEYWORD[:3]


@pytest.fixture(scope="module")
def base_dir(tiny_causal, bpe_tokenizer, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("base") / "tiny"
    tiny_causal.save_pretrained(path)
    bpe_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def saved(base_dir, tmp_path_factory) -> Path:
    """A complete save with its backbone; each test damages a copy."""
    model = PromptModel.from_pretrained(str(base_dir), template=TEMPLATE, verbalizer=VERBALIZER, calibrate="batch")
    model.fit_calibration(KEYWORD)
    path = tmp_path_factory.mktemp("saved") / "model"
    model.save_pretrained(str(path))
    return path


@pytest.fixture
def copy_of(saved, tmp_path) -> Path:
    import shutil

    target = tmp_path / "model"
    shutil.copytree(saved, target)
    return target


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def test_a_complete_save_loads_with_the_same_predictions(saved, base_dir):
    model = PromptModel.from_pretrained(str(base_dir), template=TEMPLATE, verbalizer=VERBALIZER, calibrate="batch")
    model.fit_calibration(KEYWORD)
    np.testing.assert_array_equal(PromptModel.from_pretrained(str(saved)).predict_proba(EXAMPLES),
                                  model.predict_proba(EXAMPLES))  # fmt: skip


# ------------------------------------------------------------------ promptkit.json
@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_text('{"format_version": 2, "backb'), r"promptkit.json is not valid JSON"),
        (lambda p: p.write_text(""), r"promptkit.json is not valid JSON"),
        (lambda p: p.write_bytes(b"\xff\xfe\x00garbage"), r"promptkit.json is not valid JSON"),
        (lambda p: p.write_text("[1, 2]"), r"promptkit.json must hold a JSON object, got list"),
        (lambda p: _edit_json(p, lambda d: d.update(format_version=99)), r"format_version 99; this promptkit reads"),
        (lambda p: _edit_json(p, lambda d: d.pop("head")), r"key 'head' must be a str, got None"),
        (lambda p: _edit_json(p, lambda d: d.update(head="MLM")), r"invalid head='MLM'.*Did you mean 'mlm'\?"),
        (lambda p: _edit_json(p, lambda d: d.update(head="bogus")), r"invalid head='bogus'"),
        (lambda p: _edit_json(p, lambda d: d.update(options=[])), r"key 'options' must be a dict"),
        (lambda p: _edit_json(p, lambda d: d["options"].update(batch_size=2.5)), r"batch_size=2.5 is invalid"),
        (lambda p: _edit_json(p, lambda d: d["options"].update(max_length="64")), r"max_length='64' is invalid"),
        (lambda p: _edit_json(p, lambda d: d["options"].update(calibrate="cf")), r"invalid calibrate='cf'"),
        (lambda p: _edit_json(p, lambda d: d["options"].update(temperature=1)), r"unknown options \['temperature'\]"),
        (lambda p: _edit_json(p, lambda d: d.update(calibration=[0.1])), r"calibration must be a list of 2 numbers"),
        (lambda p: _edit_json(p, lambda d: d.update(calibration="x")), r"calibration must be a list of 2 numbers"),
        (
            lambda p: _edit_json(p, lambda d: d.update(addons={"prefix": "addons/prefix"})),
            r"addons/prefix/config.json is missing",
        ),
    ],
)
def test_a_damaged_manifest_names_the_file_and_the_problem(damage, message, copy_of):
    damage(copy_of / MANIFEST)
    with pytest.raises((SavedModelError, BackboneError), match=message) as caught:
        PromptModel.from_pretrained(str(copy_of))
    assert isinstance(caught.value, ValueError)


# ------------------------------------------------------------------ template.yaml / verbalizer.yaml
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "template.yaml",
            "text: '{{ text }} It was {{ mask",
            r"template.yaml: .*syntax error|template.yaml is not valid",
        ),
        ("template.yaml", "text: [unclosed", r"template.yaml is not valid YAML"),
        ("template.yaml", "- just\n- a list\n", r"template.yaml: "),
        ("template.yaml", "text: 'no mask here'\n", r"template.yaml: .*must contain \{\{ mask \}\} exactly once"),
        ("template.yaml", "text: '{{ text }} {{ mask }}'\nchat: 'no'\n", r"template.yaml: .*chat"),
        ("verbalizer.yaml", "label_words: {0: [yes], 1: [no]}\n", r"verbalizer.yaml: .*not a str"),
        ("verbalizer.yaml", "label_words: {}\n", r"verbalizer.yaml: .*no labels"),
        ("verbalizer.yaml", "{{{", r"verbalizer.yaml is not valid YAML"),
    ],
)
def test_a_damaged_prompt_file_names_the_file(name, content, message, copy_of):
    (copy_of / name).write_text(content)
    with pytest.raises(SavedModelError, match=message):
        PromptModel.from_pretrained(str(copy_of))


@pytest.mark.parametrize("name", ["template.yaml", "verbalizer.yaml", MANIFEST])
def test_a_missing_file_is_named(name, copy_of):
    (copy_of / name).unlink()
    with pytest.raises(SavedModelError, match=rf"{name}|incomplete"):
        PromptModel.from_pretrained(str(copy_of))


def test_saving_keeps_the_template_description(base_dir, tmp_path):
    from promptkit import Template

    described = Template("{{ text }}. It was {{ mask }}", name="kw", description="PET pattern 3")
    model = PromptModel.from_pretrained(str(base_dir), template=described, verbalizer=VERBALIZER)
    model.save_pretrained(str(tmp_path / "m"), include_backbone=False)
    assert yaml.safe_load((tmp_path / "m/template.yaml").read_text())["description"] == "PET pattern 3"
    assert PromptModel.from_pretrained(str(tmp_path / "m")).template.description == "PET pattern 3"


# ------------------------------------------------------------------ backbone weights
def test_a_missing_tensor_is_an_error_not_a_random_init(copy_of):
    weights = copy_of / "backbone" / "model.safetensors"
    tensors = load_file(str(weights))
    dropped = next(k for k in tensors if k.endswith("norm.weight"))
    del tensors[dropped]
    save_file(tensors, str(weights), metadata={"format": "pt"})
    with pytest.raises(BackboneError, match=rf"lacks 1 weight.*{dropped.split('.')[-2]}"):
        PromptModel.from_pretrained(str(copy_of))


def test_a_truncated_weights_file_names_the_backbone(copy_of):
    weights = copy_of / "backbone" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(BackboneError, match=r"cannot load the weights of backbone .*backbone"):
        PromptModel.from_pretrained(str(copy_of))


def test_pickle_weights_are_never_loaded(copy_of):
    """A ``pytorch_model.bin`` where the weights are expected is refused, not unpickled."""
    weights = copy_of / "backbone" / "model.safetensors"
    torch.save(load_file(str(weights)), copy_of / "backbone" / "pytorch_model.bin")
    weights.unlink()
    with pytest.raises(BackboneError, match=r"holds only pickle weights \(\['pytorch_model.bin'\]\).*never unpickles"):
        PromptModel.from_pretrained(str(copy_of))
    with pytest.raises(BackboneError, match="never unpickles"):
        PromptModel.from_pretrained(str(copy_of / "backbone"), template=TEMPLATE, verbalizer=VERBALIZER)


# ------------------------------------------------------------------ paths
def test_a_relative_backbone_path_loads_from_another_directory(base_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(base_dir.parent)
    model = PromptModel.from_pretrained(base_dir.name, template=TEMPLATE, verbalizer=VERBALIZER)
    model.save_pretrained(str(tmp_path / "light"), include_backbone=False)
    assert json.loads((tmp_path / "light" / MANIFEST).read_text())["backbone"] == str(base_dir.resolve())
    monkeypatch.chdir(tmp_path)
    loaded = PromptModel.from_pretrained(str(tmp_path / "light"))
    np.testing.assert_array_equal(loaded.predict_proba(EXAMPLES), model.predict_proba(EXAMPLES))


def test_a_moved_base_backbone_is_named(base_dir, tmp_path):
    import shutil

    moved = tmp_path / "base"
    shutil.copytree(base_dir, moved)
    model = PromptModel.from_pretrained(str(moved), template=TEMPLATE, verbalizer=VERBALIZER)
    model.save_pretrained(str(tmp_path / "light"), include_backbone=False)
    shutil.rmtree(moved)
    with pytest.raises(SavedModelError, match=r"refers to the base backbone folder .*base, which no longer exists"):
        PromptModel.from_pretrained(str(tmp_path / "light"))


def test_a_typo_in_a_folder_name_says_no_such_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SavedModelError, match=r"no saved model at 'typo-dir': no such folder"):
        PromptModel.from_pretrained("typo-dir")


def test_a_save_missing_its_manifest_is_not_loaded_as_a_backbone(copy_of):
    (copy_of / MANIFEST).unlink()
    with pytest.raises(SavedModelError, match="has template.yaml but no promptkit.json"):
        PromptModel.from_pretrained(str(copy_of), template=TEMPLATE, verbalizer=VERBALIZER)


# ------------------------------------------------------------------ atomic saves
def test_overwriting_a_save_is_all_or_nothing(base_dir, tmp_path, monkeypatch):
    """A save that fails half-way leaves the previous save complete and loadable."""
    model = PromptModel.from_pretrained(str(base_dir), template=TEMPLATE, verbalizer=VERBALIZER)
    target = tmp_path / "m"
    model.save_pretrained(str(target), include_backbone=False)
    before = sorted(p.name for p in target.rglob("*"))

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(model.verbalizer), "to_dict", fail)
    with pytest.raises(OSError, match="disk full"):
        model.save_pretrained(str(target), include_backbone=False)
    monkeypatch.undo()
    assert sorted(p.name for p in target.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # no temporary folder left behind
    np.testing.assert_array_equal(PromptModel.from_pretrained(str(target)).predict_proba(EXAMPLES),
                                  model.predict_proba(EXAMPLES))  # fmt: skip


def test_a_crash_between_the_two_renames_is_recovered(base_dir, tmp_path):
    """The swap parks the old save as ``<name>.old``; if only that survives, loading restores it."""
    model = PromptModel.from_pretrained(str(base_dir), template=TEMPLATE, verbalizer=VERBALIZER)
    target = tmp_path / "m"
    model.save_pretrained(str(target), include_backbone=False)
    os.replace(target, tmp_path / "m.old")
    loaded = PromptModel.from_pretrained(str(target))
    assert target.is_dir() and not (tmp_path / "m.old").exists()
    np.testing.assert_array_equal(loaded.predict_proba(EXAMPLES), model.predict_proba(EXAMPLES))


@pytest.mark.parametrize("name", ["adapter_model.safetensors", "adapter_config.json"])
def test_a_damaged_lora_adapter_file_is_named(name, base_dir, tmp_path):
    from promptkit import get_strategy

    model = PromptModel.from_pretrained(str(base_dir), template=TEMPLATE, verbalizer=VERBALIZER)
    config = {"learning_rate": 1e-3, "max_steps": 1, "progress": False}
    get_strategy("finetune", config=config, lora={"r": 2}).fit(model, KEYWORD)
    model.save_pretrained(str(tmp_path / "lora"))
    damaged = tmp_path / "lora" / "adapter" / name
    damaged.write_bytes(damaged.read_bytes()[:20])
    with pytest.raises(SavedModelError, match=rf"adapter/{name} is not (a readable safetensors file|valid JSON)"):
        PromptModel.from_pretrained(str(tmp_path / "lora"))
