"""The hardened jinja2 environment every template compiles and renders in.

:class:`_Sandbox` is jinja's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment` with
bounded operators, calls, ``str.format`` and recursion depth (the limits of
:mod:`promptkit.template_limits`); ``_ENV`` is the one shared instance, with the bounded
filters of :mod:`promptkit.template_filters`, the bounded ``range`` and ``namespace``, and
the ``soft()`` / ``trigger()`` slot globals. It also holds the values a template sees
(``mask``, slots) and the internal filters the rewritten template calls (``_pk_emit``,
``_pk_loop``, ``_pk_concat``) that record each output as a :class:`~promptkit.prompt.Segment`
and keep the render budget; see :mod:`promptkit.template_rewrite` for where they are inserted.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import pass_context

from promptkit import template_limits
from promptkit.errors import TemplateError
from promptkit.prompt import Segment
from promptkit.promptsource_filters import bounded_zip, choice, highlight, most_frequent
from promptkit.template_filters import _bounded_filter, lower_first, strip_punct, upper_first
from promptkit.template_limits import (
    _bounded_binop,
    _bounded_range,
    _BoundedNamespace,
    _check_length,
    _check_result,
    _check_str_format,
    _check_str_method,
    _size,
    _state,
    _to_text,
)

MASK_VARIABLE = "mask"


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
        if state.depth >= template_limits.MAX_DEPTH:
            raise TemplateError(
                f"calls are nested more than MAX_DEPTH={template_limits.MAX_DEPTH} deep (a recursive macro or loop?); "
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
    env.filters.update(choice=choice, most_frequent=most_frequent, highlight=highlight)  # promptsource's
    del env.filters["urlize"]
    env.filters = {name: _bounded_filter(name, f) for name, f in env.filters.items()}
    env.filters.update(_INTERNAL)
    del env.globals["lipsum"]
    env.globals.update(
        range=_bounded_range,
        namespace=_BoundedNamespace,
        soft=_slot_function("soft"),
        trigger=_slot_function("trigger"),
        zip=bounded_zip,  # promptsource's templates use it
    )
    return env


_ENV = _environment()
_PUBLIC_FILTERS = sorted(name for name in _ENV.filters if not name.startswith("_"))
