"""AutoPrompt: the pure search functions exactly, the search and label-word search on tiny models, bad input."""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch
from _train_worker import KEYWORD, VERBALIZER

from promptkit import PromptModel, Template, Verbalizer
from promptkit.catalog import read_templates, read_verbalizers
from promptkit.errors import CatalogError, StrategyError, TemplateError, VerbalizerError
from promptkit.strategies import AutoPrompt, TriggerTokens, get_strategy
from promptkit.strategies import autoprompt_search as search
from promptkit.strategies.autoprompt_prefix import PrefixCache, SuffixBatch
from promptkit.strategies.autoprompt_words import mask_features
from promptkit.word_rows import WordRows

END = Template("{{ text }} It was {{ trigger(1) }} {{ mask }}", name="kw/end")
ALL_GOOD = [{"text": e["text"], "label": 1} for e in KEYWORD]  # the tiny model says "bad" to every one at first


def ids(tokenizer, *tokens: str) -> list[int]:
    return tokenizer.convert_tokens_to_ids(list(tokens))


@pytest.fixture
def causal(tiny_causal, bpe_tokenizer):
    return PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, END, VERBALIZER)


# ------------------------------------------------------------------ token filter
def test_token_filter_on_byte_level_bpe(bpe_tokenizer):
    allowed = search.token_filter(bpe_tokenizer, exclude_ids=ids(bpe_tokenizer, "Ġgood"))
    assert len(allowed) == len(bpe_tokenizer) and allowed.dtype == torch.bool
    assert allowed[ids(bpe_tokenizer, "Ġthe", "Ġmovie", "ĠParis")].all()
    refused = ["the", "orp", "Ġ", "Ġ123", "Ġ,", "Ġcafé".replace("é", "Ã©"), "Ġgood"]  # continuations, non-alpha, label
    assert not allowed[ids(bpe_tokenizer, *refused)].any()
    assert not allowed[sorted(set(bpe_tokenizer.all_special_ids) | set(bpe_tokenizer.added_tokens_decoder))].any()
    lower = search.token_filter(bpe_tokenizer, allow_capitalised=False)
    assert not lower[ids(bpe_tokenizer, "ĠParis", "ĠThe")].any() and lower[ids(bpe_tokenizer, "Ġthe")].all()
    assert int(lower.sum()) < int(allowed.sum())


def test_token_filter_on_wordpiece(wordpiece_tokenizer):
    allowed = search.token_filter(wordpiece_tokenizer, exclude_ids=ids(wordpiece_tokenizer, "good"))
    assert allowed[ids(wordpiece_tokenizer, "the", "movie", "great")].all()
    refused = ["[CLS]", "[SEP]", "[MASK]", "[PAD]", "[UNK]", "[unused0]", "##ing", "##s", "123", ",", "good"]
    assert not allowed[ids(wordpiece_tokenizer, *refused)].any()


def test_a_filter_that_leaves_nothing_is_an_error(wordpiece_tokenizer):
    with pytest.raises(StrategyError, match="leaves no candidate tokens"):
        search.token_filter(wordpiece_tokenizer, exclude_ids=range(len(wordpiece_tokenizer)))


# ------------------------------------------------------------------ pure functions
def test_candidates_are_the_top_k_of_minus_e_dot_grad_among_allowed():
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [2.0, 2.0], [1.0, 5.0]])
    grad = torch.tensor([-1.0, 0.0])  # -(E @ grad) = [1, 0, -1, 2, 1]
    allowed = torch.tensor([True, True, True, False, True])
    assert search.candidates(grad, embeddings, allowed, 2).tolist() == [0, 4]  # 3 is refused; 0/4 tie: lower id
    assert search.candidates(grad, embeddings, allowed, 9).tolist() == [0, 4, 1, 2]


