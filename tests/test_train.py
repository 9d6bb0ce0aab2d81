"""The training loop on tiny random-init models: learning, determinism, checkpoints, bad input."""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from _train_worker import KEYWORD, TEMPLATE, VERBALIZER
from safetensors.torch import load_file

from promptkit import DataError, PromptModel, Template, Verbalizer, VerbalizerError
from promptkit.checkpoint import CheckpointError, trainable_state
from promptkit.train import train
from promptkit.train_config import ConfigError, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
WORKER = str(ROOT / "tests" / "_train_worker.py")


def _model(backbone, tokenizer, template=TEMPLATE, verbalizer=VERBALIZER) -> PromptModel:
    return PromptModel(copy.deepcopy(backbone), tokenizer, template, verbalizer)  # never train the shared fixture


def _config(**changes) -> TrainConfig:
    return TrainConfig(**{"learning_rate": 1e-2, "batch_size": 8, "max_steps": 30, "progress": False, **changes})


def _equal_weights(a: PromptModel, b: PromptModel) -> bool:
    wa, wb = trainable_state(a), trainable_state(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}


@pytest.fixture
def causal(tiny_causal, bpe_tokenizer):
    return _model(tiny_causal, bpe_tokenizer)


@pytest.fixture
def mlm(tiny_mlm, wordpiece_tokenizer):
    return _model(tiny_mlm, wordpiece_tokenizer)


# ------------------------------------------------------------------ learning
@pytest.mark.parametrize(("head", "lr"), [("causal", 1e-2), ("mlm", 3e-3)])
def test_loss_goes_down_and_keyword_task_is_learned(head, lr, request):
    model = request.getfixturevalue(head)
    assert model.score(KEYWORD) < 1.0
    result = train(model, KEYWORD, _config(learning_rate=lr))
    assert result.steps == 30 and len(result.losses) == 30
    assert sum(result.losses[-5:]) < 0.25 * sum(result.losses[:5])
    assert model.score(KEYWORD) == 1.0
    assert not model.training and not model.backbone.training  # left ready to predict (dropout off)


def test_soft_one_hot_targets_equal_hard_labels(tiny_causal, bpe_tokenizer):
    hard, soft, listed = (_model(tiny_causal, bpe_tokenizer) for _ in range(3))
    train(hard, KEYWORD, _config(max_steps=4))
    one_hot = torch.nn.functional.one_hot(torch.tensor([e["label"] for e in KEYWORD]), 2).float()
    train(soft, [{"text": e["text"]} for e in KEYWORD], _config(max_steps=4), targets=one_hot)
    train(listed, [{"text": e["text"]} for e in KEYWORD], _config(max_steps=4), targets=[e["label"] for e in KEYWORD])
    assert _equal_weights(hard, soft) and _equal_weights(hard, listed)


def test_soft_targets_pull_towards_their_distribution(causal):
    train(causal, KEYWORD, _config(max_steps=40), targets=torch.full((16, 2), 0.5))
    assert abs(causal.predict_proba(KEYWORD)[:, 1] - 0.5).max() < 0.1


def test_grad_accumulation_matches_one_big_batch(tiny_causal, bpe_tokenizer):
    big, accumulated = _model(tiny_causal, bpe_tokenizer), _model(tiny_causal, bpe_tokenizer)
    one = train(big, KEYWORD, _config(max_steps=4))
    two = train(accumulated, KEYWORD, _config(max_steps=4, batch_size=4, grad_accumulation=2))
    # The loss of a step is the mean over its rows. From step 2 on the weights already differ by float32
    # rounding (two half-batch sums vs one sum), so the losses agree to ~1e-6, not bit for bit.
    assert two.losses == pytest.approx(one.losses, abs=1e-5)
    # Weights move ~4e-2; Adam turns float noise on near-zero gradients into ~1e-4 differences.
    for k, v in trainable_state(big).items():
        torch.testing.assert_close(trainable_state(accumulated)[k], v, atol=5e-4, rtol=0)


