"""`ovit-ray prune --method optin|group-l1|group-l2|taylor|random --flops-ratio`: scores cached and reused,
the shrunk model equal to the masked one and kept on disk, measured speed columns, every baseline within one
neuron of its budget, composition with oViT, export and evaluate of a shrunk model, and the refusals on bad
input."""

import json

import pyarrow.parquet as pq
import pytest

from ovit_ray.cli.main import main

SMALL_SPEED = ["--latency-runs", "3", "--speed-batch", "8", "--calib-size", "8", "--no-progress"]


def _rows(out):
    return pq.read_table(out / "results.parquet").to_pylist()


def test_optin_rows_shrunk_equals_masked_scores_cached_and_kept(tmp_path, digits_preset):
    out = tmp_path / "structured"
    args = ["prune", "--method", "optin", "--flops-ratio", "0.8", "0.6", "--out", str(out), *SMALL_SPEED]
    assert main(args) == 0
    rows = {r["target"]: r for r in _rows(out)}
    assert sorted(rows) == [0.6, 0.8]
    for ratio, row in rows.items():
        assert row["macs_ratio"] <= ratio + 1e-9 and row["kind"] == "structured"
        assert row["top1"] == row["top1_masked"]  # the physical shrink gives the masked model's predictions
        assert row["gmacs"] < row["gmacs_dense"] and row["params"] < row["params_dense"]
        assert row["latency_ms"] > 0 and row["throughput_ips"] > 0 and row["speed_batch"] == 8
        assert row["speedup_throughput"] == pytest.approx(row["throughput_ips"] / row["throughput_dense_ips"])
        assert (out / row["kept_model"]).is_file()
    # The first budget scored the model; the second reused the scores (budget-independent, cached on disk).
    assert sorted(r["scores_cached"] for r in rows.values()) == [False, True]

    # The same command again resumes and changes nothing; a new budget (another folder) scores nothing.
    assert main(args) == 0 and {r["target"]: r for r in _rows(out)} == rows
    other = tmp_path / "other"
    assert main([*args[:4], "0.7", "--out", str(other), *SMALL_SPEED]) == 0
    (again,) = _rows(other)
    assert again["target"] == 0.7 and again["scores_cached"]

    # The kept shrunk model exports with its structure and evaluates to the recorded test top-1.
    exported = tmp_path / "small.safetensors"
    assert (
        main(
            ["export", str(out), "--trial", rows[0.6]["trial_id"], "--target", "0.6", "--out", str(exported)]
        )
        == 0
    )
    card = json.loads(exported.with_suffix(".json").read_text())
    assert card["structure"]["heads"] == rows[0.6]["heads_kept"]
    from ovit_ray.orchestration.train.export import evaluate_exported

    result = evaluate_exported(exported)
    assert result["top1"] == pytest.approx(rows[0.6]["top1"]) and result["recorded_top1"] == rows[0.6]["top1"]


def test_token_share_merges_tokens_and_the_kept_model_reloads_merging(tmp_path, digits_preset):
    out = tmp_path / "tokens"
    args = ["prune", "--method", "optin", "--flops-ratio", "0.6", "--token-share", "0.5", "--round-to", "8"]
    assert main([*args, "--no-speed", "--out", str(out), *SMALL_SPEED[-3:]]) == 0
    (row,) = _rows(out)
    assert any(row["merge_r"]) and 0 < row["achieved_token_share"] <= 0.85
    assert all(n % 8 == 0 for n in row["neurons_kept"]) and row["macs_ratio"] <= 0.6

    from ovit_ray.training.setup import build_model_and_data

    start = build_model_and_data("digits-vit", checkpoint=str(out / row["kept_model"]), progress=False)
    from ovit_ray.pruning.structured import merge_schedule

    assert list(merge_schedule(start.model)) == row["merge_r"]


def test_latency_budget_and_lsq_recovery(tmp_path, digits_preset):
    out = tmp_path / "latency"
    args = ["prune", "--method", "optin", "--latency-ratio", "0.8", "--recover", "lsq"]
    assert main([*args, "--out", str(out), *SMALL_SPEED]) == 0
    (row,) = _rows(out)
    assert row["target"] == 0.8 and row["budget_kind"] == "latency" and row["recover"] == "lsq"
    assert row["estimated_latency_ratio"] <= 0.8 and row["macs_ratio"] < 1 and row["latency_ms"] > 0


