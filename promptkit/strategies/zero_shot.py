"""Zero-shot: no training; optionally fit the calibration prior."""

from __future__ import annotations

from typing import Any

from promptkit.errors import PromptkitError
from promptkit.examples import as_examples
from promptkit.model import Calibration, PromptModel
from promptkit.strategies.registry import register

_CHOICES = ("none", "content_free", "batch")


@register("zero_shot")
class ZeroShot:
    """Use the pretrained LM as it is; fit calibration if the model (or ``calibrate``) asks for it.

    Args:
        calibrate: overrides the model's ``calibrate`` setting when given. ``"batch"`` fits
            the prior on ``unlabeled`` examples, else on the training inputs (labels unused).

    Example:
        >>> model = get_strategy("zero_shot", calibrate="content_free").fit(model, [])  # doctest: +SKIP
    """

    def __init__(self, calibrate: Calibration | None = None) -> None:
        if calibrate is not None and calibrate not in _CHOICES:
            raise PromptkitError(f"invalid calibrate={calibrate!r}; valid are {list(_CHOICES)}")
        self.calibrate = calibrate

    def __repr__(self) -> str:
        return f"ZeroShot(calibrate={self.calibrate!r})"

    def fit(self, model: PromptModel, train: Any = None, unlabeled: Any = None) -> PromptModel:
        """Return ``model`` with its calibration prior fitted (nothing else changes)."""
        if self.calibrate is not None:
            model.calibrate = self.calibrate
        if model.calibrate == "content_free":
            model.fit_calibration()
        elif model.calibrate == "batch":
            inputs = unlabeled if unlabeled is not None else train
            if inputs is None or not as_examples(inputs):
                raise PromptkitError("calibrate='batch' needs examples: pass unlabeled=... (or training inputs)")
            model.fit_calibration(inputs)
        return model
