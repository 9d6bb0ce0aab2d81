"""Checkpoints under damage, foreign runs, changed settings and SIGKILL; crash-safe writes (promptkit.atomic).

Every case uses real files, real training runs of a tiny model and real subprocesses.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _train_worker import KEYWORD, TEMPLATE, VERBALIZER, load_backbone_model
from safetensors.torch import load_file, save_file

from promptkit import PromptModel, atomic, checkpoint
from promptkit.checkpoint import trainable_state
from promptkit.checkpoint_manifest import MAY_CHANGE, SETTINGS, check_manifest
from promptkit.errors import CheckpointError
from promptkit.train import train
from promptkit.train_config import TrainConfig

ROOT = Path(__file__).resolve().parents[2]
WORKER = str(ROOT / "tests" / "_train_worker.py")
BASE = {"learning_rate": 1e-2, "batch_size": 4, "max_steps": 4, "save_every": 2, "seed": 3, "progress": False}
DATA, DEV = KEYWORD[::2], KEYWORD[1::4]  # 8 training rows (2 steps an epoch), 4 dev rows; both labels in each
FILES = ["model.safetensors", "optimizer.safetensors", "rng.safetensors", "best.safetensors", "state.json",
         "manifest.json"]  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One torch thread: these tiny models gain nothing from two, and lose much when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _config(output_dir: Path, **changes) -> TrainConfig:
    return TrainConfig(**{**BASE, "output_dir": str(output_dir), **changes})


def _weights_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _run_id(folder: Path) -> str:
    return json.loads((folder / "state.json").read_text())["loop"]["run"]


def _link_copy(src: Path, dst: Path) -> Path:
    """A copy sharing the files' data (hard links); damage helpers always write new files, never in place."""
    shutil.copytree(src, dst, copy_function=os.link)
    return dst


def _rewrite(file: Path, data: bytes) -> None:
    file.unlink()
    file.write_bytes(data)


def _edit_json(folder: Path, name: str, edit) -> None:
    """Change one JSON file of a checkpoint, re-recording sizes, hashes and checksum as its writer would have."""
    data = json.loads((folder / name).read_text())
    edit(data)
    _rewrite(folder / name, json.dumps(data).encode())
    state = json.loads((folder / "state.json").read_text())
    if name != "state.json" and "files" in state:
        state["files"][name] = {"bytes": (folder / name).stat().st_size, "sha256": checkpoint._sha256(folder / name)}
    if "checksum" in state:
        state["checksum"] = checkpoint._checksum(state)
    _rewrite(folder / "state.json", json.dumps(state).encode())


def _legacy(state: dict) -> None:
    """A state.json as promptkit wrote it before run ids, file hashes and checksums."""
    for key in ("format", "files", "checksum"):
        state.pop(key)
    state["loop"].pop("run")


