"""Settings and results of :func:`promptkit.train.train`, as validated plain data."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

from promptkit.errors import ConfigError, did_you_mean


def config_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Build dataclass ``cls`` from ``data``; an unknown key is an error naming the closest valid key."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{cls.__name__} settings must be a mapping, got {type(data).__name__}")
    valid = [f.name for f in fields(cls)]
    for key in data:
        if key not in valid:
            raise ConfigError(f"unknown {cls.__name__} key {key!r}.{did_you_mean(key, valid)} Valid keys: {valid}")
    return cls(**data)


def _require(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"TrainConfig.{name}={value!r} is invalid: expected {expected}")


@dataclass
class TrainConfig:
    """Settings of :func:`train`; validated on construction.

    Attributes:
        learning_rate: peak AdamW learning rate (> 0).
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
        output_dir: where checkpoints go.
        save_every: write a checkpoint every this many steps (and at the end); 0 = never.
        label_key: the examples' label field.
        progress: show a progress bar.

    Example:
        >>> TrainConfig.from_dict({"learning_rate": 1e-3, "max_steps": 20}).to_dict()["max_steps"]
        20
    """

    learning_rate: float = 1e-5
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
        _require(isinstance(self.learning_rate, (int, float)) and self.learning_rate > 0, "learning_rate",
                 self.learning_rate, "a number > 0, e.g. 1e-5 for full fine-tuning or 1e-3 for LoRA")  # fmt: skip
        minimum = {"batch_size": 1, "grad_accumulation": 1, "epochs": 1, "eval_every": 0, "save_every": 0, "seed": 0}
        for name, low in minimum.items():
            value = getattr(self, name)
            _require(type(value) is int and value >= low, name, value, f"an int >= {low}")
        for name in ("max_steps", "patience"):
            value = getattr(self, name)
            _require(value is None or (type(value) is int and value >= 1), name, value, "None or an int >= 1")
        _require(0 <= self.warmup_ratio < 1, "warmup_ratio", self.warmup_ratio, "0 <= warmup_ratio < 1")
        _require(self.weight_decay >= 0, "weight_decay", self.weight_decay, "a number >= 0")
        _require(self.max_grad_norm is None or self.max_grad_norm > 0, "max_grad_norm", self.max_grad_norm,
                 "None or a number > 0")  # fmt: skip
        _require(self.lr_schedule in ("linear", "constant"), "lr_schedule", self.lr_schedule, "'linear' or 'constant'")
        _require(self.mixed_precision in ("no", "fp16", "bf16"), "mixed_precision", self.mixed_precision,
                 "one of 'no', 'fp16', 'bf16'")  # fmt: skip
        _require(not self.save_every or bool(self.output_dir), "save_every", self.save_every,
                 "0 when output_dir is None; set output_dir=... to save checkpoints")  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Build from a plain mapping (e.g. JSON); unknown keys are an error, never dropped."""
        return config_from_dict(cls, data)

    @classmethod
    def coerce(cls, config: TrainConfig | Mapping[str, Any] | None, **defaults: Any) -> TrainConfig:
        """A strategy's ``config`` argument as a TrainConfig; ``defaults`` fill keys a mapping (or None) lacks.

        Example:
            >>> TrainConfig.coerce({"max_steps": 5}, learning_rate=3e-2).learning_rate
            0.03
        """
        return config if isinstance(config, TrainConfig) else cls.from_dict({**defaults, **(config or {})})

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
