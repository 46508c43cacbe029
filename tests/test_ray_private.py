"""Ray's private API is used in one module only, each use named with the reason no public API does the job
(`orchestration/common/ray_private.py`): a Ray upgrade that breaks one shows up there, and a new private use
elsewhere fails here. Read from the source with `ast`; nothing imports Ray."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from ovit_ray.orchestration.common.ray_private import USES

PACKAGE = Path(__file__).resolve().parents[1] / "ovit_ray"
ADAPTER = PACKAGE / "orchestration" / "common" / "ray_private.py"
# Private members of Ray objects (a Tuner, an OptunaSearch, a Trial's StorageContext) reached by attribute.
PRIVATE_ATTRIBUTES = {
    "_local_tuner",
    "_tune_config",
    "_ot_trials",
    "_ot_study",
    "_raylet",
    "_private",
    "_internal",
    "storage_filesystem",
    "storage_fs_path",
    "ENV_VARS_TO_PROPAGATE",
}
PRIVATE_PATH = re.compile(r"^ray(\.\w+)*\._\w+")  # ray._raylet, ray.autoscaler._private.util, ...
INTERNAL_MODULES = ("ray.tune.execution",)  # Tune's internals without an underscore: no public API


@dataclass(frozen=True)
class Use:
    path: Path
    line: int
    function: str | None  # the top-level function holding it
    what: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(PACKAGE.parent)}:{self.line} {self.what}"


def _is_private_module(name: str) -> bool:
    return bool(PRIVATE_PATH.match(name)) or name.startswith(INTERNAL_MODULES)


def _uses(path: Path) -> list[Use]:
    """Every private Ray name in `path`: imports of private Ray modules or names, private attributes of Ray
    objects, and such names spelled in strings (getattr, importlib)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    owners: dict[int, str] = {}
    for top in tree.body:
        if isinstance(top, ast.FunctionDef | ast.AsyncFunctionDef):
            for node in ast.walk(top):
                owners[id(node)] = top.name
    found = []
    for node in ast.walk(tree):
        what = None
        if isinstance(node, ast.Import):
            private = [a.name for a in node.names if _is_private_module(a.name)]
            what = f"import {', '.join(private)}" if private else None
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "ray":
            names = [a.name for a in node.names if a.name.startswith("_")]
            if _is_private_module(node.module or "") or names:
                what = f"from {node.module} import {', '.join(a.name for a in node.names)}"
        elif isinstance(node, ast.Attribute) and node.attr in PRIVATE_ATTRIBUTES:
            what = f".{node.attr}"
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value.strip()
            if _is_private_module(text) or text in PRIVATE_ATTRIBUTES:
                what = repr(text)
        if what is not None:
            found.append(Use(path, node.lineno, owners.get(id(node)), what))
    return found


def _package_uses() -> list[Use]:
    return [use for path in sorted(PACKAGE.rglob("*.py")) for use in _uses(path)]


def test_the_scan_finds_the_known_kinds_of_private_use(tmp_path: Path) -> None:
    """Guards the scan itself against a silent no-op."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import ray._private.worker\n"
        "from ray.train._internal.storage import StorageContext\n"
        "from ray._raylet import Config\n"
        "from ray.tune.execution import class_cache\n"
        "def f(tuner, storage):\n"
        "    tuner._local_tuner.get_run_config()\n"
        "    storage.storage_filesystem = None\n"
        "    class_cache.ENV_VARS_TO_PROPAGATE.discard('X')\n"
        "    return getattr(tuner, '_tune_config'), self._kept, ray.train.report\n"
    )
    found = {(use.line, use.what) for use in _uses(sample)}
    assert found == {
        (1, "import ray._private.worker"),
        (2, "from ray.train._internal.storage import StorageContext"),
        (3, "from ray._raylet import Config"),
        (4, "from ray.tune.execution import class_cache"),
        (6, "._local_tuner"),
        (7, ".storage_filesystem"),
        (8, ".ENV_VARS_TO_PROPAGATE"),
        (9, "'_tune_config'"),
    }  # our own `self._kept` and Ray's public `ray.train.report` are not private uses


def test_every_private_use_is_in_the_adapter() -> None:
    outside = [str(use) for use in _package_uses() if use.path != ADAPTER]
    assert not outside, "Ray's private API outside common/ray_private.py:\n" + "\n".join(outside)


@pytest.mark.parametrize("use", [u for u in _uses(ADAPTER)], ids=str)
def test_each_use_in_the_adapter_is_named_with_its_reason(use: Use) -> None:
    assert use.function in USES, f"{use}: inside {use.function or 'module level'}, not a function USES names"


def test_uses_lists_only_functions_that_use_private_api_each_with_a_reason() -> None:
    users = {use.function for use in _uses(ADAPTER)}
    defined = {node.name for node in ast.parse(ADAPTER.read_text()).body if isinstance(node, ast.FunctionDef)}
    assert set(USES) <= defined, f"USES names no function: {sorted(set(USES) - defined)}"
    assert set(USES) == users, f"USES without a private use: {sorted(set(USES) - users)}"
    for name, reason in USES.items():
        assert len(reason.split()) >= 8, f"{name}: say why no public API does the job"