def test_same_seed_same_weights_other_seed_differs(tiny_mlm, wordpiece_tokenizer):
    runs = {}
    for name, seed in [("a", 1), ("b", 1), ("c", 2)]:
        runs[name] = _model(tiny_mlm, wordpiece_tokenizer)  # MLM: dropout draws from the seeded RNG
        train(runs[name], KEYWORD, _config(max_steps=6, batch_size=4, seed=seed))
    assert _equal_weights(runs["a"], runs["b"]) and not _equal_weights(runs["a"], runs["c"])
    assert (runs["a"].predict_proba(KEYWORD) == runs["b"].predict_proba(KEYWORD)).all()


def test_dev_set_early_stopping_keeps_best_weights(causal):
    flipped = [{**e, "label": 1 - e["label"]} for e in KEYWORD]  # dev accuracy falls as train accuracy rises
    result = train(causal, KEYWORD, _config(max_steps=60, eval_every=2, patience=3), dev=flipped[::2] + KEYWORD[:2])
    assert result.stopped_early and result.steps < 60
    best = max(result.dev_scores, key=lambda entry: (entry[1], entry[2]))  # accuracy, then gold log-likelihood
    assert result.best_step == best[0] and result.best_score == best[1] == max(e[1] for e in result.dev_scores)
    assert causal.score(flipped[::2] + KEYWORD[:2]) == result.best_score


# ------------------------------------------------------------------ checkpoints
def test_checkpoint_is_safetensors_and_json_only(causal, tmp_path):
    train(causal, KEYWORD, _config(max_steps=3, save_every=2, output_dir=str(tmp_path)))
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["checkpoint-00000002", "checkpoint-00000003"]
    files = {p.name for p in (tmp_path / "checkpoint-00000003").iterdir()}
    assert files == {"model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json", "manifest.json"}
    assert json.loads((tmp_path / "checkpoint-00000003/state.json").read_text())["loop"]["step"] == 3


def test_resume_after_sigkill_matches_uninterrupted_run(tiny_mlm, wordpiece_tokenizer, tmp_path):
    _model(tiny_mlm, wordpiece_tokenizer).save_pretrained(str(tmp_path / "init"))
    # 16 examples / batch 4: 4 steps an epoch, so the run crosses epochs; checkpoints at 5 and 10 fall mid-epoch.
    config = _config(max_steps=12, batch_size=4, seed=5, save_every=5, output_dir=str(tmp_path / "run"))
    cmd = [sys.executable, WORKER, str(tmp_path / "init"), json.dumps(config.to_dict()), str(tmp_path / "r.st")]
    worker = subprocess.Popen([*cmd, "--slow", "0.4", "--threads", str(torch.get_num_threads())], env=_env())
    first = tmp_path / "run" / "checkpoint-00000005" / "state.json"
    deadline = time.monotonic() + 120
    while not first.exists() and worker.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(worker.pid, signal.SIGKILL)
    assert worker.wait(30) == -signal.SIGKILL and first.exists()
    assert not (tmp_path / "run" / "checkpoint-00000012").exists()  # killed mid-run

    resumed = PromptModel.from_pretrained(str(tmp_path / "init"))
    result = train(resumed, KEYWORD, config, resume_from=str(tmp_path / "run"))
    plain = PromptModel.from_pretrained(str(tmp_path / "init"))
    expected = train(plain, KEYWORD, TrainConfig(**{**config.to_dict(), "output_dir": str(tmp_path / "plain")}))
    assert result.steps == 12 and result.losses == expected.losses
    assert _equal_weights(resumed, plain)


@pytest.mark.parametrize("change", ["template", "verbalizer", "backbone", "data"])
def test_resume_refuses_a_different_run(change, tiny_causal, bpe_tokenizer, tmp_path):
    config = _config(max_steps=2, save_every=2, output_dir=str(tmp_path))
    train(_model(tiny_causal, bpe_tokenizer), KEYWORD, config)
    backbone, template, verbalizer, data = copy.deepcopy(tiny_causal), TEMPLATE, VERBALIZER, KEYWORD
    if change == "template":
        template = Template("{{ text }}! So it was {{ mask }}")
    elif change == "verbalizer":
        verbalizer = Verbalizer({0: ["bad"], 1: ["great"]})
    elif change == "backbone":
        backbone.config.rms_norm_eps = 1e-5
    else:
        data = KEYWORD[:8]
    expected = {"template": "template text", "verbalizer": "verbalizer", "backbone": "rms_norm_eps", "data": "exam"}
    with pytest.raises(CheckpointError, match=f"different run.*{expected[change]}"):
        train(PromptModel(backbone, bpe_tokenizer, template, verbalizer), data, config, resume_from=str(tmp_path))


