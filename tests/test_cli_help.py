"""`ovit-ray --help` is fast because no command imports torch, timm, Ray or MLflow to build its parser;
every flag says what it means and what it accepts."""

from __future__ import annotations

import argparse
import subprocess
import sys

from ovit_ray.cli.main import COMMAND_MODULES, build_parser

HEAVY = ("torch", "timm", "ray", "mlflow", "pyarrow", "matplotlib", "optuna")


def test_building_the_parser_imports_no_heavy_module() -> None:
    code = (
        "import sys; from ovit_ray.cli.main import build_parser; build_parser(); "
        f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


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
