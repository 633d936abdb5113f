"""Name → method class registry used by the benchmark runner and the CLI."""

from __future__ import annotations

from typing import Any

from brainalign.errors import BrainAlignError
from brainalign.models.base import Method

_METHODS: dict[str, type[Method]] = {}


def register_method(name: str):
    """Class decorator: make a :class:`Method` subclass available under ``name``."""

    def decorate(cls: type[Method]) -> type[Method]:
        if name in _METHODS and _METHODS[name] is not cls:
            raise BrainAlignError(f"method name '{name}' is already registered by {_METHODS[name].__name__}")
        cls.name = name
        _METHODS[name] = cls
        return cls

    return decorate


def available_methods() -> list[str]:
    return sorted(_METHODS)


def get_method(name: str, **params: Any) -> Method:
    """A new, unfitted method instance by registered name."""
    try:
        cls = _METHODS[name]
    except KeyError:
        raise BrainAlignError(f"unknown method '{name}'; available: {', '.join(available_methods())}") from None
    try:
        return cls(**params)
    except TypeError as err:
        raise BrainAlignError(f"bad parameters for method '{name}': {err}") from None