def test_resume_from_a_folder_without_checkpoints(causal, tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint in"):
        train(causal, KEYWORD, _config(max_steps=2), resume_from=str(tmp_path))


# ------------------------------------------------------------------ distributed
def test_two_processes_match_one_process(causal, tmp_path):
    """accelerate's torchrun launcher, 2 CPU processes over gloo; each takes half of every batch."""
    causal.save_pretrained(str(tmp_path / "init"))  # tiny Llama: no dropout, so the runs compare exactly
    config = _config(max_steps=6)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    launch += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port"]
    cmd = [*launch, str(port), WORKER, str(tmp_path / "init"), json.dumps(config.to_dict()), str(tmp_path / "r.st")]
    done = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["processes"] == 2
    single = train(causal, KEYWORD, config)
    assert report["losses"] == pytest.approx(single.losses, abs=1e-5)
    for name, value in load_file(str(tmp_path / "r.st")).items():
        torch.testing.assert_close(value, trainable_state(causal)[name], atol=1e-4, rtol=0)


# ------------------------------------------------------------------ bad input
def test_config_validation_names_field_and_value():
    with pytest.raises(ConfigError, match=r"learning_rate=0 is invalid: expected a number > 0"):
        TrainConfig(learning_rate=0)
    with pytest.raises(ConfigError, match=r"learning_rate=-0.1"):
        TrainConfig(learning_rate=-0.1)
    with pytest.raises(ConfigError, match=r"batch_size=0 is invalid"):
        TrainConfig(batch_size=0)
    with pytest.raises(ConfigError, match=r"save_every=5 is invalid.*output_dir"):
        TrainConfig(save_every=5)
    with pytest.raises(ConfigError, match=r"mixed_precision='fp8'"):
        TrainConfig(mixed_precision="fp8")


def test_from_dict_rejects_unknown_keys_and_round_trips():
    with pytest.raises(ConfigError, match=r"unknown key 'learning_rte'\. Did you mean 'learning_rate'\?"):
        TrainConfig.from_dict({"learning_rte": 1e-3})
    config = TrainConfig(learning_rate=3e-4, max_steps=7, output_dir="out", save_every=2)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_empty_training_set(causal):
    with pytest.raises(DataError, match="empty training set"):
        train(causal, [], _config())


def test_label_outside_the_verbalizer_names_row_and_label(causal):
    with pytest.raises(VerbalizerError, match=r"row 2: label 'positive' is not one of"):
        train(causal, [*KEYWORD[:2], {"text": "x", "label": "positive"}], _config())


def test_bad_soft_targets(causal):
    with pytest.raises(DataError, match=r"\[16, 2\], got \[16, 3\]"):
        train(causal, KEYWORD, _config(), targets=torch.full((16, 3), 1 / 3))
    with pytest.raises(DataError, match="sums to 1"):
        train(causal, KEYWORD, _config(), targets=torch.ones(16, 2))


def test_dev_labels_the_train_set_lacks_are_a_warning(causal, caplog):
    with caplog.at_level(logging.WARNING, logger="promptkit.train"):
        train(causal, KEYWORD[:8], _config(max_steps=1), dev=KEYWORD[8:10] + KEYWORD[:2])
    assert "dev set has labels the training set lacks: [0]" in caplog.text


def test_out_of_memory_gets_a_batch_size_hint(causal):
    def forward(batch):
        raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")

    causal.forward = forward
    with pytest.raises(RuntimeError, match=r"(?s)out of memory.*lower batch_size and raise grad_accumulation"):
        train(causal, KEYWORD, _config(max_steps=1))


def test_frozen_model_is_an_error(causal):
    causal.requires_grad_(False)
    with pytest.raises(ConfigError, match="no trainable parameters"):
        train(causal, KEYWORD, _config(max_steps=1))
