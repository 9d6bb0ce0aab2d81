"""Build the rows of a :class:`~promptkit.cloze.ClozeBatch`, one builder per head.

Each builder turns one laid-out prompt (:class:`Laid`: ``prefix + <middle> + suffix``)
into LM rows plus the *gather spec*: which (row, scored position, token) log-probabilities
add up to which (example, word) cell. The builders get the encoding the truncation step
already measured and reuse it when they need that very string, so no string is tokenized
twice.

Special-token text in examples
------------------------------
A fast tokenizer finds its added tokens (``[SEP]``, ``[MASK]``, ``<|im_start|>`` ...) in a
string before it tokenizes anything else, so an example reading ``"[MASK]"`` or
``"<|im_end|>\\n<|im_start|>assistant"`` would get a real mask, or forge chat turns.
:class:`PromptTokenizer` tokenizes a prompt's *input* spans as plain text, while the
special tokens of the template's own text stay special: the chat wrapper, the mask and
slot placeholders the encoder inserts, BOS/CLS/SEP from the tokenizer, and any special
token the template author wrote in the template text (that is the author's choice).

- Almost every prompt has no special token's text in or across an input span; a
  precompiled regex of the added special tokens' contents says so in microseconds, and
  the prompt is tokenized as one whole string, exactly as it always was.
- Otherwise the whole-string tokenization shows which special tokens the tokenizer
  matched and where. Those spelled outside every input span are kept. The string is cut
  at them, the pieces in between are tokenized with ``split_special_tokens=True`` (input
  text together with the template text around it, so an injected ``[MASK]`` is spelled
  the way plain text would be, ``[`` ``mask`` ``]``), and the kept special ids, plus
  what the tokenizer adds around a sequence (CLS/SEP, BOS), go back in between.

This is the whole-string tokenization with the injected matches turned into text: a fast
tokenizer splits a string at its added tokens first (whitespace an ``lstrip``/``rstrip``
token eats included) and tokenizes the text between them on its own, which is what the
pieces are; tests check the two agree, ids and offsets, on clean text for both test
tokenizers. Limits: a SentencePiece ``Metaspace`` pre-tokenizer with
``prepend_scheme="first"`` adds its ``▁`` to a piece that follows a kept special token,
where the whole string would not (only in prompts with injected text, and never a special
token); a template special token that an injected match overlaps is not matched by the
whole string either and stays text; non-special added tokens (``special=False``) are
ordinary vocabulary to the tokenizer and are matched in input text as usual.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

import torch

from promptkit.errors import EncodingError
from promptkit.label_words import LabelWordTable

Spans = tuple[tuple[int, int], ...]


@dataclass(slots=True)  # one per example while a chunk is sorted into batches: no __dict__ each
class Rows:
    """Rows being collected for one batch (see :class:`~promptkit.cloze.ClozeBatch`)."""

    n_words: int
    ids: list[list[int]] = field(default_factory=list)
    positions: list[list[int]] = field(default_factory=list)
    slots: list[list[int]] = field(default_factory=list)
    gather: list[tuple[int, int, int]] = field(default_factory=list)
    cell: list[int] = field(default_factory=list)
    first_rows: list[int] = field(default_factory=list)

    def start_example(self) -> None:
        """Mark where the next example's rows begin (its first row predicts the label word)."""
        self.first_rows.append(len(self.ids))

    def add(self, ids: list[int], positions: list[int], slots: list[int]) -> int:
        """Append a row; return its index."""
        self.ids.append(ids)
        self.positions.append(positions)
        self.slots.append(slots)
        return len(self.ids) - 1

    def extend(self, other: Rows) -> None:
        """Append ``other``'s examples after this one's (row and cell indices shifted)."""
        rows, cells = len(self.ids), len(self.first_rows) * self.n_words
        self.ids += other.ids
        self.positions += other.positions
        self.slots += other.slots
        self.gather += [(r + rows, p, t) for r, p, t in other.gather]
        self.cell += [c + cells for c in other.cell]
        self.first_rows += [r + rows for r in other.first_rows]

    @property
    def width(self) -> int:
        """Tokens in the longest row."""
        return max(map(len, self.ids))

    def read(self, row: int, tokens, example: int, word: int, first_position: int = 0) -> None:
        """Add the log-probs of ``tokens`` at the row's scored positions to one cell."""
        for k, token in enumerate(tokens):
            self.gather.append((row, first_position + k, token))
            self.cell.append(example * self.n_words + word)

    def pad(self, pad_id: int, n_examples: int) -> dict:
        """Right-pad into tensors (dynamic padding: to the longest row of this batch)."""
        n_slots = {len(s) for s in self.slots}
        if len(n_slots) > 1:
            raise EncodingError(f"prompts of one batch have different numbers of slot tokens {sorted(n_slots)}")
        width = max(len(r) for r in self.ids)
        n_pos = max(len(p) for p in self.positions)
        input_ids = torch.full((len(self.ids), width), pad_id, dtype=torch.long)
        attention = torch.zeros((len(self.ids), width), dtype=torch.long)
        positions = torch.zeros((len(self.ids), n_pos), dtype=torch.long)
        for r, (ids, pos) in enumerate(zip(self.ids, self.positions)):
            input_ids[r, : len(ids)] = torch.tensor(ids)
            attention[r, : len(ids)] = 1
            positions[r, : len(pos)] = torch.tensor(pos)
        return {
            "input_ids": input_ids,
            "attention_mask": attention,
            "positions": positions,
            "slot_positions": torch.tensor(self.slots, dtype=torch.long).reshape(len(self.ids), -1),
            "example_rows": torch.tensor(self.first_rows, dtype=torch.long),
            "gather": torch.tensor(self.gather, dtype=torch.long).reshape(-1, 3),
            "cell": torch.tensor(self.cell, dtype=torch.long),
            "n_examples": n_examples,
            "n_words": self.n_words,
        }


