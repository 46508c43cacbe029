"""Counts bounded by what the data, the model and the machine allow (issue 24.10): one error line naming
the flag, the value and the bound, exit 2, before the Fisher is allocated; the bound table itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from ovit_ray.cli.main import main
from ovit_ray.orchestration.common.bounds import (
    MAX_ADD_TRIALS,
    PruneFacts,
    check_prune_counts,
    fisher_bytes,
)

FACTS = PruneFacts(prunable=(4096, 8192, 8192), train_size=1000, memory_bytes=2**34)


def _refused(capsys: pytest.CaptureFixture[str]) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    (line,) = err.strip().splitlines()
    return line


def test_the_bound_table_names_each_bound() -> None:
    ok = {"block_size": 64, "num_grads": 128, "grad_batch_size": 16, "sparsities": [0.5, 0.9]}
    check_prune_counts(FACTS, **ok)  # type: ignore[arg-type]
    cases = [
        (
            {"block_size": 8193},
            "-B/--block-size: must be at most 8192 (the weights of the largest prunable tensor)",
        ),
        ({"grad_batch_size": 1001}, "--grad-batch-size: must be at most 1000 (the train split's images)"),
        ({"num_grads": 1001}, "-m/--num-grads: must be at most 1000 (16 passes over the 1000 train images"),
        ({"sparsities": [0.5, 0.99999]}, "--sparsity: 0.99999 prunes all 20480 prunable weights"),
        ({"calib_size": 1001}, "--calib-size: must be at most 1000 (the train split's images), got 1001"),
    ]
    for change, message in cases:
        with pytest.raises(ValueError) as err:
            check_prune_counts(FACTS, **{**ok, **change})  # type: ignore[arg-type]
        assert str(err.value).startswith(message), str(err.value)
    small = PruneFacts(prunable=(8192,) * 3, train_size=1000, memory_bytes=2**30)
    with pytest.raises(
        ValueError, match=r"--block-size: the Fisher blocks at B=8192 need 1.6 GB, more than the 1.1 GB"
    ):
        check_prune_counts(small, **{**ok, "block_size": 8192})  # type: ignore[arg-type]
    check_prune_counts(small, **{**ok, "block_size": 4096})  # type: ignore[arg-type]  # 0.8 GB fits
    check_prune_counts(small, **{**ok, "sparsities": [0.99995]})  # type: ignore[arg-type]  # 1 of 24576 left
    with pytest.raises(ValueError, match="0.99995 prunes all 8192 weights of the smallest prunable tensor"):
        check_prune_counts(small, **{**ok, "sparsities": [0.99995]}, scope="uniform")  # type: ignore[arg-type]
    assert fisher_bytes((100, 64), 64, 8) == (2 + 1) * 64 * 64 * 8  # padded blocks count
    assert MAX_ADD_TRIALS == 10_000


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ["-B", "1000000"],
            "--block-size: must be at most 16384 (the weights of the largest prunable tensor)",
        ),
        (
            ["--num-grads", "1000000"],
            "--num-grads: must be at most 1079 (16 passes over the 1079 train images",
        ),
        (
            ["--grad-batch-size", "1000000"],
            "--grad-batch-size: must be at most 1079 (the train split's images)",
        ),
        (["--sparsity", "0.9999999"], "prunes all 196608 prunable weights"),
        (
            ["--method", "optin", "--flops-ratio", "0.5", "--calib-size", "1000000"],
            "--calib-size: Input should be less than or equal to 4096",
        ),
    ],
)
def test_prune_refuses_counts_beyond_the_model_and_data(
    flags: list[str], expected: str, tmp_path: Path, digits_preset: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "p"
    method = [] if "--method" in flags else ["--method", "ovit"]
    assert main(["prune", *method, *flags, "--out", str(out), "--no-progress"]) == 2
    line = _refused(capsys)
    assert expected in line and flags[-1] in line, line
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        (["--epochs", "1000000000"], "epochs"),
        (["--seeds", "0", "-1"], "seed"),
        (["--max-steps-per-epoch", "0"], "max"),
    ],
)
def test_transfer_refuses_unbounded_counts_before_loading_anything(
    flags: list[str], field: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "src.pt").write_bytes(b"not read before the flags are checked")
    out = tmp_path / "t"
    argv = ["transfer", str(tmp_path / "src.pt"), "--dataset", "digits-5-9", "--out", str(out), *flags]
    assert main(argv) == 2
    line = _refused(capsys)
    assert field in line and flags[-1] in line, line
    assert not out.exists()
