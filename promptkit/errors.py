"""Every exception type promptkit raises, and the helpers that word its messages.

All errors subclass :class:`PromptkitError`. Every one caused by what a user passed or
pointed at (arguments, data, templates, saved files, checkpoints) also subclasses
:class:`ValueError`, so a generic ``except ValueError`` handler catches it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence


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


class DataUnavailableError(DataError):
    """No source has the data: not ``$PROMPTKIT_DATA``, ``shared/data``, the cache or the hub."""


class EncodingError(PromptkitError, ValueError):
    """A prompt cannot be turned into model inputs (e.g. it is too long)."""


class ConfigError(PromptkitError, ValueError):
    """An option or configuration value is invalid or unknown (model options, TrainConfig, losses)."""


class StrategyError(PromptkitError, ValueError):
    """A strategy name or parameter is unknown, or a name is registered twice."""


class CheckpointError(PromptkitError, ValueError):
    """A checkpoint is missing, damaged, or belongs to a different run."""


class SavedModelError(PromptkitError, ValueError):
    """A folder written by ``save_pretrained`` is missing, damaged or from another format."""


def closest(name: object, choices: Iterable[object]) -> object | None:
    """The choice closest to ``name`` (by spelling, ignoring case), or None if none is close."""
    by_text = {str(c).lower(): c for c in reversed(list(choices))}  # the first of case-twins wins
    close = difflib.get_close_matches(str(name).lower(), list(by_text), n=1, cutoff=0.6)
    return by_text[close[0]] if close else None


def did_you_mean(name: object, choices: Iterable[object]) -> str:
    """Return ``" Did you mean 'x'?"`` for the closest choice, or ``""`` if none is close."""
    match = closest(name, choices)
    return f" Did you mean {match!r}?" if match is not None else ""


def check_keys(
    what: str, data: object, valid: Sequence[str], required: str | None, error: type[PromptkitError]
) -> None:
    """``data`` must be a mapping whose keys are among ``valid`` (and include ``required``).

    Raises ``error`` naming ``what``, the offending key and the closest valid one.
    """
    if not isinstance(data, Mapping):
        raise error(f"{what} must be a mapping with keys {list(valid)}, got {type(data).__name__}: {str(data)[:200]}")
    for key in data:
        if key not in valid:
            raise error(f"{what} has an unknown key {key!r}.{did_you_mean(key, valid)} Valid keys: {list(valid)}")
    if required is not None and required not in data:
        raise error(f"{what} has no {required!r} (keys: {sorted(map(str, data))}); add it")


def check_choice(name: str, value: object, valid: Iterable[object], error: type[PromptkitError] = ConfigError) -> None:
    """Raise ``error`` naming ``name``, the bad ``value``, the valid choices and the closest one.

    Example:
        >>> check_choice("calibrate", "batch", ("none", "batch"))
        >>> check_choice("calibrate", "bacth", ("none", "batch"))
        Traceback (most recent call last):
        ...
        promptkit.errors.ConfigError: invalid calibrate='bacth'; valid are ['none', 'batch']. Did you mean 'batch'?
    """
    valid = list(valid)
    if not isinstance(value, str) or value not in valid:
        raise error(f"invalid {name}={value!r}; valid are {valid}.{did_you_mean(value, valid)}".rstrip("."))
