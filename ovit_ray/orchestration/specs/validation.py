"""Pydantic validation of user files with errors people can act on: one line per root cause,
"FILE: key.path: message, got VALUE" (a union reports once, a misspelt required key once)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from ovit_ray.knobs import one_line
from ovit_ray.orchestration.common.yaml_files import clip_line, short_repr

__all__ = ["Strict", "one_line", "report_problems", "validate_file"]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _problems(err: ValidationError) -> list[str]:
    """One line per distinct location (a union reports once per member; keep the first); a required key
    missing next to an unknown one is one misspelling, so one line; a tuple too short is one line."""
    seen: dict[str, str] = {}
    missing: dict[str, str] = {}  # parent path -> location of its missing key
    extra: dict[str, str] = {}  # parent path -> its first unknown key
    short: dict[str, tuple[int, Any]] = {}  # tuple path -> (items it needs, the value given)
    for e in err.errors():
        loc = [str(x) for x in e["loc"] if not (isinstance(x, str) and ("[" in x or x in _TYPE_TAGS))]
        where = ".".join(loc) or "file"
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] not in ("missing", "value_error", "assertion_error") or "got" not in message:
            message += f", got {short_repr(e['input'])}" if e["type"] != "missing" else ""
        if e["type"] in ("missing", "extra_forbidden"):
            (missing if e["type"] == "missing" else extra).setdefault(".".join(loc[:-1]), where)
        if e["type"] == "missing" and isinstance(e["loc"][-1], int):  # the input is the whole tuple
            needs = max(short.get(".".join(loc[:-1]), (0, None))[0], e["loc"][-1] + 1)
            short[".".join(loc[:-1])] = (needs, e["input"])
        seen.setdefault(where, f"{where}: {message}")
    for parent, (needs, value) in short.items():
        for k in [k for k in seen if k.rsplit(".", 1)[0] == parent]:
            seen.pop(k)
        seen[parent] = f"{parent}: needs {needs} items, got {short_repr(value)}"
    for parent in {k.rsplit(".", 1)[0] for k in seen if "." in k}:  # several required keys of one value
        keys = [
            k for k, line in seen.items() if k.rsplit(".", 1)[0] == parent and line.endswith("Field required")
        ]
        if len(keys) > 1 and parent not in extra:
            for k in keys:
                seen.pop(k)
            seen[parent] = f"{parent}: required keys missing: {', '.join(k.rsplit('.', 1)[1] for k in keys)}"
    for parent, where in missing.items():
        if parent in extra and where in seen:
            typo = seen.pop(extra[parent])
            seen[where] = f"{where}: required, but the file has an unknown key ({typo})"
    return list(seen.values())


_TYPE_TAGS = {"bool", "int", "float", "str", "function-after", "function-before", "function-wrap"}


def report_problems(path: Path, problems: list[str]) -> ValueError:
    return ValueError("\n".join(clip_line(f"{path}: {p}") for p in problems))


def validate_file(model: type[BaseModel], values: dict[str, Any], path: Path) -> Any:
    try:
        return model.model_validate(values)
    except ValidationError as err:
        raise report_problems(path, _problems(err)) from None