def test_candidate_scores_and_disjoint_top_tokens():
    scores = torch.log(torch.tensor([[[0.5, 0.5], [0.25, 0.75]], [[0.9, 0.1], [0.1, 0.9]]]))  # [C=2, B=2, L=2]
    targets = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    expected = torch.tensor([(0.5 * 0.75) ** 0.5, (0.9 * 0.9) ** 0.5]).log()
    torch.testing.assert_close(search.candidate_scores(scores, targets), expected)
    odds = torch.tensor([[5.0, 4.0], [1.0, 3.0], [2.0, -1.0], [0.0, 2.5]])
    assert search.top_tokens_per_label(odds, 2) == [[0, 2], [1, 3]]  # row 0 goes to label 0 first
    with pytest.raises(StrategyError, match="needs 6 distinct tokens"):
        search.top_tokens_per_label(odds, 3)


def test_write_triggers_and_contains():
    assert search.write_triggers("{{ text }} {{ trigger(2) }} {{ mask }}", ["a b"], [2]) == "{{ text }} a b {{ mask }}"
    with pytest.raises(TemplateError, match="cannot write the triggers"):
        search.write_triggers("{% for i in range(2) %}{{ trigger(1) }}{% endfor %} {{ mask }}", ["a", "b"], [1, 1])
    assert search.contains([1, 2, 3, 4], [2, 3]) and not search.contains([1, 2, 3], [3, 2])


@pytest.mark.parametrize("head", ["causal_mid", "mlm"])
def test_batched_candidate_scoring_equals_one_candidate_at_a_time(head, tiny_causal, bpe_tokenizer, tiny_mlm,
                                                                  wordpiece_tokenizer):  # fmt: skip
    if head == "mlm":
        tokenizer = wordpiece_tokenizer
        model = PromptModel(tiny_mlm, tokenizer, Template("{{ text }} {{ trigger(2) }} it was {{ mask }}."), VERBALIZER)
    else:  # a causal LM with text after the mask: one row per (example, word), several rows per example
        tokenizer = bpe_tokenizer
        model = PromptModel(tiny_causal, tokenizer, Template("{{ text }} {{ trigger(2) }} it was {{ mask }}!"),
                            Verbalizer({0: ["bad", "awful"], 1: ["good"]}))  # fmt: skip
    start = tokenizer(" the the", add_special_tokens=False)["input_ids"]
    model.attach(TriggerTokens(start))
    batch = model.encode(KEYWORD[:3])
    target = torch.nn.functional.one_hot(torch.tensor([1, 1, 0]), 2).float()
    tokens = torch.tensor(tokenizer(" movie cat sun", add_special_tokens=False)["input_ids"])
    batched = AutoPrompt().score_tokens(model, batch, 1, tokens, target)
    single = []
    for token in tokens.tolist():
        model.attach(TriggerTokens([start[0], token]))
        with torch.no_grad():
            single.append(search.candidate_scores(model(batch)[None], target)[0])
    torch.testing.assert_close(batched, torch.stack(single), rtol=1e-5, atol=1e-6)


VARIED = [
    {"text": "ok", "label": 0},
    {"text": "the film was long and the seats were hard", "label": 0},
    {"text": "a warm, funny story", "label": 1},
]  # different lengths: right padding in the middle of the cache


