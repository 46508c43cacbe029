"""Name -> experiment kind, filled by the `register_kind` class decorator (timm's `register_model` pattern)."""

from __future__ import annotations

from typing import TypeVar

from ovit_ray.orchestration.kinds.base import ExperimentKind

__all__ = ["get_kind", "kind_names", "register_kind"]

_KINDS: dict[str, type[ExperimentKind]] = {}
K = TypeVar("K", bound=type[ExperimentKind])


def register_kind(cls: K) -> K:
    """Make `cls` a sweep-file section, a `kind` and a CLI choice under `cls.name`; names are unique
    (registering the same class again, as a re-imported test module does, is a no-op)."""
    known = _KINDS.get(cls.name)
    if known is not None and known.__qualname__ != cls.__qualname__:
        raise ValueError(f"experiment kind {cls.name!r} is already registered by {known.__qualname__}")
    _KINDS[cls.name] = cls
    return cls


def kind_names() -> tuple[str, ...]:
    return tuple(_KINDS)


def get_kind(name: str) -> ExperimentKind:
    """A fresh instance of the kind registered as `name`; otherwise a ValueError listing the names."""
    cls = _KINDS.get(name) if isinstance(name, str) else None
    if cls is None:
        raise ValueError(f"unknown experiment kind {name!r}; choose from {', '.join(_KINDS)}")
    return cls()
