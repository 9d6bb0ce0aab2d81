"""Turn rendered prompts into model inputs: the one place where text meets a tokenizer.

Each prompt is tokenized as one whole string (BPE sees the real context); character
offsets map tokens back to the prompt's segments. Over-long prompts lose tokens from
the longest *input* span only, never from template text, the mask or special tokens.

The result is a :class:`ClozeBatch`: padded rows for the LM plus a *gather spec* saying
which log-probabilities to add up into which (example, label word) cell. That one shape
covers every head:

- masked LM: one row per example and word length ``L``, with ``L`` masks in a row;
- causal LM, mask at the end: one row per example for the next-token distribution,
  plus teacher-forced rows for the later tokens of multi-token words;
- causal LM, mask elsewhere: one row per (example, word) with the word filled in,
  scored by the log-likelihood of everything from the word on.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from promptkit.backbones import HeadKind
from promptkit.cloze_rows import Rows, slot_tokens
from promptkit.errors import EncodingError, TemplateError
from promptkit.label_words import LabelWordTable
from promptkit.template import Prompt, Segment


@dataclass
class ClozeBatch:
    """Model inputs for a batch of prompts and what to read off the LM head.

    Attributes:
        input_ids: ``[R, T]`` token ids, right-padded (``R`` rows >= examples).
        attention_mask: ``[R, T]``.
        positions: ``[R, P]`` hidden positions that go through the LM head.
        slot_positions: ``[R, S]`` positions of the template's slot tokens (``S`` may be 0).
        example_rows: ``[B]`` each example's first row; its first scored position is where the
            label word's (first) token is predicted.
        gather: ``[S, 3]`` (row, index into ``positions``, token id) of each log-prob to read.
        cell: ``[S]`` flat (example * n_words + word) cell each log-prob is added to.
        n_examples: number of prompts ``B``.
        n_words: number of label words ``W``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    positions: torch.Tensor
    slot_positions: torch.Tensor
    example_rows: torch.Tensor
    gather: torch.Tensor
    cell: torch.Tensor
    n_examples: int
    n_words: int

    def to(self, device: torch.device | str) -> ClozeBatch:
        """Move every tensor to ``device``."""
        moved = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in vars(self).items()}
        return ClozeBatch(**moved)


@dataclass(frozen=True)
class _Laid:
    """A prompt as strings for one tokenizer: ``prefix + <word> + suffix``."""

    prefix: str
    suffix: str
    space: bool  # the word follows a space (moved from the prefix into the word for causal LMs)
    prefix_slots: tuple[tuple[int, int], ...] = ()  # character spans of slot placeholders in prefix
    suffix_slots: tuple[tuple[int, int], ...] = ()  # ... and in suffix


