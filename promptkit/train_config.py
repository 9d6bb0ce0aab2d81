"""Settings and results of :func:`promptkit.train.train`, as validated plain data."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal

from promptkit.errors import ConfigError, check_choice, check_keys


def config_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Build dataclass ``cls`` from ``data``; an unknown key is an error naming the closest valid key."""
    check_keys(cls.__name__, data, [f.name for f in fields(cls)], None, ConfigError)
    return cls(**data)


DEFAULT_LEARNING_RATE = 1e-5
"""The rate :func:`~promptkit.train.train` uses when ``TrainConfig.learning_rate`` is None (full fine-tuning's)."""

# Field kinds, checked on construction. Floats must be finite; from_dict also converts numeric strings.
_FLOATS = ("learning_rate", "warmup_ratio", "weight_decay", "max_grad_norm")
_INTS = ("batch_size", "grad_accumulation", "epochs", "max_steps", "eval_every", "patience", "seed", "save_every")
_BOOLS = ("progress",)
_CHOICES = {"lr_schedule": ("linear", "constant"), "mixed_precision": ("no", "fp16", "bf16")}
# Fields where None means "the strategy's default": TrainConfig.coerce fills them from its defaults.
_STRATEGY_DEFAULTS = ("learning_rate",)


def _require(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"TrainConfig.{name}={value!r} is invalid: expected {expected}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _from_text(name: str, value: Any) -> Any:
    """A numeric string for a float or int field as a number (YAML reads ``1e-2`` as a string); else unchanged."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if name in _FLOATS:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(
                f"TrainConfig.{name}={value!r} is invalid: expected a number, e.g. 1e-5 (numeric strings such "
                "as '1e-5' are converted; this one is not a number)"
            ) from None
    if name in _INTS:
        digits = text[1:] if text[:1] in "+-" else text
        if not digits.isdigit():
            raise ConfigError(
                f"TrainConfig.{name}={value!r} is invalid: expected an int, e.g. 8 (strings of digits such as '8' "
                "are converted; this one is not a whole number)"
            )
        return int(text)
    return value


@dataclass
class TrainConfig:
    """Settings of :func:`train`; validated on construction.

    Attributes:
        learning_rate: peak AdamW learning rate (> 0). None (the default) means the
            strategy's default rate; :func:`~promptkit.train.train` itself then uses
            :data:`DEFAULT_LEARNING_RATE` (1e-5), see :attr:`resolved_learning_rate`.
        batch_size: examples per forward step, over all processes together.
        grad_accumulation: forward steps per optimizer step.
        epochs: passes over the data (ignored when ``max_steps`` is set).
        max_steps: optimizer steps to take; overrides ``epochs``.
        warmup_ratio: fraction of the steps with linear warm-up from 0.
        lr_schedule: ``"linear"`` decay to 0 after warm-up, or ``"constant"``.
        weight_decay: AdamW weight decay.
        max_grad_norm: clip the gradient norm to this; None turns clipping off.
        mixed_precision: ``"no"``, ``"fp16"`` or ``"bf16"`` (accelerate).
        eval_every: evaluate on the dev set every this many steps; 0 = at each epoch's end.
        patience: stop after this many evaluations without improvement; None = never.
        seed: seeds Python, NumPy and torch, and the sample order.
        output_dir: where checkpoints go (a str; a path object is turned into one).
        save_every: write a checkpoint every this many steps (and at the end); 0 = never.
        label_key: the examples' label field.
        progress: show a progress bar.

    Types are checked strictly: float fields take ints or floats and must be finite (no
    nan or inf); int fields take ints only (not ``2.5``, ``8.0`` or ``True``); ``progress``
    takes ``True`` or ``False`` only; ``lr_schedule`` and ``mixed_precision`` take one of
    their choices. :meth:`from_dict` (data read from JSON or YAML) additionally converts
    numeric strings: ``"1e-2"`` for a float field, a string of digits such as ``"8"`` for an
    int field. Resuming a checkpoint requires the same settings that shape the optimisation
    (see :mod:`promptkit.checkpoint`).

    Example:
        >>> TrainConfig.from_dict({"learning_rate": "1e-3", "max_steps": 20}).to_dict()["learning_rate"]
        0.001
    """

    learning_rate: float | None = None
    batch_size: int = 8
    grad_accumulation: int = 1
    epochs: int = 3
    max_steps: int | None = None
    warmup_ratio: float = 0.0
    lr_schedule: Literal["linear", "constant"] = "linear"
    weight_decay: float = 0.0
    max_grad_norm: float | None = 1.0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    eval_every: int = 0
    patience: int | None = None
    seed: int = 42
    output_dir: str | None = None
    save_every: int = 0
    label_key: str = "label"
    progress: bool = True

    def __post_init__(self) -> None:
        self._check_types()
        rate = "a number > 0, e.g. 1e-5 for full fine-tuning or 1e-3 for LoRA (None: the strategy's default)"
        _require(self.learning_rate is None or self.learning_rate > 0, "learning_rate", self.learning_rate, rate)
        minimum = {"batch_size": 1, "grad_accumulation": 1, "epochs": 1, "eval_every": 0, "save_every": 0, "seed": 0}
        for name, low in minimum.items():
            value = getattr(self, name)
            _require(value >= low, name, value, f"an int >= {low}")
        for name in ("max_steps", "patience"):
            value = getattr(self, name)
            _require(value is None or value >= 1, name, value, "None or an int >= 1")
        _require(0 <= self.warmup_ratio < 1, "warmup_ratio", self.warmup_ratio, "0 <= warmup_ratio < 1")
        _require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        _require(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm", self.max_grad_norm,
                 "None or a number > 0")  # fmt: skip
        _require(not self.save_every or bool(self.output_dir), "save_every", self.save_every,
                 "0 when output_dir is None; set output_dir=... to save checkpoints")  # fmt: skip

    def _check_types(self) -> None:
        for name in _FLOATS:
            value = getattr(self, name)
            if value is None and name in ("learning_rate", "max_grad_norm"):
                continue
            _require(_is_number(value), name, value, f"a number, not {type(value).__name__}")
            _require(math.isfinite(value), name, value, "a finite number (not nan or inf)")
        for name in _INTS:
            value = getattr(self, name)
            if value is None and name in ("max_steps", "patience"):
                continue
            what = "True/False" if isinstance(value, bool) else type(value).__name__
            _require(type(value) is int, name, value, f"an int, not {what}")
        for name in _BOOLS:
            value = getattr(self, name)
            _require(isinstance(value, bool), name, value, f"True or False, not {type(value).__name__}")
        for name, choices in _CHOICES.items():
            check_choice(f"TrainConfig.{name}", getattr(self, name), choices)
        if self.output_dir is not None:
            _require(isinstance(self.output_dir, (str, os.PathLike)), "output_dir", self.output_dir,
                     "None or a folder path (str)")  # fmt: skip
            self.output_dir = os.fspath(self.output_dir)
            _require(bool(self.output_dir), "output_dir", self.output_dir, "None or a non-empty folder path")
        _require(isinstance(self.label_key, str) and bool(self.label_key), "label_key", self.label_key,
                 "the examples' label field name, a non-empty str such as 'label'")  # fmt: skip

    @property
    def resolved_learning_rate(self) -> float:
        """``learning_rate``, or :data:`DEFAULT_LEARNING_RATE` when it is None; what :func:`train` uses."""
        return DEFAULT_LEARNING_RATE if self.learning_rate is None else self.learning_rate

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a plain mapping (e.g. JSON or YAML); unknown keys are an error, never dropped.

        Numeric strings are converted: ``"1e-2"`` for a float field (PyYAML reads ``1e-2``
        without a dot as a string), a string of digits such as ``"8"`` for an int field.
        Any other string there is a :class:`~promptkit.errors.ConfigError` naming the key.
        """
        if isinstance(data, Mapping):
            data = {key: _from_text(key, value) for key, value in data.items()}
        return config_from_dict(cls, data)

    @classmethod
    def coerce(cls, config: TrainConfig | Mapping[str, Any] | None, **defaults: Any) -> TrainConfig:
        """A strategy's ``config`` argument as a TrainConfig; ``defaults`` are the strategy's.

        A mapping (or None) gets ``defaults`` for the keys it lacks. A TrainConfig is used as
        given, except that a ``learning_rate`` of None (meaning "the strategy's default") is
        replaced by ``defaults["learning_rate"]`` in a copy; the same holds for a mapping
        whose ``learning_rate`` is None.

        Example:
            >>> TrainConfig.coerce({"max_steps": 5}, learning_rate=3e-2).learning_rate
            0.03
            >>> TrainConfig.coerce(TrainConfig(max_steps=5), learning_rate=3e-2).learning_rate
            0.03
        """
        if not isinstance(config, TrainConfig):
            if config is not None and not isinstance(config, Mapping):
                raise ConfigError(
                    f"TrainConfig settings must be a mapping or a TrainConfig, got {type(config).__name__}: "
                    f"{config!r}; pass e.g. {{'learning_rate': 1e-3, 'max_steps': 100}}"
                )
            config = cls.from_dict({**defaults, **(config or {})})
        fill = {k: defaults[k] for k in _STRATEGY_DEFAULTS if k in defaults and getattr(config, k) is None}
        return replace(config, **fill) if fill else config

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; ``TrainConfig.from_dict(c.to_dict()) == c``."""
        return asdict(self)


@dataclass
class TrainResult:
    """What :func:`train` did: per-step losses, dev scores ``[step, accuracy, gold log-likelihood]``, the best step."""

    steps: int
    losses: list[float] = field(default_factory=list)
    dev_scores: list[list[float]] = field(default_factory=list)
    best_step: int | None = None
    best_score: float | None = None
    stopped_early: bool = False
