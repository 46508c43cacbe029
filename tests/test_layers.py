"""Import-layer check: every `ovit_ray` import points downward (or stays inside its own package).

Read from the source with `ast` (no module is imported, no Ray starts), so imports inside functions count
as much as those at the top of a file. Packages of the same rank are siblings: they may not import each
other either, or the layers would silently merge.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "ovit_ray"

# Rank of each layer, lowest first. Siblings share a rank. `data`, `models` and `measure` import no other
# ovit_ray package today; `training` builds on all three, so they sit just below it.
RANKS: dict[str, int] = {
    "knobs": 0,  # the knob declarations every layer reads (pydantic only)
    "tensor_math": 0,
    "pruning": 1,
    "data": 2,
    "models": 2,
    "measure": 2,
    "training": 3,
    # orchestration's sub-packages, in the order they may build on each other
    "orchestration.common": 10,
    "orchestration.specs": 11,
    "orchestration.kinds": 12,  # experiment kinds as plug-ins, and the sweep-file dialect they make
    "orchestration.results": 13,
    "orchestration.tracking": 14,
    "orchestration.cluster": 14,
    "orchestration.train": 15,
    "orchestration.tune": 16,  # the one driver of every kind
    "cli": 20,
}

# Imports the check lets through although they break the layers (none left: the secrets and network
# helpers they needed live in orchestration/common); a stale entry fails test_allow_list_holds_only_live_imports.
ALLOWED: set[tuple[str, str]] = set()


def _layer(module: str) -> str | None:
    """The layer key of a dotted module name (None for the package root and orchestration/__init__)."""
    parts = module.split(".")[1:]
    if not parts:
        return None
    if parts[0] == "orchestration":
        return f"orchestration.{parts[1]}" if len(parts) > 1 else None
    return parts[0]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[str]:
    """Every ovit_ray module (or package) the file imports, relative imports resolved."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            # `from ovit_ray.orchestration import tune` names a module; `from ovit_ray import __version__`
            # names an attribute of the package itself
            found += [
                f"{target}.{a.name}" if _is_module(f"{target}.{a.name}") else target for a in node.names
            ]
    return sorted({name for name in found if name == "ovit_ray" or name.startswith("ovit_ray.")})


def _is_module(name: str) -> bool:
    path = ROOT.parent.joinpath(*name.split("."))
    return path.is_dir() or path.with_suffix(".py").is_file()


def _verdict(own: str, theirs: str) -> str | None:
    """Why an import from layer `own` into layer `theirs` breaks the layers, or None when it does not."""
    if own not in RANKS or theirs not in RANKS:
        return f"layer {own if own not in RANKS else theirs} has no rank"
    if RANKS[theirs] > RANKS[own]:
        return f"upward ({own} below {theirs})"
    if RANKS[theirs] == RANKS[own] and own != theirs:
        return f"sideways ({own} and {theirs} are siblings)"
    return None


def _violations() -> list[str]:
    bad: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        source = _module_name(path)
        own = _layer(source)
        for target in _imports(path):
            theirs = _layer(target)
            if own is None or theirs is None or own == theirs or (source, target) in ALLOWED:
                continue
            verdict = _verdict(own, theirs)
            if verdict:
                bad.append(f"{source} -> {target}: {verdict}")
    return bad


def test_no_upward_or_sideways_import() -> None:
    violations = _violations()
    assert not violations, "import-layer violations:\n" + "\n".join(violations)


def test_every_package_has_a_rank() -> None:
    """A new top-level package or orchestration sub-package must be placed in RANKS on purpose."""
    layers = {_layer(_module_name(p)) for p in ROOT.rglob("*.py")} - {None}
    assert {"tensor_math", "training", "orchestration.tune", "cli"} <= layers, f"sources not found in {ROOT}"
    assert layers <= RANKS.keys(), f"unranked: {sorted(layers - RANKS.keys())}"


def test_allow_list_holds_only_live_imports() -> None:
    live = {(_module_name(p), t) for p in ROOT.rglob("*.py") for t in _imports(p)}
    assert ALLOWED <= live, f"stale allow-list entries: {sorted(ALLOWED - live)}"


@pytest.mark.parametrize(
    ("source", "target", "verdict"),
    [
        ("ovit_ray.pruning.pruner", "ovit_ray.training.loop", "upward"),
        ("ovit_ray.orchestration.tracking.server", "ovit_ray.orchestration.cluster.local", "sideways"),
        ("ovit_ray.orchestration.tune.sweep", "ovit_ray.orchestration.common.yaml_files", None),
        ("ovit_ray.cli.main", "ovit_ray.pruning", None),
    ],
)
def test_rule_itself(source: str, target: str, verdict: str | None) -> None:
    """The ranking judges known edges as expected (guards the check against a silent no-op)."""
    own, theirs = _layer(source), _layer(target)
    assert own and theirs
    got = _verdict(own, theirs)
    assert (got or "").split(" ")[0] == (verdict or "")
