"""`ovit-ray prune` end to end on the digits preset, and its refusals on bad input."""

import pyarrow.parquet as pq
import pytest

from ovit_ray.cli.main import main

REQUIRED_COLUMNS = {
    "kind",
    "method",
    "target",
    "achieved_sparsity",
    "top1",
    "top1_dense",
    "block_size",
    "num_grads",
    "damp",
    "grad_batch_size",
    "prune_seconds",
    "peak_rss_mb",
    "params_prunable",
    "params",
    "params_total",
    "gmacs",
    "gmacs_dense",
}
FAST = ["--num-grads", "16", "--no-progress"]


def test_prune_writes_one_row_per_method_and_sparsity(tmp_path, digits_preset):
    out = tmp_path / "run"
    code = main(
        ["prune", "--method", "ovit", "magnitude", "--sparsity", "0.5", "0.9", "--out", str(out), *FAST]
    )
    assert code == 0
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert REQUIRED_COLUMNS <= set(table[0])
    assert sorted((r["method"], r["target"]) for r in table) == [
        ("magnitude", 0.5),
        ("magnitude", 0.9),
        ("ovit", 0.5),
        ("ovit", 0.9),
    ]
    for row in table:
        pruned = round(row["achieved_sparsity"] * row["params_prunable"])
        assert pruned == round(row["target"] * row["params_prunable"])  # exactly round(s * d)
        assert row["top1_dense"] >= 0.95 and row["kind"] == "oneshot"
        assert row["params"] < row["params_total"]  # non-zero parameters of the masked model
        assert row["gmacs"] < row["gmacs_dense"]  # multiply-adds with a non-zero weight
    ovit_90 = next(r for r in table if r["method"] == "ovit" and r["target"] == 0.9)
    magnitude_90 = next(r for r in table if r["method"] == "magnitude" and r["target"] == 0.9)
    assert ovit_90["top1"] > magnitude_90["top1"]

    # The same command again resumes: finished rows are kept as they were, nothing is duplicated.
    argv = ["prune", "--method", "ovit", "magnitude", "--sparsity", "0.5", "0.9", "--out", str(out), *FAST]
    assert main(argv) == 0
    assert pq.read_table(out / "results.parquet").to_pylist() == table
    # Another command into the folder is refused: its finished results are never overwritten.
    assert main(["prune", "--method", "magnitude", "--sparsity", "0.5", "--out", str(out), *FAST]) == 2
    assert pq.read_table(out / "results.parquet").to_pylist() == table


def test_prune_nm_pattern(tmp_path, digits_preset):
    out = tmp_path / "nm"
    assert main(["prune", "--method", "ovit", "--pattern", "2:4", "--out", str(out), *FAST]) == 0
    (row,) = pq.read_table(out / "results.parquet").to_pylist()
    assert row["pattern"] == "2:4" and row["achieved_sparsity"] == 0.5


def _exit_code_and_stderr(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`ovit-ray ARGV` in this process (argparse's refusals exit; the rest return): a traceback would
    escape main() and fail the test, so a clean exit means the user saw only the error lines."""
    try:
        code = main(argv)
    except SystemExit as stop:
        code = int(stop.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sparsity", "1.0"], "--sparsity: Input should be less than 1, got 1.0"),
        (["--sparsity", "-0.2"], "--sparsity: Input should be greater than or equal to 0, got -0.2"),
        (["--block-size", "0"], "--block-size: Input should be greater than 0, got 0"),
        (["--num-grads", "0"], "--num-grads: Input should be greater than 0, got 0"),
        (["--model", "no_such_vit"], "--model: unknown model 'no_such_vit'"),
        (["--checkpoint", "/nonexistent/model.pt"], "--checkpoint: no such file '/nonexistent/model.pt'"),
        (
            ["--dataset", "imagefolder", "--data-root", "/nonexistent/images"],
            "--data-root: dataset imagefolder",
        ),
        (["--params", r"blocks\.\d+\.attn\.q\.weight"], "--params: pattern"),
        (["--pattern", "4:2"], "--pattern: need 0 < N < M"),
    ],
)
def test_bad_input_exits_nonzero_and_writes_nothing(tmp_path, args, message, digits_preset, capsys):
    out = tmp_path / "bad"
    code, err = _exit_code_and_stderr(["prune", "--out", str(out), *FAST, *args], capsys)
    (line,) = err.strip().splitlines()
    assert code == 2 and message in line, line
    assert not out.exists()


@pytest.mark.parametrize("method", ["obs2", "structured-magnitude"])  # the retired heads-first baseline
def test_unknown_method_is_rejected_by_the_parser(capsys, method):
    code, err = _exit_code_and_stderr(["prune", "--method", method], capsys)
    assert code == 2 and f"invalid choice: '{method}'" in err


@pytest.mark.parametrize("method", [["magnitude"], ["optin", "--flops-ratio", "0.7"]])
def test_a_checkpoint_for_another_head_is_one_line_before_anything_runs(
    tmp_path, method, digits_preset, capsys
):
    """Weights that load (a valid file) but not into the model on its data: one line naming the tensors,
    exit 2, no output folder (it was a failed trial, exit 1)."""
    import timm

    from ovit_ray.models import save_checkpoint

    other = timm.create_model(
        "vit_tiny_patch16_224", img_size=16, patch_size=4, embed_dim=64, depth=4, num_heads=2, num_classes=3
    )
    path = save_checkpoint(tmp_path / "three-classes.safetensors", other)
    out = tmp_path / "p"
    code, err = _exit_code_and_stderr(
        ["prune", "--checkpoint", str(path), "--method", *method, "--out", str(out), *FAST], capsys
    )
    (line,) = err.strip().splitlines()
    assert code == 2 and "--checkpoint:" in line and "does not fit" in line and "head.weight" in line, line
    assert not out.exists()
