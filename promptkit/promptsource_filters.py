"""The jinja helpers promptsource's templates use, rebuilt for promptkit's sandbox.

promptsource renders its templates with three extra filters and one extra global; they
are registered on promptkit's template environment (:mod:`promptkit.template_sandbox`)
so that converted templates compile, save and load like any other template:

* ``choice``: one item of a sequence. promptsource draws it with the unseeded
  ``random.choice``; here the draw is a hash of ``seed``, the example's fields and the
  items, so one example always renders the same prompt and different examples still get
  different picks (``{{ ["Is it", "Was it"] | choice }}``; ``| choice(seed=13)`` for
  another draw).
* ``most_frequent``: the items that occur most often, in first-seen order (``None`` for an
  empty input, as in promptsource).
* ``highlight``: the value wrapped in promptsource's highlighting ``<span>``.
* ``zip``: Python's ``zip`` as a list, bounded by ``MAX_LENGTH`` like every list a
  template builds.

Every call counts against the render budget through the sandbox's filter wrapper.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from typing import Any

from jinja2.utils import pass_context

from promptkit.errors import TemplateError
from promptkit.template_limits import _check_length, _size

HIGHLIGHT_OPEN = "<span style='color: #F08080'>"
HIGHLIGHT_CLOSE = "</span>"
_SCALARS = (str, int, float, bool)


def _fields(context: Any) -> list[list[str]]:
    """The plain values a render sees (example fields and top-level variables), sorted."""
    values = context.get_all() if context is not None else {}
    return sorted([str(k), repr(v)] for k, v in values.items() if isinstance(v, _SCALARS) and v is not None)


@pass_context
def choice(context: Any, items: Any, seed: int = 0) -> Any:
    """One item of ``items``, picked by a hash of ``seed``, the example and the items.

    Raises:
        TemplateError: ``items`` is empty or ``seed`` is not an int.
    """
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TemplateError(f"filter 'choice' takes an int seed, got seed={seed!r}")
    sequence = items if isinstance(items, (str, list, tuple)) else list(items)
    if not sequence:
        raise TemplateError(f"filter 'choice' got an empty sequence ({items!r}); give it at least one item")
    key = json.dumps([seed, _fields(context), [repr(item) for item in sequence]], ensure_ascii=True)
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return sequence[digest % len(sequence)]


def most_frequent(items: Iterable[Any]) -> list[Any] | None:
    """The items that occur most often (ties all kept, first seen first); None if ``items`` is empty."""
    counts = Counter(items)
    if not counts:
        return None
    top = max(counts.values())
    return [item for item, n in counts.items() if n == top]


def highlight(value: Any) -> str:
    """``value`` inside promptsource's highlighting span."""
    return HIGHLIGHT_OPEN + str(value) + HIGHLIGHT_CLOSE


def bounded_zip(*iterables: Iterable[Any]) -> list[tuple[Any, ...]]:
    """``list(zip(*iterables))``, refused when it would hold more than ``MAX_LENGTH`` items."""
    lists = [list(it) for it in iterables]
    for given in lists:
        _check_length("an argument of zip()", _size(given))
    return list(zip(*lists))
