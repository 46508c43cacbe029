"""Sweep files: every shipped one validates; malformed ones fail with one clear message naming key and value."""

from __future__ import annotations

import glob
from pathlib import Path

import pytest
import yaml
from source_folders import kept_model, write_sources

from ovit_ray.cli.main import main
from ovit_ray.orchestration.kinds.sweep_file import load_sweep
from ovit_ray.orchestration.tune.plan import make_plan

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted(glob.glob(str(ROOT / "sweeps" / "**" / "*.yaml"), recursive=True))
BASE = {
    "name": "t",
    "gradual": {"targets": [0.5, 0.75]},
    "search": {"space": "s", "algorithm": "optuna", "num_samples": 2},
}
SOURCE_MODELS = ("digits04-vit", "digits-vit")
SOURCE_METHODS = ("ovit", "magnitude")


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sibling output folders the shipped transfer sweeps read their sources from."""
    parent = tmp_path_factory.mktemp("sweeps")
    for name in ("ablation_transfer_sources", "ablation_transfer_sources_digits"):
        write_sources(parent / name, SOURCE_MODELS, SOURCE_METHODS)
    return parent


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: Path(p).name)
def test_shipped_sweeps_validate(path: str, sources: Path) -> None:
    sweep = load_sweep(path, sources)
    assert sweep.max_trials >= 1
    make_plan(sweep, 1024, 1024)  # resources fit a big enough cluster
    if sweep.kind == "transfer":  # its sources: the kept models of the named folder, then the dense source
        named = yaml.safe_load(Path(path).read_text())["transfer"]["sources"]
        models = named.get("models") or SOURCE_MODELS
        expected = [str(sources / named["sweep"] / kept_model(m, x)) for m in models for x in SOURCE_METHODS]
        assert sweep.knobs["checkpoint"].grid == [*expected, None]


def test_a_transfer_sweep_without_its_sources_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as err:
        load_sweep(ROOT / "sweeps" / "ablation_transfer.yaml", tmp_path)
    (line,) = str(err.value).splitlines()
    assert (
        "ablation_transfer.yaml: transfer.sources:" in line and "run the sweep that makes the sources" in line
    )


def test_every_ablation_has_a_digits_variant() -> None:
    ci = {Path(p).stem for p in glob.glob(str(ROOT / "sweeps" / "ci" / "*.yaml"))}
    names = {Path(p).stem for p in SHIPPED}
    for ablation in (
        "ablation_block_size",
        "ablation_sweep_vs_independent",
        "ablation_no_update",
        "ablation_transfer_sources",
    ):
        assert ablation in names and f"{ablation}_digits" in ci


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
    path = _write(tmp_path, _merge(BASE, search__params={"block_size": {"choice": [16, 32]}}))
    sweep = load_sweep(path)
    assert sweep.searched == ["damp", "block_size"]  # the space's knob, then the file's own
    path = _write(tmp_path, _merge(BASE, search__params={"damp": {"loguniform": [1e-8, 1e-7]}}))
    assert load_sweep(path).knobs["damp"].loguniform == (1e-8, 1e-7)  # the file's range replaces the space's


CASES = [
    (dict(search__num_samples=-1), ["search.num_samples", "-1"]),
    (dict(search__algorithm="bayes"), ["search.algorithm", "bayes"]),
    (dict(search__bogus=1), ["search.bogus", "Extra inputs"]),
    (dict(resources__workers="two"), ["resources.workers", "two"]),
    (dict(gradual__block_size=0), ["gradual", "block_size", "0"]),
    (dict(gradual__workers=2), ["gradual", "workers", "top level"]),
    (dict(gradual__targets=[]), ["gradual.targets", "at least 1"]),
    (
        dict(search__params={"damp": {"loguniform": [1e-6, 1e-9]}}),
        ["search.params.damp", "low must be below"],
    ),
    (dict(search__params={"damp": {"loguniform": [0, 1]}}), ["search.params.damp", "> 0"]),
    (dict(search__params={"lamda": 1.0}), ["search.params.lamda", "not a knob of gradual"]),
    (dict(search__params={"block_size": {"choice": [16, -4]}}), ["search.params.block_size", "-4"]),
    (dict(search__params={"block_size": {"grid": [16, 64]}}), ["search.params", "(block_size)", "Optuna"]),
    (
        dict(
            search__params={
                "damp": {
                    "choice": [],
                }
            }
        ),
        ["search.params.damp.choice", "at least one"],
    ),
    (
        dict(search__params={"damp": {"choice": [1e-7], "grid": [1e-7]}}),
        ["search.params.damp", "exactly one"],
    ),
    (dict(search__space="nope"), ["search.space", "nope"]),
    (dict(search__space="../etc"), ["search.space", "../etc"]),
    (
        dict(search__params={"strategy": {"grid": ["sweep", "independent"]}}),
        ["(strategy)", "Optuna", "grid/random"],
    ),
    (
        dict(search__algorithm="grid", search__num_samples=3, search__params={"damp": {"grid": [1e-7]}}),
        ["search.num_samples", "3"],
    ),
    (dict(search__objectives=[{"metric": "top5", "mode": "max"}]), ["search.objectives.0.metric", "top5"]),
    (dict(name="a b"), ["name", "a b"]),
    (dict(space={"damp": 1}), ["space", "search.space"]),  # the old dialect: how to rewrite it
    (dict(train={"targets": [0.5]}), ["train", "old sweep-file dialect", "gradual"]),
    (dict(structured={"budgets": [0.5]}), ["exactly one kind section", "gradual", "structured"]),
    (dict(seeds=[-1]), ["seeds.0", "-1"]),
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
    path = _write(tmp_path, BASE, space={"kind": "structured", "params": {"lam": 1.0}})
    with pytest.raises(ValueError, match=r"search\.space: s\.yaml holds structured knobs, not gradual"):
        load_sweep(path)


FUZZ = [
    "",
    "[1, 2]",
    "name: [",
    "{name: t, gradual: {}, search: 5}",
    "name: t\ngradual: {}\nsearch: {space: s, num_samples: x}",
    "name: t\ngradual: 7\nsearch: {space: s}",
    "name: t\ngradual: {}\nsearch: {space: s, params: [1]}",
    "name: t\ngradual: {}\nsearch: {space: s, params: {damp: [1, 2]}}",
    "name: t\ngradual: {}\nresources: {gpus_per_worker: -1}\nsearch: {space: s}",
    "\t- a",
    "name: t\ngradual: {}\nsearch: {space: s, scheduler: {type: pbt}}",
    "name: 3\nseeds: [-1]\ngradual: {}\nsearch: {space: s}",
    "name: t\ngradual: {strategy: sideways}\nsearch: {space: s}",
    "name: t\nsearch: {space: s}",
    "name: t\ngradual: {}\ndepth: {}",
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
        (  # `algorithm: grid` deleted from a sweep of both strategies with a seed grid
            _merge(BASE, seeds=[0, 1], search__params={"strategy": {"grid": ["sweep", "independent"]}}),
            None,
            "search.params: Optuna samples, it cannot run a grid (strategy, seed)",
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
    assert "ablation_block_size (gradual): 9 trial(s), search grid" in out
    assert "  block_size: grid 16,64,256" in out and "  seed: grid 0,1,2" in out  # 3 x 3 grid points
    assert "1 worker(s) x 1 CPU" in out
    paths = ("output: ", "Tune storage: ")  # as long as the folder's path
    assert max(len(line) for line in out.splitlines() if not line.startswith(paths)) <= 80
