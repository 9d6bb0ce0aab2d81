"""Templates: jinja2 text that turns an example into a cloze :class:`Prompt`.

A template is data, not a model component: it holds no tokenizer and no weights. It is
rendered in a jinja2 :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` with
:class:`~jinja2.StrictUndefined`, so a template file from someone else cannot reach
Python internals or change the example, and a misspelled field is an error instead of
an empty string.

Segments
--------
Every ``{{ expression }}`` the template outputs becomes an *input* segment (the part that
may be truncated when a prompt is too long); literal template text becomes a *text*
segment that is never truncated; ``{{ mask }}`` becomes the single *mask* segment;
``{{ soft(n) }}`` and ``{{ trigger(n) }}`` become *slot* segments of ``n`` positions whose
embeddings a strategy supplies (soft prompts, AutoPrompt triggers).

Captured blocks
---------------
Output inside a block whose text jinja captures (``{% set x %}...{% endset %}``,
``{% filter f %}...{% endfilter %}``, ``{% macro %}``, ``{% call %}`` and recursive
``{% for %}``) is plain text: the block's value is the real text, so filters, comparisons
and string methods see what the model will see. Where such a block writes to the prompt
(a filter block, a call block, a recursive loop), its whole output becomes **one input
segment**: ``{% filter upper %}Review: {{ text }}{% endfilter %}`` renders the input
segment ``"REVIEW: A GEM."``. Likewise ``{{ x }}`` of a captured ``x`` is one input
segment. ``{{ mask }}``, ``soft()`` and ``trigger()`` must be output by the template
itself: inside a captured block they are a :class:`TemplateError`. The NUL character is
reserved for promptkit's internal markers, so a NUL in the template text, in an example
field or anywhere in the rendered prompt is a :class:`TemplateError` too.

Limits
------
A template from someone else cannot hang or exhaust the process: rendering is bounded,
and every limit that is hit raises a :class:`TemplateError` naming the template and the
limit. The limits are module constants (raise them only for templates you trust):

* ``MAX_LENGTH`` (1,000,000): characters of the whole rendered prompt, and characters or
  items of any string or list a template builds (``*``, ``+``, ``%``, ``~``, ``.format``,
  ``.replace``, ``.join``, ``center``/``indent``/``wordwrap``/``join``/``format`` ... filters).
  Also the most characters a template text may have.
* ``MAX_INT_BITS`` (4,096): size of an integer ``*`` and ``**`` may build
  (``{{ 9 ** (9 ** 9) }}`` is refused, not computed).
* ``MAX_RANGE`` (10,000): items of one ``range()``.
* ``MAX_STEPS`` (100,000): loop iterations, calls, filter applications, operators and
  outputs of one render (nested loops multiply; each iteration also counts the literal
  text of the loop body against ``MAX_LENGTH``).
* ``MAX_DEPTH`` (32): calls nested in calls (recursive macros, recursive loops).
* ``MAX_SECONDS`` (1.0): wall time of one render (a backstop for the limits above).

Expressions made of constants (``{{ 'a' * 10**9 }}``, ``range(10**6)``) and loops over
constant ranges are checked when the :class:`Template` is built, so such a template fails
at construction. jinja's compile-time constant folding is switched off, so building a
template never evaluates its expressions. ``include``, ``import``, ``extends`` and
``block`` (there is no loader: a template is one self-contained text), the name ``self``
and names starting with ``_pk_`` (promptkit's own) are refused at construction. The
filter ``urlize`` and the global ``lipsum`` are not available; ``str.translate``,
``str.maketrans`` and ``str.encode`` are blocked.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import html
import inspect
import math
import operator
import re
import string
import time
import types
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import jinja2
from jinja2 import meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, pass_context
from jinja2.visitor import NodeTransformer

from promptkit.errors import TemplateError, did_you_mean

SegmentKind = Literal["text", "input", "mask", "slot"]
MASK_VARIABLE = "mask"
_MARKER = re.compile(r"\x00(\d+)\x00")
_FINAL_PUNCTUATION = string.punctuation + string.whitespace
_FIELDS = ("name", "text", "chat", "description", "example")

MAX_LENGTH = 1_000_000
MAX_INT_BITS = 4096
MAX_RANGE = 10_000
MAX_STEPS = 100_000
MAX_DEPTH = 32
MAX_SECONDS = 1.0


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


# ----------------------------------------------------------------------------- limits
class _Render:
    """State of one render: the segments recorded so far and the resource budget spent."""

    def __init__(self) -> None:
        self.pieces: list[Segment] = []
        self.steps = 0
        self.chars = 0
        self.depth = 0
        self.deadline = time.monotonic() + MAX_SECONDS

    def step(self, chars: int = 0) -> None:
        """Spend one step (and ``chars`` characters of output); raise once a limit is passed."""
        self.steps += 1
        self.chars += chars
        if self.steps > MAX_STEPS:
            raise TemplateError(
                f"rendering took more than MAX_STEPS={MAX_STEPS:,} steps (loop iterations, calls, filters and "
                "outputs); a template may not loop or recurse that much: shrink the loops"
            )
        if self.chars > MAX_LENGTH:
            raise TemplateError(
                f"the rendered text passed MAX_LENGTH={MAX_LENGTH:,} characters; shorten the inputs or the loops"
            )
        if time.monotonic() > self.deadline:
            raise TemplateError(f"rendering ran longer than MAX_SECONDS={MAX_SECONDS} s; simplify the template")


_RENDER: contextvars.ContextVar[_Render] = contextvars.ContextVar("promptkit_render")


def _state() -> _Render:
    """The running render's state (a fresh budget when called outside a render)."""
    state = _RENDER.get(None)
    return state if state is not None else _Render()