@pytest.mark.parametrize(
    "text, words",
    [
        ("{{ text }} {{ trigger(2) }} it was {{ mask }}", {0: ["bad", "awful movie"], 1: ["good"]}),  # multi-token
        ("{{ text }} {{ trigger(2) }} it was {{ mask }}!", {0: ["bad", "awful"], 1: ["good"]}),  # a row per word
        ("Review: {{ text }} {{ trigger(1) }} so {{ trigger(1) }} {{ mask }}", {0: ["bad"], 1: ["good"]}),
    ],
)
def test_suffix_scoring_equals_whole_rows_scores_and_gradients(text, words, tiny_causal, bpe_tokenizer):
    model = PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, Template(text), Verbalizer(words))
    model.attach(TriggerTokens(ids(bpe_tokenizer, "Ġmovie", "Ġcat")))
    batch = model.encode(VARIED)
    split = SuffixBatch.build(model, batch)
    assert split is not None and split.suffix.input_ids.shape[1] < batch.input_ids.shape[1]
    whole_embeds = model.input_embeddings(batch).detach().requires_grad_()
    whole = model(batch, inputs_embeds=whole_embeds)
    part_embeds = split.embeddings(model).detach().requires_grad_()
    part = split.scores(model, part_embeds)
    torch.testing.assert_close(part, whole, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # candidates are scored as copies of the batch (tile_batch layout), each its prefix's
        tiled = split.scores(model, part_embeds.detach().repeat(3, 1, 1), copies=3)
    torch.testing.assert_close(tiled, whole.detach().repeat(3, 1), rtol=1e-5, atol=1e-5)
    (whole.sum() + part.sum()).backward()
    rows = torch.arange(batch.input_ids.size(0))[:, None]
    grad_at = lambda embeds, view: embeds.grad[rows, view.slot_positions]  # noqa: E731
    torch.testing.assert_close(grad_at(part_embeds, split.suffix), grad_at(whole_embeds, batch), rtol=1e-4, atol=1e-6)
    for slot in range(split.suffix.slot_positions.size(1)):  # the triggers before ``slot`` moved into the cache
        cut = int(split.suffix.slot_positions[:, slot].min())
        advanced = split.advance(model, cut)
        assert advanced.suffix.input_ids.size(1) == split.suffix.input_ids.size(1) - cut
        with torch.no_grad():
            torch.testing.assert_close(advanced.scores(model, advanced.embeddings(model)), whole.detach(),
                                       rtol=1e-5, atol=1e-5)  # fmt: skip
    # a PrefixCache runs each distinct prefix once, however often (and in whatever batch) it comes back
    runs = []
    model.backbone.base_model.register_forward_hook(lambda module, args, output: runs.append(1))
    cache = PrefixCache()
    for rows in (VARIED, VARIED[::-1], VARIED[1:]):
        again = SuffixBatch.build(model, model.encode(rows), cache)
        with torch.no_grad():
            torch.testing.assert_close(again.scores(model, again.embeddings(model)), model(model.encode(rows)),
                                       rtol=1e-5, atol=1e-5)  # fmt: skip
    assert len(cache.entries) == 3 and cache.bytes > 0
    whole_runs = 1 if WordRows.plan(model.encode(VARIED)) is None else 2  # multi-token words: prompt rows, then words
    assert len(runs) == 1 + 3 * (1 + whole_runs)  # one prefix run for the three rows; 3 x (cached split + whole)


def test_suffix_scoring_applies_only_where_the_prefix_cannot_see_the_triggers(tiny_causal, bpe_tokenizer, tiny_mlm,
                                                                              wordpiece_tokenizer):  # fmt: skip
    after = PromptModel(
        copy.deepcopy(tiny_causal), bpe_tokenizer, Template("{{ text }} {{ mask }} {{ trigger(1) }}"), VERBALIZER
    )  # fmt: skip  (the label word is read before the trigger)
    after.attach(TriggerTokens([5]))
    assert SuffixBatch.build(after, after.encode(VARIED)) is None
    mlm = PromptModel(tiny_mlm, wordpiece_tokenizer, Template("{{ text }} {{ trigger(1) }} {{ mask }}."), VERBALIZER)
    mlm.attach(TriggerTokens([2000]))
    assert SuffixBatch.build(mlm, mlm.encode(VARIED)) is None  # bidirectional: every token sees the triggers
    first = PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, Template("{{ trigger(1) }} {{ text }} {{ mask }}"),
                        VERBALIZER)  # fmt: skip
    first.attach(TriggerTokens([5]))
    assert SuffixBatch.build(first, first.encode(VARIED)) is None  # nothing before the trigger to cache


def test_no_lone_space_token_before_trigger_slots(bpe_tokenizer, tiny_causal):
    model = PromptModel(tiny_causal, bpe_tokenizer, Template("{{ text }} {{ trigger(2) }} {{ mask }}"), VERBALIZER)
    model.attach(TriggerTokens(ids(bpe_tokenizer, "Ġthe", "Ġthe")))
    row = bpe_tokenizer.convert_ids_to_tokens(model.encode([{"text": "fine"}]).input_ids[0].tolist())
    slot = model.encoder.slot_token
    assert row[:3] == ["fine", slot, slot] and "Ġ" not in row  # the triggers bring their own space
    written = model.with_prompt(template=Template("{{ text }} the the {{ mask }}"))
    plain = written.encode([{"text": "fine"}]).input_ids[0].tolist()
    assert bpe_tokenizer.convert_ids_to_tokens(plain)[:3] == ["fine", "Ġthe", "Ġthe"]


