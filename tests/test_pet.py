"""PET and iPET: exact arithmetic, end-to-end runs on a tiny model, resuming, redistilling, bad inputs."""

from __future__ import annotations

import copy
import tracemalloc

import numpy as np
import pytest
import torch
from _train_worker import KEYWORD, TEMPLATE, VERBALIZER
from safetensors.torch import load_file

from promptkit import PromptModel, Template, Verbalizer
from promptkit.catalog import list_templates
from promptkit.errors import CheckpointError, ConfigError, DataError, StrategyError, VerbalizerError
from promptkit.strategies import IPet, Pet, get_strategy, pet_data
from promptkit.strategies.finetune import Finetune
from promptkit.strategies.pet_math import (
    confidence_sample,
    ipet_target_size,
    label_quota,
    member_weights,
    merge_log_probs,
    top_confident,
)
from promptkit.template import render_all
from promptkit.train_config import TrainConfig

FAST = {"learning_rate": 1e-2, "batch_size": 8, "max_steps": 30, "progress": False}
TINY = {**FAST, "max_steps": 3}
# A prompt that never shows the text: on its own it cannot beat chance on the keyword task.
BLIND = Template("Nothing to see here. It was {{ mask }}")
OVERALL = Template("{{ text }}! Overall it was {{ mask }}")
_NEW = ["the car", "his dog", "that show", "the park", "my phone", "the lake"]
POOL = [{"text": f"{s} was {w}"} for s in _NEW for w in ("zorp", "blick")] * 2  # 24 unlabelled rows
TEST = [{"text": f"{s} is {w}", "label": int(w == "zorp")} for s in ("a tree", "your plan") for w in ("zorp", "blick")]


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a busy 2-core machine two spinning threads make these small runs ~10x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def causal(tiny_causal, bpe_tokenizer):
    return PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, TEMPLATE, VERBALIZER)


@pytest.fixture
def fits(monkeypatch):
    """Counts Finetune.fit calls (members and the distillation) without changing them."""
    calls = []
    plain = Finetune.fit

    def counting(self, model, train, *args, **kwargs):
        calls.append(type(self.loss).__name__)
        return plain(self, model, train, *args, **kwargs)

    monkeypatch.setattr(Finetune, "fit", counting)
    return calls


# ------------------------------------------------------------------ pet_math
def test_member_weights():
    np.testing.assert_allclose(member_weights([0.5, 1.0, 0.5], "wmean"), [0.25, 0.5, 0.25])
    np.testing.assert_allclose(member_weights([0.5, 1.0], "mean"), [0.5, 0.5])
    np.testing.assert_allclose(member_weights([0.0, 0.0], "wmean"), [0.5, 0.5])
    np.testing.assert_allclose(member_weights([None, None], "wmean"), [0.5, 0.5])
    with pytest.raises(ConfigError, match="weighting='avg'"):
        member_weights([1.0], "avg")


def test_merge_log_probs_is_the_softmax_of_the_weighted_mean():
    a = np.log([[0.8, 0.2], [0.5, 0.5]])
    b = np.log([[0.2, 0.8], [0.9, 0.1]])
    soft = merge_log_probs(np.stack([a, b]), [3.0, 1.0])
    mean = 0.75 * a + 0.25 * b
    expected = np.exp(mean) / np.exp(mean).sum(-1, keepdims=True)
    np.testing.assert_allclose(soft, expected)
    # row 0 by hand: 0.75*log .8 + .25*log .2 vs the reverse -> odds (0.8/0.2)^0.5 = 2
    np.testing.assert_allclose(soft[0], [2 / 3, 1 / 3])
    # log-probs vs raw logits: a per-row constant does not change the result
    np.testing.assert_allclose(merge_log_probs(np.stack([a + 5.0, b - 2.0]), [3, 1]), soft)
    with pytest.raises(DataError, match="positive sum"):
        merge_log_probs(np.stack([a]), [0.0])


