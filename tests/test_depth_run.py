"""BoundaryDPT's two-stage run (issue 16): the structure it reaches, annealing that ends exactly linear, the
merge that keeps top-1, the kept model that loads back, resume without repeating an epoch (in process and
through Ray Train with a killed worker), and the sweep's `depth:` points writing Parquet + MLflow rows."""

from __future__ import annotations

import json
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch

from ovit_ray.knobs import knob
from ovit_ray.orchestration.kinds import register_kind
from ovit_ray.orchestration.kinds.depth import Depth, DepthKindSpec
from ovit_ray.pruning.depth import drop_attention
from ovit_ray.pruning.structured import optin_scores
from ovit_ray.training.depth import DepthSpec
from ovit_ray.training.depth.result import depth_row
from ovit_ray.training.depth.run import run_depth
from ovit_ray.training.depth.stages import anneal_mix
from ovit_ray.training.gradual import LocalReporter
from ovit_ray.training.hosts import load_state
from ovit_ray.training.setup import build_model_and_data

TINY = dict(max_steps_per_epoch=2, calib_size=16)


class Crash(Exception):
    pass


def test_anneal_mix_is_linear_and_exactly_zero_at_the_end() -> None:
    assert [anneal_mix(k, 4) for k in range(6)] == [1.0, 0.75, 0.5, 0.25, 0.0, 0.0]


def test_optin_scores_a_block_whose_attention_was_dropped(digits_preset) -> None:
    """A zero-head block has no head to score (it used to be asked to mask one): BoundaryDPT+'s width step."""
    model = build_model_and_data(checkpoint=str(digits_preset)).model.eval()
    drop_attention(model.blocks[1])
    scores = optin_scores(model, torch.randn(8, 3, 16, 16))
    assert [len(h) for h in scores.heads] == [2, 0, 2, 2]


def test_two_stage_run_reaches_the_structure_and_merges_exactly(digits_preset, tmp_path: Path) -> None:
    spec = DepthSpec(
        attention=1, activation=2, stage_order="activation-first", stage1_epochs=1, stage2_epochs=1, **TINY
    )
    reporter = LocalReporter(tmp_path / "run")
    summary = run_depth(spec, reporter)
    # stage 2 (first here) ends exactly linear: its checkpoint holds the annealed MLPs at a = 0, unmerged
    first = load_state(sorted((tmp_path / "run").glob("checkpoint_*"))[0])
    assert first["meta"]["structure"]["mlp"].count("annealed") == 2
    mixes = [v["a"] for k, v in first["model"].items() if k.endswith("_extra_state")]
    assert mixes == [0.0, 0.0]
    structure = summary["structure"]
    assert structure["attention"].count("bias") == 1 and structure["attention"].count("kept") == 3
    assert structure["mlp"].count("merged") == 2 and structure["mlp"].count("act") == 2
    merge = summary["notes"]["merge_check"]
    assert merge["top1_merged"] == merge["top1_linearised"]
    assert [h["phase"] for h in reporter.history] == ["activation", "attention"]
    # the kept model (merged, best on val) loads back through `with_structure` and scores what was reported
    row = depth_row(spec, summary, speed=None)
    assert row["top1"] == summary["best"]["top1"] and row["best_epoch"] == 1
    assert row["attn_dropped"] == 1 and row["act_linearised"] == 2 and row["mlps_merged"] == 2
    assert row["achieved_flops_ratio"] < 1 and row["params"] < row["params_dense"]


def test_width_step_and_resume_do_not_repeat_an_epoch(digits_preset, tmp_path: Path) -> None:
    spec = DepthSpec(attention=1, activation=1, stage1_epochs=1, stage2_epochs=1, width_ratio=0.7, **TINY)
    whole = run_depth(spec, LocalReporter(tmp_path / "whole"))

    def crash_at_2(epoch: int, rank: int) -> None:
        if epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        run_depth(spec, LocalReporter(tmp_path / "crashed"), epoch_hook=crash_at_2)
    again = LocalReporter(tmp_path / "crashed")
    resumed = run_depth(spec, again)
    assert resumed["resumed_from_epoch"] == 2 and [h["epoch"] for h in again.history] == [2]
    assert resumed["weight_digests"] == whole["weight_digests"]
    assert resumed["best"]["top1"] == whole["best"]["top1"]
    kept = whole["structure"]
    assert any(n < 256 for n, m in zip(kept["neurons"], kept["mlp"], strict=True) if m == "act")  # width step
    assert [p[0] for p in whole["phases"]] == ["attention", "activation", "width"]


