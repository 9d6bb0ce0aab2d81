"""What trained strategies share: one ``fit`` that prepares the model, then runs the one training loop.

A trained strategy differs from another only in :meth:`TrainedStrategy.prepare`: which
weights it freezes and which add-ons (:mod:`promptkit.addons`) it attaches. Everything
else, checking the data, training with :func:`promptkit.train.train` (loss, dev-set
selection, checkpoints, resuming) and refitting calibration, happens here once.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from promptkit.errors import DataError
from promptkit.examples import as_examples
from promptkit.losses import Loss
from promptkit.model import PromptModel
from promptkit.train import train as train_model
from promptkit.train_config import TrainConfig, TrainResult


class StrategyBase:
    """``repr`` from the constructor's parameters, as scikit-learn estimators show themselves."""

    def __repr__(self) -> str:
        names = [p for p in inspect.signature(type(self)).parameters if p != "self"]
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in names)})"


class TrainedStrategy(StrategyBase):
    """Base class of strategies that train: subclasses set ``default_learning_rate`` and define ``prepare``.

    Args:
        config: a :class:`~promptkit.train_config.TrainConfig` or a mapping of its fields;
            without a ``learning_rate`` (None) the strategy's ``default_learning_rate`` applies.
        loss: the training loss (:mod:`promptkit.losses`); None is cross-entropy.

    Attributes:
        result_: the :class:`~promptkit.train_config.TrainResult` of the last :meth:`fit`.
    """

    default_learning_rate: ClassVar[float]

    def __init__(self, config: TrainConfig | Mapping[str, Any] | None = None, loss: Loss | None = None) -> None:
        self.config = TrainConfig.coerce(config, learning_rate=self.default_learning_rate)
        self.loss = loss
        self.result_: TrainResult | None = None

    def prepare(self, model: PromptModel, rows: list[dict[str, Any]]) -> None:
        """Freeze what stays fixed and attach what trains (in place)."""
        raise NotImplementedError

    def fit(
        self,
        model: PromptModel,
        train: Any,
        unlabeled: Any = None,
        *,
        dev: Any = None,
        targets: Any = None,
        resume_from: str | Path | None = None,
    ) -> PromptModel:
        """Prepare ``model``, train it in place on ``train`` and return it.

        Args:
            model: the prompt model to train.
            train: labelled examples (labels unused when ``targets`` is given).
            unlabeled: examples that refit a ``"batch"`` calibration prior after training.
            dev: labelled examples; the best weights on them are kept.
            targets: labels or soft label distributions ``[N, n_labels]`` instead of the examples' labels.
            resume_from: a checkpoint folder, or an ``output_dir`` (its newest good checkpoint).
        """
        rows = as_examples(train) if train is not None else []
        if not rows:
            raise DataError(f"{type(self).__name__}.fit needs at least one training example; got none")
        self.prepare(model, rows)
        self.result_ = train_model(
            model, rows, self.config, targets=targets, dev=dev, resume_from=resume_from, loss=self.loss
        )
        model.refit_calibration(unlabeled)
        return model
