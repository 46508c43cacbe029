"""Sweep files: every shipped one validates; malformed ones fail with one clear message naming key and value."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
import yaml

from ovit_ray.cli.main import main
from ovit_ray.orchestration.specs.sweep_file import load_sweep
from ovit_ray.orchestration.structured.sweep_file import is_structured_file, load_structured_sweep
from ovit_ray.orchestration.transfer.sweep_file import is_transfer_file, load_transfer_sweep
from ovit_ray.orchestration.tune.plan import make_plan

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(glob.glob(str(ROOT / "sweeps" / "**" / "*.yaml"), recursive=True))
BASE = {
    "name": "t",
    "train": {"targets": [0.5, 0.75]},
    "search": {"space": "s", "algorithm": "optuna", "num_samples": 2},
}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: Path(p).name)
def test_shipped_sweeps_validate(path: str) -> None:
    if is_transfer_file(path):  # the other file kinds (`transfer:` and `structured:` sections)
        assert load_transfer_sweep(path).transfer.pairs
        return
    if is_structured_file(path):
        assert load_structured_sweep(path).points
        return
    sweep = load_sweep(path)
    assert sweep.max_trials >= 1
    make_plan(sweep, 1024, 1024)  # resources fit a big enough cluster


def test_every_ablation_has_a_digits_variant() -> None:
    names = {Path(p).stem for p in SHIPPED}
    for ablation in ("ablation_block_size", "ablation_sweep_vs_independent", "ablation_no_update"):
        assert ablation in names and f"{ablation}_digits" in names


def _write(tmp_path: Path, sweep: dict | str, space: dict | None = None) -> Path:
    (tmp_path / "search_spaces").mkdir(exist_ok=True)
    (tmp_path / "search_spaces" / "s.yaml").write_text(
        yaml.safe_dump({"params": {"damp": {"loguniform": [1e-9, 1e-6]}}} if space is None else space)
    )
    (tmp_path / "sweeps").mkdir(exist_ok=True)
    path = tmp_path / "sweeps" / "x.yaml"
    path.write_text(sweep if isinstance(sweep, str) else yaml.safe_dump(sweep))
    return path


def _merge(base: dict, **changes: object) -> dict:
    out = yaml.safe_load(yaml.safe_dump(base))
    for dotted, value in changes.items():
        node = out
        *parents, leaf = dotted.split("__")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return out


def test_override_replaces_one_knob(tmp_path: Path) -> None:
    path = _write(tmp_path, _merge(BASE, search__overrides={"block_size": {"choice": [16, 32]}}))
    sweep = load_sweep(path)
    assert set(sweep.space) == {"damp", "block_size"}


CASES = [
    (dict(search__num_samples=-1), ["search.num_samples", "-1"]),
    (dict(search__algorithm="bayes"), ["search.algorithm", "bayes"]),
    (dict(search__bogus=1), ["search.bogus", "Extra inputs"]),
    (dict(resources__workers="two"), ["resources.workers", "two"]),
    (dict(train__block_size=0), ["train", "block_size", "0"]),
    (dict(train__workers=2), ["train", "workers"]),
    (dict(train__targets=[]), ["train", "targets"]),
    (
        dict(search__overrides={"damp": {"loguniform": [1e-6, 1e-9]}}),
        ["search.overrides.damp", "low must be below"],
    ),
    (dict(search__overrides={"damp": {"loguniform": [0, 1]}}), ["search.overrides.damp", "> 0"]),
    (dict(search__overrides={"lamda": 1.0}), ["search.overrides", "lamda"]),
    (dict(search__overrides={"block_size": {"choice": [16, -4]}}), ["search.space.block_size", "-4"]),
    (dict(search__overrides={"block_size": {"grid": [16, 64]}}), ["search.space", "(block_size)", "Optuna"]),
    (
        dict(
            search__overrides={
                "damp": {
                    "choice": [],
                }
            }
        ),
        ["search.overrides.damp.choice", "at least one"],
    ),
    (
        dict(search__overrides={"damp": {"choice": [1e-7], "grid": [1e-7]}}),
        ["search.overrides.damp", "exactly one"],
    ),
    (dict(search__space="nope"), ["search.space", "nope"]),
    (dict(search__space="../etc"), ["search.space", "../etc"]),
    (dict(strategy="both"), ["grid (strategy)", "Optuna", "grid/random"]),
    (
        dict(search__algorithm="grid", search__num_samples=3, search__overrides={"damp": {"grid": [1e-7]}}),
        ["search.num_samples", "3"],
    ),
    (dict(search__objectives=[{"metric": "top5", "mode": "max"}]), ["search.objectives.0.metric", "top5"]),
    (dict(name="a b"), ["name", "a b"]),
    (dict(space={"damp": 1}), ["space", "search.space"]),
]


@pytest.mark.parametrize("changes,expected", CASES, ids=[",".join(c) for c, _ in CASES])
def test_malformed_sweep_names_key_and_value(tmp_path: Path, changes: dict, expected: list[str]) -> None:
    path = _write(tmp_path, _merge(BASE, **changes))
    with pytest.raises(ValueError) as err:
        load_sweep(path)
    message = str(err.value)
    assert str(path) in message
    for fragment in expected:
        assert fragment in message, message


def test_bad_search_space_file(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE, space={"params": {"damp": {"normal": [0, 1]}}})
    with pytest.raises(ValueError, match=r"s\.yaml: params\.damp\.normal"):
        load_sweep(path)


FUZZ = [
    "",
    "[1, 2]",
    "name: [",
    "{name: t, search: 5}",
    "name: t\nsearch: {space: s, num_samples: x}",
    "name: t\ntrain: 7\nsearch: {space: s}",
    "name: t\nsearch: {space: s, overrides: [1]}",
    "name: t\nsearch: {space: s, overrides: {damp: [1, 2]}}",
    "name: t\nresources: {gpus_per_worker: -1}\nsearch: {space: s}",
    "\t- a",
    "name: t\nsearch: {space: s, scheduler: {type: pbt}}",
    "name: 3\nseed: -1\nsearch: {space: s}",
    "name: t\nstrategy: sideways\nsearch: {space: s}",
]


@pytest.mark.parametrize("text", FUZZ)
def test_fuzz_gives_one_clear_error(tmp_path: Path, text: str, capsys: pytest.CaptureFixture) -> None:
    path = _write(tmp_path, text)
    assert main(["sweep", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ovit-ray sweep: error: ") and "Traceback" not in err
    assert str(path) in err


@pytest.mark.parametrize(
    ("sweep", "space", "expected"),
    [  # found by benchmarks/bench_fuzz.py: each input is one mutation of a shipped file
        (  # `algorithm: grid` deleted from a `strategy: both` sweep with a seed grid
            _merge(BASE, strategy="both", search__overrides={"seed": {"grid": [0, 1]}}),
            None,
            "search.space: Optuna samples, it cannot run a grid (seed, strategy)",
        ),
        (
            BASE,
            {"params": {"damp": {"loguniform": [[[]]]}}},
            "params.damp.loguniform: needs 2 items, got [[[]]]",
        ),
        (
            BASE,
            {"params": {"damp": {"loguniform": [1e-9]}}},
            "params.damp.loguniform: needs 2 items, got [1e-09]",
        ),
        (BASE, {"params": {"damp": {"uniform": []}}}, "params.damp.uniform: needs 2 items, got []"),
    ],
)
def test_one_mutation_is_one_line(
    tmp_path: Path, sweep: dict, space: dict | None, expected: str, capsys: pytest.CaptureFixture
) -> None:
    assert main(["sweep", str(_write(tmp_path, sweep, space)), "--dry-run"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert expected in line, line


def test_missing_file_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert main(["sweep", "no/such.yaml", "--dry-run"]) == 2
    assert "sweep file not found: no/such.yaml" in capsys.readouterr().err


def test_dry_run_prints_grid_points_and_resources(capsys: pytest.CaptureFixture) -> None:
    assert main(["sweep", str(ROOT / "sweeps" / "ablation_block_size.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "9 trial(s)" in out and "block_size=256, seed=2" in out and "1 worker(s) x 1 CPU" in out
