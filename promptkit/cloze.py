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
from typing import Literal

import torch

from promptkit.errors import EncodingError, TemplateError
from promptkit.label_words import LabelWordTable
from promptkit.template import Prompt, Segment

HeadKind = Literal["mlm", "causal"]


@dataclass
class ClozeBatch:
    """Model inputs for a batch of prompts and what to read off the LM head.

    Attributes:
        input_ids: ``[R, T]`` token ids, right-padded (``R`` rows >= examples).
        attention_mask: ``[R, T]``.
        positions: ``[R, P]`` hidden positions that go through the LM head.
        gather: ``[S, 3]`` (row, index into ``positions``, token id) of each log-prob to read.
        cell: ``[S]`` flat (example * n_words + word) cell each log-prob is added to.
        n_examples: number of prompts ``B``.
        n_words: number of label words ``W``.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    positions: torch.Tensor
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
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0

    # ----------------------------------------------------------------- layout
    def _segments(self, prompt: Prompt) -> list[Segment]:
        segments = list(prompt.segments)
        if prompt.chat:
            if self._chat is None:
                self._chat = chat_wrapper(self.tokenizer)
            before = list(prompt.before_mask)
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
        spans, pos = [], 0
        for i, seg in enumerate(segments):
            if i == m:
                pos = len(prefix) + len(fill)
                continue
            end = min(pos + len(seg.text), len(prefix)) if i < m else pos + len(seg.text)
            if seg.kind == "input":
                spans.append((i, pos, end))
            pos += len(seg.text)
        return _Laid(prefix, suffix, space), spans

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
        laid = [(self._fit(p), p.chat) for p in prompts]
        rows: list[list[int]] = []
        positions: list[list[int]] = []
        gather: list[tuple[int, int, int]] = []
        cell: list[int] = []
        build = self._rows_mlm if self.head == "mlm" else self._rows_causal
        for b, (lay, chat) in enumerate(laid):
            build(b, lay, chat, rows, positions, gather, cell)
        return self._pad(rows, positions, gather, cell, len(prompts))

    def _tokenize(self, text: str, chat: bool, offsets: bool = False):
        return self.tokenizer(text, add_special_tokens=not chat, return_offsets_mapping=offsets)

    def _rows_mlm(self, b, lay, chat, rows, positions, gather, cell) -> None:
        ids_by_word = self.table.ids(lay.space)
        mask_id = self.tokenizer.mask_token_id
        for length in sorted({len(ids) for ids in ids_by_word}):
            ids = self._tokenize(lay.prefix + self.tokenizer.mask_token * length + lay.suffix, chat)["input_ids"]
            where = [t for t, i in enumerate(ids) if i == mask_id]
            if len(where) != length:
                raise EncodingError(f"expected {length} mask tokens in the encoded prompt, found {len(where)}")
            r = len(rows)
            rows.append(ids)
            positions.append(where)
            for w, word_ids in enumerate(ids_by_word):
                if len(word_ids) == length:
                    for k, tok in enumerate(word_ids):
                        gather.append((r, k, tok))
                        cell.append(b * len(ids_by_word) + w)

    def _rows_causal(self, b, lay, chat, rows, positions, gather, cell) -> None:
        ids_by_word = self.table.ids(lay.space)
        n = len(ids_by_word)
        if lay.suffix.strip():
            return self._rows_fill_in(b, lay, chat, rows, positions, gather, cell)
        prefix = self._tokenize(lay.prefix, chat)["input_ids"]
        if not prefix:
            raise EncodingError("a causal LM cannot score a mask with nothing before it; add text before {{ mask }}")
        r = len(rows)
        rows.append(prefix)
        positions.append([len(prefix) - 1])
        for w, word_ids in enumerate(ids_by_word):
            gather.append((r, 0, word_ids[0]))
            cell.append(b * n + w)
            if len(word_ids) > 1:  # teacher-force the rest of a multi-token word
                r2 = len(rows)
                rows.append(prefix + list(word_ids[:-1]))
                positions.append(list(range(len(prefix), len(prefix) + len(word_ids) - 1)))
                for k, tok in enumerate(word_ids[1:]):
                    gather.append((r2, k, tok))
                    cell.append(b * n + w)

    def _rows_fill_in(self, b, lay, chat, rows, positions, gather, cell) -> None:
        n = len(self.table.words)
        for w, word in enumerate(self.table.words):
            start = len(lay.prefix)
            text = lay.prefix + (" " if lay.space else "") + word + lay.suffix
            enc = self._tokenize(text, chat, offsets=True)
            ids, offsets = enc["input_ids"], enc["offset_mapping"]
            first = next(t for t, (a, e) in enumerate(offsets) if e > start and e > a)
            if first == 0:
                raise EncodingError("a causal LM cannot score a mask with nothing before it; add text before it")
            last = max(t for t, (a, e) in enumerate(offsets) if e > a)
            r = len(rows)
            rows.append(ids)
            positions.append(list(range(first - 1, last)))
            for k, tok in enumerate(ids[first : last + 1]):
                gather.append((r, k, tok))
                cell.append(b * n + w)

    def _pad(self, rows, positions, gather, cell, n_examples) -> ClozeBatch:
        width = max(len(r) for r in rows)
        n_pos = max(len(p) for p in positions)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), width), dtype=torch.long)
        pos = torch.zeros((len(rows), n_pos), dtype=torch.long)
        for r, (ids, p) in enumerate(zip(rows, positions)):
            input_ids[r, : len(ids)] = torch.tensor(ids)
            attention[r, : len(ids)] = 1
            pos[r, : len(p)] = torch.tensor(p)
        return ClozeBatch(
            input_ids=input_ids,
            attention_mask=attention,
            positions=pos,
            gather=torch.tensor(gather, dtype=torch.long).reshape(-1, 3),
            cell=torch.tensor(cell, dtype=torch.long),
            n_examples=n_examples,
            n_words=len(self.table.words),
        )
