"""`ovit-ray --help` is fast because no command imports torch, timm, Ray or MLflow to build its parser,
and checking input (`sweep --dry-run`, `cluster validate`, a bad flag) does not import them either;
every flag says what it means and what it accepts."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ovit_ray.cli.main import COMMAND_MODULES, build_parser

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "ray", "mlflow", "pyarrow", "matplotlib", "optuna")
RUNTIMES = ("mlflow", "ray", "timm", "torch")  # ~1.1 GB together: the fuzz benchmark's budget is 1 GB


def test_building_the_parser_imports_no_heavy_module() -> None:
    code = (
        "import sys; from ovit_ray.cli.main import build_parser; build_parser(); "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("argv", "code", "allowed"),
    [
        (["sweep", "sweeps/quickstart.yaml", "--out", "{out}", "--dry-run"], 0, []),
        (["cluster", "validate", "cluster.yaml"], 0, ["ray"]),  # Ray's own schema check is the point
        (["prune", "--damp", "inf", "--out", "{out}"], 2, []),
        (["train", "--end-epoch", "10000000000", "--out", "{out}"], 2, []),
        (["mlflow-server", "--dir", "{out}", "--host", "0"], 2, []),
    ],
)
def test_checking_input_imports_no_runtime(
    tmp_path: Path, argv: list[str], code: int, allowed: list[str]
) -> None:
    out = tmp_path / "out"
    # VmHWM, not ru_maxrss: Linux carries the parent's (pytest's) peak into a forked child's ru_maxrss.
    script = (
        "import json, sys; from pathlib import Path; from ovit_ray.cli.main import main; "
        "rc = main(json.loads(sys.argv[1])); "
        "status = Path('/proc/self/status'); "
        "peak = [int(l.split()[1]) / 1024 for l in status.read_text().splitlines() if l.startswith('VmHWM')] "
        "if status.exists() else [0]; "
        f"print(json.dumps([rc, sorted(m for m in {RUNTIMES!r} if m in sys.modules), peak[0]]))"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, json.dumps([a.format(out=out) for a in argv])],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OVIT_RAY_SEARCH_SPACES": str(ROOT / "search_spaces")},
    )
    rc, imported, peak_mb = json.loads(run.stdout.splitlines()[-1])
    assert (rc, imported) == (code, allowed), run.stderr
    assert peak_mb < 400  # the sweep path peaked at 1.07 GB with the runtimes imported (0: no /proc)
    assert not out.exists()  # a dry run and a refused flag write nothing


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    found = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found[name] = sub
                found.update({f"{name} {k}": v for k, v in _subparsers(sub).items()})
    return found


def test_every_flag_of_every_command_is_documented() -> None:
    commands = _subparsers(build_parser())
    assert set(COMMAND_MODULES) <= set(commands)
    for name, parser in commands.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            assert action.help, f"ovit-ray {name} {action.dest}: no help text"


def test_train_flags_state_their_allowed_values() -> None:
    train = _subparsers(build_parser())["train"]
    flags = {a.dest: a for a in train._actions}
    assert flags["method"].choices == ("ovit", "woodfisher", "magnitude", "ovit-noupdate")
    assert "int > 0" in flags["block_size"].help and ">= 0, < 1" in flags["init_sparsity"].help
    assert "float >= 0, <= 1" in flags["distill_weight"].help
    assert "(default: 64)" in flags["batch_size"].help
    out = subprocess.run(
        [sys.executable, "-m", "ovit_ray.cli.main", "train", "--method", "bogus"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "invalid choice: 'bogus'" in out.stderr


def _imported(argv: list[str]) -> tuple[int, set[str]]:
    """(exit code, top-level modules imported) of `ovit-ray ARGV` in a fresh interpreter (`-X importtime`)."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ovit_ray.cli.main", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "OVIT_RAY_SEARCH_SPACES": str(ROOT / "search_spaces")},
    )
    names = {
        line.rsplit("|", 1)[1].strip().split(".")[0]
        for line in run.stderr.splitlines()
        if line.startswith("import time:") and line.count("|") == 2
    }
    return run.returncode, names


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["sweep", "--help"], ["sweep", "sweeps/quickstart.yaml", "--dry-run", "--out", "{out}"]],
    ids=["help", "sweep-help", "dry-run"],
)
def test_help_and_dry_run_import_neither_ray_torch_nor_mlflow(tmp_path: Path, argv: list[str]) -> None:
    """What keeps them under a second (the time itself: benchmarks/bench_help.py)."""
    rc, imported = _imported([a.format(out=tmp_path / "out") for a in argv])
    assert rc == 0 and {"ovit_ray", "argparse"} <= imported  # the log was read
    assert not imported & {"ray", "torch", "mlflow", "timm"}


def test_knob_declarations_drive_the_train_flags(capsys: pytest.CaptureFixture[str]) -> None:
    """`--damp` (and every other knob) takes its help text, bounds and default from `RunSpec`'s declaration."""
    from ovit_ray.cli.main import main
    from ovit_ray.knobs import knob_infos
    from ovit_ray.orchestration.kinds.gradual import GradualSpec
    from ovit_ray.training.spec import RunSpec

    with pytest.raises(SystemExit) as done:
        main(["train", "--help"])
    assert done.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    damp = knob_infos(RunSpec)["damp"]
    assert (damp.help, damp.bounds, damp.default) == ("absolute dampening lambda of the Fisher", "> 0", 1e-7)
    assert "--damp DAMP absolute dampening lambda of the Fisher; float > 0 (default: 1e-07)" in text
    for name, info in knob_infos(GradualSpec).items():
        if name != "strategy":  # `train` is one run: the strategy is compare-strategies' grid
            assert f"--{name.replace('_', '-')}" in text and info.help.split(";")[0] in text, name
