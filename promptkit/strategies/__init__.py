"""Training strategies, registered by name; importing this package registers the built-in ones."""

from promptkit.errors import StrategyError
from promptkit.lora import LoraSettings
from promptkit.strategies import (  # noqa: F401  (registers the built-ins)
    autoprompt,
    finetune,
    pet,
    pet_ipet,
    prefix_tuning,
    soft_prompt,
    zero_shot,
)
from promptkit.strategies.autoprompt import AutoPrompt, TriggerTokens
from promptkit.strategies.base import TrainedStrategy
from promptkit.strategies.finetune import Finetune
from promptkit.strategies.pet import Pet
from promptkit.strategies.pet_ipet import IPet
from promptkit.strategies.prefix_tuning import PrefixTuningStrategy
from promptkit.strategies.registry import Strategy, get_strategy, list_strategies, register
from promptkit.strategies.soft_prompt import SoftPrompt
from promptkit.strategies.zero_shot import ZeroShot

__all__ = [
    "AutoPrompt",
    "Finetune",
    "IPet",
    "LoraSettings",
    "Pet",
    "PrefixTuningStrategy",
    "SoftPrompt",
    "Strategy",
    "StrategyError",
    "TrainedStrategy",
    "TriggerTokens",
    "ZeroShot",
    "get_strategy",
    "list_strategies",
    "register",
]