def _size(value: Any, limit: int = MAX_LENGTH) -> int:
    """About ``len(str(value))``, without building the string; stops counting past ``limit``.

    Containers count their items (shared items once per reference, as ``str`` would).
    """
    total, stack = 0, [value]
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, (str, bytes)):
            total += len(item)
        elif isinstance(item, bool) or item is None:
            total += 5
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 1
        elif isinstance(item, (list, tuple, set, frozenset)):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, Namespace):
            total += 12
            stack.append(object.__getattribute__(item, "_Namespace__attrs"))
        else:
            total += 32
    return total


def _check_length(what: str, size: int) -> None:
    if size > MAX_LENGTH:
        raise TemplateError(
            f"{what} would be {size:,} characters or items long, over the template limit "
            f"MAX_LENGTH={MAX_LENGTH:,}; templates may not build values that large"
        )


def _check_result(value: Any, what: str) -> Any:
    if isinstance(value, (str, bytes, list, tuple, dict)):
        _check_length(what, len(value))
    return value


def _to_text(value: Any, state: _Render) -> str:
    """``str(value)``, refused before it is built when it would pass ``MAX_LENGTH``."""
    _check_length("an output", _size(value))
    text = str(value)
    state.step(len(text))
    return text


def _bounded_range(*args: int) -> range:
    """``range`` with at most ``MAX_RANGE`` items."""
    items = range(*args)
    if len(items) > MAX_RANGE:
        shown = ", ".join(map(repr, args))
        raise TemplateError(
            f"range({shown}) has {len(items):,} items, over the template limit MAX_RANGE={MAX_RANGE:,}; "
            "loop over fewer items"
        )
    return items


class _BoundedNamespace(Namespace):
    """jinja's ``namespace()`` whose attributes cannot be set to oversized values."""

    def __setitem__(self, name: str, value: Any) -> None:
        _check_length(f"namespace attribute {name!r}", _size(value))
        super().__setitem__(name, value)


_PERCENT_SPEC = re.compile(r"%(?:\([^)]*\))?[#0 +-]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?[a-zA-Z%]")


def _format_size(fmt: str, n_fields: int, widths: list[str], nested: bool, values: Iterable[Any]) -> int:
    """Bound on the length of ``fmt`` formatted with ``values``: every field may show the biggest
    value padded to the biggest width (a nested or ``*`` width may be any int value)."""
    values = list(values)
    biggest = max((_size(v) for v in values), default=0)
    width = max((int(w) if len(w) < 10 else 10**10 for w in widths if w.isdigit()), default=0)
    if nested:
        width = max([width, *(abs(v) for v in values if isinstance(v, int))])
    return len(fmt) + n_fields * (biggest + width)


def _check_percent(fmt: str, args: Any) -> None:
    specs = _PERCENT_SPEC.findall(fmt)
    values = args.values() if isinstance(args, Mapping) else args if isinstance(args, tuple) else (args,)
    widths = [w for spec in specs for w in spec]
    _check_length("a '%' format", _format_size(fmt, len(specs), widths, "*" in widths, values))


def _check_str_format(fmt: str, args: tuple, kwargs: Mapping[str, Any]) -> None:
    try:
        fields = [(name, spec or "") for _, name, spec, _ in string.Formatter().parse(fmt) if name is not None]
    except ValueError:
        return  # a malformed format string; formatting it raises
    widths = [w for _, spec in fields for w in re.findall(r"\d+", spec)]
    nested = any("{" in spec for _, spec in fields)
    _check_length("a str.format()", _format_size(fmt, len(fields), widths, nested, [*args, *kwargs.values()]))


