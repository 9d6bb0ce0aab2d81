"""The rendered prompt: :class:`Segment` and :class:`Prompt`, what a template turns an example into.

These are plain frozen data classes with no jinja2 in them, in a module of their own so that
the template sandbox (which records segments while it renders) and :class:`~promptkit.template.Template`
(which assembles them into a :class:`Prompt`) can both use them without importing each other.
Import them from :mod:`promptkit.template` (or :mod:`promptkit`), as before.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from promptkit.errors import TemplateError

SegmentKind = Literal["text", "input", "mask", "slot"]


@dataclass(frozen=True)
class Segment:
    """One piece of a rendered prompt: template ``text``, an example ``input``, the ``mask``,
    or a ``slot`` of ``size`` learned positions named ``slot`` (``"soft"`` or ``"trigger"``)."""

    kind: SegmentKind
    text: str = ""
    slot: str = ""
    size: int = 0


@dataclass(frozen=True)
class Prompt:
    """A rendered example: ordered segments with exactly one mask.

    Attributes:
        segments: text / input / mask pieces in reading order.
        chat: whether the prompt asks for the tokenizer's chat format (the part before
            the mask is the user's message; the mask is the assistant's first word).

    Raises:
        TemplateError: a segment holds a NUL character (reserved for promptkit's markers).
    """

    segments: tuple[Segment, ...]
    chat: bool = False

    def __post_init__(self) -> None:
        for segment in self.segments:
            if "\x00" in segment.text:
                raise TemplateError(
                    f"a prompt's {segment.kind} segment {segment.text[:60]!r} holds a NUL character (\\x00), "
                    "which promptkit reserves for its internal markers; remove NUL characters from the data"
                )

    @property
    def mask_index(self) -> int:
        """Position of the mask segment in :attr:`segments`."""
        return next(i for i, s in enumerate(self.segments) if s.kind == "mask")

    @property
    def before_mask(self) -> tuple[Segment, ...]:
        """Segments before the mask."""
        return self.segments[: self.mask_index]

    @property
    def after_mask(self) -> tuple[Segment, ...]:
        """Segments after the mask."""
        return self.segments[self.mask_index + 1 :]

    @property
    def slot_size(self) -> int:
        """Total number of slot positions (soft-prompt or trigger tokens)."""
        return sum(s.size for s in self.segments)

    def to_text(self, mask_text: str = "[MASK]") -> str:
        """Join the segments, showing the mask as ``mask_text`` and slots as ``<soft*n>``."""
        shown = {"mask": lambda s: mask_text, "slot": lambda s: f"<{s.slot}*{s.size}>"}
        return "".join(shown.get(s.kind, lambda s: s.text)(s) for s in self.segments)
