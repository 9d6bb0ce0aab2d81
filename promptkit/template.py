"""Templates: jinja2 text that turns an example into a cloze :class:`Prompt`.

A template is data, not a model component: it holds no tokenizer and no weights. It is
rendered in a jinja2 :class:`~jinja2.sandbox.SandboxedEnvironment` with
:class:`~jinja2.StrictUndefined`, so a template file from someone else cannot reach
Python internals and a misspelled field is an error instead of an empty string.

Every ``{{ expression }}`` output becomes an *input* segment (the part that may be
truncated when a prompt is too long); literal template text becomes a *text* segment
that is never truncated; ``{{ mask }}`` becomes the single *mask* segment; ``{{ soft(n) }}``
and ``{{ trigger(n) }}`` become *slot* segments of ``n`` positions whose embeddings a
strategy supplies (soft prompts, AutoPrompt triggers).
"""

from __future__ import annotations

import contextvars
import html
import math
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from promptkit.errors import TemplateError, did_you_mean

SegmentKind = Literal["text", "input", "mask", "slot"]
MASK_VARIABLE = "mask"
_MARKER = re.compile(r"\x00(\d+)\x00")
_FINAL_PUNCTUATION = string.punctuation + string.whitespace


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
    """

    segments: tuple[Segment, ...]
    chat: bool = False

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


class _MaskToken:
    """The value of ``mask`` inside a template; recognised when it is output."""

    def __str__(self) -> str:
        raise TemplateError("{{ mask }} cannot be passed through filters or string operations")


_MASK = _MaskToken()
_MAX_SLOT = 512


@dataclass(frozen=True)
class _Slot:
    name: str
    size: int


def _slot_function(name: str):
    def slot(n: int) -> _Slot:
        if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= _MAX_SLOT:
            raise TemplateError(f"{name}(n) needs an int n between 1 and {_MAX_SLOT}, got {n!r}")
        return _Slot(name, n)

    return slot


_pieces: contextvars.ContextVar[list[Segment]] = contextvars.ContextVar("promptkit_pieces")


def _finalize(value: Any) -> str:
    """Record every ``{{ ... }}`` output as a segment and leave a marker in the text."""
    pieces = _pieces.get()
    if value is _MASK:
        pieces.append(Segment("mask"))
    elif isinstance(value, _Slot):
        pieces.append(Segment("slot", slot=value.name, size=value.size))
    else:
        pieces.append(Segment("input", str(value)))
    return f"\x00{len(pieces) - 1}\x00"


def strip_punct(value: str) -> str:
    """Remove final punctuation (as PET's ``remove_final_punc``) and whitespace."""
    return str(value).rstrip(_FINAL_PUNCTUATION)


def lower_first(value: str) -> str:
    """Lower-case the first character (PET's ``lowercase_first``)."""
    value = str(value)
    return value[:1].lower() + value[1:]


def upper_first(value: str) -> str:
    """Upper-case the first character."""
    value = str(value)
    return value[:1].upper() + value[1:]


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters.update(strip_punct=strip_punct, lower_first=lower_first, upper_first=upper_first)
    env.globals.update(soft=_slot_function("soft"), trigger=_slot_function("trigger"))
    return env


_ENV = _environment()


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Template:
    """A cloze template, validated at construction.

    Args:
        text: jinja2 source with exactly one ``{{ mask }}``, e.g.
            ``"{{ text }} All in all, it was {{ mask }}."``. Filters ``strip_punct``,
            ``lower_first`` and ``upper_first`` are available besides jinja's own.
        name: a short identifier (catalog templates are named ``task/name``).
        chat: render the part before the mask as a user message in the tokenizer's chat
            format and score the mask as the assistant's first word. The mask must then
            end the template.
        example: an example to show in ``repr`` / notebooks and to test the template on.
        description: free text, e.g. the paper the pattern comes from.

    Example:
        >>> t = Template("{{ text }} It was {{ mask }}.")
        >>> t.render({"text": "A gem."}).to_text()
        'A gem. It was [MASK].'
    """

    text: str
    name: str = ""
    chat: bool = False
    example: Mapping[str, Any] | None = field(default=None, compare=False)
    description: str = field(default="", compare=False)
    _compiled: jinja2.Template = field(init=False, repr=False, compare=False)
    _variables: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str) or not self.text.strip():
            raise TemplateError(f"template {self.name!r}: text must be a non-empty str, got {self.text!r}")
        if "\x00" in self.text:
            raise TemplateError(f"template {self.name!r}: text contains a NUL character; remove it")
        tree = self._parse()
        masks = [n for n in tree.find_all(nodes.Name) if n.name == MASK_VARIABLE and n.ctx == "load"]
        if len(masks) != 1:
            raise TemplateError(
                f"template {self.name!r} must contain {{{{ mask }}}} exactly once, found {len(masks)}: "
                f"{self.text!r}. Put one {{{{ mask }}}} where the label word goes."
            )
        object.__setattr__(self, "_compiled", self._compile(tree))
        variables = meta.find_undeclared_variables(tree) - {MASK_VARIABLE}
        object.__setattr__(self, "_variables", frozenset(variables))

    def _parse(self) -> nodes.Template:
        try:
            return _ENV.parse(self.text)
        except jinja2.TemplateSyntaxError as err:
            line = self.text.splitlines()[err.lineno - 1] if err.lineno else ""
            raise TemplateError(
                f"template {self.name!r}: jinja syntax error on line {err.lineno}: {err.message} "
                f"(line: {line!r}). Fix the template text."
            ) from None

    def _compile(self, tree: nodes.Template) -> jinja2.Template:
        try:
            return _ENV.from_string(tree)
        except jinja2.TemplateAssertionError as err:
            unknown = re.search(r"No filter named '([^']+)'", err.message or "")
            hint = did_you_mean(unknown.group(1), _ENV.filters) if unknown else ""
            raise TemplateError(
                f"template {self.name!r}: {err.message} on line {err.lineno}.{hint} "
                f"Promptkit adds the filters strip_punct, lower_first and upper_first to jinja's own."
            ) from None

    @property
    def variables(self) -> frozenset[str]:
        """Example fields this template reads."""
        return self._variables

    def render(self, example: Mapping[str, Any]) -> Prompt:
        """Render one example into a :class:`Prompt`.

        Raises:
            TemplateError: a field is missing or None/NaN, a filter is unknown, or the
                template tried something the sandbox blocks.
        """
        if not isinstance(example, Mapping):
            raise TemplateError(f"template {self.name!r}: an example must be a dict, got {type(example).__name__}")
        self._check_fields(example)
        pieces: list[Segment] = []
        token = _pieces.set(pieces)
        try:
            rendered = self._compiled.render({**example, MASK_VARIABLE: _MASK})
        except SecurityError as err:
            raise TemplateError(f"template {self.name!r} was blocked by the sandbox: {err}") from None
        except jinja2.UndefinedError as err:
            raise TemplateError(f"template {self.name!r}: {err}; example keys are {sorted(example)}") from None
        except jinja2.TemplateRuntimeError as err:
            raise TemplateError(f"template {self.name!r}: {err}") from None
        except TemplateError as err:
            raise TemplateError(f"template {self.name!r}: {err}") from None
        finally:
            _pieces.reset(token)
        return self._to_prompt(rendered, pieces)

    def _check_fields(self, example: Mapping[str, Any]) -> None:
        missing = sorted(self._variables - set(example) - set(_ENV.globals))
        if missing:
            hint = did_you_mean(missing[0], example)
            raise TemplateError(
                f"template {self.name!r} needs field {missing[0]!r}, which the example lacks; "
                f"example keys are {sorted(example)}.{hint}"
            )
        for name in sorted(self._variables & set(example)):
            if _is_missing(example[name]):
                raise TemplateError(
                    f"template {self.name!r}: field {name!r} is {example[name]!r}; "
                    "fill or drop that example (text fields must be strings)"
                )

    def _to_prompt(self, rendered: str, pieces: list[Segment]) -> Prompt:
        segments: list[Segment] = []
        parts = _MARKER.split(rendered)
        for i, part in enumerate(parts):
            segment = pieces[int(part)] if i % 2 else Segment("text", part)
            if segment.text or segment.kind in ("mask", "slot"):
                segments.append(segment)
        n_masks = sum(s.kind == "mask" for s in segments)
        if n_masks != 1:
            raise TemplateError(f"template {self.name!r} rendered {n_masks} masks; it must render exactly one")
        prompt = Prompt(tuple(segments), chat=self.chat)
        if self.chat and "".join(s.text for s in prompt.after_mask).strip():
            raise TemplateError(
                f"chat template {self.name!r} has text after {{{{ mask }}}}; in chat format the mask "
                "is the assistant's first word, so end the template with {{ mask }}"
            )
        return prompt

    def __repr__(self) -> str:
        chat = ", chat=True" if self.chat else ""
        return f"Template(name={self.name!r}, text={self.text!r}{chat})"

    def _repr_html_(self) -> str:
        rows = [f"<b>Template</b> {html.escape(self.name)}<pre>{html.escape(self.text)}</pre>"]
        if self.example is not None:
            prompt = self.render(self.example)
            body = "".join("<mark>[MASK]</mark>" if s.kind == "mask" else html.escape(s.text) for s in prompt.segments)
            rows.append(f"<b>Rendered example</b><pre>{body}</pre>")
        return "".join(rows)


def render_all(template: Template, examples: list[Mapping[str, Any]]) -> list[Prompt]:
    """Render many examples, naming the row of the first one that fails."""
    prompts = []
    for row, example in enumerate(examples):
        try:
            prompts.append(template.render(example))
        except TemplateError as err:
            raise TemplateError(f"row {row}: {err}") from None
    return prompts