def _check_pow(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        bits = exponent * math.log2(abs(base))
        if bits > MAX_INT_BITS:
            raise TemplateError(
                f"{base!r} ** {exponent!r} would be an integer of about {bits:,.0f} bits, over the template "
                f"limit MAX_INT_BITS={MAX_INT_BITS:,}; templates may not compute numbers that large"
            )


def _check_mul(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        bits = left.bit_length() + right.bit_length()
        if bits > MAX_INT_BITS:
            raise TemplateError(
                f"'*' would build an integer of about {bits:,} bits, over the template limit "
                f"MAX_INT_BITS={MAX_INT_BITS:,}; templates may not compute numbers that large"
            )
        return
    sequence, count = (left, right) if isinstance(right, int) else (right, left)
    if isinstance(sequence, (str, bytes, list, tuple)) and isinstance(count, int):
        _check_length(f"{type(sequence).__name__} * {count!r}", len(sequence) * count)


def _check_add(left: Any, right: Any) -> None:
    kinds = (str, bytes, list, tuple)
    if isinstance(left, kinds) and isinstance(right, kinds):
        _check_length(f"{type(left).__name__} + {type(right).__name__}", len(left) + len(right))


_BINOPS = {
    "+": operator.add,
    "-": operator.sub,
    "*": operator.mul,
    "/": operator.truediv,
    "//": operator.floordiv,
    "%": operator.mod,
    "**": operator.pow,
}
_BINOP_CHECKS = {"**": _check_pow, "*": _check_mul, "+": _check_add}


def _bounded_binop(op: str, left: Any, right: Any) -> Any:
    """``left <op> right``, refused before it is computed when the result would pass a limit."""
    if op in _BINOP_CHECKS:
        _BINOP_CHECKS[op](left, right)
    elif op == "%" and isinstance(left, str):
        _check_percent(left, right)
    return _BINOPS[op](left, right)


def _check_str_method(method: Any, args: tuple, kwargs: dict) -> tuple:
    """Refuse a str/bytes method call whose result would pass ``MAX_LENGTH``; return the args
    (``join``'s iterable made a list, so it can be measured)."""
    owner = getattr(method, "__self__", None)
    if not isinstance(method, types.BuiltinMethodType) or not isinstance(owner, (str, bytes)):
        return args
    name = method.__name__
    try:
        if name in ("center", "ljust", "rjust", "zfill"):
            size = max(len(owner), args[0])
        elif name == "expandtabs":
            tab = args[0] if args else kwargs.get("tabsize", 8)
            size = len(owner) + owner.count("\t" if isinstance(owner, str) else b"\t") * max(tab, 0)
        elif name == "replace":
            old, new = args[0], args[1]
            hits = owner.count(old) if old else len(owner) + 1
            size = len(owner) + hits * max(0, len(new) - len(old))
        elif name == "join":
            items = list(args[0])
            args = (items, *args[1:])
            size = sum(_size(item) for item in items) + len(owner) * len(items)
        else:
            return args
    except (TypeError, IndexError, ValueError):
        return args  # wrong arguments; the call itself raises
    _check_length(f"{type(owner).__name__}.{name}()", size)
    return args


# ---------------------------------------------------------------------------- filters
_TEXT_FILTERS = frozenset(
    {"capitalize", "center", "e", "escape", "forceescape", "format", "indent", "join", "lower", "pprint", "replace",
     "safe", "string", "striptags", "title", "tojson", "trim", "truncate", "upper", "urlencode", "wordcount",
     "wordwrap", "xmlattr", "strip_punct", "lower_first", "upper_first"}
)  # fmt: skip
_CHECKED_FILTERS = frozenset(
    {"batch", "center", "format", "indent", "join", "replace", "slice", "sum", "tojson", "truncate", "wordwrap"}
)
_SIZE_PARAMETERS = frozenset({"width", "linecount", "slices", "length", "count"})


def _filter_size(name: str, value: Any, bound: Mapping[str, Any]) -> int:
    """Bound on the size of a filter's result, for the filters that can grow their input."""
    size = len(value) if isinstance(value, str) else _size(value)
    if name == "center":
        return max(size, bound["width"])
    if name == "indent":
        width = bound["width"]
        lines = value.count("\n") + 1 if isinstance(value, str) else size + 1
        return size + lines * (len(width) if isinstance(width, str) else max(width, 0))
    if name == "wordwrap":
        return size * (1 + len(str(bound["wrapstring"] or "\n")))
    if name == "replace":
        old, new = str(bound["old"]), str(bound["new"])
        hits = (value.count(old) if isinstance(value, str) else size) if old else size + 1
        return size + hits * max(0, len(new) - len(old))
    if name == "join":
        return sum(_size(item) for item in value) + len(str(bound["d"])) * len(value)
    if name == "tojson":
        indent = bound["indent"] or 0
        return size * (2 + (len(indent) if isinstance(indent, str) else indent))
    if name == "format":
        fmt, args, kwargs = str(value), bound.get("args", ()), bound.get("kwargs", {})
        specs = _PERCENT_SPEC.findall(fmt)
        widths = [w for spec in specs for w in spec]
        return _format_size(fmt, len(specs), widths, "*" in widths, [*args, *kwargs.values()])
    return size


def _user_signature(func: Any, n_context: int) -> inspect.Signature | None:
    """The parameters a filter takes from the template (its context argument dropped)."""
    try:
        params = list(inspect.signature(func).parameters.values())
    except (TypeError, ValueError):
        return None
    if n_context and params and params[0].name in ("context", "eval_ctx", "environment", "env"):
        params = params[1:]
    return inspect.Signature(params)


def _bounded_filter(name: str, func: Any) -> Any:
    """Wrap a filter: count a step, bound its size parameters and result, and refuse to
    stringify a value that would pass ``MAX_LENGTH``."""
    n_context = 1 if getattr(func, "jinja_pass_arg", None) is not None else 0
    signature = _user_signature(func, n_context) if name in _CHECKED_FILTERS else None
    stringifies = name in _TEXT_FILTERS

    @functools.wraps(func)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        _state().step()
        context, given = args[:n_context], args[n_context:]
        if signature is not None and given:
            try:
                bound = signature.bind(*given, **kwargs)
            except TypeError:
                bound = None  # wrong arguments; the filter itself raises
            if bound is not None:
                given, kwargs = _check_filter_call(name, bound)
        elif stringifies and given and not isinstance(given[0], str):
            _check_length(f"the input of filter {name!r}", _size(given[0]))
        result = func(*context, *given, **kwargs)
        return _check_result(result, f"the result of filter {name!r}")

    return bounded


def _check_filter_call(name: str, bound: inspect.BoundArguments) -> tuple[tuple, dict]:
    first = next(iter(bound.signature.parameters))
    value = bound.arguments[first]
    if name == "join" and not isinstance(value, (str, Mapping)):
        value = bound.arguments[first] = list(value)
    if name == "sum":
        start = bound.arguments.get("start", 0)
        if not isinstance(start, (int, float)) or isinstance(start, bool):
            raise TemplateError(f"filter 'sum' adds numbers only; got start={start!r}")
    for key, given in bound.arguments.items():
        if key in _SIZE_PARAMETERS and isinstance(given, int) and abs(given) > MAX_LENGTH:
            _check_length(f"filter {name!r} with {key}={given!r}", abs(given))
    if name in _TEXT_FILTERS:
        bound.apply_defaults()
        _check_length(f"the result of filter {name!r}", _filter_size(name, value, bound.arguments))
    return bound.args, bound.kwargs


# ------------------------------------------------------------------- internal filters
class _Emitted(str):
    """The marker a top-level ``{{ }}`` leaves in the output stream for its segment."""


@pass_context
def _emit(context: Any, value: Any) -> _Emitted:
    """Record a top-level ``{{ }}`` output as a segment; leave its marker in the output."""
    state = _state()
    if value is _MASK:
        state.step()
        segment = Segment("mask")
    elif isinstance(value, _Slot):
        state.step()
        segment = Segment("slot", slot=value.name, size=value.size)
    else:
        segment = Segment("input", _to_text(value, state))
    state.pieces.append(segment)
    return _Emitted(f"\x00{len(state.pieces) - 1}\x00")


@pass_context
def _finalize(context: Any, value: Any) -> str:
    """Every ``{{ }}`` output passes here: top-level ones as markers from :func:`_emit`, the
    ones inside captured blocks as their plain text."""
    if type(value) is _Emitted:
        return value
    if value is _MASK or isinstance(value, _Slot):
        what = "{{ mask }}" if value is _MASK else f"{value.name}({value.size})"
        raise TemplateError(
            f"{what} was output inside a captured block ({{% set %}}, {{% filter %}}, a macro or {{% call %}}), "
            "whose output becomes plain text; output it directly from the template, outside any block"
        )
    return _to_text(value, _state())


@pass_context
def _loop(context: Any, iterable: Any, cost: int) -> Any:
    """A ``{% for %}`` loop's iterable, each iteration counted: one step and ``cost``
    characters (the literal text of the loop body)."""
    state = _state()
    for item in iterable:
        state.step(cost)
        yield item


@pass_context
def _concat(context: Any, items: list[Any]) -> str:
    """The ``~`` operator, refused before it builds a string over ``MAX_LENGTH``."""
    _state().step()
    _check_length("a '~' concatenation", sum(_size(item) for item in items))
    return "".join(str(item) for item in items)


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


_BLOCKED_STR_METHODS = frozenset({"translate", "maketrans", "encode"})
_INTERNAL = {"_pk_emit": _emit, "_pk_loop": _loop, "_pk_concat": _concat}


class _Sandbox(ImmutableSandboxedEnvironment):
    """jinja's immutable sandbox with bounded operators, calls, filters, ranges and recursion."""

    intercepted_binops = frozenset({"**", "*", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _state().step()
        return _bounded_binop(operator, left, right)

    def call(self, context: Any, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        state = _state()
        state.step()
        args = _check_str_method(obj, args, kwargs)
        if state.depth >= MAX_DEPTH:
            raise TemplateError(
                f"calls are nested more than MAX_DEPTH={MAX_DEPTH} deep (a recursive macro or loop?); "
                "templates may not recurse that deep"
            )
        state.depth += 1
        try:
            result = super().call(context, obj, *args, **kwargs)
        finally:
            state.depth -= 1
        return _check_result(result, "a call's result")

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if isinstance(obj, (str, bytes)) and attr in _BLOCKED_STR_METHODS:
            return False
        return super().is_safe_attribute(obj, attr, value)

    def wrap_str_format(self, value: Any) -> Any:
        wrapper = super().wrap_str_format(value)
        if wrapper is None:
            return None
        fmt, is_map = value.__self__, value.__name__ == "format_map"

        @functools.wraps(wrapper)
        def bounded(*args: Any, **kwargs: Any) -> str:
            mapping = args[0] if is_map and args and isinstance(args[0], Mapping) else kwargs
            _check_str_format(fmt, () if is_map else args, mapping)
            return _check_result(wrapper(*args, **kwargs), "a str.format()")

        return bounded


def _environment() -> _Sandbox:
    env = _Sandbox(
        undefined=jinja2.StrictUndefined,
        finalize=_finalize,
        autoescape=False,
        keep_trailing_newline=True,
        optimized=False,  # no compile-time constant folding: building a template evaluates nothing
    )
    env.filters.update(strip_punct=strip_punct, lower_first=lower_first, upper_first=upper_first)
    del env.filters["urlize"]
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    env.filters.update(_INTERNAL)
    del env.globals["lipsum"]
    env.globals.update(
        range=_bounded_range,
        namespace=_BoundedNamespace,
        soft=_slot_function("soft"),
        trigger=_slot_function("trigger"),
    )
    return env


_ENV = _environment()
_PUBLIC_FILTERS = sorted(name for name in _ENV.filters if not name.startswith("_"))


# ------------------------------------------------------------------ building a template
_REFUSED = {
    nodes.Extends: "{% extends %}",
    nodes.Include: "{% include %}",
    nodes.Import: "{% import %}",
    nodes.FromImport: "{% from ... import %}",
    nodes.Block: "{% block %}",
}
_CAPTURING = {
    nodes.Macro: "{% macro %}",
    nodes.CallBlock: "{% call %}",
    nodes.FilterBlock: "{% filter %}",
    nodes.AssignBlock: "{% set %}...{% endset %}",
}


def _capture_kind(node: nodes.Node) -> str | None:
    """Which captured block ``node`` is (its output is buffered, not written), or None."""
    if isinstance(node, nodes.For) and node.recursive:
        return "recursive {% for %}"
    return next((kind for cls, kind in _CAPTURING.items() if isinstance(node, cls)), None)


def _fold(node: nodes.Node, cache: dict[int, Any]) -> Any:
    """Value of a constant expression, computed under the render limits (so a too-large
    constant raises :class:`TemplateError`); :class:`~jinja2.nodes.Impossible` if not constant."""
    key = id(node)
    if key not in cache:
        try:
            cache[key] = _fold_node(node, cache)
        except TemplateError:
            raise
        except Exception:  # not constant, or an error (1/0) that rendering reports
            cache[key] = nodes.Impossible
    if cache[key] is nodes.Impossible:
        raise nodes.Impossible()
    return cache[key]


def _fold_node(node: nodes.Node, cache: dict[int, Any]) -> Any:
    if isinstance(node, nodes.Const):
        return node.value
    if isinstance(node, (nodes.List, nodes.Tuple)):
        items = [_fold(item, cache) for item in node.items]
        return items if isinstance(node, nodes.List) else tuple(items)
    if isinstance(node, nodes.Neg):
        return -_fold(node.node, cache)
    if isinstance(node, nodes.BinExpr) and node.operator in _BINOPS:
        return _bounded_binop(node.operator, _fold(node.left, cache), _fold(node.right, cache))
    if isinstance(node, nodes.Concat):
        items = [_fold(item, cache) for item in node.nodes]
        _check_length("a '~' concatenation", sum(_size(item) for item in items))
        return "".join(map(str, items))
    if isinstance(node, nodes.Call) and isinstance(node.node, nodes.Name) and node.node.name == "range":
        if node.kwargs or node.dyn_args or node.dyn_kwargs:
            raise nodes.Impossible()
        return _bounded_range(*(_fold(arg, cache) for arg in node.args))
    raise nodes.Impossible()


def _check_loops(node: nodes.Node, iterations: int, cache: dict[int, Any]) -> None:
    """Refuse loops over constant ranges whose nesting multiplies past ``MAX_STEPS``."""
    for child in node.iter_child_nodes():
        inner = iterations
        if isinstance(child, nodes.For):
            with contextlib.suppress(nodes.Impossible, TypeError):  # not a constant sequence
                inner *= max(len(_fold(child.iter, cache)), 1)
            if inner > MAX_STEPS:
                raise TemplateError(
                    f"loops over constant ranges nested here (line {child.lineno}) would run {inner:,} iterations, "
                    f"over the template limit MAX_STEPS={MAX_STEPS:,}; loop over fewer items"
                )
        _check_loops(child, inner, cache)


def _check_tree(tree: nodes.Template, name: str) -> None:
    """Refuse, before compiling, what promptkit templates may not do."""
    for node in tree.find_all(tuple(_REFUSED)):
        raise TemplateError(
            f"template {name!r} uses {_REFUSED[type(node)]} (line {node.lineno}), which promptkit templates do not "
            "support: a template is one self-contained text (no loader, no inheritance); write the text inline"
        )
    for node in tree.find_all((nodes.Name, nodes.Filter, nodes.Test)):
        if node.name.startswith("_pk_"):
            raise TemplateError(
                f"template {name!r} uses the name {node.name!r} (line {node.lineno}); names starting with '_pk_' "
                "are reserved for promptkit: rename it"
            )
        if isinstance(node, nodes.Name) and node.name == "self":
            raise TemplateError(
                f"template {name!r} uses 'self' (line {node.lineno}), jinja's reference to the template object, "
                "which promptkit templates do not support; rename the field"
            )
    for node in tree.find_all(nodes.Node):
        kind = _capture_kind(node)
        mask = next((n for n in node.find_all(nodes.Name) if n.name == MASK_VARIABLE), None) if kind else None
        if mask is not None:
            raise TemplateError(
                f"template {name!r}: {{{{ mask }}}} (line {mask.lineno}) is inside a {kind} block, whose output "
                "promptkit captures as plain text, so the mask would be lost; output {{ mask }} directly from "
                "the template, outside the block (to change the text around it, filter the fields instead, "
                "e.g. {{ text | upper }})"
            )
    cache: dict[int, Any] = {}
    try:
        for node in tree.find_all((nodes.BinExpr, nodes.Concat, nodes.Call)):
            with contextlib.suppress(nodes.Impossible):
                _fold(node, cache)
        _check_loops(tree, 1, cache)
    except TemplateError as err:
        raise TemplateError(f"template {name!r}: {err}") from None


def _internal(node: nodes.Expr, name: str, *args: nodes.Expr) -> nodes.Filter:
    """``node | <internal filter>(*args)``."""
    wrapped = nodes.Filter(node, name, list(args), [], None, None)
    wrapped.set_lineno(node.lineno or 1)
    return wrapped


class _Bounds(NodeTransformer):
    """Route every loop and ``~`` through the internal filters that keep the render budget."""

    def visit_Concat(self, node: nodes.Concat) -> nodes.Filter:
        self.generic_visit(node)
        return _internal(nodes.List(node.nodes, lineno=node.lineno), "_pk_concat")

    def visit_For(self, node: nodes.For) -> nodes.For:
        self.generic_visit(node)
        cost = 1 + sum(len(data.data) for data in node.find_all(nodes.TemplateData))
        node.iter = _internal(node.iter, "_pk_loop", nodes.Const(cost))
        return node


class _Segments:
    """Make every output that goes straight to the prompt a segment (``_pk_emit``); leave the
    output of captured blocks plain text, and output a captured block that writes to the
    prompt (filter, call, recursive loop) as one segment."""

    def __init__(self) -> None:
        self.blocks = 0

    def body(self, body: list[nodes.Node], captured: bool) -> list[nodes.Node]:
        return [new for node in body for new in self.statement(node, captured)]

    def statement(self, node: nodes.Node, captured: bool) -> list[nodes.Node]:
        if isinstance(node, nodes.Output):
            if not captured:
                node.nodes = [n if isinstance(n, nodes.TemplateData) else _internal(n, "_pk_emit") for n in node.nodes]
            return [node]
        kind = _capture_kind(node)
        for attr in ("body", "else_", "elif_"):
            if attr in node.fields and isinstance(getattr(node, attr), list):
                setattr(node, attr, self.body(getattr(node, attr), captured or kind is not None))
        if captured or kind is None or isinstance(node, (nodes.Macro, nodes.AssignBlock)):
            return [node]
        self.blocks += 1
        name = f"_pk_block{self.blocks}"
        if isinstance(node, nodes.FilterBlock):
            assign = nodes.AssignBlock(nodes.Name(name, "store"), node.filter, node.body)
        else:
            assign = nodes.AssignBlock(nodes.Name(name, "store"), None, [node])
        output = nodes.Output([_internal(nodes.Name(name, "load"), "_pk_emit")])
        for new in (assign, output):
            new.set_lineno(node.lineno)
        return [assign, output]


def _rewrite(tree: nodes.Template) -> nodes.Template:
    tree = _Bounds().visit(tree)
    tree.body = _Segments().body(tree.body, captured=False)
    tree.set_environment(_ENV)
    return tree


def _is_missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Template:
    """A cloze template, validated at construction.

    Args:
        text: jinja2 source with exactly one ``{{ mask }}``, e.g.
            ``"{{ text }} All in all, it was {{ mask }}."``. Filters ``strip_punct``,
            ``lower_first`` and ``upper_first`` are available besides jinja's own. See the
            module docstring for captured blocks and the sandbox's limits.
        name: a short identifier (catalog templates are named ``task/name``).
        chat: render the part before the mask as a user message in the tokenizer's chat
            format and score the mask as the assistant's first word. The mask must then
            end the template.
        example: an example to show in ``repr`` / notebooks and to test the template on.
        description: free text, e.g. the paper the pattern comes from.

    Raises:
        TemplateError: an argument has the wrong type, the text is not valid jinja, has no
            or several masks, uses what promptkit templates may not (``include``, a mask in
            a ``{% set %}`` block, ...), or holds a constant expression over a limit.

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
        self._check_arguments()
        try:
            tree = self._parse()
            masks = [n for n in tree.find_all(nodes.Name) if n.name == MASK_VARIABLE and n.ctx == "load"]
            if len(masks) != 1:
                raise TemplateError(
                    f"template {self.name!r} must contain {{{{ mask }}}} exactly once, found {len(masks)}: "
                    f"{self.text[:200]!r}. Put one {{{{ mask }}}} where the label word goes."
                )
            _check_tree(tree, self.name)
            tree = _rewrite(tree)
            compiled = self._compile(tree)
            variables = meta.find_undeclared_variables(tree) - {MASK_VARIABLE} - set(_ENV.globals)
        except (RecursionError, SyntaxError, MemoryError):  # Python's parser limits on the compiled code
            raise TemplateError(
                f"template {self.name!r} is nested too deeply to compile; flatten its expressions and blocks"
            ) from None
        object.__setattr__(self, "_compiled", compiled)
        object.__setattr__(self, "_variables", frozenset(variables))

    def _check_arguments(self) -> None:
        if not isinstance(self.name, str):
            raise TemplateError(
                f"template name must be a str, got {self.name!r} ({type(self.name).__name__}); "
                "pass e.g. name='sst2/it_was'"
            )
        if not isinstance(self.text, str) or not self.text.strip():
            raise TemplateError(f"template {self.name!r}: text must be a non-empty str, got {self.text!r}")
        if len(self.text) > MAX_LENGTH:
            raise TemplateError(
                f"template {self.name!r}: text has {len(self.text):,} characters, over the template limit "
                f"MAX_LENGTH={MAX_LENGTH:,}; shorten it"
            )
        if "\x00" in self.text:
            raise TemplateError(f"template {self.name!r}: text contains a NUL character; remove it")
        if not isinstance(self.chat, bool):
            raise TemplateError(
                f"template {self.name!r}: chat must be True or False, got {self.chat!r} "
                f"({type(self.chat).__name__}); pass chat=True for the tokenizer's chat format, chat=False otherwise"
            )
        if not isinstance(self.description, str):
            raise TemplateError(
                f"template {self.name!r}: description must be a str, got {self.description!r} "
                f"({type(self.description).__name__}); pass free text, or leave it out"
            )
        if self.example is not None and not isinstance(self.example, Mapping):
            raise TemplateError(
                f"template {self.name!r}: example must be a dict of fields (or None), got {self.example!r} "
                f"({type(self.example).__name__}); pass e.g. example={{'text': 'A gem.'}}"
            )

    def _parse(self) -> nodes.Template:
        try:
            return _ENV.parse(self.text)
        except jinja2.TemplateSyntaxError as err:
            line = self.text.splitlines()[err.lineno - 1] if err.lineno else ""
            raise TemplateError(
                f"template {self.name!r}: jinja syntax error on line {err.lineno}: {err.message} "
                f"(line: {line[:200]!r}). Fix the template text."
            ) from None
        except ValueError as err:  # e.g. an int literal longer than Python converts
            raise TemplateError(f"template {self.name!r}: cannot parse the text: {err}") from None

    def _compile(self, tree: nodes.Template) -> jinja2.Template:
        try:
            return _ENV.from_string(tree)
        except jinja2.TemplateAssertionError as err:
            unknown = re.search(r"No filter named '([^']+)'", err.message or "")
            hint = did_you_mean(unknown.group(1), _PUBLIC_FILTERS) if unknown else ""
            raise TemplateError(
                f"template {self.name!r}: {err.message} on line {err.lineno}.{hint} "
                f"Promptkit adds the filters strip_punct, lower_first and upper_first to jinja's own."
            ) from None

    @property
    def variables(self) -> frozenset[str]:
        """Example fields this template reads (not ``mask`` or globals such as ``range`` and ``soft``)."""
        return self._variables

    def to_dict(self) -> dict[str, Any]:
        """Plain data: ``name``, ``text``, ``chat``, ``description`` and ``example`` (None or a
        dict). JSON/YAML-ready when the example's values are; :meth:`from_dict` inverts it.

        Example:
            >>> Template.from_dict(Template("{{ text }} {{ mask }}", name="t").to_dict()).name
            't'
        """
        example = None if self.example is None else dict(self.example)
        return {"name": self.name, "text": self.text, "chat": self.chat, "description": self.description,
                "example": example}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Template:
        """Build a template from :meth:`to_dict` data; every key but ``text`` is optional.

        Raises:
            TemplateError: ``data`` is not a mapping, lacks ``text``, or has an unknown key
                (the message names the closest valid one).
        """
        if not isinstance(data, Mapping):
            raise TemplateError(
                f"template data must be a mapping with keys {list(_FIELDS)}, got {type(data).__name__}: "
                f"{str(data)[:200]}"
            )
        for key in data:
            if key not in _FIELDS:
                raise TemplateError(
                    f"template data has an unknown key {key!r}.{did_you_mean(key, _FIELDS)} Valid keys: {list(_FIELDS)}"
                )
        if "text" not in data:
            raise TemplateError(f"template data has no 'text' (keys: {sorted(map(str, data))}); add the jinja text")
        return cls(**data)

    def render(self, example: Mapping[str, Any]) -> Prompt:
        """Render one example into a :class:`Prompt`.

        Raises:
            TemplateError: a field is missing or None/NaN, a filter is unknown, the template
                tried something the sandbox blocks, or it passed a limit (see the module
                docstring).
        """
        if not isinstance(example, Mapping):
            raise TemplateError(f"template {self.name!r}: an example must be a dict, got {type(example).__name__}")
        self._check_fields(example)
        state = _Render()
        token = _RENDER.set(state)
        try:
            rendered = self._generate({**example, MASK_VARIABLE: _MASK})
        except TemplateError as err:
            raise TemplateError(f"template {self.name!r}: {err}") from None
        except SecurityError as err:
            raise TemplateError(f"template {self.name!r} was blocked by the sandbox: {err}") from None
        except jinja2.UndefinedError as err:
            raise TemplateError(f"template {self.name!r}: {err}; example keys are {sorted(example)}") from None
        except jinja2.TemplateError as err:
            raise TemplateError(f"template {self.name!r}: {err}") from None
        except RecursionError:
            raise TemplateError(f"template {self.name!r} recursed too deeply while rendering") from None
        except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError, MemoryError) as err:
            raise TemplateError(f"template {self.name!r} failed while rendering: {type(err).__name__}: {err}") from None
        finally:
            _RENDER.reset(token)
        return self._to_prompt(rendered, state.pieces)

    def _generate(self, variables: dict[str, Any]) -> str:
        chunks, size = [], 0
        for chunk in self._compiled.generate(variables):
            size += len(chunk)
            if size > MAX_LENGTH:
                raise TemplateError(
                    f"the rendered text passed MAX_LENGTH={MAX_LENGTH:,} characters; shorten the inputs or the loops"
                )
            chunks.append(chunk)
        return "".join(chunks)

    def _check_fields(self, example: Mapping[str, Any]) -> None:
        missing = sorted(self._variables - set(example) - set(_ENV.globals))
        if missing:
            hint = did_you_mean(missing[0], example)
            raise TemplateError(
                f"template {self.name!r} needs field {missing[0]!r}, which the example lacks; "
                f"example keys are {sorted(example)}.{hint}"
            )
        for name in sorted(self._variables & set(example)):
            value = example[name]
            if _is_missing(value):
                raise TemplateError(
                    f"template {self.name!r}: field {name!r} is {value!r}; "
                    "fill or drop that example (text fields must be strings)"
                )
            if isinstance(value, str) and "\x00" in value:
                raise TemplateError(
                    f"template {self.name!r}: field {name!r} holds a NUL character (\\x00) at position "
                    f"{value.index(chr(0))}, which promptkit reserves for its internal markers; remove NUL "
                    "characters from the data (e.g. value.replace('\\x00', ''))"
                )

    def _to_prompt(self, rendered: str, pieces: list[Segment]) -> Prompt:
        segments: list[Segment] = []
        used: list[int] = []
        for i, part in enumerate(_MARKER.split(rendered)):
            if i % 2:
                used.append(int(part))
                segment = pieces[int(part)] if int(part) < len(pieces) else Segment("text", f"\x00{part}\x00")
            else:
                segment = Segment("text", part)
            if "\x00" in segment.text:
                raise TemplateError(
                    f"template {self.name!r} rendered a NUL character (\\x00) in its {segment.kind} text "
                    f"{segment.text[:60]!r}; NUL is reserved for promptkit's internal markers: remove it from "
                    "the data and the template"
                )
            if segment.text or segment.kind in ("mask", "slot"):
                segments.append(segment)
        if sorted(used) != list(range(len(pieces))):
            raise TemplateError(
                f"template {self.name!r}: the rendered text lost or repeated an internal segment marker "
                f"({sorted(used)} of {len(pieces)}); this is a promptkit bug, please report it with the template"
            )
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