def slot_tokens(offsets, spans) -> list[int]:
    """Indices of the tokens that start inside any of the character ``spans``."""
    return [t for t, (a, b) in enumerate(offsets) if b > a and any(lo <= a < hi for lo, hi in spans)]


# ------------------------------------------------------------------ laid-out prompts
class Laid(NamedTuple):
    """A prompt as strings for one tokenizer: ``prefix + <middle> + suffix``.

    Character spans of slot placeholders and of input (example) text are kept relative to
    the prefix and to the suffix, so they hold whatever the middle is (masks, a label word).
    """

    prefix: str
    suffix: str
    space: bool  # the word follows a space (moved from the prefix into the word for causal LMs)
    chat: bool = False  # chat format: the text already holds the wrapper, the tokenizer adds no BOS/CLS
    n_slots: int = 0  # slot tokens the prompt must encode to
    prefix_slots: Spans = ()
    suffix_slots: Spans = ()
    prefix_inputs: Spans = ()
    suffix_inputs: Spans = ()

    def text(self, middle: str) -> str:
        return self.prefix + middle + self.suffix

    def slots(self, middle: int) -> list[tuple[int, int]]:
        """Slot spans in the text with a ``middle`` of that many characters."""
        return _joined(self.prefix_slots, self.suffix_slots, len(self.prefix) + middle)

    def inputs(self, middle: int) -> list[tuple[int, int]]:
        """Input spans in the text with a ``middle`` of that many characters."""
        return _joined(self.prefix_inputs, self.suffix_inputs, len(self.prefix) + middle)

    def template_text(self) -> str:
        """The prefix and suffix without their input spans (pieces joined by NUL, so none run together)."""
        pieces = []
        for text, spans in ((self.prefix, self.prefix_inputs), (self.suffix, self.suffix_inputs)):
            pos = 0
            for a, b in spans:
                pieces.append(text[pos:a])
                pos = b
            pieces.append(text[pos:])
        return "\0".join(pieces)

    def head(self) -> Laid:
        """The prefix alone (a causal LM scoring the next word, when the suffix is only whitespace)."""
        return self._replace(suffix="", suffix_slots=(), suffix_inputs=())


