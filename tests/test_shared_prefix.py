"""Runs that split rows over a key/value cache (shared prefixes, multi-token word rows) and token-budget
batching: the same scores as whole rows, less work."""

from __future__ import annotations

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

import promptkit.model as model_module
from promptkit import PromptModel, Template, Verbalizer
from promptkit.prefix import PrefixTuning, prefix_shape
from promptkit.shared_prefix import PrefixStore, SharedPrefixCache

PREAMBLE = "You are a careful annotator. Read the movie review below and say whether the critic liked the film. "
# Multi-token words: the causal path adds teacher-forced rows, which must also start after the prefix.
WORDS = Verbalizer({0: ["terrible", "a waste of time"], 1: ["great", "wonderful fun"]})
ONE_TOKEN = Verbalizer({0: ["terrible"], 1: ["great"]})  # one row per example (no teacher-forced rows)
ROWS = [
    {"text": "a charming journey."},
    {"text": "bleak, slow and desperate, with a plot that never arrives anywhere at all"},
    {"text": "fine"},
    {"text": "the best film of the year by a wide margin"},
    {"text": "dull"},
]


def _llama(vocab: int) -> LlamaForCausalLM:
    torch.manual_seed(0)  # std 0.3: outputs depend on context, so a wrong cache or position shows
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         initializer_range=0.3)  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _gpt2(vocab: int) -> GPT2LMHeadModel:
    torch.manual_seed(0)  # absolute position embeddings: wrong position ids would show
    return GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=32, n_layer=2, n_head=4, n_positions=256,
                                      initializer_range=0.3)).eval()  # fmt: skip


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def backbone(request, bpe_tokenizer):
    return {"llama": _llama, "gpt2": _gpt2}[request.param](len(bpe_tokenizer))


def _scores(model: PromptModel, rows, reuse: bool) -> tuple[torch.Tensor, PrefixStore]:
    """Label scores of ``rows`` as one batch, and the store the forward pass used."""
    model.prefix_reuse.enabled = reuse
    store = PrefixStore()
    with torch.inference_mode():
        return model(model.encode(rows), prefix_store=store), store


def _whole_rows(model: PromptModel, rows) -> torch.Tensor:
    """Every row run whole: given input embeddings, the model splits no row (no prefix, no word-row stages)."""
    batch = model.encode(rows)
    with torch.inference_mode():
        return model(batch, inputs_embeds=model.input_embeddings(batch))


def _assert_same_with_and_without(model: PromptModel, rows, runs: int = 1) -> None:
    plain, unused = _scores(model, rows, reuse=False)
    reused, store = _scores(model, rows, reuse=True)
    assert unused.runs == 0 and store.runs == runs  # the reuse path was (not) taken
    whole = _whole_rows(model, rows)
    torch.testing.assert_close(plain, whole, atol=1e-4, rtol=0)
    torch.testing.assert_close(reused, whole, atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "text",
    [
        PREAMBLE + "Review: {{ text }} It was {{ mask }}",  # mask at the end
        PREAMBLE + "Review: {{ text }} It was {{ mask }}, the critic said.",  # mask mid-prompt: filled-in rows
    ],
)
@pytest.mark.parametrize("words", [WORDS, ONE_TOKEN], ids=["multi-token", "one-token"])
def test_reuse_gives_the_same_scores(text, words, backbone, bpe_tokenizer):
    model = PromptModel(backbone, bpe_tokenizer, Template(text), words)
    _assert_same_with_and_without(model, ROWS)


def test_the_inference_pass_keeps_only_the_shared_prefix(backbone, bpe_tokenizer, monkeypatch):
    """Without later passes (one-token words) the suffix pass leaves the prefix's one row of entries as it was."""
    caches = []
    built = SharedPrefixCache.__init__

    def spy(self, *args, **kwargs):
        built(self, *args, **kwargs)
        caches.append((self, [tuple(layer.keys.shape) for layer in self.layers]))

    monkeypatch.setattr(SharedPrefixCache, "__init__", spy)
    model = PromptModel(backbone, bpe_tokenizer, Template(PREAMBLE + "Review: {{ text }} It was {{ mask }}"), ONE_TOKEN)
    _assert_same_with_and_without(model, ROWS)
    ((cache, shapes),) = caches
    assert all(shape[0] == 1 and shape[-2] > 16 for shape in shapes)  # [1, heads, prefix, d]
    assert [tuple(layer.keys.shape) for layer in cache.layers] == shapes


