"""Resource limits of template rendering: the ``MAX_*`` constants and the budget accounting.

A template from someone else must not hang or exhaust the process, so every render carries a
budget (:class:`_Render`: steps, characters, call depth, wall time) and every operation that
can build a large value (``*``, ``**``, ``+``, ``%``, ``str.format``, ``str.join`` ...) is
measured *before* it runs. This module holds the limits and those checks; the sandbox
(:mod:`promptkit.template_sandbox`), the filter wrappers (:mod:`promptkit.template_filters`)
and the construction-time checks (:mod:`promptkit.template_checks`) call them.

The ``MAX_*`` constants are documented in :mod:`promptkit.template`; reading or setting
``promptkit.template.MAX_LENGTH`` (and the others) reads or sets the value here, the one
every check uses. Code in other modules reads them as ``template_limits.MAX_...`` at call
time, never by ``from ... import``, so that raising a limit takes effect everywhere.
"""

from __future__ import annotations

import contextvars
import math
import operator
import re
import string
import time
import types
from collections.abc import Iterable, Mapping
from typing import Any

from jinja2.utils import Namespace

from promptkit.errors import TemplateError
from promptkit.prompt import Segment

MAX_LENGTH = 1_000_000
MAX_INT_BITS = 4096
MAX_RANGE = 10_000
MAX_STEPS = 100_000
MAX_DEPTH = 32
MAX_SECONDS = 1.0


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