def test_ipet_target_size():
    assert ipet_target_size(10, 0, 5, 1000) == 40  # 10 * 5 - 10
    assert ipet_target_size(10, 1, 5, 1000) == 240  # 10 * 25 - 10
    assert ipet_target_size(10, 1, 5, 100) == 100  # capped by the pool
    assert ipet_target_size(0, 2, 5, 100) == 0
    with pytest.raises(ConfigError, match="scale_factor=0"):
        ipet_target_size(10, 0, 0, 100)


def test_label_quota():
    assert label_quota([1, 1, 1], 10).tolist() == [4, 3, 3]
    assert label_quota([3, 1], 10).tolist() == [8, 2]  # 7.5/2.5 -> tie on .5 goes to label 0
    assert label_quota([0.2, 0.3, 0.5], 7).tolist() == [1, 2, 4]  # 1.4, 2.1, 3.5 -> the .5 gets the extra
    assert label_quota([5, 0], 3).tolist() == [3, 0]
    assert label_quota([1, 2], 0).tolist() == [0, 0]
    with pytest.raises(DataError, match="positive sum"):
        label_quota([0, 0], 3)


def test_confidence_sample():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.55, 0.45]])
    idx, lab = confidence_sample(probs, [3, 5], np.random.default_rng(0))
    assert sorted(idx[lab == 0].tolist()) == [0, 1, 4] and sorted(idx[lab == 1].tolist()) == [2, 3]  # all candidates
    idx, lab = confidence_sample(probs, [0, 1], np.random.default_rng(0))
    assert lab.tolist() == [1] and idx[0] in (2, 3)
    # probability proportional to confidence: row 3 (0.8) vs row 2 (0.7) for one draw of label 1
    draws = [confidence_sample(probs, [0, 1], np.random.default_rng(s))[0][0] for s in range(3000)]
    assert abs(np.mean(np.array(draws) == 3) - 0.8 / 1.5) < 0.03
    idx, lab = confidence_sample(probs, [1, 1], np.random.default_rng(1))
    assert len(set(idx.tolist())) == 2 and lab.tolist() == [0, 1]


def test_top_confident():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.6, 0.4]])
    idx, lab = top_confident(probs, 2)
    assert idx.tolist() == [0, 1, 3, 2] and lab.tolist() == [0, 0, 1, 1]  # tie 1 vs 4: lower index first
    assert top_confident(probs, 1)[0].tolist() == [0, 3]


# ------------------------------------------------------------------ end to end
def test_pet_ensemble_beats_the_single_blind_pvp(causal, fits):
    blind = get_strategy("finetune", config=FAST).fit(causal.clone().with_prompt(BLIND), KEYWORD)
    assert blind.score(TEST) <= 0.75
    fits.clear()
    pet = Pet(pvps=[(TEMPLATE, VERBALIZER), (BLIND, VERBALIZER)], repetitions=1, config=FAST, weighting="mean",
              evaluate_on=TEST)  # fmt: skip
    fitted = pet.fit(causal, KEYWORD, POOL)
    assert fitted is causal and fitted.template is TEMPLATE
    assert fitted.score(TEST) == 1.0
    truth = np.array([int("zorp" in row["text"]) for row in POOL])
    assert (pet.soft_labels_.argmax(-1) == truth).all() and pet.soft_labels_.shape == (24, 2)
    assert fits == ["NoneType", "NoneType", "Distillation"] and pet.trained_ == 2
    assert [m["weight"] for m in pet.members_] == [0.5, 0.5]
    assert all(m["steps"] == 30 and m["final_loss"] is not None for m in pet.members_)
    assert len(pet.pvp_accuracies_) == 2 and pet.result_.steps == 30
    # evaluate_on measures each member (the single-PVP baseline): the reading PVP is perfect, the blind one is not
    reading, blind_member = (m["eval_accuracy"] for m in pet.members_)
    assert reading == 1.0 and blind_member <= 0.75
    with pytest.raises(VerbalizerError, match="row 0"):
        Pet(pvps=[(TEMPLATE, VERBALIZER)], config=TINY, evaluate_on=[{"text": "x", "label": 7}]).fit(
            causal, KEYWORD, POOL
        )


