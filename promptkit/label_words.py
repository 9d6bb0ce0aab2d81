"""Token ids of label words, computed once per (verbalizer, tokenizer).

BPE tokenizers spell a word differently after a space (``" great"`` -> ``Ġgreat``) than
at the start of a line (``"great"``). Rather than guessing each tokenizer's convention,
a word is tokenized *in context*, after a short fixed text ending the way the prompt
does, and the tokens that start at or after the word are kept (offsets tell which).

Label words are checked against the tokenizer when their ids are first needed. Two words
of *different* labels that become the same tokens (``"good"``/``"Good"`` under a
lower-casing tokenizer) would make the model's scores for those labels identical, so that
is a :class:`~promptkit.errors.VerbalizerError`. Two words of the *same* label that become
the same tokens are kept (the ids and class order stay as the verbalizer gives them), but
that word then counts twice in the label's score, so promptkit warns (``UserWarning``).

Unknown tokens: a word the tokenizer spells *partly* with its unknown token (a WordPiece
vocabulary without some Hanzi: ``"x体"`` -> ``x [UNK]``) is kept and scored as spelled, with
a ``UserWarning`` naming the word, since the unknown part carries no meaning; a word that
is *nothing but* unknown tokens is a :class:`~promptkit.errors.VerbalizerError` (every such
word would be the same token).

Words without spaces (Chinese, Japanese): the prompt then has no space before the mask,
and the word is spelled as it is at the start of a pre-token (after a newline here), so
``"体育"`` gets the same tokens after ``"类别："`` as on its own; no space is ever added.
"""

from __future__ import annotations

import warnings
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
    _warned: set[tuple[str, str]] = field(init=False, default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.words = tuple(w for words in self.verbalizer.words for w in words)
        self.word_label = tuple(i for i, words in enumerate(self.verbalizer.words) for _ in words)

    def ids(self, space: bool) -> tuple[tuple[int, ...], ...]:
        """Token ids of every word, spelled after a space or not; validated once, then cached.

        Raises:
            VerbalizerError: a word cannot be tokenized, or two words of different labels
                are the same tokens.
        """
        if space not in self._ids:
            ids = tuple(self._checked(word, space) for word in self.words)
            self._check_collisions(ids, space)
            self._ids[space] = ids
        return self._ids[space]

    def max_tokens(self) -> int:
        """Most tokens any label word needs, in either spelling."""
        return max(len(ids) for space in (True, False) for ids in self.ids(space))

    def _checked(self, word: str, space: bool) -> tuple[int, ...]:
        ids = tokenize_in_context(self.tokenizer, word, space)
        unk = getattr(self.tokenizer, "unk_token_id", None)
        tokens = self.tokenizer.convert_ids_to_tokens(list(ids))
        if not ids or (unk is not None and all(i == unk for i in ids)):
            raise VerbalizerError(
                f"label word {word!r} cannot be represented by this tokenizer (tokens {tokens}); choose another word"
            )
        if unk is not None and unk in ids and (word, "unk") not in self._warned:
            self._warned.add((word, "unk"))
            warnings.warn(
                f"verbalizer {self.verbalizer.name!r}: label word {word!r} is partly unknown to this tokenizer "
                f"(tokens {tokens}); the unknown part carries no meaning in its score. Choose a word the "
                "tokenizer can spell, or a backbone whose vocabulary has these characters",
                UserWarning,
                stacklevel=4,
            )
        return ids

    def _check_collisions(self, ids: tuple[tuple[int, ...], ...], space: bool) -> None:
        """Refuse words of different labels with the same tokens; warn about same-label twins."""
        labels = self.verbalizer.labels
        spelled = "after a space" if space else "at the start of a line"
        first_with: dict[tuple[int, ...], int] = {}
        for w, word_ids in enumerate(ids):
            first = first_with.setdefault(word_ids, w)
            if first == w:
                continue
            a, b = self.words[first], self.words[w]
            label_a, label_b = self.word_label[first], self.word_label[w]
            tokens = self.tokenizer.convert_ids_to_tokens(list(word_ids))
            if label_a == label_b:
                if (a, b) in self._warned:
                    continue
                self._warned.add((a, b))
                warnings.warn(
                    f"verbalizer {self.verbalizer.name!r}: label {labels[label_a]!r} lists {a!r} and {b!r}, which "
                    f"this tokenizer turns into the same tokens {tokens} (spelled {spelled}), so that word counts "
                    "twice in the label's score; drop one of them",
                    UserWarning,
                    stacklevel=3,
                )
                continue
            token_sets = [{ids[i] for i, lab in enumerate(self.word_label) if lab == x} for x in (label_a, label_b)]
            tie = (
                "; the two labels have exactly the same tokens, so they always tie"
                if token_sets[0] == token_sets[1]
                else ""
            )
            raise VerbalizerError(
                f"verbalizer {self.verbalizer.name!r}: label word {a!r} (label {labels[label_a]!r}) and label word "
                f"{b!r} (label {labels[label_b]!r}) are the same tokens {tokens} for this tokenizer (spelled "
                f"{spelled}), so the model cannot tell these labels apart{tie}. The tokenizer probably lower-cases "
                "or normalizes its input; choose label words that stay distinct under it"
            )