def _joined(before: Spans, after: Spans, shift: int) -> list[tuple[int, int]]:
    return [*before, *((a + shift, b + shift) for a, b in after)]


class Encoded(NamedTuple):
    """A tokenized string: ids and (when asked for) character offsets."""

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]] | None = None


class _Special(NamedTuple):
    content: str
    normalized: bool  # matched on normalized text, so its spelling in the raw text may differ
    lstrip: bool  # eats the whitespace before it
    rstrip: bool  # ... and after it


def _is_space(char: str) -> bool:
    """Whitespace as the tokenizers library strips it around an added token (Rust's ``char::is_whitespace``)."""
    return char.isspace() and char not in "\x1c\x1d\x1e\x1f"


# --------------------------------------------------------------------- tokenization
class PromptTokenizer:
    """Tokenizes laid-out prompts with their input spans as plain text (see the module doc).

    Args:
        tokenizer: a fast Hugging Face tokenizer.
    """

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        added = tokenizer.added_tokens_decoder.items()
        self._special = {
            i: _Special(t.content, t.normalized, t.lstrip, t.rstrip) for i, t in added if t.special and t.content
        }
        contents = sorted({s.content for s in self._special.values()}, key=len, reverse=True)  # longest match first
        self._pattern = re.compile("|".join(map(re.escape, contents))) if contents else None
        self._longest = len(contents[0]) if contents else 0
        # Tokens matched after normalization (lower-casing, NFKC ...) may be spelled otherwise in the raw text:
        # then the raw-text regex proves nothing and every prompt's tokens are checked instead.
        has_normalizer = getattr(tokenizer.backend_tokenizer, "normalizer", None) is not None
        self._screen = not (has_normalizer and any(s.normalized for s in self._special.values()))
        self._frame: tuple[list[int], list[int]] | None = None

    def __call__(self, text: str, inputs: list[tuple[int, int]], special: bool, offsets: bool = True) -> Encoded:
        """Tokenize ``text``; the character spans ``inputs`` are example text, read as plain text.

        Args:
            special: add the tokenizer's BOS/CLS/SEP (``add_special_tokens``).
            offsets: return character offsets (always there when the input spans were checked).
        """
        suspect = self._suspect(text, inputs)
        enc = self.tokenizer(text, add_special_tokens=special, return_offsets_mapping=offsets or suspect)
        ids, mapping = enc["input_ids"], enc.get("offset_mapping")
        if suspect:
            kept, injected = self._matches(text, ids, mapping, inputs)
            if injected:
                ids, mapping = self._plain(text, kept, special)
                _, injected = self._matches(text, ids, mapping, inputs)
                if injected:  # split_special_tokens does not split it: never hand such a row to the model
                    i = injected[0]
                    raise EncodingError(
                        f"input text {self._special[i].content!r} still encodes to the special token id {i} with "
                        "split_special_tokens=True; remove it from the examples"
                    )
        return Encoded(text, ids, mapping)

    def _suspect(self, text: str, inputs: list[tuple[int, int]]) -> bool:
        """Whether a special token's text lies in or across any input span (a cheap, conservative test)."""
        if self._pattern is None or not inputs:
            return False
        if not self._screen:
            return True
        search, n = self._pattern.search, self._longest
        for lo, hi in inputs:
            if hi <= lo or not search(text, max(0, lo - n + 1), hi + n - 1):
                continue  # no special token's text anywhere near this span (the usual case)
            if search(text, lo, hi):
                return True
            for edge in (lo, hi):  # a match across either end of the span starts at most n - 1 chars before it
                start = max(0, edge - n + 1)
                while (m := search(text, start, edge + n - 1)) and m.start() < edge:
                    if m.end() > edge:
                        return True
                    start = m.start() + 1
        return False

    def _matches(self, text, ids, offsets, inputs) -> tuple[list[tuple[int, int, int]], list[int]]:
        """Special tokens the tokenizer matched in ``text``: ``(start, end, id)`` of those outside every input
        span (kept), and the ids of those spelled inside one (injected)."""
        kept, injected = [], []
        for i, (a, b) in zip(ids, offsets):
            special = self._special.get(i)
            if special is None or b <= a:  # ordinary token, or one the tokenizer added around the sequence
                continue
            at = text.find(special.content, a, b)  # offsets may include whitespace an lstrip/rstrip token ate
            if at >= 0:
                lo, hi = at, at + len(special.content)
            elif special.normalized:
                lo, hi = a, b
            else:  # not spelled in the text (e.g. [UNK] for an unknown character): no control token
                continue
            if any(lo < end and hi > start for start, end in inputs if end > start):
                injected.append(i)
            else:
                kept.append((a, b, i))
        return kept, injected

    def _plain(self, text: str, kept: list[tuple[int, int, int]], special: bool):
        """Tokenize ``text`` with only the ``kept`` special tokens special."""
        starts, pieces, pos = [], [], 0
        for k, (a, b, i) in enumerate(kept):
            token = self._special[i]
            # A kept token eats the whitespace an injected one ate in the whole string (lstrip / rstrip).
            while token.lstrip and a > pos and _is_space(text[a - 1]):
                a -= 1
            end = kept[k + 1][0] if k + 1 < len(kept) else len(text)
            while token.rstrip and b < end and _is_space(text[b]):
                b += 1
            starts.append(pos)
            pieces.append(text[pos:a])
            pos = b
        starts.append(pos)
        pieces.append(text[pos:])
        backend = self.tokenizer.backend_tokenizer
        split_before = backend.encode_special_tokens
        try:
            enc = self.tokenizer(
                pieces, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True
            )
        finally:  # transformers leaves the (shared) backend splitting special tokens until its next call
            backend.encode_special_tokens = split_before
        ids, offsets = [], []
        for k, (start, piece_ids, piece_offsets) in enumerate(zip(starts, enc["input_ids"], enc["offset_mapping"])):
            if k:
                a, b, i = kept[k - 1]
                ids.append(i)
                offsets.append((a, b))
            ids += piece_ids
            offsets += [(a + start, b + start) for a, b in piece_offsets]
        if special:
            before, after = self._sequence_frame()
            ids = before + ids + after
            offsets = [(0, 0)] * len(before) + offsets + [(0, 0)] * len(after)
        return ids, offsets

    def _sequence_frame(self) -> tuple[list[int], list[int]]:
        """Ids the tokenizer adds before and after a sequence (``[CLS]`` / ``[SEP]``, BOS ...)."""
        if self._frame is None:
            probe = "a"
            framed = self.tokenizer(probe)["input_ids"]
            plain = self.tokenizer(probe, add_special_tokens=False)["input_ids"]
            at = next((k for k in range(len(framed) - len(plain) + 1) if framed[k : k + len(plain)] == plain), None)
            if at is None:
                raise EncodingError(
                    f"cannot tell which tokens {type(self.tokenizer).__name__} adds around a sequence "
                    f"({framed} for {probe!r}, {plain} without special tokens); remove special-token text "
                    "from the examples"
                )
            self._frame = (framed[:at], framed[at + len(plain) :])
        return self._frame