def test_rows_that_lack_the_prefix_run_whole(backbone, bpe_tokenizer):
    model = PromptModel(backbone, bpe_tokenizer, Template("{{ text }} It was {{ mask }}"), WORDS)
    rows = [{"text": PREAMBLE + r["text"]} for r in ROWS[:3]] + [{"text": "no preamble here"}, ROWS[4]]
    batch = model.encode(rows)
    with torch.inference_mode():
        prefix, group = model.prefix_reuse.split(batch, PrefixStore())
    assert group[batch.example_rows].tolist() == [True, True, True, False, False]  # [R] per row: per example here
    assert bpe_tokenizer.decode(prefix).startswith(PREAMBLE.strip())
    _assert_same_with_and_without(model, rows)


def test_reuse_composes_with_prefix_tuning(backbone, bpe_tokenizer):
    model = PromptModel(backbone, bpe_tokenizer, Template(PREAMBLE + "Review: {{ text }} It was {{ mask }}"), WORDS)
    prefix = PrefixTuning(3, **prefix_shape(backbone))
    torch.manual_seed(1)
    with torch.no_grad():
        prefix.keys.normal_(0, 1.0)
        prefix.values.normal_(0, 1.0)
    model.attach(prefix)
    _assert_same_with_and_without(model, ROWS)
    model.detach("prefix")


def test_a_slot_after_the_prefix_keeps_its_vectors(bpe_tokenizer):
    from test_slots import FixedVectors

    backbone = _llama(len(bpe_tokenizer))
    model = PromptModel(backbone, bpe_tokenizer, Template(PREAMBLE + "{{ text }} {{ soft(2) }} {{ mask }}"), WORDS)
    model.attach(FixedVectors(torch.randn(2, 32)))
    _assert_same_with_and_without(model, ROWS)


def test_caches_are_kept_across_batches_and_short_prefixes_are_not_reused(backbone, bpe_tokenizer):
    model = PromptModel(backbone, bpe_tokenizer, Template(PREAMBLE + "Review: {{ text }} It was {{ mask }}"), WORDS)
    model.batch_size = 2
    store = PrefixStore()
    with torch.inference_mode():
        for _, batch in model.batches(ROWS):
            model(batch, prefix_store=store)
    assert store.runs == 1  # three batches, one prefix run
    short = PromptModel(backbone, bpe_tokenizer, Template("Review: {{ text }} It was {{ mask }}"), ONE_TOKEN)
    _assert_same_with_and_without(short, ROWS, runs=0)  # "Review:" is under min_tokens: whole rows


def test_no_reuse_while_training_or_on_a_masked_lm(backbone, bpe_tokenizer, tiny_mlm, wordpiece_tokenizer):
    model = PromptModel(backbone, bpe_tokenizer, Template(PREAMBLE + "{{ text }} It was {{ mask }}"), WORDS)
    store = PrefixStore()
    model(model.encode(ROWS), prefix_store=store)  # gradients on: the prefix's graph is needed
    assert store.runs == 0
    mlm = PromptModel(tiny_mlm, wordpiece_tokenizer, Template(PREAMBLE + "{{ text }} It was {{ mask }}."), WORDS)
    with torch.inference_mode():
        assert not mlm.prefix_reuse.applies(mlm, mlm.encode(ROWS))