def _kill_rank1_once(marker_dir: str, epoch: int, rank: int) -> None:
    with open(Path(marker_dir) / "starts.log", "a") as log:
        log.write(f"{rank} {epoch}\n")
    marker = Path(marker_dir) / "crashed"
    if rank == 1 and epoch == 1 and not marker.exists():
        marker.touch()
        time.sleep(10)  # mid-epoch: a checkpoint counts once the Train controller has polled it
        os._exit(1)  # a hard worker death, not an exception


class FaultyDepthSpec(DepthKindSpec):
    crash_dir: str = knob("", "where the fault hook keeps its marks")


@register_kind
class FaultyDepth(Depth):
    """The depth kind whose loop kills rank 1 once; the summary is kept for the assertions."""

    name = "faulty-depth"
    spec = FaultyDepthSpec

    def run(self, spec: Any, host: Any) -> None:
        from ovit_ray.training.depth.run import train_loop

        hook = partial(_kill_rank1_once, spec.crash_dir)
        summary = host.train(train_loop, {"spec": spec, "epoch_hook": hook}, spec, spec.total_epochs, "run0")
        (Path(spec.crash_dir) / "summary.json").write_text(json.dumps(summary))


@pytest.mark.ray
def test_ray_train_run_survives_a_killed_worker(digits_preset, ray_local, tmp_path: Path) -> None:
    from ovit_ray.orchestration.kinds.sweep_file import sweep_from
    from ovit_ray.orchestration.tune.driver import run_sweep

    plan = {"attention": 1, "activation": 1, "stage1_epochs": 1, "stage2_epochs": 1, **TINY}
    raw = {
        "name": "two-workers",
        "model": "digits-vit",
        "faulty-depth": {**plan, "crash_dir": str(tmp_path)},
        "resources": {"workers": 2, "cpus_per_worker": 0.9, "max_failures": 1},
    }
    outcome = run_sweep(sweep_from(raw), tmp_path / "sweep")
    assert outcome.counts["finished"] == 1 and (tmp_path / "crashed").exists()
    summary = json.loads((tmp_path / "summary.json").read_text())
    starts = (tmp_path / "starts.log").read_text().split("\n")[:-1]
    for rank in (0, 1):
        epochs = [int(line.split()[1]) for line in starts if line.startswith(f"{rank} ")]
        assert epochs.count(0) == 1 and epochs[-1] == 1  # the finished epoch was not repeated
    assert summary["resumed_from_epoch"] == 1 and summary["total_epochs"] == 2
    assert summary["world_size"] == 2 and len(set(summary["weight_digests"])) == 1
    assert summary["structure"]["attention"].count("bias") == 1
    assert summary["structure"]["mlp"].count("merged") == 1


def _depth_sweep(tmp_path: Path, depth: dict, params: dict | None = None) -> Path:
    import yaml

    path = tmp_path / "sweeps" / "f.yaml"
    path.parent.mkdir(exist_ok=True)
    plan = {"attention": 1, "activation": 1, **depth}
    path.write_text(
        yaml.safe_dump(
            {"name": "f", "model": "digits-vit", "depth": plan, "search": {"params": params or {}}}
        )
    )
    return path


@pytest.mark.parametrize(
    ("depth", "params", "message"),
    [
        ({"workers": 2}, None, "depth: ['workers'] belong at the top level"),
        ({"lr_maxx": 1.0}, None, "depth.lr_maxx: Extra inputs are not permitted"),
        (
            {},
            {"width_ratio": {"grid": [None, 1.5]}},
            "search.params.width_ratio: 1.5 is not a valid width_ratio",
        ),
        ({"stage_order": "sideways"}, None, "depth.stage_order: Input should be 'attention-first' or"),
        ({"attention": 0, "activation": 0}, None, "attention, activation: a depth run removes something"),
    ],
)
def test_bad_depth_blocks_name_the_problem(
    tmp_path: Path, depth: dict, params: dict | None, message: str
) -> None:
    from ovit_ray.orchestration.kinds.sweep_file import load_sweep

    with pytest.raises(ValueError, match=None) as err:
        load_sweep(_depth_sweep(tmp_path, depth, params))
    assert message in str(err.value) and str(tmp_path) in str(err.value)


