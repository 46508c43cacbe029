"""Knobs, declared once: type, bounds, default, help text and the short label a report or a run name uses.

Why one declaration: a knob such as the dampening lambda used to be re-declared by the CLI, the sweep
file, the Parquet schema, the MLflow params and the report, each with its own default and checks. Here a
knob is one pydantic field made with `knob()`; every consumer reads it through `knob_infos()`: CLI flags
and their help, the sweep-file schema, the Parquet column type, the MLflow param (only knobs that apply:
`Knobs.applied()`), the report's column label. Torch-free and Ray-free, so `--help` stays instant.
"""

from __future__ import annotations

import reprlib
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

__all__ = ["Choices", "KnobInfo", "Knobs", "knob", "knob_infos", "one_line", "short_value"]


@dataclass(frozen=True)
class Choices:
    """Marks a `str` knob whose values come from a registry (pruning methods): `Annotated[str, Choices(f)]`."""

    names: Callable[[], Sequence[str]]


def knob(default: Any, help: str, *, label: str = "", log: bool = False, **bounds: Any) -> Any:
    """A declared knob: a pydantic field with its help text, its short `label` (report headers and run names;
    default: the name) and whether it is searched and plotted on a log scale. `bounds`: ge, gt, le, lt,
    min_length, max_length."""
    return Field(default, description=help, json_schema_extra={"label": label, "log": log}, **bounds)


@dataclass(frozen=True)
class KnobInfo:
    """What every consumer reads about one knob."""

    name: str
    scalar: type  # int, float, str or bool (of the items, for a list knob)
    many: bool  # a list of values
    optional: bool  # None is allowed
    default: Any
    help: str
    label: str
    log: bool
    bounds: str  # "> 0, <= 1000000", for help texts
    choices: tuple[str, ...] | None

    def describe(self) -> str:
        """The knob's `--help` line: meaning, allowed values, default."""
        kind = ("list of " if self.many else "") + self.scalar.__name__
        allowed = "" if self.choices or not (self.bounds or self.many) else f"; {kind} {self.bounds}".rstrip()
        default = "" if self.default is None else f" (default: {_text(self.default)})"
        return f"{self.help}{allowed}{default}"


_BOUNDS = {"ge": ">= {}", "gt": "> {}", "le": "<= {}", "lt": "< {}"}


def _text(value: Any) -> str:
    return " ".join(map(str, value)) if isinstance(value, list | tuple) else str(value)


def _unwrap(annotation: Any) -> tuple[Any, bool, bool, list[Any]]:
    """(inner type, is a list, allows None, Annotated metadata) of a field annotation."""
    optional, many, meta = False, False, []
    while True:
        origin = typing.get_origin(annotation)
        if origin is typing.Annotated:
            annotation, *extra = typing.get_args(annotation)
            meta += extra
        elif origin in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(annotation) if a is not type(None)]
            optional = optional or len(args) < len(typing.get_args(annotation))
            annotation = args[0]
        elif origin in (list, tuple):
            many, annotation = True, typing.get_args(annotation)[0]
        else:
            return annotation, many, optional, meta


def knob_infos(model: type[BaseModel]) -> dict[str, KnobInfo]:
    """Every field of `model` as a `KnobInfo`, in declaration order."""
    infos = {}
    for name, field in model.model_fields.items():
        inner, many, optional, meta = _unwrap(field.annotation)
        meta += list(field.metadata)
        choices: tuple[str, ...] | None = None
        if typing.get_origin(inner) is Literal:
            choices = tuple(str(a) for a in typing.get_args(inner))
            inner = type(typing.get_args(inner)[0])
        marker = next((m for m in meta if isinstance(m, Choices)), None)
        if marker is not None:
            choices = tuple(marker.names())
        bounds = [
            t.format(getattr(m, k))
            for m in meta
            for k, t in _BOUNDS.items()
            if getattr(m, k, None) is not None
        ]
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        infos[name] = KnobInfo(
            name=name,
            scalar=inner if inner in (int, float, bool) else str,
            many=many,
            optional=optional,
            default=field.default,
            help=field.description or name,
            label=str(extra.get("label") or name),
            log=bool(extra.get("log")),
            bounds=", ".join(bounds),
            choices=choices,
        )
    return infos


_repr = reprlib.Repr()
_repr.maxstring, _repr.maxother, _repr.maxlist = 80, 80, 8


def one_line(err: ValidationError) -> str:
    """A validation error as one line naming each bad field and the value it got."""
    parts = []
    for e in err.errors():
        message = e["msg"].removeprefix("Value error, ")  # model-level messages name their field already
        if e["loc"]:
            got = "" if "got " in message else f" (got {_repr.repr(e['input'])})"  # a message may name it
            message = f"{'.'.join(str(x) for x in e['loc'])}: {message}{got}"
        parts.append(message)
    return "; ".join(parts)


class Knobs(BaseModel):
    """Base of every set of knobs: frozen, unknown keys refused, no NaN or infinity. Built in code
    (`Knobs(**values)`), a bad value is a `ValueError` of one line naming the field and the value."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as err:
            raise ValueError(one_line(err)) from None

    def unused(self) -> set[str]:
        """Knobs that do not apply given the others (e.g. the Fisher knobs of magnitude pruning)."""
        return set()

    def applied(self) -> dict[str, Any]:
        """The values that decide what is computed: set, not None, and applying (MLflow params, run names)."""
        values = self.model_dump(mode="json", exclude=self.unused())
        return {k: v for k, v in values.items() if v is not None}


def short_value(value: Any) -> str:
    """A value in a form that keeps its meaning in little room: 1e-07 -> `1e-7`, 0.000512 -> `5.1e-4`,
    0.05 -> `0.05`, 0.8999999 -> `0.9`, 64 -> `64`, `cyclic_linear` -> `cyclic_linear`; lists joined by `,`."""
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ",".join(short_value(v) for v in value)
    if isinstance(value, bool) or isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value == 0 or 0.01 <= abs(value) < 1e4:
            return f"{value:.3g}"
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa.removesuffix('.0')}e{int(exponent)}"
    return str(value)
