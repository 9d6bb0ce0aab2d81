"""Token ids of label words, computed once per (verbalizer, tokenizer).

BPE tokenizers spell a word differently after a space (``" great"`` -> ``Ġgreat``) than
at the start of a line (``"great"``). Rather than guessing each tokenizer's convention,
a word is tokenized *in context*, after a short fixed text ending the way the prompt
does, and the tokens that start at or after the word are kept (offsets tell which).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from promptkit.errors import VerbalizerError
from promptkit.verbalizer import Verbalizer

# Contexts that end the way a prompt can end just before the mask.
_CONTEXT = {True: "It was ", False: "It was\n"}


def tokenize_in_context(tokenizer, word: str, space: bool) -> tuple[int, ...]:
    """Token ids of ``word`` as it is spelled after a space (``space``) or a newline."""
    context = _CONTEXT[space]
    encoded = tokenizer(context + word, add_special_tokens=False, return_offsets_mapping=True)
    start = len(context) - (1 if space else 0)  # a BPE token may carry the space before the word
    ids = tuple(i for i, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"]) if a >= start and b > a)
    return ids


@dataclass
class LabelWordTable:
    """Label words of a verbalizer flattened into one list, with their token ids.

    Attributes:
        words: every label word, label by label in class order.
        word_label: class index of each word.
    """

    verbalizer: Verbalizer
    tokenizer: object
    words: tuple[str, ...] = field(init=False)
    word_label: tuple[int, ...] = field(init=False)
    _ids: dict[bool, tuple[tuple[int, ...], ...]] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.words = tuple(w for words in self.verbalizer.words for w in words)
        self.word_label = tuple(i for i, words in enumerate(self.verbalizer.words) for _ in words)

    def ids(self, space: bool) -> tuple[tuple[int, ...], ...]:
        """Token ids of every word, spelled after a space or not; validated once, then cached."""
        if space not in self._ids:
            self._ids[space] = tuple(self._checked(word, space) for word in self.words)
        return self._ids[space]

    def max_tokens(self) -> int:
        """Most tokens any label word needs, in either spelling."""
        return max(len(ids) for space in (True, False) for ids in self.ids(space))

    def _checked(self, word: str, space: bool) -> tuple[int, ...]:
        ids = tokenize_in_context(self.tokenizer, word, space)
        unk = getattr(self.tokenizer, "unk_token_id", None)
        tokens = self.tokenizer.convert_ids_to_tokens(list(ids))
        if not ids or (unk is not None and unk in ids):
            raise VerbalizerError(
                f"label word {word!r} cannot be represented by this tokenizer (tokens {tokens}); choose another word"
            )
        return ids