def test_every_baseline_lands_within_one_neuron_of_each_budget(tmp_path, digits_preset):
    out = tmp_path / "baselines"
    methods = ["group-l1", "group-l2", "taylor", "random"]
    args = ["prune", "--method", *methods, "--flops-ratio", "0.9", "0.5", "--no-speed", "--out", str(out)]
    assert main([*args, *SMALL_SPEED[-3:]]) == 0
    rows = _rows(out)
    assert sorted((r["method"], r["target"]) for r in rows) == sorted(
        (m, ratio) for m in methods for ratio in (0.9, 0.5)
    )
    neuron = 2 * 17 * 64  # MACs of one MLP neuron of the preset (17 tokens, width 64)
    for row in rows:
        short = (row["target"] - row["macs_ratio"]) * row["gmacs_dense"] * 1e9  # requested less achieved
        assert -1e-3 < short < neuron, (row["method"], row["target"])
        assert row["top1"] == row["top1_masked"] and sum(row["heads_kept"]) > 0


def test_taylor_then_ovit_reports_dense_and_sparse_macs(tmp_path, digits_preset):
    out = tmp_path / "composed"
    args = ["prune", "--method", "taylor", "--flops-ratio", "0.7", "--then", "ovit"]
    assert (
        main(
            [
                *args,
                "--sparsity",
                "0.5",
                "--num-grads",
                "16",
                "--no-speed",
                "--out",
                str(out),
                *SMALL_SPEED[-3:],
            ]
        )
        == 0
    )
    (row,) = _rows(out)
    assert row["then_method"] == "ovit" and row["then_sparsity"] == 0.5
    assert row["achieved_sparsity"] == pytest.approx(0.5, abs=0.01)
    assert row["gmacs_sparse"] < row["gmacs"] < row["gmacs_dense"]
    assert row["params"] < row["params_dense"]
    assert row["latency_ms"] is None  # --no-speed: nothing measured, nothing inferred


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "optin"], "--flops-ratio: give it or --latency-ratio"),
        (
            ["--method", "optin", "--flops-ratio", "0.5", "--latency-ratio", "0.5"],
            "--flops-ratio: give it or",
        ),
        (
            ["--method", "optin", "--flops-ratio", "0.5", "--token-share", "0.3", "--recover", "lsq"],
            "--recover: lsq",
        ),
        (
            ["--method", "optin", "--flops-ratio", "1.5"],
            "--flops-ratio: Input should be less than or equal to 1, got 1.5",
        ),
        (
            ["--method", "optin", "--flops-ratio", "0.5", "--token-share", "0.9"],
            "--token-share: Input should be less than or equal to 0.85, got 0.9",
        ),
        (
            ["--method", "optin", "ovit", "--flops-ratio", "0.5"],
            "--method: structured (optin) and unstructured methods are two commands",
        ),
        (["--method", "ovit", "--flops-ratio", "0.5"], "--flops-ratio: needs a structured --method"),
        (["--method", "ovit", "--then", "ovit"], "--then: needs a structured --method"),
        (
            ["--method", "optin", "--flops-ratio", "0.5", "--calib-size", "0"],
            "--calib-size: Input should be greater than 0, got 0",
        ),
    ],
)
def test_bad_structured_input_exits_2_and_writes_nothing(tmp_path, args, message, capsys):
    out = tmp_path / "bad"
    try:
        code = main(["prune", "--out", str(out), *args])
    except SystemExit as stop:  # argparse's own refusals exit
        code = int(stop.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not out.exists()


def test_kd_fine_tune_of_a_shrunk_model_from_the_dense_teacher(tmp_path, digits_preset):
    """Recovery by a short KD fine-tune: the gradual loop trains the shrunk checkpoint (no pruning steps)
    against the dense preset as teacher, and its best checkpoint keeps the structure and reloads."""
    from ovit_ray.training.gradual import LocalReporter, run_gradual
    from ovit_ray.training.setup import build_model_and_data
    from ovit_ray.training.spec import RunSpec

    out = tmp_path / "shrunk"
    assert (
        main(
            [
                "prune",
                "--method",
                "optin",
                "--flops-ratio",
                "0.5",
                "--no-speed",
                "--out",
                str(out),
                *SMALL_SPEED[-3:],
            ]
        )
        == 0
    )
    (row,) = _rows(out)
    config = RunSpec(
        **{
            "model": "digits-vit",
            "checkpoint": str(out / row["kept_model"]),
            "final_sparsity": 0.0,
            "end_epoch": 0,
            "window_epochs": 1,
            "max_steps_per_epoch": 4,
            "distill_weight": 0.5,
            "distill_teacher": "model",
        }
    )
    assert config.schedule().steps == ()  # nothing pruned: a fine-tune
    (target,) = run_gradual(config, config.schedule(), LocalReporter(tmp_path / "kd"))["targets"]
    tuned = build_model_and_data("digits-vit", checkpoint=target["checkpoint"], progress=False)
    assert tuned.structure is not None and tuned.structure["heads"] == row["heads_kept"]
    assert sum(p.numel() for p in tuned.model.parameters()) == row["params"]
