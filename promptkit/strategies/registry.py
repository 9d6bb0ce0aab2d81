"""Strategies by name: ``@register("name")`` on a class, ``get_strategy("name", **params)``.

A strategy is a small class whose ``__init__`` only stores its parameters and whose
``fit(model, train, unlabeled=None, *, dev=None, targets=None, resume_from=None)`` returns
the trained :class:`~promptkit.model.PromptModel`: one signature for every strategy.
Registering a new one needs no edit anywhere else: decorate the class and import its module.
Strategies that train subclass :class:`~promptkit.strategies.base.TrainedStrategy` and
define only ``prepare``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from promptkit._registry import add_to_registry
from promptkit.errors import StrategyError, did_you_mean

_STRATEGIES: dict[str, type] = {}
T = TypeVar("T", bound=type)


@runtime_checkable
class Strategy(Protocol):
    """What every registered strategy provides."""

    def fit(
        self,
        model: Any,
        train: Any,
        unlabeled: Any = None,
        *,
        dev: Any = None,
        targets: Any = None,
        resume_from: str | Path | None = None,
    ) -> Any:
        """Train (or prepare) ``model`` on ``train`` and return it."""


def register(name: str) -> Callable[[T], T]:
    """Class decorator that registers a strategy under ``name``.

    Example:
        >>> @register("do_nothing")  # doctest: +SKIP
        ... class DoNothing:
        ...     def fit(self, model, train, unlabeled=None, *, dev=None, targets=None, resume_from=None):
        ...         return model
    """

    def decorate(cls: T) -> T:
        if not callable(getattr(cls, "fit", None)):
            raise StrategyError(f"strategy {name!r} ({cls.__name__}) has no fit(model, train, unlabeled=None, ...)")
        add_to_registry(_STRATEGIES, name, cls, "strategy", StrategyError)
        cls.name = name
        return cls

    return decorate


def list_strategies() -> list[str]:
    """Names of the registered strategies."""
    return sorted(_STRATEGIES)


def get_strategy(name: str, **params: Any) -> Strategy:
    """A new strategy ``name`` built with ``params``; unknown names and parameters are errors.

    Example:
        >>> get_strategy("finetune", config={"learning_rate": 1e-3, "max_steps": 20})  # doctest: +SKIP
        Finetune(...)
    """
    if name not in _STRATEGIES:
        raise StrategyError(
            f"unknown strategy {name!r}.{did_you_mean(name, _STRATEGIES)} Registered: {list_strategies()}"
        )
    cls = _STRATEGIES[name]
    valid = [p for p in inspect.signature(cls).parameters if p != "self"]
    for key in params:
        if key not in valid:
            raise StrategyError(
                f"strategy {name!r} has no parameter {key!r}.{did_you_mean(key, valid)} Valid parameters: {valid}"
            )
    return cls(**params)
