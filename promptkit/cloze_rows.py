"""Build the rows of a :class:`~promptkit.cloze.ClozeBatch`, one builder per head.

Each builder turns one laid-out prompt into LM rows plus the *gather spec*: which
(row, scored position, token) log-probabilities add up to which (example, word) cell.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from promptkit.errors import EncodingError


@dataclass
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