def chat_wrapper(tokenizer) -> tuple[str, str]:
    """Text the tokenizer's chat template puts before and after a user message.

    Raises:
        TemplateError: the tokenizer has no chat template.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise TemplateError(
            "a chat template (chat=True) needs a tokenizer with a chat template, and this one has none; "
            "use a plain cloze template for this backbone"
        )
    marker = "\x00"
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": marker}], tokenize=False, add_generation_prompt=True
    )
    before, after = text.split(marker)
    return before, after


class ClozeEncoder:
    """Encodes prompts for one tokenizer, head and verbalizer.

    Args:
        tokenizer: a *fast* Hugging Face tokenizer (offsets are needed).
        head: ``"mlm"`` or ``"causal"``.
        table: the verbalizer's label words and their token ids.
        max_length: most tokens per row, special tokens included.
    """

    def __init__(self, tokenizer, head: HeadKind, table: LabelWordTable, max_length: int) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise EncodingError(
                f"{type(tokenizer).__name__} is a slow tokenizer; promptkit needs a fast one "
                "(AutoTokenizer.from_pretrained(..., use_fast=True))"
            )
        if head == "mlm" and tokenizer.mask_token is None:
            raise EncodingError("a masked-LM head needs a tokenizer with a mask token; this one has none")
        self.tokenizer = tokenizer
        self.head = head
        self.table = table
        self.max_length = max_length
        self._chat: tuple[str, str] | None = None
        self._measured: tuple = (None, None, None)  # (text, chat, encoding) last measured by _fit
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0
        # Slot positions hold a special token (atomic under any tokenizer) until embeddings replace it.
        self.slot_token = tokenizer.unk_token or tokenizer.pad_token or tokenizer.eos_token

    # ----------------------------------------------------------------- layout
    def _segments(self, prompt: Prompt) -> list[Segment]:
        """The prompt's segments with chat wrapping and slot placeholder tokens in place."""
        segments = [replace(s, text=self.slot_token * s.size) if s.kind == "slot" else s for s in prompt.segments]
        if prompt.chat:
            if self._chat is None:
                self._chat = chat_wrapper(self.tokenizer)
            before = segments[: prompt.mask_index]
            if before and before[-1].kind == "text":
                before[-1] = replace(before[-1], text=before[-1].text.rstrip())
            segments = [Segment("text", self._chat[0]), *before, Segment("text", self._chat[1]), Segment("mask")]
        return segments

    def _lay(self, segments: list[Segment], fill: str = "") -> tuple[_Laid, list[tuple[int, int, int]]]:
        """Join segments around the mask; also return ``(segment, start, end)`` of each input
        span in the string ``prefix + fill + suffix``."""
        m = next(i for i, s in enumerate(segments) if s.kind == "mask")
        prefix = "".join(s.text for s in segments[:m])
        suffix = "".join(s.text for s in segments[m + 1 :])
        space = prefix.endswith(" ")
        if space and self.head == "causal":
            prefix = prefix[:-1]
        spans, slots, pos = [], [], 0
        for i, seg in enumerate(segments):
            if i == m:
                pos = len(prefix) + len(fill)
                continue
            end = min(pos + len(seg.text), len(prefix)) if i < m else pos + len(seg.text)
            if seg.kind == "input":
                spans.append((i, pos, end))
            elif seg.kind == "slot":
                slots.append((pos, end) if i < m else (pos - len(prefix) - len(fill), end - len(prefix) - len(fill)))
            pos += len(seg.text)
        n_before = sum(1 for s in segments[:m] if s.kind == "slot")
        return _Laid(prefix, suffix, space, tuple(slots[:n_before]), tuple(slots[n_before:])), spans

    # ------------------------------------------------------------- truncation
    def _fit(self, prompt: Prompt) -> _Laid:
        """Lay out a prompt, cutting its longest input spans until it fits ``max_length``."""
        segments = self._segments(prompt)
        # Room for the label word: masks in the measured text (MLM), or tokens kept free (causal).
        n_masks = self.table.max_tokens() if self.head == "mlm" else 0
        reserve = 0 if self.head == "mlm" else self.table.max_tokens()
        fill = (self.tokenizer.mask_token or "") * n_masks
        for _ in range(8):
            laid, spans = self._lay(segments, fill)
            text = laid.prefix + fill + laid.suffix
            enc = self.tokenizer(text, add_special_tokens=not prompt.chat, return_offsets_mapping=True)
            self._measured = (text, prompt.chat, enc)  # usually the very string a row is built from
            excess = len(enc["input_ids"]) + reserve - self.max_length
            if excess <= 0:
                return laid
            segments = self._cut(segments, spans, enc["offset_mapping"], excess)
        raise EncodingError(f"could not truncate the prompt to max_length={self.max_length} tokens")

    def _cut(self, segments, spans, offsets, excess) -> list[Segment]:
        """Drop ``excess`` tokens, one at a time from the currently longest input (as PET does)."""
        starts = {i: [a for a, b in offsets if lo <= a < hi and b > a] for i, lo, hi in spans}
        keep = {i: len(s) for i, s in starts.items()}
        if sum(keep.values()) < excess:
            fixed = len(offsets) - sum(keep.values())
            raise EncodingError(
                f"the template's fixed text needs {fixed} tokens, more than max_length={self.max_length} "
                "allows even with every input removed; raise max_length or shorten the template"
            )
        for _ in range(excess):
            longest = max(keep, key=lambda i: (keep[i], -i))
            keep[longest] -= 1
        out = list(segments)
        for i, lo, _ in spans:
            if keep[i] < len(starts[i]):
                cut = starts[i][keep[i]] - lo if keep[i] else 0
                out[i] = replace(segments[i], text=segments[i].text[:cut].rstrip())
        return out

    # --------------------------------------------------------------- encoding
    def encode(self, prompts: list[Prompt]) -> ClozeBatch:
        """Encode prompts into one :class:`ClozeBatch`."""
        rows = Rows(len(self.table.words))
        build = self._rows_mlm if self.head == "mlm" else self._rows_causal
        for b, prompt in enumerate(prompts):
            rows.start_example()
            build(b, self._fit(prompt), prompt.chat, prompt.slot_size, rows)
        return ClozeBatch(**rows.pad(self.pad_id, len(prompts)))

    def _tokenize(self, text: str, chat: bool, lay: _Laid, middle: int, n_slots: int) -> tuple[list[int], list[int]]:
        """Token ids of ``text`` (= prefix + ``middle`` chars + suffix) and its slot token indices."""
        if self._measured[:2] == (text, chat):
            enc = self._measured[2]  # tokenized while fitting the prompt; do not tokenize it twice
        else:
            enc = self.tokenizer(text, add_special_tokens=not chat, return_offsets_mapping=n_slots > 0)
        if not n_slots:
            return enc["input_ids"], []
        shift = len(lay.prefix) + middle
        spans = [*lay.prefix_slots, *((a + shift, b + shift) for a, b in lay.suffix_slots)]
        slots = slot_tokens(enc["offset_mapping"], spans)
        if len(slots) != n_slots:
            raise EncodingError(f"expected {n_slots} slot tokens in the encoded prompt, found {len(slots)}")
        return enc["input_ids"], slots

    def _rows_mlm(self, b: int, lay: _Laid, chat: bool, n_slots: int, rows: Rows) -> None:
        ids_by_word = self.table.ids(lay.space)
        mask = self.tokenizer.mask_token
        for length in sorted({len(ids) for ids in ids_by_word}):
            text = lay.prefix + mask * length + lay.suffix
            ids, slots = self._tokenize(text, chat, lay, len(mask) * length, n_slots)
            where = [t for t, i in enumerate(ids) if i == self.tokenizer.mask_token_id]
            if len(where) != length:
                raise EncodingError(f"expected {length} mask tokens in the encoded prompt, found {len(where)}")
            r = rows.add(ids, where, slots)
            for w, word_ids in enumerate(ids_by_word):
                if len(word_ids) == length:
                    rows.read(r, word_ids, b, w)

    def _rows_causal(self, b: int, lay: _Laid, chat: bool, n_slots: int, rows: Rows) -> None:
        if lay.suffix.strip():
            return self._rows_fill_in(b, lay, chat, n_slots, rows)
        prefix, slots = self._tokenize(lay.prefix, chat, lay, 0, n_slots)
        if not prefix:
            raise EncodingError("a causal LM cannot score a mask with nothing before it; add text before {{ mask }}")
        r = rows.add(prefix, [len(prefix) - 1], slots)
        for w, word_ids in enumerate(self.table.ids(lay.space)):
            rows.read(r, word_ids[:1], b, w)
            if len(word_ids) > 1:  # teacher-force the rest of a multi-token word
                later = list(range(len(prefix), len(prefix) + len(word_ids) - 1))
                rows.read(rows.add(prefix + list(word_ids[:-1]), later, slots), word_ids[1:], b, w)

    def _rows_fill_in(self, b: int, lay: _Laid, chat: bool, n_slots: int, rows: Rows) -> None:
        """Mask mid-prompt: score each word filled in by the likelihood of word + rest."""
        start = len(lay.prefix)
        for w, word in enumerate(self.table.words):
            middle = (" " if lay.space else "") + word
            text = lay.prefix + middle + lay.suffix
            enc = self.tokenizer(text, add_special_tokens=not chat, return_offsets_mapping=True)
            ids, offsets = enc["input_ids"], enc["offset_mapping"]
            first = next(t for t, (a, e) in enumerate(offsets) if e > start and e > a)
            if first == 0:
                raise EncodingError("a causal LM cannot score a mask with nothing before it; add text before it")
            last = max(t for t, (a, e) in enumerate(offsets) if e > a)
            spans = [
                *lay.prefix_slots,
                *((a + start + len(middle), e + start + len(middle)) for a, e in lay.suffix_slots),
            ]
            r = rows.add(ids, list(range(first - 1, last)), slot_tokens(offsets, spans) if n_slots else [])
            rows.read(r, ids[first : last + 1], b, w)
