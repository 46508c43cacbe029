"""Reading user YAML files (configs, sweeps, search spaces, cluster files): one clear line on any failure.

Limits (a hostile or broken file must fail fast, in bounded memory): at most `MAX_YAML_BYTES` of
text, and at most `MAX_YAML_NODES` values once aliases are expanded (a half-kilobyte "billion laughs"
file of nested aliases would expand to 10^9 values); recursive aliases are refused.
"""

from __future__ import annotations

import reprlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

MAX_YAML_BYTES = 1024 * 1024
MAX_YAML_NODES = 100_000
_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxdict, _repr.maxlist, _repr.maxtuple, _repr.maxset = 3, 8, 8, 8, 8
_repr.maxstring, _repr.maxlong, _repr.maxother = 80, 40, 80


def short_repr(value: Any) -> str:
    """`repr` bounded while it is built (never renders a huge value in full just to cut it)."""
    return _repr.repr(value)


def clip_line(line: str, limit: int = 300) -> str:
    """A problem line stays one readable line even when the bad value is huge."""
    line = " ".join(line.split())
    return line if len(line) <= limit else f"{line[:limit]}... ({len(line) - limit} more characters)"


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_nodes: set[int]) -> int:
    """Values under `node` with every alias expanded (memoised per node: linear in the file's size)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_nodes:
        raise ValueError("a recursive alias (a value that contains itself)")
    open_nodes.add(key)
    if isinstance(node, yaml.MappingNode):
        children = [child for pair in node.value for child in pair]
    else:
        children = node.value if isinstance(node, yaml.SequenceNode) else []
    size = 1 + sum(_expanded_size(child, sizes, open_nodes) for child in children)
    open_nodes.discard(key)
    sizes[key] = size
    if size > MAX_YAML_NODES:
        raise ValueError(f"more than {MAX_YAML_NODES} values once aliases are expanded")
    return size


def safe_load_bounded(text: str) -> Any:
    """`yaml.safe_load` that refuses alias bombs and recursive aliases before building anything."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def safe_load_all_bounded(text: str) -> list[Any]:
    """Every document of a multi-document stream (`---`), with the same bounds as `safe_load_bounded`
    over all documents together (Kubernetes manifests hold several objects in one file)."""
    loader = yaml.SafeLoader(text)
    documents: list[Any] = []
    total = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            total += _expanded_size(node, {}, set())  # a fresh memo: ids of freed nodes get reused
            if total > MAX_YAML_NODES:
                raise ValueError(f"more than {MAX_YAML_NODES} values once aliases are expanded")
            documents.append(loader.construct_document(node))
        return documents
    finally:
        loader.dispose()


def _read_yaml(path: str | Path, what: str, load: Callable[[str], Any]) -> Any:
    """`load` of the file's text; FileNotFoundError / ValueError naming the file (size and YAML checks)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory; give a YAML file")
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.stat().st_size > MAX_YAML_BYTES:
        raise ValueError(f"{path}: {path.stat().st_size} bytes; a {what} may hold at most {MAX_YAML_BYTES}")
    try:
        return load(path.read_text())
    except (yaml.YAMLError, ValueError, UnicodeDecodeError) as err:  # ValueError: e.g. a 5000-digit int
        raise ValueError(clip_line(f"{path}: not valid YAML ({' '.join(str(err).split())})")) from None
    except RecursionError:
        raise ValueError(f"{path}: not valid YAML (nested too deeply)") from None


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """A file that must hold a YAML mapping; FileNotFoundError / ValueError naming the file."""
    loaded = _read_yaml(path, what, safe_load_bounded)
    if not isinstance(loaded, dict):
        raise ValueError(
            f"{path}: a {what} must be a YAML mapping of key: value, got {type(loaded).__name__}"
        )
    return loaded


def read_yaml_documents(path: str | Path, what: str) -> list[Any]:
    """Every document of a multi-document YAML file (empty documents included, as None)."""
    return list(_read_yaml(path, what, safe_load_all_bounded))