# ------------------------------------------------------------------ the search
def test_search_finds_a_planted_trigger_and_raises_train_accuracy(causal, bpe_tokenizer, tmp_path):
    weight = causal.backbone.get_input_embeddings().weight
    good, bad, zebra = ids(bpe_tokenizer, "Ġgood", "Ġbad", "Ġzebra")
    with torch.no_grad():  # "zebra" right before the mask now pushes the next word towards "good"
        weight[zebra] = 4 * (weight[good] - weight[bad])
    causal.attach(TriggerTokens(ids(bpe_tokenizer, "Ġthe")))
    assert causal.score(ALL_GOOD) == 0.0
    strategy = get_strategy("autoprompt", iterations=3, seed=0)
    model = strategy.fit(causal, ALL_GOOD)
    assert strategy.triggers_ == [zebra] and model.score(ALL_GOOD) == 1.0
    assert model.addons["slot_embeddings"].token_ids.tolist() == [zebra]
    assert strategy.template_ == Template("{{ text }} It was zebra {{ mask }}", name="kw/end")
    assert strategy.history_[0]["accepted"] and strategy.history_[0]["candidate"] == "Ġzebra"
    assert set(strategy.history_[0]) == {"iteration", "position", "candidate", "candidate_id", "accepted", "n_scored",
                                         "train_score", "current_score", "confirm_scores", "dev_score",
                                         "seconds"}  # fmt: skip
    current, winner = strategy.history_[0]["confirm_scores"]  # the winner beat "the" again on a fresh batch
    assert winner > current
    saved = json.loads(strategy.to_json(tmp_path / "history.json").read_text())
    assert saved["triggers"] == [zebra] and len(saved["history"]) == 3


def test_search_without_planting_still_helps_and_is_deterministic(causal):
    causal.template = Template("{{ text }} It was {{ trigger(2) }} {{ mask }}")
    causal.attach(TriggerTokens([7] * 2))  # replaced by fit: the search starts from init_token
    runs = []
    for _ in range(2):
        strategy = AutoPrompt(iterations=4, seed=3, dev_every=2)
        runs.append((strategy.fit(causal, ALL_GOOD, dev=ALL_GOOD[::3]).score(ALL_GOOD), strategy.triggers_))
        assert [h["dev_score"] is not None for h in strategy.history_] == [False, True] * 2
    assert runs[0] == runs[1] and runs[0][0] > 0.5  # "the the" gets 0.0
    other = AutoPrompt(iterations=4, seed=4)
    other.fit(causal, ALL_GOOD)
    assert [h["position"] for h in other.history_] != [h["position"] for h in strategy.history_]


def test_confirmation_rejects_a_winner_that_does_not_hold_on_a_fresh_batch(causal):
    """With confirm=False every iteration accepts its best candidate; confirming keeps only those that hold."""
    causal.template = Template("{{ text }} It was {{ trigger(2) }} {{ mask }}")
    causal.attach(TriggerTokens([7] * 2))
    loose = AutoPrompt(iterations=6, seed=5, confirm=False)
    loose.fit(causal, ALL_GOOD)
    strict = AutoPrompt(iterations=6, seed=5)
    strict.fit(causal, ALL_GOOD)
    assert all(h["confirm_scores"] is None for h in loose.history_)
    for h in strict.history_:
        if h["confirm_scores"] is not None:
            assert h["accepted"] == (h["confirm_scores"][1] > h["confirm_scores"][0])
    assert sum(h["accepted"] for h in strict.history_) <= sum(h["accepted"] for h in loose.history_)
    with pytest.raises(StrategyError, match="confirm"):
        AutoPrompt(confirm="yes")


