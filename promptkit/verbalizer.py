"""Verbalizers: ordered labels, each with the words that stand for it at the mask.

Like templates, verbalizers are plain data. The order of the labels defines the class
indices of every score matrix promptkit returns. Labels keep the type the data has
(``0``/``1``, ``"entailment"``, ``True``); words are strings.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

from promptkit.errors import VerbalizerError, did_you_mean

Label = Union[int, str, bool]


def _check_words(label: Label, words: object) -> tuple[str, ...]:
    if isinstance(words, str):
        words = (words,)
    if not isinstance(words, Sequence) or len(words) == 0:
        raise VerbalizerError(f"label {label!r} has no label words ({words!r}); give it a list like ['great']")
    checked = []
    for word in words:
        if not isinstance(word, str):
            raise VerbalizerError(
                f"label {label!r}: label word {word!r} is a {type(word).__name__}, not a str. "
                "In YAML quote every word ('Yes', 'No', 'on' are read as booleans)."
            )
        if not word.strip() or word != word.strip():
            raise VerbalizerError(
                f"label {label!r}: label word {word!r} is empty or has surrounding spaces; "
                "write the bare word (promptkit adds the leading space BPE tokenizers need)"
            )
        if word in checked:
            raise VerbalizerError(f"label {label!r} lists the word {word!r} twice; list each word once")
        checked.append(word)
    return tuple(checked)


@dataclass(frozen=True)
class Verbalizer:
    """Maps each label to one or more label words.

    Args:
        label_words: ``{label: [word, ...]}`` in class order; a single word may be
            given as a plain string.
        name: a short identifier (catalog verbalizers are named ``task/name``).

    Example:
        >>> v = Verbalizer({0: ["terrible", "bad"], 1: ["great", "good"]})
        >>> v.labels, v.index(1)
        ((0, 1), 1)
    """

    label_words: Mapping[Label, Sequence[str]]
    name: str = ""
    _items: tuple[tuple[Label, tuple[str, ...]], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.label_words, Mapping) or not self.label_words:
            raise VerbalizerError(
                f"verbalizer {self.name!r} has no labels ({self.label_words!r}); "
                "pass a dict like {0: ['terrible'], 1: ['great']}"
            )
        items = []
        owner: dict[str, Label] = {}
        for label, words in self.label_words.items():
            if not isinstance(label, (int, str)):
                raise VerbalizerError(f"label {label!r} is a {type(label).__name__}; labels must be int, str or bool")
            checked = _check_words(label, words)
            for word in checked:
                if word in owner and owner[word] != label:
                    raise VerbalizerError(
                        f"verbalizer {self.name!r}: word {word!r} is listed under labels {owner[word]!r} "
                        f"and {label!r}; each word may stand for one label only"
                    )
                owner[word] = label
            items.append((label, checked))
        object.__setattr__(self, "_items", tuple(items))
        object.__setattr__(self, "label_words", dict(items))

    @property
    def labels(self) -> tuple[Label, ...]:
        """Labels in class order."""
        return tuple(label for label, _ in self._items)

    @property
    def words(self) -> tuple[tuple[str, ...], ...]:
        """Label words, one tuple per label, in class order."""
        return tuple(words for _, words in self._items)

    def index(self, label: Label) -> int:
        """Class index of ``label``.

        Raises:
            VerbalizerError: the label is unknown; the message lists the known labels and
                points out an int/str mix-up (``"1"`` vs ``1``).
        """
        for i, (known, _) in enumerate(self._items):
            if known == label and type(known) is type(label):
                return i
        hint = did_you_mean(label, self.labels)
        same_text = [known for known in self.labels if str(known) == str(label)]
        if same_text:
            hint = (
                f" The verbalizer has {same_text[0]!r} ({type(same_text[0]).__name__}) but the example "
                f"label is a {type(label).__name__}; convert the labels."
            )
        raise VerbalizerError(f"label {label!r} is not one of the verbalizer's labels {list(self.labels)}.{hint}")

    def __repr__(self) -> str:
        name = f"name={self.name!r}, " if self.name else ""
        return f"Verbalizer({name}{dict(self._items)!r})"
