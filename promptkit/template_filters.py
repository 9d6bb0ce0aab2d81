"""Template filters: jinja's own wrapped to respect the render limits, and promptkit's additions.

:func:`_bounded_filter` wraps every filter of the sandbox's environment: each application
counts a step of the render budget, size arguments (``width``, ``count`` ...) and the
filter's result are bounded by ``MAX_LENGTH``, and a filter that grows its input
(``center``, ``indent``, ``replace``, ``join``, ``format`` ...) is refused *before* it
builds an oversized string. :func:`strip_punct`, :func:`lower_first` and
:func:`upper_first` are the filters promptkit adds to jinja's (PET's pattern helpers).

They work on Chinese text too: :func:`strip_punct` strips full-width and CJK punctuation
(``。！？，、；：…`` and the like) as well as ASCII punctuation, and the case filters leave
characters without case (Hanzi) as they are.
"""

from __future__ import annotations

import functools
import inspect
import string
import unicodedata
from collections.abc import Mapping
from typing import Any

from promptkit import template_limits
from promptkit.errors import TemplateError
from promptkit.template_limits import _PERCENT_SPEC, _check_length, _check_result, _format_size, _size, _state

_ASCII_FINAL = frozenset(string.punctuation + string.whitespace)

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
        if key in _SIZE_PARAMETERS and isinstance(given, int) and abs(given) > template_limits.MAX_LENGTH:
            _check_length(f"filter {name!r} with {key}={given!r}", abs(given))
    if name in _TEXT_FILTERS:
        bound.apply_defaults()
        _check_length(f"the result of filter {name!r}", _filter_size(name, value, bound.arguments))
    return bound.args, bound.kwargs


def _is_final_punct(char: str) -> bool:
    """ASCII punctuation or whitespace (PET's set), or any Unicode punctuation or space
    (full-width ``！？，：；``, CJK ``。、``, ``…``, closing quotes ``」”``)."""
    return char in _ASCII_FINAL or char.isspace() or unicodedata.category(char).startswith("P")


def strip_punct(value: str) -> str:
    """Remove final punctuation (as PET's ``remove_final_punc``) and whitespace, full-width and
    CJK punctuation included.

    Example:
        >>> strip_punct("可是你好多是给别人打的呀。"), strip_punct("It rains!? ")
        ('可是你好多是给别人打的呀', 'It rains')
    """
    value = str(value)
    end = len(value)
    while end and _is_final_punct(value[end - 1]):
        end -= 1
    return value[:end]


def lower_first(value: str) -> str:
    """Lower-case the first character (PET's ``lowercase_first``)."""
    value = str(value)
    return value[:1].lower() + value[1:]


def upper_first(value: str) -> str:
    """Upper-case the first character."""
    value = str(value)
    return value[:1].upper() + value[1:]