def test_ipet_two_generations(causal, fits):
    labelled = KEYWORD[:4] + KEYWORD[8:12]  # 4 per label
    # pseudo-labels come from the *other* members, so both PVPs must be able to read the text
    ipet = IPet(pvps=[(TEMPLATE, VERBALIZER), (OVERALL, VERBALIZER)], repetitions=1, config=FAST, generations=2)
    fitted = ipet.fit(causal, labelled, POOL)
    assert fitted.score(TEST) == 1.0
    assert ipet.generations_[0]["sizes"] == [8, 8] and ipet.generations_[0]["label_counts"] == [[4, 4], [4, 4]]
    second = ipet.generations_[1]
    # each member gets 8 + min(8 * 5 - 8, 24) rows, 16 per label at most; the pool has 12 of each label
    for size, counts in zip(second["sizes"], second["label_counts"], strict=True):
        assert 8 < size <= 8 + 24 and all(4 < c <= 16 for c in counts)
    assert len(fits) == 5 and ipet.trained_ == 4


def test_ipet_without_labelled_data_starts_from_zero_shot(causal):
    ipet = IPet(repetitions=1, config=TINY, generations=2, scale_factor=1)
    assert isinstance(ipet.fit(causal, [], POOL), PromptModel)
    first = ipet.generations_[0]
    assert first["sizes"][0] == sum(first["label_counts"][0]) and max(first["label_counts"][0]) <= 10
    with pytest.raises(DataError, match="unlabeled"):
        IPet(config=TINY).fit(causal, [], None)


def test_default_learning_rate_and_soft_targets(causal):
    pet = get_strategy("pet", config=TrainConfig(max_steps=2, progress=False), repetitions=1)
    assert pet.config.learning_rate == Pet.default_learning_rate == 1e-5 and pet.config.batch_size == 8
    assert Pet().config.batch_size == 4
    pet.fit(causal, KEYWORD, POOL, targets=np.full((16, 2), 0.5))
    assert pet.result_.steps == 2 and pet.members_[0]["steps"] == 2


# ------------------------------------------------------------------ output folder
def test_resume_skips_finished_members_and_refuses_other_settings(causal, tiny_causal, bpe_tokenizer, tmp_path, fits):
    out = tmp_path / "pet"
    first = Pet(repetitions=2, config=TINY, output_dir=out)
    first.fit(causal, KEYWORD, POOL)
    assert {p.name for p in (out / "generation-0").iterdir()} == {"member-0-0", "member-0-1"}
    assert (out / "generation-0/member-0-1/scores.safetensors").exists() and (out / "ensemble.safetensors").exists()
    fits.clear()
    again = Pet(repetitions=2, config=TINY)
    fresh = PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, TEMPLATE, VERBALIZER)
    again.fit(fresh, KEYWORD, POOL, resume_from=out)
    assert fits == ["Distillation"] and again.trained_ == 0 and all(m["loaded"] for m in again.members_)
    np.testing.assert_allclose(again.soft_labels_, first.soft_labels_, rtol=1e-6)
    other = Pet(repetitions=2, config=TINY, weighting="mean", output_dir=out)
    fresh = PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, TEMPLATE, VERBALIZER)
    with pytest.raises(CheckpointError, match=r"weighting: \"wmean\" -> \"mean\""):
        other.fit(fresh, KEYWORD, POOL)
    with pytest.raises(CheckpointError, match=r"data\.unlabeled"):
        Pet(repetitions=2, config=TINY, output_dir=out).fit(fresh, KEYWORD, POOL[:10])
    with pytest.raises(ConfigError, match="differs from output_dir"):
        Pet(output_dir=out).fit(fresh, KEYWORD, POOL, resume_from=tmp_path / "elsewhere")
    scores = out / "generation-0/member-0-1/scores.safetensors"
    scores.write_bytes(scores.read_bytes()[:40])  # a truncated member file is named, not a raw SafetensorError
    with pytest.raises(CheckpointError, match=r"member-0-1/scores.safetensors is not a readable safetensors file"):
        Pet(repetitions=2, config=TINY, output_dir=out).fit(fresh, KEYWORD, POOL)


