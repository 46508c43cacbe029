"""The reference of every registered kind, from the registry and the knob declarations: the README's kinds
table and docs/SWEEP_FILES.md's knob tables are these texts (`python -m ovit_ray.orchestration.kinds.reference`
rewrites them; tests/test_docs_reference.py keeps them equal)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from ovit_ray.knobs import knob_infos, short_value
from ovit_ray.orchestration.kinds import _BUILT_IN, get_kind

__all__ = ["kinds_table", "knob_tables", "rewrite"]


def kinds_table() -> str:
    """| kind | what a trial does | its targets | reports epochs (ASHA) |."""
    lines = ["| kind | a trial | `target` of a row | per epoch (ASHA) |", "|---|---|---|---|"]
    for name in _BUILT_IN:
        kind = get_kind(name)
        targets = f"`{kind.targets_knob}` ({kind.target_name})" if kind.targets_knob else kind.target_name
        lines.append(f"| `{name}` | {kind.summary} | {targets} | {'yes' if kind.reports_epochs else 'no'} |")
    return "\n".join(lines)


def knob_tables() -> str:
    """One table per built-in kind: every knob with its type and bounds, default and meaning."""
    parts = []
    for name in _BUILT_IN:
        kind = get_kind(name)
        parts += [
            f"### `{name}`",
            "",
            kind.summary,
            "",
            "| knob | label | type | default | meaning |",
            "|---|---|---|---|---|",
        ]
        for info in knob_infos(kind.spec).values():
            kind_text = (
                " \\| ".join(info.choices)
                if info.choices
                else ("list of " if info.many else "") + info.scalar.__name__
            )
            bounds = f" {info.bounds}" if info.bounds else ""
            label = info.label if info.label != info.name else ""
            default = "-" if info.default is None else short_value(info.default)
            parts.append(f"| `{info.name}` | {label} | {kind_text}{bounds} | {default} | {info.help} |")
        parts.append("")
    return "\n".join(parts).rstrip()


def rewrite(path: Path, marker: str, text: str) -> str:
    """`path`'s text with the part between `<!-- marker:begin -->` and `<!-- marker:end -->` replaced."""
    pattern = re.compile(rf"(<!-- {marker}:begin -->\n).*?(<!-- {marker}:end -->)", re.S)
    old = path.read_text()
    if not pattern.search(old):
        raise ValueError(f"{path}: no <!-- {marker}:begin/end --> markers")
    return pattern.sub(lambda m: m.group(1) + text + "\n" + m.group(2), old)


if __name__ == "__main__":  # rewrite the generated parts of the README and the sweep-file reference
    root = Path(sys.argv[1] if len(sys.argv) > 1 else ".")
    for file, marker, text in (
        (root / "README.md", "kinds", kinds_table()),
        (root / "docs/SWEEP_FILES.md", "knobs", knob_tables()),
    ):
        if f"<!-- {marker}:begin -->" in file.read_text():
            file.write_text(rewrite(file, marker, text))
