"""Turn rendered prompts into model inputs: layout and truncation.

Each prompt is laid out as one string around its mask and tokenized whole (BPE sees the
real context); character offsets map tokens back to the prompt's segments. Over-long
prompts lose tokens from the longest *input* span only, never from template text, the
mask or special tokens. Example text (input spans) is always read as plain text: a
``"[MASK]"`` or ``"<|im_start|>"`` in the data is spelled out, never turned into the
tokenizer's special token; special tokens written in the template text itself stay
special (see :mod:`promptkit.cloze_rows`, which also builds the rows).

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
from promptkit.cloze_rows import ROW_BUILDERS, Encoded, Laid, PromptTokenizer, Rows
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

    def tail_window(
        self, start: torch.Tensor, rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Where each row's real tokens from ``start`` on lie, packed to the left of a new tensor.

        ``rows`` picks rows (default: all) and ``start`` holds one position per picked row.
        Returns ``source`` ``[R, Ls]`` (the column each packed token is read from, clamped into
        range), ``inside`` ``[R, Ls]`` (a real token, not padding) and ``offsets`` ``[Ls]``.
        Running a row in two parts over a key/value cache reads its second part this way.
        """
        mask = self.attention_mask if rows is None else self.attention_mask[rows]
        n_left = mask.sum(1) - start
        offsets = torch.arange(int(n_left.max()), device=start.device)
        source = (start[:, None] + offsets[None]).clamp(max=self.input_ids.size(1) - 1)
        return source, offsets[None] < n_left[:, None], offsets

    def tails(self, start: torch.Tensor, pad_id: int) -> tuple[ClozeBatch, torch.Tensor, torch.Tensor]:
        """The batch from each row's ``start`` on, packed left, its positions shifted to match; with the
        ``source`` and ``offsets`` of :meth:`tail_window` (to gather embeddings and position ids alike)."""
        source, inside, offsets = self.tail_window(start)
        rows = torch.arange(self.input_ids.size(0), device=start.device)[:, None]
        tail = replace(
            self,
            input_ids=torch.where(inside, self.input_ids[rows, source], pad_id),
            attention_mask=inside.long(),
            positions=(self.positions - start[:, None]).clamp(min=0),
            slot_positions=self.slot_positions - start[:, None],
        )
        return tail, source, offsets


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
        self._tokens = PromptTokenizer(tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_id = pad if pad is not None else 0
        # Slot positions hold a special token (atomic under any tokenizer) until embeddings replace it.
        self.slot_token = tokenizer.unk_token or tokenizer.pad_token or tokenizer.eos_token

    # ----------------------------------------------------------------- layout
    def _segments(self, prompt: Prompt) -> list[Segment]:
        """The prompt's segments with chat wrapping and slot placeholder tokens in place."""
        segments = [replace(s, text=self.slot_token * s.size) if s.kind == "slot" else s for s in prompt.segments]
        for i in range(1, len(segments)):
            # Trigger tokens are whole words that carry their own leading space ("Ġthe", "▁the";
            # WordPiece needs none): the template's space before a trigger slot would otherwise
            # be a lone space token in front of the placeholders, which the written-in text
            # ("... the the {{ mask }}") never has.
            if segments[i].kind == "slot" and segments[i].slot == "trigger" and segments[i - 1].kind == "text":
                segments[i - 1] = replace(segments[i - 1], text=segments[i - 1].text.rstrip(" "))
        if prompt.chat:
            if self._chat is None:
                self._chat = chat_wrapper(self.tokenizer)
            before = segments[: prompt.mask_index]
            if before and before[-1].kind == "text":
                before[-1] = replace(before[-1], text=before[-1].text.rstrip())
            segments = [Segment("text", self._chat[0]), *before, Segment("text", self._chat[1]), Segment("mask")]
        return segments

    def _lay(self, segments: list[Segment], fill: str, prompt: Prompt) -> tuple[Laid, list[tuple[int, int, int]]]:
        """Join segments around the mask; also return ``(segment, start, end)`` of each input
        span in the string ``prefix + fill + suffix``."""
        m = next(i for i, s in enumerate(segments) if s.kind == "mask")
        prefix = "".join(s.text for s in segments[:m])
        suffix = "".join(s.text for s in segments[m + 1 :])
        space = prefix.endswith(" ")
        if space and self.head == "causal":
            prefix = prefix[:-1]
        spans, pos = [], 0
        # Slot and input spans, relative to the prefix (before the mask) or to the suffix (after it).
        found: dict[str, tuple[list, list]] = {"slot": ([], []), "input": ([], [])}
        for i, seg in enumerate(segments):
            if i == m:
                pos = len(prefix) + len(fill)
                continue
            end = min(pos + len(seg.text), len(prefix)) if i < m else pos + len(seg.text)
            if seg.kind == "input":
                spans.append((i, pos, end))
            if seg.kind in found and end > pos:
                shift = 0 if i < m else len(prefix) + len(fill)
                found[seg.kind][i > m].append((pos - shift, end - shift))
            pos += len(seg.text)
        (slots_before, slots_after), (inputs_before, inputs_after) = found["slot"], found["input"]
        laid = Laid(
            prefix,
            suffix,
            space,
            chat=prompt.chat,
            n_slots=prompt.slot_size,
            prefix_slots=tuple(slots_before),
            suffix_slots=tuple(slots_after),
            prefix_inputs=tuple(inputs_before),
            suffix_inputs=tuple(inputs_after),
        )
        return laid, spans

    # ------------------------------------------------------------- truncation
    def _fit(self, prompt: Prompt) -> tuple[Laid, Encoded]:
        """Lay out a prompt, cutting its longest input spans until it fits ``max_length``; return
        the layout and the encoding it was measured by (masks in the middle for MLM, nothing for causal)."""
        segments = self._segments(prompt)
        # Room for the label word: masks in the measured text (MLM), or tokens kept free (causal).
        n_masks = self.table.max_tokens() if self.head == "mlm" else 0
        reserve = 0 if self.head == "mlm" else self.table.max_tokens()
        fill = (self.tokenizer.mask_token or "") * n_masks
        for _ in range(8):
            laid, spans = self._lay(segments, fill, prompt)
            measured = self._tokens(laid.text(fill), laid.inputs(len(fill)), special=not prompt.chat)
            excess = len(measured.ids) + reserve - self.max_length
            if excess <= 0:
                return laid, measured
            segments = self._cut(segments, spans, measured.offsets, excess)
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
        return self.collate(self.encode_each(prompts))

    def encode_each(self, prompts: list[Prompt]) -> list[Rows]:
        """Encode each prompt on its own: its rows, to be batched by size and then collated (:meth:`collate`)."""
        build = ROW_BUILDERS[self.head]
        out = []
        for prompt in prompts:
            rows = Rows(len(self.table.words))
            rows.start_example()
            laid, measured = self._fit(prompt)
            build(self._tokens, self.table, laid, measured, 0, rows)
            out.append(rows)
        return out

    def collate(self, parts: list[Rows]) -> ClozeBatch:
        """One padded :class:`ClozeBatch` of encoded prompts (:meth:`encode_each`), in the order given."""
        rows = Rows(len(self.table.words))
        for part in parts:
            rows.extend(part)
        return ClozeBatch(**rows.pad(self.pad_id, len(parts)))
