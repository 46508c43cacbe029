"""Name -> pruning method, filled by the `register_method` class decorator (timm's `register_model` pattern)."""

from __future__ import annotations

from typing import TypeVar

from ovit_ray.pruning.methods.base import PruningMethod

__all__ = ["get_method", "method_names", "register_method"]

_METHODS: dict[str, type[PruningMethod]] = {}
M = TypeVar("M", bound=type[PruningMethod])


def register_method(cls: M) -> M:
    """Make `cls` selectable as `cls.name` in settings, run configs and the CLI; names are unique."""
    if cls.name in _METHODS:
        raise ValueError(
            f"pruning method {cls.name!r} is already registered by {_METHODS[cls.name].__qualname__}"
        )
    _METHODS[cls.name] = cls
    return cls


def method_names() -> tuple[str, ...]:
    """Registered names, in registration order (the CLI's default order)."""
    return tuple(_METHODS)


def get_method(name: str) -> PruningMethod:
    """A fresh instance of the method registered as `name`; otherwise a ValueError listing the names."""
    cls = _METHODS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown pruning method {name!r}; choose from {', '.join(_METHODS)}")
    return cls()