def test_ipet_starts_from_finished_runs(causal, tiny_causal, bpe_tokenizer, tmp_path, fits):
    """iPET's generation 0 is PET's ensemble: ``start_from`` loads it instead of training it again."""
    labelled = KEYWORD[:4] + KEYWORD[8:12]
    pvps = [(TEMPLATE, VERBALIZER), (OVERALL, VERBALIZER)]
    pet = Pet(pvps=pvps, repetitions=1, config=TINY, seed=3, output_dir=tmp_path / "pet")
    pet.fit(causal, labelled, POOL)
    fits.clear()

    def ipet(**options) -> IPet:
        return IPet(pvps=pvps, repetitions=1, config=TINY, seed=3, generations=2, **options)

    fresh = PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, TEMPLATE, VERBALIZER)
    started = ipet(start_from=tmp_path / "pet", output_dir=tmp_path / "ipet")
    started.fit(fresh, labelled, POOL)
    assert started.trained_ == 2 and fits == ["NoneType", "NoneType", "Distillation"]  # generation 1 only
    first = [m for m in started.members_ if m["generation"] == 0]
    assert all(m["loaded"] for m in first) and [m["seed"] for m in first] == [m["seed"] for m in pet.members_]
    for p in range(2):  # the PET run's scores, now also in iPET's own folder
        pet_scores = load_file(tmp_path / f"pet/generation-0/member-{p}-0/scores.safetensors")
        own = load_file(tmp_path / f"ipet/generation-0/member-{p}-0/scores.safetensors")
        torch.testing.assert_close(own["log_probs"], pet_scores["log_probs"], rtol=0, atol=0)
    # the same iPET trained from scratch: the same generation 0, and so the same pseudo-labels and soft labels
    fits.clear()
    scratch = ipet()
    scratch.fit(PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, TEMPLATE, VERBALIZER), labelled, POOL)
    assert scratch.trained_ == 4 and scratch.generations_ == started.generations_
    np.testing.assert_allclose(scratch.soft_labels_, started.soft_labels_, rtol=1e-5, atol=1e-6)
    # a third generation extends the finished 2-generation run: only generation 2 trains
    fits.clear()
    longer = IPet(pvps=pvps, repetitions=1, config=TINY, seed=3, generations=3, start_from=tmp_path / "ipet")
    longer.fit(PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, TEMPLATE, VERBALIZER), labelled, POOL)
    assert longer.trained_ == 2 and longer.generations_[:2] == started.generations_ and len(longer.generations_) == 3
    # another schedule: the 2-generation iPET run's generation 1 is not this run's, its generation 0 is
    fits.clear()
    other = IPet(pvps=pvps, repetitions=1, config=TINY, seed=3, generations=2, scale_factor=2,
                 start_from=tmp_path / "ipet")  # fmt: skip
    other.fit(PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, TEMPLATE, VERBALIZER), labelled, POOL)
    assert other.trained_ == 2 and all(m["loaded"] == (m["generation"] == 0) for m in other.members_)
    fresh = PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, TEMPLATE, VERBALIZER)
    with pytest.raises(CheckpointError, match=r"start_from .*\(1 settings differ.*\n  seed: 3 -> 4"):
        IPet(pvps=pvps, repetitions=1, config=TINY, seed=4, start_from=tmp_path / "pet").fit(fresh, labelled, POOL)
    with pytest.raises(CheckpointError, match="holds no PET run"):
        ipet(start_from=tmp_path / "none").fit(fresh, labelled, POOL)


def test_redistill_from_saved_scores(causal, tiny_causal, bpe_tokenizer, tmp_path, fits):
    out = tmp_path / "pet"
    Pet(repetitions=1, config=TINY, output_dir=out).fit(causal, KEYWORD, POOL)
    fits.clear()
    again = Pet(config=TINY, distill_config={**FAST, "max_steps": 5}, temperature=1.0, output_dir=out)
    fresh = PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, TEMPLATE, VERBALIZER)
    assert again.distill(fresh, POOL) is fresh
    assert fits == ["Distillation"] and again.result_.steps == 5 and again.soft_labels_.shape == (24, 2)
    with pytest.raises(DataError, match="not the 24 rows"):
        again.distill(fresh, POOL[:5])
    with pytest.raises(CheckpointError, match="holds no PET run"):
        Pet(output_dir=tmp_path / "none").distill(fresh, POOL)