def test_mlm_search_runs_and_gradients_flow_through_a_mid_prompt_causal_mask(tiny_mlm, wordpiece_tokenizer, causal):
    mlm = PromptModel(copy.deepcopy(tiny_mlm), wordpiece_tokenizer,
                      Template("{{ text }} {{ trigger(2) }} it was {{ mask }}."), VERBALIZER)  # fmt: skip
    strategy = AutoPrompt(iterations=2, n_candidates=4)
    assert strategy.fit(mlm, KEYWORD).predict_proba(KEYWORD).shape == (16, 2)
    assert strategy.template_.text.endswith("it was {{ mask }}.") and "trigger" not in strategy.template_.text
    causal.template = Template("{{ text }} {{ trigger(2) }} It was {{ mask }} indeed.")
    causal.attach(TriggerTokens([1, 2]))
    grad, prior = strategy._slot_grad(causal, causal.encode(KEYWORD[:2]), torch.tensor([[0.0, 1.0], [1.0, 0.0]]))
    assert grad.shape == (2, 32) and grad.abs().sum() > 0 and prior is None


def test_a_trigger_that_does_not_round_trip_warns_with_its_tokens(causal, bpe_tokenizer):
    strategy = AutoPrompt()
    strategy.triggers_ = ids(bpe_tokenizer, "hello")  # no "Ġ": written after a space it becomes "Ġhello"
    with pytest.warns(UserWarning, match=r"trigger tokens \[\['hello'\]\] do not come back"):
        written = strategy._written(causal, KEYWORD[0], [1])
    assert written.text == "{{ text }} It was hello {{ mask }}"
    strategy.triggers_ = ids(bpe_tokenizer, "Ġhello")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        strategy._written(causal, KEYWORD[0], [1])


# ------------------------------------------------------------------ label-word search
def test_label_word_search_recovers_planted_words(tiny_causal, bpe_tokenizer):
    model = PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, Template("{{ text }}. It was {{ mask }}"),
                        VERBALIZER)  # fmt: skip
    features = mask_features(model, KEYWORD)
    labels = torch.tensor([e["label"] for e in KEYWORD])
    direction = features[labels == 1].mean(0) - features[labels == 0].mean(0)
    out = model.backbone.get_output_embeddings().weight
    apple, river = ids(bpe_tokenizer, "Ġapple", "Ġriver")
    with torch.no_grad():  # tied embeddings: the inputs never contain these two words, so the features stay
        out[apple] = 100 * out.norm(dim=1).max() * direction / direction.norm()
        out[river] = -out[apple]
    assert torch.equal(mask_features(model, KEYWORD), features)
    found = AutoPrompt(seed=0).search_label_words(model, KEYWORD)
    assert found.label_words == {0: ("river",), 1: ("apple",)}
    more = AutoPrompt(label_words_k=3).search_label_words(model, KEYWORD)
    assert [len(w) for w in more.words] == [3, 3] and more.words[0][0] == "river"
    assert not set(more.words[0]) & set(more.words[1])
    triggered = model.with_prompt(template=Template("{{ text }}. {{ trigger(2) }} It was {{ mask }}"))
    assert len(AutoPrompt().search_label_words(triggered, KEYWORD, k=2).words[1]) == 2  # init triggers used


# ------------------------------------------------------------------ bad input
@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"iterations": 0}, r"iterations=0 is invalid.*a search budget of zero"),
        ({"n_candidates": 0}, r"n_candidates=0 is invalid"),
        ({"batch_size": True}, r"batch_size=True is invalid"),
        ({"accumulation": 1.5}, r"accumulation=1.5 is invalid"),
        ({"filter": "no_capital"}, r"invalid autoprompt filter='no_capital'.*Did you mean 'no_capitals'"),
        ({"init_token": " "}, r"init_token=' ' is invalid"),
    ],
)
def test_bad_parameters_are_clear_errors(params, message):
    with pytest.raises(StrategyError, match=message):
        get_strategy("autoprompt", **params)


