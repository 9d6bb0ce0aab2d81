"""Exception types raised by promptkit.

Every error subclasses :class:`PromptkitError`; the ones caused by bad user input also
subclass :class:`ValueError` so generic ``except ValueError`` handlers keep working.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class PromptkitError(Exception):
    """Base class of every promptkit error."""


class TemplateError(PromptkitError, ValueError):
    """A template is malformed, or an example cannot be rendered through it."""


class VerbalizerError(PromptkitError, ValueError):
    """A verbalizer is malformed, or a label / label word cannot be used."""


class CatalogError(PromptkitError, ValueError):
    """A catalog name or catalog file is wrong."""


class BackboneError(PromptkitError, ValueError):
    """A backbone cannot be found, installed or used."""


class DataError(PromptkitError, ValueError):
    """Input data is missing, malformed or of an unsupported type."""


class EncodingError(PromptkitError, ValueError):
    """A prompt cannot be turned into model inputs (e.g. it is too long)."""


def did_you_mean(name: object, choices: Iterable[object]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``""`` if none is close."""
    by_text = {str(c): c for c in choices}
    close = difflib.get_close_matches(str(name), list(by_text), n=1, cutoff=0.6)
    return f" Did you mean {by_text[close[0]]!r}?" if close else ""
