"""Training losses: exact values on tiny tensors, PET's auxiliary LM batches, and train() with each loss."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from _train_worker import KEYWORD, TEMPLATE, VERBALIZER

from promptkit import AuxiliaryLM, ConfigError, CrossEntropy, DataError, Distillation, Loss, PromptModel
from promptkit.checkpoint import trainable_state
from promptkit.train import train
from promptkit.train_config import TrainConfig

F = torch.nn.functional
UNLABELED = [{"text": e["text"]} for e in KEYWORD] + [{"text": "a much longer sentence about the weather was zorp"}]
WORDS = [
    "the",
    "cat",
    "sat",
    "on",
    "a",
    "mat",
    "and",
    "we",
    "saw",
    "it",
    "run",
    "to",
    "town",
    "with",
    "my",
    "old",
    "friend",
    "from",
    "school",
]


def _model(backbone, tokenizer, **options) -> PromptModel:
    return PromptModel(copy.deepcopy(backbone), tokenizer, TEMPLATE, VERBALIZER, **options)


def _config(**changes) -> TrainConfig:
    return TrainConfig(**{"learning_rate": 1e-2, "batch_size": 8, "max_steps": 30, "progress": False, **changes})


def _equal_weights(a: PromptModel, b: PromptModel) -> bool:
    wa, wb = trainable_state(a), trainable_state(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


# ------------------------------------------------------------------ cross-entropy
def test_cross_entropy_hard_and_soft_targets_by_hand():
    student = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]], dtype=torch.float64)
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.2, 0.5, 0.3]], dtype=torch.float64)
    expected = [-math.log(0.5), -(0.2 * math.log(0.1) + 0.5 * math.log(0.6) + 0.3 * math.log(0.3))]
    assert CrossEntropy()(student.log(), targets).tolist() == pytest.approx(expected, abs=1e-15)


def test_cross_entropy_with_one_hot_targets_is_the_nll():
    log_probs = torch.randn(5, 4, generator=torch.Generator().manual_seed(0)).log_softmax(-1)
    labels = torch.tensor([0, 3, 1, 1, 2])
    got = CrossEntropy()(log_probs, F.one_hot(labels, 4).float())
    assert torch.equal(got, F.nll_loss(log_probs, labels, reduction="none"))


# ------------------------------------------------------------------ distillation
def test_distillation_at_temperature_two_by_hand():
    # Teacher rows were picked so that p^(1/2) renormalises to simple fractions: [3/4, 1/4, 0] and [1/5, 2/5, 2/5].
    student = torch.tensor([[0.25, 0.25, 0.5], [0.5, 0.25, 0.25]], dtype=torch.float64)
    teacher = torch.tensor([[0.9, 0.1, 0.0], [1 / 9, 4 / 9, 4 / 9]], dtype=torch.float64)
    r = 2 + math.sqrt(2)  # student^(1/2) rows: [1, 1, sqrt 2] / 2 and [sqrt 2, 1, 1] / 2, so student_T = ... / r
    row0 = 0.75 * math.log(0.75 * r) + 0.25 * math.log(0.25 * r)  # the zero adds nothing
    row1 = 0.2 * math.log(0.2 * r / math.sqrt(2)) + 2 * 0.4 * math.log(0.4 * r)
    got = Distillation(temperature=2.0)(student.log(), teacher)
    assert got.tolist() == pytest.approx([4 * row0, 4 * row1], abs=1e-14)


def test_distillation_at_temperature_one_is_the_kl():
    g = torch.Generator().manual_seed(1)
    log_probs = torch.randn(4, 5, generator=g, dtype=torch.float64).log_softmax(-1)
    teacher = torch.randn(4, 5, generator=g, dtype=torch.float64).softmax(-1)
    teacher[0] = torch.tensor([0.0, 0.5, 0.0, 0.25, 0.25], dtype=torch.float64)
    expected = F.kl_div(log_probs, teacher, reduction="none").sum(-1)
    torch.testing.assert_close(Distillation(temperature=1.0)(log_probs, teacher), expected, atol=1e-14, rtol=0)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0, 4.0])
def test_distillation_gradient_is_temperature_times_softened_difference(temperature):
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 4, generator=g, dtype=torch.float64, requires_grad=True)
    teacher = torch.randn(3, 4, generator=g, dtype=torch.float64).softmax(-1)
    Distillation(temperature)(logits.log_softmax(-1), teacher).sum().backward()
    expected = temperature * ((logits / temperature).softmax(-1) - (teacher.log() / temperature).softmax(-1))
    torch.testing.assert_close(logits.grad, expected.detach(), atol=1e-14, rtol=0)


def test_distillation_zero_probabilities_give_finite_values_and_gradients():
    logits = torch.tensor([[0.3, -1.2, 2.0], [1.0, 0.0, -1.0]], requires_grad=True)
    teacher = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    loss = Distillation(2.0)(logits.log_softmax(-1), teacher)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logits.grad).all()
    # teacher_T = [1, 0, 0], so the KL is -log student_T[0]
    assert loss[0].item() == pytest.approx(-4 * (logits[0].detach() / 2).log_softmax(-1)[0].item(), abs=1e-6)
    # a student certain of a label the teacher rules out costs nothing there either
    certain = torch.tensor([[0.0, -math.inf, -math.inf]])
    assert Distillation(2.0)(certain, torch.tensor([[1.0, 0.0, 0.0]])).tolist() == [0.0]


@pytest.mark.parametrize("bad", [0, -1.0, math.nan, math.inf, "2", True])
def test_distillation_rejects_a_bad_temperature(bad):
    with pytest.raises(ConfigError, match=rf"Distillation\.temperature={bad!r} is invalid: .*> 0"):
        Distillation(bad)


# ------------------------------------------------------------------ auxiliary LM: arguments
def test_auxiliary_lm_rejects_bad_arguments():
    for bad in (-1e-4, math.nan, math.inf):
        with pytest.raises(ConfigError, match=rf"AuxiliaryLM\.alpha={bad!r} is invalid: .*>= 0"):
            AuxiliaryLM(UNLABELED, alpha=bad)
    with pytest.raises(DataError, match="unlabeled=.*no rows"):
        AuxiliaryLM([])
    with pytest.raises(ConfigError, match=r"AuxiliaryLM\.batch_size=0 is invalid"):
        AuxiliaryLM(UNLABELED, batch_size=0)
    with pytest.raises(ConfigError, match=r"AuxiliaryLM\.base='ce' is invalid: expected a Loss"):
        AuxiliaryLM(UNLABELED, base="ce")


def test_losses_fit_the_protocol_and_describe_themselves_as_json():
    aux = AuxiliaryLM(UNLABELED, alpha=0.5, base=Distillation(3.0), batch_size=2, seed=4)
    assert all(isinstance(loss, Loss) for loss in (CrossEntropy(), Distillation(), aux))
    config = json.loads(json.dumps(aux.config()))
    assert config["base"] == {"name": "distillation", "temperature": 3.0}
    assert (config["name"], config["alpha"], config["batch_size"], config["seed"]) == ("auxiliary_lm", 0.5, 2, 4)
    assert config["unlabeled"]["rows"] == 17
    assert AuxiliaryLM(UNLABELED[:-1]).config()["unlabeled"] != AuxiliaryLM(UNLABELED).config()["unlabeled"]


# ------------------------------------------------------------------ auxiliary LM: batches
def test_mlm_masking_statistics_on_long_texts(tiny_mlm, wordpiece_tokenizer):
    model = PromptModel(tiny_mlm, wordpiece_tokenizer, TEMPLATE, VERBALIZER, max_length=250)
    g = torch.Generator().manual_seed(0)
    lengths = [230, 230, 230, 400]  # the last is cut at max_length, its template mask with it
    rows = [{"text": " ".join(WORDS[i] for i in torch.randint(len(WORDS), (n,), generator=g))} for n in lengths]
    aux = AuxiliaryLM(rows, batch_size=4)
    tok, specials = wordpiece_tokenizer, set(wordpiece_tokenizer.all_special_ids)
    counts = dict.fromkeys(["candidates", "chosen", "masked", "random", "kept"], 0)
    for step in range(25):
        batch = aux.batch(model, step)
        assert sorted(batch.rows) == [0, 1, 2, 3] and not batch.causal
        for i, r in enumerate(batch.rows):
            original = torch.tensor(
                tok(TEMPLATE.render(rows[r]).to_text("[MASK]"), truncation=True, max_length=250).input_ids
            )
            n = len(original)
            assert n == batch.attention_mask[i].sum() and (n == 250) == (r == 3)  # cut at model.max_length
            inputs, labels = batch.input_ids[i, :n], batch.labels[i, :n]
            chosen = labels != -100
            assert torch.equal(labels[chosen], original[chosen]) and torch.equal(inputs[~chosen], original[~chosen])
            special = torch.tensor([t in specials for t in original.tolist()])
            mask = [tok.mask_token_id] if r < 3 else []
            assert original[special].tolist() == [tok.cls_token_id, *mask, tok.sep_token_id]
            assert not (chosen & special).any()
            counts["candidates"] += int((~special).sum())
            counts["chosen"] += int(chosen.sum())
            counts["masked"] += int((chosen & (inputs == tok.mask_token_id)).sum())
            counts["random"] += int((chosen & (inputs != original) & (inputs != tok.mask_token_id)).sum())
            counts["kept"] += int((chosen & (inputs == original)).sum())
    assert 0.13 < counts["chosen"] / counts["candidates"] < 0.17
    assert 0.76 < counts["masked"] / counts["chosen"] < 0.84
    assert 0.07 < counts["random"] / counts["chosen"] < 0.13 and 0.07 < counts["kept"] / counts["chosen"] < 0.13


def test_mlm_template_mask_is_never_a_target(tiny_mlm, wordpiece_tokenizer):
    model = PromptModel(tiny_mlm, wordpiece_tokenizer, TEMPLATE, VERBALIZER)
    aux = AuxiliaryLM(UNLABELED, batch_size=8)
    for step in range(30):
        batch = aux.batch(model, step)
        template_mask = (batch.input_ids == wordpiece_tokenizer.mask_token_id) & (batch.labels == -100)
        assert template_mask.sum(-1).tolist() == [1] * 8  # exactly the template's mask, kept and never chosen
        assert (batch.labels[batch.attention_mask == 0] == -100).all()


def test_mlm_loss_is_transformers_masked_lm_loss(tiny_mlm, wordpiece_tokenizer):
    model = PromptModel(tiny_mlm, wordpiece_tokenizer, TEMPLATE, VERBALIZER)
    aux = AuxiliaryLM(UNLABELED, alpha=0.25, batch_size=8, seed=3)
    batch = aux.batch(model, 2)
    with torch.no_grad():
        expected = tiny_mlm(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=batch.labels).loss
        assert aux.lm_loss(model, 2).item() == pytest.approx(expected.item(), abs=1e-6)
        assert aux.auxiliary(model, 2).item() == pytest.approx(0.25 * expected.item(), abs=1e-6)
    assert AuxiliaryLM(UNLABELED, alpha=0).auxiliary(model, 0) is None


def test_causal_loss_is_next_token_loss_on_the_text_before_the_mask(tiny_causal, bpe_tokenizer):
    model = PromptModel(tiny_causal, bpe_tokenizer, TEMPLATE, VERBALIZER)
    aux = AuxiliaryLM(UNLABELED, batch_size=len(UNLABELED), seed=7)  # every row, in a drawn order
    batch = aux.batch(model, 11)
    texts = [f"{UNLABELED[r]['text']}. It was" for r in batch.rows]
    lengths = batch.attention_mask.sum(-1).tolist()
    assert batch.causal and 16 in batch.rows and len(set(lengths)) > 1  # padded rows of different lengths
    assert [bpe_tokenizer.decode(ids[:n]) for ids, n in zip(batch.input_ids, lengths)] == texts
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:  # one unpadded text at a time, with transformers' own shifted loss
            ids = torch.tensor([bpe_tokenizer(text).input_ids])
            total += tiny_causal(input_ids=ids, labels=ids).loss.item() * (ids.shape[1] - 1)
            count += ids.shape[1] - 1
        assert aux.lm_loss(model, 11).item() == pytest.approx(total / count, abs=1e-5)


def test_same_seed_and_step_same_batch_and_masks(tiny_mlm, wordpiece_tokenizer):
    model = PromptModel(tiny_mlm, wordpiece_tokenizer, TEMPLATE, VERBALIZER)

    def draw(seed: int, step: int) -> tuple:
        batch = AuxiliaryLM(UNLABELED, seed=seed).batch(model, step)
        return batch.rows, batch.input_ids, batch.labels

    def same(a: tuple, b: tuple) -> bool:
        return a[0] == b[0] and a[1].shape == b[1].shape and torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])

    assert same(draw(1, 5), draw(1, 5))
    assert not same(draw(1, 5), draw(1, 6)) and not same(draw(1, 5), draw(2, 5))


# ------------------------------------------------------------------ train() with a loss
def test_cross_entropy_is_the_default_bit_for_bit(tiny_causal, bpe_tokenizer):
    plain, explicit = _model(tiny_causal, bpe_tokenizer), _model(tiny_causal, bpe_tokenizer)
    a = train(plain, KEYWORD, _config(max_steps=4))
    b = train(explicit, KEYWORD, _config(max_steps=4), loss=CrossEntropy())
    assert a.losses == b.losses and _equal_weights(plain, explicit)


def test_distillation_learns_the_keyword_task_from_soft_targets(tiny_causal, bpe_tokenizer):
    model = _model(tiny_causal, bpe_tokenizer)
    assert model.score(KEYWORD) < 1.0
    teacher = torch.tensor([[0.1, 0.9] if e["label"] else [0.9, 0.1] for e in KEYWORD])
    rows = [{"text": e["text"]} for e in KEYWORD]
    result = train(model, rows, _config(max_steps=15), targets=teacher, loss=Distillation(2.0))
    assert sum(result.losses[-3:]) < 0.25 * sum(result.losses[:3])
    assert model.score(KEYWORD) == 1.0


def test_auxiliary_lm_learns_the_keyword_task_with_a_masked_lm(tiny_mlm, wordpiece_tokenizer):
    model = _model(tiny_mlm, wordpiece_tokenizer)
    result = train(model, KEYWORD, _config(max_steps=12), loss=AuxiliaryLM(UNLABELED, alpha=1e-4))
    assert sum(result.losses[-3:]) < 0.25 * sum(result.losses[:3])
    assert model.score(KEYWORD) == 1.0


def test_auxiliary_term_joins_the_step_loss_and_resumes_bit_exact(tiny_causal, bpe_tokenizer, tmp_path):
    aux = AuxiliaryLM(UNLABELED, alpha=0.5, seed=9)
    with torch.no_grad():  # the causal Llama has no dropout: the first step sees this value
        first_term = 0.5 * aux.lm_loss(_model(tiny_causal, bpe_tokenizer), 0).item()
    plain = train(_model(tiny_causal, bpe_tokenizer), KEYWORD, _config(max_steps=1, batch_size=4))
    config = _config(max_steps=4, batch_size=4, save_every=2, output_dir=str(tmp_path / "run"))
    whole = _model(tiny_causal, bpe_tokenizer)
    expected = train(whole, KEYWORD, config, loss=aux)
    assert expected.losses[0] == pytest.approx(plain.losses[0] + first_term, abs=1e-6)
    manifest = json.loads((tmp_path / "run/checkpoint-00000004/manifest.json").read_text())
    assert manifest["loss"] == json.loads(json.dumps(aux.config()))

    resumed = _model(tiny_causal, bpe_tokenizer)
    config = TrainConfig(**{**config.to_dict(), "output_dir": str(tmp_path / "again")})
    result = train(resumed, KEYWORD, config, loss=aux, resume_from=str(tmp_path / "run/checkpoint-00000002"))
    assert result.losses == expected.losses and _equal_weights(resumed, whole)


def test_train_rejects_what_is_not_a_loss(tiny_causal, bpe_tokenizer):
    class MeanLoss(CrossEntropy):  # returns the batch mean instead of one value per example
        def __call__(self, log_probs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            return super().__call__(log_probs, targets).mean()

    model = _model(tiny_causal, bpe_tokenizer)
    with pytest.raises(ConfigError, match=r"loss=<function .* is invalid: expected a promptkit\.losses\.Loss"):
        train(model, KEYWORD, _config(max_steps=1), loss=F.cross_entropy)
    with pytest.raises(ConfigError, match=r"loss=MeanLoss returned shape \[\]; a Loss returns one value .*shape \[8\]"):
        train(model, KEYWORD, _config(max_steps=1), loss=MeanLoss())