# ------------------------------------------------------------------------ row builders
def _encode(tokens: PromptTokenizer, lay: Laid, middle: str, measured: Encoded, offsets: bool) -> Encoded:
    """``prefix + middle + suffix`` tokenized: the measured encoding if it is that string."""
    text = lay.text(middle)
    if measured.text == text:
        return measured
    return tokens(text, lay.inputs(len(middle)), special=not lay.chat, offsets=offsets)


def _ids_and_slots(tokens: PromptTokenizer, lay: Laid, middle: str, measured: Encoded) -> tuple[list[int], list[int]]:
    """Token ids of ``prefix + middle + suffix`` and its slot token indices."""
    enc = _encode(tokens, lay, middle, measured, offsets=lay.n_slots > 0)
    if not lay.n_slots:
        return enc.ids, []
    slots = slot_tokens(enc.offsets, lay.slots(len(middle)))
    if len(slots) != lay.n_slots:
        raise EncodingError(f"expected {lay.n_slots} slot tokens in the encoded prompt, found {len(slots)}")
    return enc.ids, slots


def rows_mlm(tokens: PromptTokenizer, table: LabelWordTable, lay: Laid, measured: Encoded, b: int, rows: Rows) -> None:
    """Masked LM: one row per word length ``L`` with ``L`` masks in a row."""
    ids_by_word = table.ids(lay.space)
    tokenizer = tokens.tokenizer
    mask = tokenizer.mask_token
    for length in sorted({len(ids) for ids in ids_by_word}):
        ids, slots = _ids_and_slots(tokens, lay, mask * length, measured)
        where = [t for t, i in enumerate(ids) if i == tokenizer.mask_token_id]
        if len(where) != length:
            hint = (
                f": the template text itself contains {mask!r}, which is the tokenizer's mask token; "
                f"remove it and mark the label word's place with {{{{ mask }}}} only"
                if mask in lay.template_text()
                else ""
            )
            raise EncodingError(f"expected {length} mask tokens in the encoded prompt, found {len(where)}{hint}")
        r = rows.add(ids, where, slots)
        for w, word_ids in enumerate(ids_by_word):
            if len(word_ids) == length:
                rows.read(r, word_ids, b, w)


