"""Verbalizers: ordered labels, each with the words that stand for it at the mask.

Like templates, verbalizers are plain data. The order of the labels defines the class
indices of every score matrix promptkit returns. Labels keep the type the data has
(``0``/``1``, ``"entailment"``, ``True``); words are strings.

:meth:`Verbalizer.to_dict` keeps the labels' own types and order. YAML keeps both when
written with ``yaml.safe_dump(data, sort_keys=False)`` (the default ``sort_keys=True``
would reorder the classes). JSON does not keep label types: its object keys are always
strings, so ``{0: ..., 1: ...}`` comes back as ``{"0": ..., "1": ...}``, and
:meth:`Verbalizer.from_dict` builds what it is given, a verbalizer with the *str* labels
``"0"``/``"1"``. That verbalizer is not equal to the original, and looking up an int label
in it raises a :class:`VerbalizerError` that points out the int/str mix-up; store
verbalizers as YAML, or convert the keys back, to keep int or bool labels.

Full-width and half-width forms: a label word with a full-width letter or digit
(``Ｙｅｓ``, ``１``) or a half-width katakana / hangul letter (``ｶ``) is refused with its
standard spelling (``Yes``, ``1``, ``カ``), never silently normalised: tokenizers spell the
two forms with different tokens, so ``Ｙｅｓ`` would score a word the model hardly ever
writes, and normalising would make the words in a saved verbalizer differ from the ones
written. Punctuation of either width is allowed (Chinese writes ``！？，``), and Hanzi have
no width variants (``好`` is just ``好``).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

from promptkit.errors import VerbalizerError, check_keys, did_you_mean

Label = Union[int, str, bool]
_FIELDS = ("name", "label_words")


def _width_variants(word: str) -> list[str]:
    """Letters and digits of ``word`` in a full-width or half-width compatibility form."""
    return [
        char
        for char in word
        if unicodedata.decomposition(char).startswith(("<wide>", "<narrow>")) and unicodedata.category(char)[0] in "LN"
    ]


def _check_words(label: Label, words: object) -> tuple[str, ...]:
    if isinstance(words, str):
        words = (words,)
    if not isinstance(words, Sequence):
        raise VerbalizerError(
            f"label {label!r}: label words must be a list of str, got {words!r} ({type(words).__name__}); "
            "give it a list like ['great']"
        )
    if len(words) == 0:
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
        variants = _width_variants(word)
        if variants:
            standard = "".join(unicodedata.normalize("NFKC", c) if c in variants else c for c in word)
            raise VerbalizerError(
                f"label {label!r}: label word {word!r} has the full-width or half-width forms {variants}; "
                f"write {standard!r} (tokenizers spell the two widths with different tokens)"
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
        if not isinstance(self.name, str):
            raise VerbalizerError(
                f"verbalizer name must be a str, got {self.name!r} ({type(self.name).__name__}); "
                "pass e.g. name='sst2/great_terrible'"
            )
        if not isinstance(self.label_words, Mapping) or not self.label_words:
            raise VerbalizerError(
                f"verbalizer {self.name!r} has no labels ({self.label_words!r}); "
                "pass a dict like {0: ['terrible'], 1: ['great']}"
            )
        items = []
        owner: dict[str, Label] = {}
        for label, words in self.label_words.items():
            if not isinstance(label, (int, str)):
                raise VerbalizerError(
                    f"verbalizer {self.name!r}: label {label!r} is a {type(label).__name__}; labels must be int, "
                    "str or bool (the type the data's labels have)"
                )
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

    def to_dict(self) -> dict[str, Any]:
        """Plain data ``{"name": ..., "label_words": {label: [word, ...]}}``, labels in class
        order and of their own type; :meth:`from_dict` inverts it. See the module docstring
        for what YAML and JSON keep (dump YAML with ``sort_keys=False``).

        Example:
            >>> Verbalizer({0: ["bad"], 1: ["good"]}, name="v").to_dict()
            {'name': 'v', 'label_words': {0: ['bad'], 1: ['good']}}
        """
        return {"name": self.name, "label_words": {label: list(words) for label, words in self._items}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Verbalizer:
        """Build a verbalizer from :meth:`to_dict` data (``name`` is optional).

        Labels are taken as they are: string keys from JSON (``"0"``) stay strings.

        Raises:
            VerbalizerError: ``data`` is not a mapping, lacks ``label_words``, or has an unknown
                key (the message names the closest valid one).
        """
        check_keys("verbalizer data", data, _FIELDS, "label_words", VerbalizerError)
        return cls(**data)

    def __repr__(self) -> str:
        name = f"name={self.name!r}, " if self.name else ""
        return f"Verbalizer({name}{dict(self._items)!r})"