def test_scoring_streams_in_bounded_chunks(causal, monkeypatch):
    """Unlabelled rows are scored in chunks: Python-side memory does not grow with their number, and stays far
    below what all rendered prompts would hold at once."""
    rows = [{"text": f"row {i} was zorp"} for i in range(6_000)]
    tracemalloc.start()
    everything = render_all(causal.template, rows)  # what label_log_probs on all rows would hold at once
    _, all_prompts = tracemalloc.get_traced_memory()
    del everything
    tracemalloc.stop()
    sizes = []
    plain = causal.label_log_probs

    def spy(examples, **kwargs):
        sizes.append(len(examples))
        return plain(examples, **kwargs)

    monkeypatch.setattr(causal, "label_log_probs", spy)
    causal.batch_size = 128
    peaks = []
    for n in (3_000, 6_000):
        tracemalloc.start()
        scores = pet_data.score_rows(causal, rows[:n], chunk=500)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert scores.shape == (6_000, 2) and max(sizes) == 500 and sum(sizes) == 9_000
    np.testing.assert_allclose(np.exp(scores).sum(-1), 1.0, rtol=1e-5)
    assert peaks[1] < 1.25 * peaks[0], peaks  # twice the rows, the same memory (the score array aside)
    assert peaks[1] < all_prompts / 2, (peaks, all_prompts)


# ------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"repetitions": 0}, r"repetitions=0"),
        ({"weighting": "wmeen"}, r"weighting='wmeen'"),
        ({"temperature": 0}, r"temperature=0"),
        ({"aux_lm_alpha": -1}, r"aux_lm_alpha=-1"),
        ({"generations": 0}, r"generations=0"),
        ({"scale_factor": 1.5}, r"scale_factor=1.5"),
        ({"sample_ratio": 0}, r"sample_ratio=0"),
        ({"sample_ratio": 1.5}, r"sample_ratio=1.5"),
        ({"pvps": [TEMPLATE]}, r"pvps\[0\]"),
    ],
)
def test_bad_options_name_the_value(params, match):
    with pytest.raises(ConfigError, match=match):
        IPet(**params)


def test_pvps_from_a_task_and_label_sets_must_agree():
    assert len(Pet(pvps="sst2")._pvps) == len(list_templates("sst2"))
    three = Verbalizer({0: ["bad"], 1: ["good"], 2: ["meh"]}, name="three")
    with pytest.raises(
        StrategyError, match=r"PVP 1 verbalizer 'three' has labels \[0, 1, 2\].*missing \[\], extra \[2\]"
    ):
        Pet(pvps=[(TEMPLATE, VERBALIZER), (TEMPLATE, three)])
    swapped = Verbalizer({1: ["good"], 0: ["bad"]}, name="swapped")
    with pytest.raises(StrategyError, match="another order"):
        Pet(pvps=[(TEMPLATE, VERBALIZER), (BLIND, swapped)])


def test_bad_data_is_refused_or_warned_about(causal):
    with pytest.raises(DataError, match=r"needs unlabeled=\.\.\..*got None"):
        Pet(config=TINY).fit(causal, KEYWORD)
    with pytest.raises(DataError, match="needs labelled examples"):
        Pet(config=TINY).fit(causal, [], POOL)
    pet = Pet(repetitions=1, config=TINY)
    with pytest.warns(UserWarning, match=r"ignoring the 'label' values of 16 of 16 unlabeled rows"):
        pet.fit(causal, KEYWORD, KEYWORD)
    with pytest.warns(UserWarning, match="1 labelled rows for 2 labels"):
        pet.fit(causal, KEYWORD[:1], POOL)


def test_every_member_failing_names_each_reason(causal):
    needs_premise = Template("{{ premise }} It was {{ mask }}")
    pet = Pet(pvps=[(needs_premise, VERBALIZER)], repetitions=2, config=TINY)
    with pytest.raises(StrategyError, match=r"every member failed:(.|\n)*member 0-0: (.|\n)*member 0-1: .*premise"):
        pet.fit(causal, KEYWORD, POOL)
    assert [m["error"] is not None for m in pet.members_] == [True, True]