def _damage(file: Path, kind: str) -> str:
    """Damage ``file``; return a fragment the error must contain."""
    data = file.read_bytes()
    if kind == "missing":
        file.unlink()
        return "is missing"
    if kind == "truncated":
        _rewrite(file, data[: len(data) // 2])
    elif kind == "empty":
        _rewrite(file, b"")
    elif kind == "garbage":
        _rewrite(file, random.Random(0).randbytes(len(data)))
    elif kind == "bitflip":  # the last byte: a tensor value, or the closing brace of JSON
        _rewrite(file, data[:-1] + bytes([data[-1] ^ 0x01]))
    if file.name == "state.json":
        return "is not valid JSON"
    return {"truncated": "bytes where", "empty": "bytes where"}.get(kind, "SHA-256 mismatch")


def _small(tiny_causal, tokenizer) -> PromptModel:
    """The tiny Llama with its 49k-row embedding frozen: checkpoints of kilobytes keep these tests fast."""
    model = PromptModel(copy.deepcopy(tiny_causal), tokenizer, TEMPLATE, VERBALIZER)
    model.backbone.get_input_embeddings().requires_grad_(False)
    return model


@pytest.fixture(scope="module")
def base(tiny_causal, bpe_tokenizer, tmp_path_factory):
    """One finished 4-step run with checkpoints at steps 2 and 4 (with best.safetensors): never written to."""
    folder = tmp_path_factory.mktemp("base") / "run"
    model = _small(tiny_causal, bpe_tokenizer)
    result = train(model, DATA, _config(folder), dev=DEV)
    assert _names(folder) == ["checkpoint-00000002", "checkpoint-00000004"]
    return {"dir": folder, "weights": trainable_state(model), "losses": result.losses}


@pytest.fixture
def fresh(tiny_causal, bpe_tokenizer):
    """A new model to resume into (its weights are overwritten by the checkpoint)."""
    return lambda: _small(tiny_causal, bpe_tokenizer)


# ------------------------------------------------------------------ damaged checkpoints
KINDS = ["truncated", "empty", "garbage", "bitflip", "missing"]


@pytest.mark.parametrize("kind", ["truncated", "garbage", "missing"])  # the same validation as below, all kinds
@pytest.mark.parametrize("name", FILES)
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(name, kind, base, fresh, tmp_path, caplog):
    run = _link_copy(base["dir"], tmp_path / "run")
    damaged = run / "checkpoint-00000004"
    reason = _damage(damaged / name, kind)
    model = fresh()
    with caplog.at_level(logging.WARNING, logger="promptkit.checkpoint"):
        result = train(model, DATA, _config(run), dev=DEV, resume_from=str(run))
    warning = next(r.getMessage() for r in caplog.records if "skipping unusable checkpoint" in r.getMessage())
    assert str(damaged) in warning and name in warning and reason in warning
    assert "resuming from" in caplog.text and str(run / "checkpoint-00000002") in caplog.text
    # resumed at step 2 and retrained steps 3-4 exactly as the uninterrupted run did
    assert result.steps == 4 and result.losses == base["losses"]
    assert _weights_equal(trainable_state(model), base["weights"])
    assert checkpoint.load(run / "checkpoint-00000004", _parts_of(model, run)) is not None  # rewritten, whole


def _parts_of(model: PromptModel, run: Path) -> dict:
    """Parts for checkpoint.load outside train(): a fresh optimizer and schedule over the model's parameters."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-2)
    manifest = json.loads((run / "checkpoint-00000004" / "manifest.json").read_text())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return {"model": model, "optimizer": optimizer, "scheduler": scheduler, "manifest": manifest}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", FILES)
def test_damaged_explicit_checkpoint_raises_naming_the_file(name, kind, base, fresh, tmp_path):
    run = _link_copy(base["dir"], tmp_path / "run")
    damaged = run / "checkpoint-00000004"
    reason = _damage(damaged / name, kind)
    with pytest.raises(CheckpointError) as caught:
        train(fresh(), DATA, _config(run), dev=DEV, resume_from=str(damaged))
    message = str(caught.value)
    assert f"checkpoint {damaged} is damaged: {name}" in message and reason in message
    assert "Resume from an earlier checkpoint folder" in message  # the fix


@pytest.mark.parametrize(
    ("newest", "older"),
    [("model.safetensors", "state.json"), ("manifest.json", "optimizer.safetensors"), ("rng.safetensors", None)],
)
def test_no_usable_checkpoint_names_every_folder_and_reason(newest, older, base, fresh, tmp_path, caplog):
    run = _link_copy(base["dir"], tmp_path / "run")
    _damage(run / "checkpoint-00000004" / newest, "truncated")
    if older is None:
        shutil.rmtree(run / "checkpoint-00000002")
    else:
        _damage(run / "checkpoint-00000002" / older, "garbage")
    with pytest.raises(CheckpointError) as caught:
        train(fresh(), DATA, _config(run), dev=DEV, resume_from=str(run))
    message = str(caught.value)
    assert message.startswith(f"no usable checkpoint in {run}: [checkpoint-00000004]")
    assert newest in message and "start a new output_dir" in message
    if older is not None:
        assert "[checkpoint-00000002]" in message and older in message


def test_checkpoint_without_recorded_hashes_is_still_validated(base, fresh, tmp_path):
    """A checkpoint from before sizes and hashes were recorded: garbage tensors still fail with the file named."""
    run = _link_copy(base["dir"], tmp_path / "run")
    folder = run / "checkpoint-00000004"
    _edit_json(folder, "state.json", _legacy)
    _rewrite(folder / "model.safetensors", b"\x08" + bytes(100))
    with pytest.raises(CheckpointError, match=r"model\.safetensors is not a readable safetensors file"):
        train(fresh(), DATA, _config(run), dev=DEV, resume_from=str(folder))


@pytest.mark.parametrize(
    ("edit", "restamp", "expected"),
    [(lambda s: s["loop"].update(step=3), False, "state.json differs from what was written (checksum mismatch)"),
     (lambda s: s["loop"].update(losses=None), False, "checksum mismatch"),
     (lambda s: s.update(loop=[4]), True, "state.json lacks the loop, optimizer, scheduler or rng entries"),
     (lambda s: s.update(loop={"step": 4}), True, "state.json has a malformed 'loop' entry"),
     (lambda s: s["loop"].update(losses=None), True, "state.json has a malformed 'loop' entry"),
     (lambda s: s.update(scheduler=None), True, "lacks the loop, optimizer, scheduler or rng entries"),
     (lambda s: s.pop("rng"), True, "lacks the loop, optimizer, scheduler or rng entries"),
     (lambda s: s["rng"].update(python=[3, [1, 2]]), True, "state.json holds malformed random generator states"),
     (lambda s: s["rng"]["numpy"]["state"].update(key="x"), True, "holds malformed random generator states"),
     (lambda s: s["files"].update({"model.safetensors": 7}), True, "state.json has a malformed 'files' entry"),
     (lambda s: s["optimizer"].update(param_groups=[]), True, "optimizer parameter groups of sizes []"),
     (lambda s: s["optimizer"].pop("scalars"), True, "state.json holds a malformed optimizer entry")],
)  # fmt: skip
def test_state_json_that_parses_but_is_wrong(edit, restamp, expected, base, fresh, tmp_path):
    """A changed value (checksum mismatch), or a writer's bug that kept the checksum right: never a raw KeyError."""
    run = _link_copy(base["dir"], tmp_path / "run")
    folder = run / "checkpoint-00000004"
    state = json.loads((folder / "state.json").read_text())
    edit(state)
    if restamp:
        state["checksum"] = checkpoint._checksum(state)
    _rewrite(folder / "state.json", json.dumps(state).encode())
    with pytest.raises(CheckpointError) as caught:
        train(fresh(), DATA, _config(run), dev=DEV, resume_from=str(folder))
    assert f"checkpoint {folder} is damaged" in str(caught.value) and expected in str(caught.value)


def test_checkpoint_from_before_run_ids_resumes(base, fresh, tmp_path):
    run = _link_copy(base["dir"], tmp_path / "run")
    for step in (2, 4):
        _edit_json(run / f"checkpoint-0000000{step}", "state.json", _legacy)
    model = fresh()
    result = train(model, DATA, _config(run), dev=DEV, resume_from=str(run / "checkpoint-00000002"))
    assert result.losses == base["losses"] and _weights_equal(trainable_state(model), base["weights"])


def test_resume_from_a_missing_folder(fresh, tmp_path):
    with pytest.raises(CheckpointError, match=r"resume_from='.*nowhere' does not exist"):
        train(fresh(), DATA, _config(tmp_path), resume_from=str(tmp_path / "nowhere"))


# ------------------------------------------------------------------ changed settings
CHANGED = {
    "learning_rate": 1e-3, "batch_size": 2, "grad_accumulation": 2, "max_steps": 6, "epochs": 5,
    "warmup_ratio": 0.1, "lr_schedule": "constant", "weight_decay": 0.01, "max_grad_norm": None, "seed": 4,
    "label_key": "y",
}  # fmt: skip


def test_every_train_config_field_is_either_compared_or_allowed_to_change():
    assert sorted(SETTINGS + MAY_CHANGE) == sorted(TrainConfig.__dataclass_fields__)
    assert sorted(CHANGED) == sorted(set(SETTINGS) - {"mixed_precision"})  # mixed_precision: see below


@pytest.mark.parametrize("field", sorted(CHANGED))
def test_resume_refuses_changed_settings_naming_each_field(field, base, fresh):
    config = _config(base["dir"], **{field: CHANGED[field]})
    data = [{"text": e["text"], "y": e["label"]} for e in DATA] if field == "label_key" else DATA
    dev = [{"text": e["text"], "y": e["label"]} for e in DEV] if field == "label_key" else DEV
    with pytest.raises(CheckpointError) as caught:
        train(fresh(), data, config, dev=dev, resume_from=str(base["dir"]))
    message = str(caught.value)
    assert f"TrainConfig.{field}: {BASE.get(field, TrainConfig().to_dict()[field])!r} in the checkpoint, " in message
    assert f"{CHANGED[field]!r} now" in message
    assert "same model, data, loss and TrainConfig settings, or start a new output_dir" in message
    assert "template" not in message and "backbone" not in message  # only the setting is reported


def test_resume_refuses_a_checkpoint_of_another_mixed_precision(base, fresh, tmp_path):
    """accelerate cannot switch precision within a process, so the checkpoint plays the bf16 run."""
    run = _link_copy(base["dir"], tmp_path / "run")
    folder = run / "checkpoint-00000004"
    _edit_json(folder, "manifest.json", lambda m: m["settings"].update(mixed_precision="bf16"))
    with pytest.raises(CheckpointError, match=r"TrainConfig\.mixed_precision: 'bf16' in the checkpoint, 'no' now"):
        train(fresh(), DATA, _config(run), dev=DEV, resume_from=str(folder))


@pytest.mark.parametrize(
    "change", [{"save_every": 1}, {"eval_every": 1}, {"patience": 50}, {"progress": True}, {"save_every": 0}]
)
def test_resume_allows_changing_where_and_how_often(change, base, fresh, tmp_path):
    config = _config(tmp_path / "elsewhere", **change)  # output_dir changes in every case
    result = train(fresh(), DATA, config, dev=DEV, resume_from=str(base["dir"] / "checkpoint-00000002"))
    assert result.steps == 4 and result.losses == base["losses"]


def test_learning_rate_none_and_the_default_it_stands_for_are_the_same_setting(fresh, tmp_path):
    train(fresh(), DATA, _config(tmp_path, learning_rate=None, max_steps=2))
    resumed = train(fresh(), DATA, _config(tmp_path, learning_rate=1e-5, max_steps=2), resume_from=str(tmp_path))
    assert resumed.steps == 2
    saved = json.loads((tmp_path / "checkpoint-00000002" / "manifest.json").read_text())
    assert saved["settings"]["learning_rate"] == 1e-5


# ------------------------------------------------------------------ manifest keys
def test_a_checkpoint_without_recorded_settings_gets_a_clear_message(base, fresh, tmp_path):
    run = _link_copy(base["dir"], tmp_path / "run")
    folder = run / "checkpoint-00000004"
    _edit_json(folder, "manifest.json", lambda m: m.pop("settings"))
    with pytest.raises(
        CheckpointError, match=r"settings: not recorded in the checkpoint \(saved by an older promptkit"
    ):
        train(fresh(), DATA, _config(run), dev=DEV, resume_from=str(folder))


@pytest.mark.parametrize(
    ("saved", "current", "expected"),
    [
        ({}, {"loss": {"name": "distill", "temperature": 2.0}}, "loss: not recorded in the checkpoint"),
        ({"loss": {"name": "ce"}}, {}, "loss: {'name': 'ce'} in the checkpoint, not part of this run"),
        ({"loss": {"name": "distill", "temperature": 2.0}}, {"loss": {"name": "distill", "temperature": 4.0}},
         "loss (temperature: 2.0 in the checkpoint, 4.0 now)"),
        ({"loss": "ce"}, {"loss": "pet"}, "loss: 'ce' in the checkpoint, 'pet' now"),
    ],
)  # fmt: skip
def test_check_manifest_compares_every_key(saved, current, expected, tmp_path):
    common = {"template": "t", "data": "d"}
    with pytest.raises(CheckpointError) as caught:
        check_manifest({**common, **saved}, {**common, **current}, tmp_path)
    assert expected in str(caught.value) and str(tmp_path) in str(caught.value)
    check_manifest({**common, **saved}, {**common, **saved}, tmp_path)  # equal: no error


# ------------------------------------------------------------------ other runs' checkpoints
@pytest.fixture
def foreign(fresh, tmp_path):
    """An output_dir holding run A's checkpoint-4 and checkpoint-6 (A ran 6 steps, saving every 2)."""
    folder = tmp_path / "out"
    train(fresh(), DATA, _config(folder, max_steps=6))
    assert _names(folder) == ["checkpoint-00000004", "checkpoint-00000006"]
    return folder


def test_new_run_keeps_its_checkpoint_and_the_other_runs(foreign, fresh, caplog):
    """The reported data loss: checkpoint-3 of a new run was pruned at once, as it sorted before 4 and 6."""
    theirs = _run_id(foreign / "checkpoint-00000006")
    with caplog.at_level(logging.WARNING, logger="promptkit.checkpoint"):
        train(fresh(), DATA, _config(foreign, max_steps=3, save_every=3))
    assert _names(foreign) == ["checkpoint-00000003", "checkpoint-00000004", "checkpoint-00000006"]
    assert _run_id(foreign / "checkpoint-00000003") != theirs == _run_id(foreign / "checkpoint-00000004")
    assert f"output_dir {foreign} already holds 2 checkpoint(s) of another run" in caplog.text
    assert "checkpoint-00000004, checkpoint-00000006" in caplog.text


def test_a_step_the_other_run_wrote_moves_it_aside(foreign, fresh, caplog):
    theirs = _run_id(foreign / "checkpoint-00000004")
    with caplog.at_level(logging.WARNING, logger="promptkit.checkpoint"):
        train(fresh(), DATA, _config(foreign, max_steps=4))
    names = _names(foreign)
    aside = [foreign / n for n in names if n.startswith("checkpoint-00000004.displaced-")]
    assert len(aside) == 1 and _run_id(aside[0]) == theirs
    assert json.loads((aside[0] / "state.json").read_text())["loop"]["step"] == 4  # kept whole
    assert {n for n in names if "displaced" not in n} == {"checkpoint-00000002", "checkpoint-00000004",
                                                           "checkpoint-00000006"}  # fmt: skip
    assert _run_id(foreign / "checkpoint-00000004") != theirs == _run_id(foreign / "checkpoint-00000006")
    assert f"moved {foreign / 'checkpoint-00000004'}, written by another run, to {aside[0]}" in caplog.text


def test_pruning_keeps_the_newest_of_this_run_only(foreign, fresh):
    theirs = _run_id(foreign / "checkpoint-00000006")
    train(fresh(), DATA, _config(foreign, max_steps=5, save_every=1))
    names = [n for n in _names(foreign) if "displaced" not in n]
    assert names == ["checkpoint-00000004", "checkpoint-00000005", "checkpoint-00000006"]
    assert _run_id(foreign / "checkpoint-00000006") == theirs  # theirs, above our last step: untouched
    assert _run_id(foreign / "checkpoint-00000004") == _run_id(foreign / "checkpoint-00000005") != theirs


def test_checkpoint_without_run_id_counts_as_another_runs(foreign, fresh):
    _edit_json(foreign / "checkpoint-00000004", "state.json", _legacy)
    train(fresh(), DATA, _config(foreign, max_steps=5, save_every=1))
    names = _names(foreign)
    assert [n for n in names if "displaced" not in n] == [f"checkpoint-0000000{s}" for s in (4, 5, 6)]
    aside = [foreign / n for n in names if "displaced" in n]
    assert len(aside) == 1 and "run" not in json.loads((aside[0] / "state.json").read_text())["loop"]


def test_resumed_run_keeps_its_run_id_and_replaces_its_own_step(foreign, fresh, caplog):
    ours = _run_id(foreign / "checkpoint-00000006")
    with caplog.at_level(logging.WARNING, logger="promptkit.checkpoint"):
        train(fresh(), DATA, _config(foreign, max_steps=6), resume_from=str(foreign / "checkpoint-00000004"))
    assert _names(foreign) == ["checkpoint-00000004", "checkpoint-00000006"]  # own step 6 replaced, not displaced
    assert _run_id(foreign / "checkpoint-00000006") == ours and "another run" not in caplog.text


def test_resume_skips_a_newer_checkpoint_of_a_run_with_other_settings(foreign, fresh, caplog):
    config = _config(foreign, max_steps=3, save_every=3, learning_rate=5e-3)
    train(fresh(), DATA, config)
    with caplog.at_level(logging.WARNING, logger="promptkit.checkpoint"):
        result = train(fresh(), DATA, config, resume_from=str(foreign))
    assert result.steps == 3
    assert f"skipping unusable checkpoint {foreign / 'checkpoint-00000006'}" in caplog.text
    assert "TrainConfig.learning_rate: 0.01 in the checkpoint, 0.005 now" in caplog.text
    assert f"resuming from {foreign / 'checkpoint-00000003'}" in caplog.text


# ------------------------------------------------------------------ SIGKILL during a save
def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}


def test_sigkill_during_a_checkpoint_save_then_resume_matches_uninterrupted_run(tiny_mlm, wordpiece_tokenizer,
                                                                                tmp_path):  # fmt: skip
    init = tmp_path / "init"
    tiny_mlm.save_pretrained(str(init))  # a transformers backbone + tokenizer: MLM, so dropout draws random numbers
    wordpiece_tokenizer.save_pretrained(str(init))
    run = tmp_path / "run"
    # 16 examples / batch 4: checkpoints at steps 2 and 4; the second save is killed half-way
    config = TrainConfig(learning_rate=1e-2, batch_size=4, max_steps=4, save_every=2, seed=5, output_dir=str(run),
                         progress=False)  # fmt: skip
    cmd = [sys.executable, WORKER, str(init), json.dumps(config.to_dict()), str(tmp_path / "r.st"), "--backbone"]
    worker = subprocess.Popen([*cmd, "--slow-save", "0.3", "--threads", str(torch.get_num_threads())], env=_env())
    deadline = time.monotonic() + 120
    while worker.poll() is None and time.monotonic() < deadline:
        if list(run.glob(".checkpoint-00000004.*.tmp/model.safetensors")):  # inside the second save
            break
        time.sleep(0.01)
    os.kill(worker.pid, signal.SIGKILL)
    assert worker.wait(30) == -signal.SIGKILL
    assert [n for n in _names(run) if n.startswith("checkpoint-")] == ["checkpoint-00000002"]
    assert list(run.glob(".checkpoint-00000004.*.tmp"))  # the half-written save: hidden, never a checkpoint-*

    resumed = load_backbone_model(str(init))
    result = train(resumed, KEYWORD, config, resume_from=str(run))
    plain = load_backbone_model(str(init))
    expected = train(plain, KEYWORD, TrainConfig(**{**config.to_dict(), "output_dir": str(tmp_path / "plain")}))
    assert result.steps == 4 and result.losses == expected.losses
    assert _weights_equal(trainable_state(resumed), trainable_state(plain))
    assert _names(run) == ["checkpoint-00000002", "checkpoint-00000004"]  # the stale temp folder is gone


# ------------------------------------------------------------------ promptkit.atomic
def test_write_bytes_text_and_safetensors_replace_whole_files(tmp_path):
    target = tmp_path / "f.json"
    atomic.write_text(target, "old")
    atomic.write_text(target, "névé")
    assert target.read_text(encoding="utf-8") == "névé" and _names(tmp_path) == ["f.json"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()  # a plain file's mode, not mkstemp's 0o600
    atomic.write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    tensors = {"w": torch.arange(6.0).reshape(2, 3)}
    atomic.save_safetensors(tensors, tmp_path / "m.safetensors", metadata={"format": "pt"})
    assert torch.equal(load_file(str(tmp_path / "m.safetensors"))["w"], tensors["w"])
    assert _names(tmp_path) == ["f.json", "m.safetensors"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "m.safetensors"
    save_file({"w": torch.ones(2)}, str(target))
    with pytest.raises(ValueError):  # safetensors refuses a non-tensor value
        atomic.save_safetensors({"w": "not a tensor"}, target)
    assert torch.equal(load_file(str(target))["w"], torch.ones(2)) and _names(tmp_path) == ["m.safetensors"]


def _folder(path: Path, version: str) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name in ("a.txt", "sub/b.txt"):
        (path / name).parent.mkdir(exist_ok=True)
        (path / name).write_text(version)
    return path


def _version(path: Path) -> str:
    versions = {(path / n).read_text() for n in ("a.txt", "sub/b.txt")}
    assert len(versions) == 1, f"{path} mixes versions {versions}"
    return versions.pop()


@pytest.mark.parametrize("existing", [True, False])
def test_replace_dir_swaps_whole_folders(existing, tmp_path):
    final = tmp_path / "model"
    if existing:
        _folder(final, "v1")
        (final / "only-in-v1.txt").write_text("x")
    tmp = _folder(atomic.temp_dir(final), "v2")
    assert tmp.parent == tmp_path and tmp.name.startswith(".model.tmp-")
    atomic.replace_dir(tmp, final)
    assert _version(final) == "v2" and not (final / "only-in-v1.txt").exists() and _names(tmp_path) == ["model"]


def test_atomic_dir_keeps_the_old_folder_when_writing_fails(tmp_path):
    final = _folder(tmp_path / "model", "v1")
    with pytest.raises(RuntimeError, match="disk full"), atomic.atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("v2")
        raise RuntimeError("disk full")
    assert _version(final) == "v1" and _names(tmp_path) == ["model"]
    with atomic.atomic_dir(final) as tmp:
        _folder(tmp / "x", "v3")
    assert _names(final) == ["x"] and _version(final / "x") == "v3"


def test_replace_dir_refuses_a_temp_folder_elsewhere(tmp_path):
    with pytest.raises(ValueError, match="same folder"):
        atomic.replace_dir(_folder(tmp_path / "a" / "tmp", "v2"), tmp_path / "b" / "model")


@pytest.mark.parametrize(
    ("left", "expected"), [(("old",), "v1"), (("old", "final"), "v2"), (("final",), "v2")]
)  # fmt: skip
def test_recover_dir_restores_or_cleans_up_after_a_crash(left, expected, tmp_path):
    final = tmp_path / "model"
    if "old" in left:
        _folder(atomic.old_sibling(final), "v1")
    if "final" in left:
        _folder(final, "v2")
    assert atomic.recover_dir(final) == final
    assert _version(final) == expected and _names(tmp_path) == ["model"]


_SWAP = """
import importlib.util, os, sys, time
spec = importlib.util.spec_from_file_location("atomic", sys.argv[1])
atomic = importlib.util.module_from_spec(spec)
spec.loader.exec_module(atomic)
real, calls = os.replace, []
def replace(src, dst):
    real(src, dst)
    calls.append(dst)
    if len(calls) == int(sys.argv[4]):
        open(sys.argv[5], "w").close()
        time.sleep(60)
atomic.os.replace = replace
atomic.replace_dir(sys.argv[2], sys.argv[3])
"""


@pytest.mark.parametrize(("renames", "expected"), [(1, "v1"), (2, "v2")])
def test_sigkill_inside_replace_dir_leaves_a_recoverable_folder(renames, expected, tmp_path):
    """Killed after parking the old folder (only model.old is left) or after the commit (both are left)."""
    final, marker = _folder(tmp_path / "model", "v1"), tmp_path / "marker"
    tmp = _folder(atomic.temp_dir(final), "v2")
    args = [str(ROOT / "promptkit" / "atomic.py"), str(tmp), str(final), str(renames), str(marker)]
    swap = subprocess.Popen([sys.executable, "-c", _SWAP, *args])
    deadline = time.monotonic() + 60
    while not marker.exists() and swap.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    swap.kill()
    assert swap.wait(30) == -signal.SIGKILL and marker.exists()
    assert atomic.old_sibling(final).exists() and final.exists() == (renames == 2)
    atomic.recover_dir(final)
    assert _version(final) == expected and [n for n in _names(tmp_path) if n[0] != "."] == ["marker", "model"]
    assert tmp.exists() == (renames == 1)  # never committed: left for the writer to delete (it is hidden)
