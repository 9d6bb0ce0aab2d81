"""Zero-shot: no training; optionally fit the calibration prior."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from promptkit.errors import DataError, StrategyError, check_choice
from promptkit.examples import as_examples
from promptkit.model import CALIBRATIONS, Calibration, PromptModel
from promptkit.strategies.base import StrategyBase
from promptkit.strategies.registry import register


@register("zero_shot")
class ZeroShot(StrategyBase):
    """Use the pretrained LM as it is; fit calibration if the model (or ``calibrate``) asks for it.

    Args:
        calibrate: overrides the model's ``calibrate`` setting when given. ``"batch"`` fits
            the prior on ``unlabeled`` examples, else on the training inputs (labels unused).

    Example:
        >>> model = get_strategy("zero_shot", calibrate="content_free").fit(model, [])  # doctest: +SKIP
    """

    def __init__(self, calibrate: Calibration | None = None) -> None:
        if calibrate is not None:
            check_choice("calibrate", calibrate, CALIBRATIONS, StrategyError)
        self.calibrate = calibrate

    def fit(
        self,
        model: PromptModel,
        train: Any = None,
        unlabeled: Any = None,
        *,
        dev: Any = None,
        targets: Any = None,
        resume_from: str | Path | None = None,
    ) -> PromptModel:
        """Return ``model`` with its calibration prior fitted (nothing else changes).

        The one strategy signature; ``dev``, ``targets`` and ``resume_from`` have nothing to
        act on without training and are accepted so every strategy can be called alike.
        """
        if self.calibrate is not None:
            model.calibrate = self.calibrate
        if model.calibrate == "content_free":
            model.fit_calibration()
        elif model.calibrate == "batch":
            inputs = unlabeled if unlabeled is not None else train
            if inputs is None or not as_examples(inputs):
                raise DataError("calibrate='batch' needs examples: pass unlabeled=... (or training inputs)")
            model.fit_calibration(inputs)
        return model
