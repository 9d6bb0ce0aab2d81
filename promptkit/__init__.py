"""promptkit: prompt-based learning with pretrained language models.

``PromptClassifier`` is imported on first use: it needs scikit-learn, whose import costs about
100 MB of memory that scoring with a :class:`PromptModel` never needs.
"""

from typing import Any

from promptkit.backbones import list_backbones, load_backbone
from promptkit.demonstrations import with_demonstrations
from promptkit.errors import (
    BackboneError,
    CatalogError,
    CheckpointError,
    ConfigError,
    DataError,
    EncodingError,
    PromptkitError,
    SavedModelError,
    StrategyError,
    TemplateError,
    VerbalizerError,
)
from promptkit.examples import as_examples, labels_of, sample_k_shot
from promptkit.losses import AuxiliaryLM, CrossEntropy, Distillation, Loss
from promptkit.model import PromptModel
from promptkit.soft_verbalizer import SoftVerbalizer
from promptkit.strategies import get_strategy, list_strategies, register
from promptkit.tasks import list_tasks, load_task
from promptkit.template import Prompt, Segment, Template
from promptkit.train import train
from promptkit.train_config import TrainConfig
from promptkit.verbalizer import Verbalizer

__all__ = [
    "AuxiliaryLM",
    "BackboneError",
    "CatalogError",
    "CheckpointError",
    "ConfigError",
    "CrossEntropy",
    "DataError",
    "Distillation",
    "EncodingError",
    "Loss",
    "Prompt",
    "PromptClassifier",
    "PromptModel",
    "PromptkitError",
    "SavedModelError",
    "Segment",
    "StrategyError",
    "SoftVerbalizer",
    "Template",
    "TrainConfig",
    "TemplateError",
    "Verbalizer",
    "VerbalizerError",
    "as_examples",
    "get_strategy",
    "labels_of",
    "list_backbones",
    "list_strategies",
    "list_tasks",
    "load_backbone",
    "load_task",
    "register",
    "sample_k_shot",
    "train",
    "with_demonstrations",
]


def __getattr__(name: str) -> Any:
    if name == "PromptClassifier":
        from promptkit.classifier import PromptClassifier

        return PromptClassifier
    raise AttributeError(f"module 'promptkit' has no attribute {name!r}")