def test_bad_inputs_are_clear_errors(causal):
    causal.template = Template("{{ text }} It was {{ mask }}")
    with pytest.raises(
        TemplateError, match=r"has no \{\{ trigger\(n\) \}\} slots.*e\.g\. '\{\{ text \}\} \{\{ trigger"
    ):
        AutoPrompt().fit(causal, KEYWORD)
    causal.template = Template("{{ soft(2) }} {{ text }} {{ trigger(1) }} {{ mask }}")
    with pytest.raises(TemplateError, match=r"has \['soft', 'trigger'\] slots"):
        AutoPrompt().fit(causal, KEYWORD)
    causal.template, causal.max_length = Template("{{ text }} {{ trigger(20) }} {{ mask }}"), 16
    with pytest.raises(TemplateError, match=r"20 trigger tokens but max_length=16"):
        AutoPrompt().fit(causal, KEYWORD)
    causal.template, causal.max_length = END, 64
    with pytest.raises(StrategyError, match=r"init_token='good' is a label word's token"):
        AutoPrompt(init_token="good").fit(causal, KEYWORD)
    with pytest.raises(StrategyError, match=r"init_token='zorpblick' is \d tokens"):
        AutoPrompt(init_token="zorpblick").fit(causal, KEYWORD)
    with pytest.raises(VerbalizerError, match=r"row 1: label 7 is not one of the verbalizer's labels"):
        AutoPrompt().fit(causal, KEYWORD, dev=[KEYWORD[0], {"text": "x", "label": 7}])
    with pytest.raises(StrategyError, match="keeps no checkpoints"):
        AutoPrompt().fit(causal, KEYWORD, resume_from="somewhere")
    with pytest.raises(StrategyError, match="needs a finished fit"):
        AutoPrompt().save_prompt("folder", "name")


def test_label_words_never_become_triggers(causal, bpe_tokenizer):
    allowed = AutoPrompt().allowed_tokens(causal)
    assert not allowed[ids(bpe_tokenizer, "Ġgood", "Ġbad", "good", "bad")].any()
    assert len(allowed) == causal.backbone.get_input_embeddings().weight.size(0)


# ------------------------------------------------------------------ saving
def test_save_prompt_writes_catalog_yaml(causal, bpe_tokenizer, tmp_path):
    strategy = AutoPrompt(iterations=2)
    strategy.fit(causal, ALL_GOOD)
    strategy.save_prompt(tmp_path, "found")
    strategy.save_prompt(tmp_path, "again")
    templates = read_templates(tmp_path / "templates" / "kw.yaml")
    verbalizers = read_verbalizers(tmp_path / "verbalizers" / "kw.yaml")
    assert set(templates) == {"found", "again"} and templates["found"].text == strategy.template_.text
    assert verbalizers["found"].label_words == VERBALIZER.label_words
    assert '- "good"' in (tmp_path / "verbalizers" / "kw.yaml").read_text()  # every word quoted
    reloaded = PromptModel(causal.backbone, bpe_tokenizer, templates["found"], verbalizers["found"])
    assert reloaded.score(ALL_GOOD) == causal.score(ALL_GOOD)
    foreign = tmp_path / "other"
    (foreign / "templates").mkdir(parents=True)
    (foreign / "templates" / "kw.yaml").write_text("- a list, not a catalog\n")
    with pytest.raises(CatalogError, match=r"kw.yaml holds a list, not a catalog mapping"):
        strategy.save_prompt(foreign, "found")
    assert (foreign / "templates" / "kw.yaml").read_text() == "- a list, not a catalog\n"  # never overwritten


def test_trigger_tokens_save_and_load_with_the_model(tiny_causal, bpe_tokenizer, tmp_path):
    tiny_causal.save_pretrained(tmp_path / "base")
    bpe_tokenizer.save_pretrained(tmp_path / "base")
    model = PromptModel.from_pretrained(str(tmp_path / "base"), template=END, verbalizer=VERBALIZER)
    AutoPrompt(iterations=2).fit(model, ALL_GOOD)
    model.save_pretrained(str(tmp_path / "saved"), include_backbone=False)
    loaded = PromptModel.from_pretrained(str(tmp_path / "saved"))
    addon = loaded.addons["slot_embeddings"]
    assert isinstance(addon, TriggerTokens) and not list(addon.parameters())
    assert addon.token_ids.tolist() == model.addons["slot_embeddings"].token_ids.tolist()
    torch.testing.assert_close(loaded.predict_proba(KEYWORD), model.predict_proba(KEYWORD))


