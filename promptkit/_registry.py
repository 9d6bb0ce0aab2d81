"""The one way a class is registered under a name (strategies, saved add-on modules)."""

from __future__ import annotations


def add_to_registry(registry: dict[str, type], name: str, cls: type, kind: str, error: type[Exception]) -> None:
    """Store ``cls`` as ``registry[name]``; another class under a taken name is an ``error``.

    Re-registering the same class (a module imported twice) is allowed.
    """
    known = registry.get(name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise error(f"{kind} name {name!r} is already taken by {known.__qualname__}; pick another")
    registry[name] = cls