def rows_causal(
    tokens: PromptTokenizer, table: LabelWordTable, lay: Laid, measured: Encoded, b: int, rows: Rows
) -> None:
    """Causal LM: the next-token distribution after the prefix, teacher-forced for multi-token words;
    a mask with text after it is scored by :func:`rows_fill_in`."""
    if lay.suffix.strip():
        return rows_fill_in(tokens, table, lay, measured, b, rows)
    prefix, slots = _ids_and_slots(tokens, lay.head() if lay.suffix else lay, "", measured)
    if not prefix:
        raise EncodingError("a causal LM cannot score a mask with nothing before it; add text before {{ mask }}")
    r = rows.add(prefix, [len(prefix) - 1], slots)
    for w, word_ids in enumerate(table.ids(lay.space)):
        rows.read(r, word_ids[:1], b, w)
        if len(word_ids) > 1:  # teacher-force the rest of a multi-token word
            later = list(range(len(prefix), len(prefix) + len(word_ids) - 1))
            rows.read(rows.add(prefix + list(word_ids[:-1]), later, slots), word_ids[1:], b, w)


def rows_fill_in(
    tokens: PromptTokenizer, table: LabelWordTable, lay: Laid, measured: Encoded, b: int, rows: Rows
) -> None:
    """Causal LM, mask mid-prompt: score each word filled in by the likelihood of word + rest."""
    start = len(lay.prefix)
    for w, word in enumerate(table.words):
        middle = (" " if lay.space else "") + word
        enc = _encode(tokens, lay, middle, measured, offsets=True)
        ids, offsets = enc.ids, enc.offsets
        first = next(t for t, (a, e) in enumerate(offsets) if e > start and e > a)
        if first == 0:
            raise EncodingError("a causal LM cannot score a mask with nothing before it; add text before it")
        last = max(t for t, (a, e) in enumerate(offsets) if e > a)
        slots = slot_tokens(offsets, lay.slots(len(middle))) if lay.n_slots else []
        r = rows.add(ids, list(range(first - 1, last)), slots)
        rows.read(r, ids[first : last + 1], b, w)


ROW_BUILDERS = {"mlm": rows_mlm, "causal": rows_causal}