def test_depth_beyond_the_model_is_one_line_before_ray(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The kind checks each trial's plan against the model (on the meta device) in the preflight of --dry-run."""
    from ovit_ray.cli.main import main

    path = _depth_sweep(tmp_path, {}, {"attention": {"grid": [1, 5]}})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--dry-run", "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert (
        line
        == f"ovit-ray sweep: error: {path}: depth.attention: removes 5 of the model's 4 blocks; at most 4"
    )
    assert not out.exists()


def test_frontier_labels_and_groups_depth_rows_apart() -> None:
    from ovit_ray.orchestration.results.frontier import frontier_rows, label

    def row(**knobs):
        base = {"kind": "depth", "target": None, "attention": 1, "activation": 1, "width_ratio": None}
        return {
            **base,
            "top1": 0.9,
            "speedup_throughput": 1.2,
            "attn_dropped": 1,
            "act_linearised": 1,
            **knobs,
        }

    rows = [
        row(),
        row(seed=1),
        row(attention=2, attn_dropped=2),
        row(width_ratio=0.7),
        row(stage_order="activation-first"),
    ]
    assert [label(r) for r in rows[2:]] == ["boundarydpt", "boundarydpt+", "boundarydpt (activation-first)"]
    optin = {"kind": "structured", "method": "optin", "target": 0.7, "top1": 0.8}
    table = frontier_rows([*rows, optin])
    assert [(t["method"], t["budget"], t["n"]) for t in table] == [
        ("boundarydpt", "1.00 a1v1", 2),
        ("boundarydpt", "1.00 a2v1", 1),
        ("boundarydpt (activation-first)", "1.00 a1v1", 1),
        ("boundarydpt+", "0.70 a1v1", 1),
        ("optin", "0.70", 1),
    ]


@pytest.mark.ray
def test_ci_sweep_writes_depth_rows_and_exports_the_depth_pruned_model(
    digits_preset, ray_local, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The CI depth sweep (one plan, without and with the width step) through Tune: one measured row per
    trial, its kept model in the folder, a trial run per trial in MLflow, the frontier plot, and the
    depth-pruned model exported and evaluated from its card's depth_structure."""
    from mlflow import MlflowClient

    from ovit_ray.cli.main import main
    from ovit_ray.orchestration.results.parquet import read_rows

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "out"
    assert (
        main(["sweep", str(root / "sweeps" / "ci" / "boundarydpt_frontier_digits.yaml"), "--out", str(out)])
        == 0
    )
    rows = read_rows(out / "results.parquet")
    assert sorted(r["width_ratio"] or 0.0 for r in rows) == [0.0, 0.7] and {r["kind"] for r in rows} == {
        "depth"
    }
    for r in rows:
        assert r["attn_dropped"] == 1 and r["act_linearised"] == 1
        assert r["epochs_trained"] == 2 + (r["width_ratio"] is not None)
        assert (
            r["speedup_throughput"] > 0
            and r["gmacs"] < r["gmacs_dense"]
            and (out / r["kept_model"]).is_file()
        )
        assert r["top1_after_removal"] is not None and r["cpu_hours"] > 0
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("ovit-ray-structured-ci").experiment_id])
    trials = [r for r in runs if r.data.tags.get("ovit.role") == "trial"]
    assert len(trials) == 2 and (out / "plots" / "frontier.png").stat().st_size > 0
    assert main(["report", str(out)]) == 0
    plus = next(r for r in rows if r["width_ratio"])
    exported = tmp_path / "plus.safetensors"
    assert main(["export", str(out), "--trial", plus["trial_id"], "--out", str(exported)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(exported)]) == 0  # rebuilt from the card's depth_structure
    assert (
        f"test top-1 {plus['top1']:.4f} on 359 images (recorded {plus['top1']:.4f})"
        in capsys.readouterr().out
    )


def test_resume_mid_annealing_continues_the_schedule(digits_preset, tmp_path: Path) -> None:
    """Killed after the first of two annealing epochs: the mix (saved with the weights) and the step count go on
    from where they were, so the resumed run ends where an uninterrupted one does."""
    spec = DepthSpec(
        attention=0, activation=1, stage_order="activation-first", stage1_epochs=0, stage2_epochs=2, **TINY
    )
    whole = run_depth(spec, LocalReporter(tmp_path / "whole"))

    def crash_at_1(epoch: int, rank: int) -> None:
        if epoch == 1:
            raise Crash

    with pytest.raises(Crash):
        run_depth(spec, LocalReporter(tmp_path / "crashed"), epoch_hook=crash_at_1)
    (half,) = sorted((tmp_path / "crashed").glob("checkpoint_*"))
    assert [v["a"] for k, v in load_state(half)["model"].items() if k.endswith("_extra_state")] == [0.5]
    again = LocalReporter(tmp_path / "crashed")
    resumed = run_depth(spec, again)
    assert [h["epoch"] for h in again.history] == [1] and resumed["weight_digests"] == whole["weight_digests"]
    assert resumed["structure"]["mlp"].count("merged") == 1