def test_dev_scores_through_the_suffix_path_equal_whole_rows(tiny_causal, bpe_tokenizer):
    model = PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, Template("{{ text }} {{ trigger(2) }} {{ mask }}"),
                        VERBALIZER)  # fmt: skip
    model.attach(TriggerTokens(ids(bpe_tokenizer, "Ġmovie", "Ġcat")))
    targets = [row["label"] for row in VARIED]
    log_probs = model.label_log_probs(VARIED, progress=False)
    gold = log_probs[torch.arange(len(targets)), torch.tensor(targets)]
    want = (float((log_probs.argmax(-1) == torch.tensor(targets)).float().mean()), float(gold.mean()))
    cache = PrefixCache()
    got = AutoPrompt(batch_size=2)._dev_score(model, VARIED, targets, cache)
    assert got[0] == want[0] and got[1] == pytest.approx(want[1], abs=1e-5)
    assert len(cache.entries) == len(VARIED)  # each dev row's text ran once, kept for the next evaluation


def test_pool_mask_keeps_the_allowed_tokens_the_lm_ranks_highest():
    prior = torch.tensor([0.5, 3.0, 2.0, 2.0, -1.0, 9.0])
    allowed = torch.tensor([True, True, True, True, True, False])
    assert search.pool_mask(prior, allowed, 2).tolist() == [False, True, True, False, False, False]  # tie: lower id
    assert search.pool_mask(prior, allowed, 99).tolist() == allowed.tolist()


def test_the_lm_prior_is_the_next_token_distribution_before_each_trigger(tiny_causal, bpe_tokenizer, tiny_mlm,
                                                                        wordpiece_tokenizer):  # fmt: skip
    model = PromptModel(copy.deepcopy(tiny_causal), bpe_tokenizer, Template("{{ text }} {{ trigger(2) }} {{ mask }}"),
                        VERBALIZER)  # fmt: skip
    model.attach(TriggerTokens(ids(bpe_tokenizer, "Ġmovie", "Ġcat")))
    targets = torch.nn.functional.one_hot(torch.tensor([r["label"] for r in VARIED]), 2).float()
    batch = model.encode(VARIED)
    _, prior = AutoPrompt(lm_pool=5)._slot_grad(model, batch, targets, PrefixCache())
    want = []
    with torch.no_grad():  # whole rows: the logits one position before each trigger, averaged over the rows
        full = model.backbone(input_ids=_written_ids(model, batch), attention_mask=batch.attention_mask)
        full = full.logits.log_softmax(-1)
        for slot in range(2):
            at = batch.slot_positions[:, slot] - 1
            want.append(full[torch.arange(len(VARIED)), at].mean(0))
    torch.testing.assert_close(prior, torch.stack(want), rtol=1e-4, atol=1e-4)
    with pytest.raises(StrategyError, match="lm_pool=5 needs a causal LM head"):
        AutoPrompt(lm_pool=5).fit(PromptModel(tiny_mlm, wordpiece_tokenizer, model.template, VERBALIZER), VARIED)


def _written_ids(model, batch) -> torch.Tensor:
    """``batch.input_ids`` with the model's trigger tokens written in at the slots."""
    out = batch.input_ids.clone()
    out.scatter_(1, batch.slot_positions, model.addons["slot_embeddings"].token_ids.expand(out.size(0), -1))
    return out


def test_an_lm_pool_search_finds_the_planted_trigger_when_the_lm_ranks_it_high(causal, bpe_tokenizer):
    weight = causal.backbone.get_input_embeddings().weight
    good, bad, zebra = ids(bpe_tokenizer, "Ġgood", "Ġbad", "Ġzebra")
    with torch.no_grad():
        weight[zebra] = 4 * (weight[good] - weight[bad])
    causal.attach(TriggerTokens(ids(bpe_tokenizer, "Ġthe")))
    strategy = AutoPrompt(iterations=3, seed=0, lm_pool=len(bpe_tokenizer))  # the pool is the whole vocabulary
    strategy.fit(causal, ALL_GOOD)
    assert strategy.triggers_ == [zebra]
    tiny = AutoPrompt(iterations=2, seed=0, lm_pool=3, n_candidates=10)
    tiny.fit(causal, ALL_GOOD)
    assert all(h["n_scored"] <= 1 + 3 for h in tiny.history_)  # candidates only from the 3-token pool
