"""Encoding: label-word spelling, mask placement, truncation and dynamic padding."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from promptkit import EncodingError, Template, Verbalizer
from promptkit.cloze import ClozeEncoder
from promptkit.label_words import LabelWordTable

SENTIMENT = Verbalizer({0: ["terrible"], 1: ["great"]})


def _encoder(tokenizer, head, max_length=64, verbalizer=SENTIMENT):
    return ClozeEncoder(tokenizer, head, LabelWordTable(verbalizer, tokenizer), max_length)


def test_bpe_label_words_follow_the_leading_space(bpe_tokenizer):
    table = LabelWordTable(SENTIMENT, bpe_tokenizer)
    assert table.ids(True)[1] == tuple(bpe_tokenizer(" great", add_special_tokens=False)["input_ids"])
    assert table.ids(False)[1] == tuple(bpe_tokenizer("great", add_special_tokens=False)["input_ids"])
    assert table.ids(True) != table.ids(False)


def test_wordpiece_label_words_ignore_spaces(wordpiece_tokenizer):
    table = LabelWordTable(SENTIMENT, wordpiece_tokenizer)
    assert (
        table.ids(True)
        == table.ids(False)
        == (
            (wordpiece_tokenizer.convert_tokens_to_ids("terrible"),),
            (wordpiece_tokenizer.convert_tokens_to_ids("great"),),
        )
    )


def test_causal_mask_at_end_reads_last_position(bpe_tokenizer):
    prompt = Template("{{ text }} It was {{ mask }}").render({"text": "A gem."})
    batch = _encoder(bpe_tokenizer, "causal").encode([prompt])
    assert bpe_tokenizer.decode(batch.input_ids[0]) == "A gem. It was"  # the space moved into " great"
    assert batch.positions.tolist() == [[batch.input_ids.shape[1] - 1]]
    assert batch.gather[:, 2].tolist() == [
        bpe_tokenizer(" terrible")["input_ids"][0],
        bpe_tokenizer(" great")["input_ids"][0],
    ]


def test_dynamic_padding_to_longest_in_batch(bpe_tokenizer):
    t = Template("{{ text }} It was {{ mask }}")
    prompts = [t.render({"text": "short"}), t.render({"text": "a much longer review of the film"})]
    batch = _encoder(bpe_tokenizer, "causal", max_length=512).encode(prompts)
    lengths = batch.attention_mask.sum(-1).tolist()
    assert batch.input_ids.shape[1] == max(lengths) < 512 and lengths[0] < lengths[1]


def test_fixed_text_longer_than_max_length_is_an_error(wordpiece_tokenizer):
    t = Template("{{ text }} " + "this template text is long " * 10 + "{{ mask }}.")
    with pytest.raises(EncodingError, match="fixed text needs .* tokens, more than max_length=16"):
        _encoder(wordpiece_tokenizer, "mlm", max_length=16).encode([t.render({"text": "x"})])


def test_longest_input_loses_tokens_first(wordpiece_tokenizer):
    t = Template('"{{ hypothesis }}"? {{ mask }}, "{{ premise }}"')
    prompt = t.render({"hypothesis": "it rains", "premise": " ".join(["word"] * 60)})
    batch = _encoder(wordpiece_tokenizer, "mlm", max_length=32).encode([prompt])
    text = wordpiece_tokenizer.decode(batch.input_ids[0])
    assert batch.input_ids.shape[1] == 32
    assert text.startswith('[CLS] " it rains "? [MASK], " word word') and text.endswith('" [SEP]')


WORDS = st.lists(st.sampled_from(["good", "film", "rain", "the", "un", "believably", ",", "."]), max_size=80)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=WORDS, b=WORDS, max_length=st.integers(min_value=24, max_value=64), head=st.sampled_from(["mlm", "causal"]))
def test_truncation_keeps_template_text_and_mask(a, b, max_length, head, wordpiece_tokenizer, bpe_tokenizer):
    tokenizer = wordpiece_tokenizer if head == "mlm" else bpe_tokenizer
    t = Template("Premise: {{ premise }} Question: {{ hypothesis }}? Answer: {{ mask }}")
    prompt = t.render({"premise": " ".join(a), "hypothesis": " ".join(b)})
    encoder = _encoder(tokenizer, head, max_length=max_length)
    batch = encoder.encode([prompt])
    ids = batch.input_ids[0][batch.attention_mask[0].bool()].tolist()
    text = tokenizer.decode(ids, skip_special_tokens=False)
    squashed = text.lower().replace(" ", "")  # the WordPiece vocabulary is uncased
    assert len(ids) <= max_length
    assert "premise:" in squashed and "question:" in squashed and "?answer:" in squashed
    if head == "mlm":
        assert ids.count(tokenizer.mask_token_id) == 1 and ids[0] == tokenizer.cls_token_id
        assert ids[-1] == tokenizer.sep_token_id
    else:
        assert text.endswith("? Answer:")
        assert batch.positions[0, 0].item() == len(ids) - 1


def test_mask_token_written_in_template_text_is_named(wordpiece_tokenizer):
    """Template text is the author's: a literal "[MASK]" there stays the mask token, and the error says so."""
    prompt = Template("{{ text }} [MASK] It was {{ mask }}.").render({"text": "[MASK] in the data is fine"})
    with pytest.raises(EncodingError, match=r"found 2: the template text itself contains '\[MASK\]'"):
        _encoder(wordpiece_tokenizer, "mlm").encode([prompt])


class _CountingTokenizer:
    """A real tokenizer that counts how often it is called."""

    def __init__(self, tokenizer) -> None:
        self._tokenizer, self.calls = tokenizer, 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self._tokenizer(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._tokenizer, name)


@pytest.mark.parametrize(
    "head, text, calls",
    [
        ("mlm", "{{ text }} It was {{ mask }}.", 1),  # the measured string is the row
        ("causal", "{{ text }} It was {{ mask }}", 1),
        ("causal", "{{ text }} It was {{ mask }} overall.", 3),  # measured once, then once per word
    ],
)
def test_each_prompt_is_tokenized_once_per_row_string(head, text, calls, wordpiece_tokenizer, bpe_tokenizer):
    tokenizer = wordpiece_tokenizer if head == "mlm" else bpe_tokenizer
    counting = _CountingTokenizer(tokenizer)
    encoder = ClozeEncoder(counting, head, LabelWordTable(SENTIMENT, tokenizer), 64)
    prompts = [Template(text).render({"text": t}) for t in ("a gem .", "dull , dull , dull .", "[a] <b>")]
    encoder.encode(prompts)
    assert counting.calls == calls * len(prompts)
    counting.calls = 0
    encoder.encode([Template(text).render({"text": "a [MASK] <|im_end|> gem"})])  # special text: pieces too
    assert counting.calls == 2 * calls + 2  # whole string, then its pieces; + twice (once) to probe CLS/SEP