def test_reuse_on_the_real_backbone_with_demonstrations(smollm2_dir):
    from promptkit.demonstrations import with_demonstrations

    model = PromptModel.from_pretrained(smollm2_dir, template=Template("Review: {{ text }}\nSentiment: {{ mask }}"),
                                        verbalizer=Verbalizer({0: ["negative"], 1: ["positive"]}))  # fmt: skip
    demos = [{"text": "an utterly tedious , joyless slog through clichés .", "label": 0},
             {"text": "a warm , funny and beautifully acted film .", "label": 1}]  # fmt: skip
    model.template = with_demonstrations(model.template, model.verbalizer, demos, per_class=1, seed=0)
    _assert_same_with_and_without(model, ROWS)
    model.prefix_reuse.enabled = True
    on = model.predict_proba(ROWS)
    model.prefix_reuse.enabled = False
    assert (on.argmax(1) == model.predict_proba(ROWS).argmax(1)).all()


# ------------------------------------------------------------------ multi-token word rows
def test_word_rows_run_only_their_extra_tokens_and_match_whole_rows(backbone, bpe_tokenizer):
    from promptkit.word_rows import WordRows

    model = PromptModel(backbone, bpe_tokenizer, Template("Review: {{ text }} It was {{ mask }}"), WORDS)
    batch = model.encode(ROWS)
    plan = WordRows.plan(batch)
    assert plan.first.tolist() == batch.example_rows.tolist()  # one prompt row per example runs whole
    assert plan.rest.numel() == batch.input_ids.size(0) - len(ROWS)  # the teacher-forced rows: only their words
    assert WordRows.plan(PromptModel(backbone, bpe_tokenizer, Template("{{ text }} It was {{ mask }}"),
                                     Verbalizer({0: ["bad"], 1: ["good"]})).encode(ROWS)) is None  # fmt: skip
    _assert_same_with_and_without(model, ROWS, runs=0)


def test_word_rows_give_the_same_gradients(bpe_tokenizer):
    backbone = _llama(len(bpe_tokenizer))
    model = PromptModel(backbone, bpe_tokenizer, Template("Review: {{ text }} It was {{ mask }}"), WORDS)
    batch = model.encode(ROWS)
    grads = []
    for embeds in (None, "whole"):
        backbone.zero_grad()
        scores = model(batch) if embeds is None else model(batch, inputs_embeds=model.input_embeddings(batch))
        scores.log_softmax(-1)[:, 1].sum().backward()
        grads.append(backbone.model.layers[0].self_attn.q_proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------ token-budget batching
def test_batches_follow_the_token_budget_and_cover_every_row_once(tiny_causal, bpe_tokenizer):
    rows = [{"text": "word " * n} for n in (1, 40, 2, 3, 60, 1, 5, 2, 30, 4)]
    model = PromptModel(tiny_causal, bpe_tokenizer, Template("{{ text }} It was {{ mask }}"), WORDS, batch_size=64,
                        max_batch_tokens=100)  # fmt: skip
    seen, sizes = [], []
    for indices, batch in model.batches(rows):
        seen += indices
        sizes.append(len(indices))
        cost = batch.input_ids.numel()
        assert cost <= 100 or len(indices) == 1, (indices, batch.input_ids.shape)
    assert sorted(seen) == list(range(len(rows)))
    assert sizes[0] > sizes[-1] == 1  # short prompts share a batch; the longest (over budget) is alone
    budget = model.label_log_probs(rows)
    model.max_batch_tokens, model.batch_size = None, 3
    torch.testing.assert_close(budget, model.label_log_probs(rows), atol=1e-5, rtol=0)


def test_scoring_streams_in_chunks_in_input_order(tiny_causal, bpe_tokenizer, monkeypatch):
    rows = [{"text": "word " * (n % 7 + 1) + str(n)} for n in range(23)]
    model = PromptModel(tiny_causal, bpe_tokenizer, Template("{{ text }} It was {{ mask }}"), WORDS)
    whole = model.label_log_probs(rows)
    monkeypatch.setattr(model_module, "_CHUNK", 5)
    chunks = [indices for indices, _ in model.batches(rows)]
    assert all(max(c) // 5 == min(c) // 5 for c in chunks)  # no batch mixes two chunks
    torch.testing.assert_close(model.label_log_probs(rows), whole, atol=1e-5, rtol=0)
