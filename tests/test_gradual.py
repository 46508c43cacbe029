"""Gradual pruning loop without Ray: exact resume, schedules of both strategies, config errors."""

from __future__ import annotations

import pytest

from ovit_ray.cli.main import main
from ovit_ray.training.gradual import LocalReporter, run_gradual
from ovit_ray.training.spec import RunSpec, Schedule

SCHEDULE = Schedule.of([(0, 0.5), (1, 0.8)], [(0.5, 0, 1), (0.8, 1, 3)])
SPEC = dict(
    block_size=32,
    num_grads=8,
    max_steps_per_epoch=3,
)


class Crash(Exception):
    pass


def test_resume_after_crash_matches_uninterrupted_run(tmp_path):
    # magnitude: resuming does not depend on the method, and it keeps this test fast
    spec = RunSpec(**{**SPEC, "method": "magnitude", "max_steps_per_epoch": 2})
    whole = run_gradual(spec, SCHEDULE, LocalReporter(tmp_path / "whole"))

    def crash_at_2(epoch: int, rank: int) -> None:
        if epoch == 2:
            raise Crash

    with pytest.raises(Crash):
        run_gradual(spec, SCHEDULE, LocalReporter(tmp_path / "crashed"), epoch_hook=crash_at_2)
    again = LocalReporter(tmp_path / "crashed")
    resumed = run_gradual(spec, SCHEDULE, again)
    assert resumed["resumed_from_epoch"] == 2
    assert [h["epoch"] for h in again.history] == [2]  # finished epochs are not repeated
    # same masks, weights and per-target results as a run that never stopped (RNG, LR, optimizer restored)
    assert resumed["mask_digests"] == whole["mask_digests"]
    assert resumed["weight_digests"] == whole["weight_digests"]
    assert [t["top1"] for t in resumed["targets"]] == [t["top1"] for t in whole["targets"]]
    for row in whole["targets"]:
        assert abs(row["achieved_sparsity"] - row["target_sparsity"]) < 1e-5  # round(s * d) weights
    for summary, root in ((whole, "whole"), (resumed, "crashed")):  # superseded best files are dropped
        assert sorted(p.name for p in (tmp_path / root / "best").iterdir()) == sorted(
            f"target_{t['target_sparsity']:.4f}_epoch{t['best_epoch']:04d}.safetensors"
            for t in whole["targets"]
        )
        assert [t["checkpoint"] for t in summary["targets"]] == [
            str(
                tmp_path
                / root
                / "best"
                / f"target_{t['target_sparsity']:.4f}_epoch{t['best_epoch']:04d}.safetensors"
            )
            for t in whole["targets"]
        ]


def test_best_checkpoint_is_picked_on_val_and_reported_on_test(tmp_path):
    reporter = LocalReporter(tmp_path / "run")
    schedule = Schedule.of(SCHEDULE.steps, [(0.5, 0, 1), (0.8, 1, 4)])
    summary = run_gradual(RunSpec(**{**SPEC, "method": "magnitude"}), schedule, reporter)
    window = [h for h in reporter.history if 1 <= h["epoch"] < 4]
    row = summary["targets"][1]
    best = max(window, key=lambda h: h["val_top1"])  # first epoch with the highest val top-1
    assert row["val_top1"] == best["val_top1"] and row["best_epoch"] == best["epoch"]
    assert row["top1"] == best["top1"]  # the test top-1 of that epoch, not the window's best test value
    assert all(0 <= h["top1"] <= 1 and 0 <= h["val_top1"] <= 1 for h in reporter.history)


def test_sweep_and_independent_schedules():
    config = RunSpec(targets=[0.5, 0.75, 0.9, 0.95], window_epochs=3)
    steps, windows = config.schedule().steps, config.schedule().windows
    assert steps == ((0, 0.5), (3, 0.75), (6, 0.9), (9, 0.95))
    assert windows[-1] == (0.95, 9, 12)
    independent = [config.independent_schedule(i) for i in range(4)]
    assert independent[0] == Schedule(((0, 0.5),), ((0.5, 0, 3),))
    assert [e for e, _ in independent[3].steps] == [0, 3, 6, 9]  # the sweep's pruning epochs ...
    assert independent[3].steps[-1][1] == 0.95 and independent[3].steps[0][1] == pytest.approx(
        0.95 / 4
    )  # ... own ramp
    total_independent = sum(s.total_epochs for s in independent)
    assert windows[-1][2] * 2 <= total_independent  # 12 vs 30 epochs


def test_schedule_steps_must_be_in_epoch_order():
    # The loop walks the steps in order and stops at the first one not due: unsorted steps were skipped.
    with pytest.raises(ValueError, match=r"steps: pruning epochs must be in order, got \[2, 0\]"):
        Schedule.of([(2, 0.8), (0, 0.5)], [(0.8, 2, 4)])


def test_an_explicit_schedule_without_steps_is_kept(tmp_path):
    # `steps or default` once replaced an explicit empty list of steps by the config's own schedule.
    summary = run_gradual(
        RunSpec(**{**SPEC, "method": "magnitude", "max_steps_per_epoch": 1}),
        Schedule.of([], [(0.0, 0, 1)]),
        LocalReporter(tmp_path / "dense"),
    )
    assert summary["final_sparsity"] == 0 and summary["total_epochs"] == 1


@pytest.mark.parametrize(
    "values, message",
    [
        ({"final_sparsity": 1.5}, "final_sparsity: Input should be less than 1 (got 1.5)"),
        ({"targets": [0.5, 1.2]}, "targets.1: Input should be less than 1 (got 1.2)"),
        ({"targets": [0.9, 0.5]}, "targets: must be strictly increasing"),
        ({"method": "obs"}, "method: must be one of ovit, woodfisher, magnitude, ovit-noupdate (got 'obs')"),
        ({"pattern": "4:2"}, "pattern: need 0 < N < M"),
        ({"lr_min": 0.1, "lr_max": 0.01}, "lr_min: must be <= lr_max"),
        ({"epochs": 3}, "epochs: Extra inputs are not permitted (got 3)"),
    ],
)
def test_config_errors_name_field_and_value(values, message):
    with pytest.raises(
        ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        RunSpec(**values)


def test_yaml_config_with_overrides(tmp_path, capsys):
    """`ovit-ray train CONFIG --flag`: the file's knobs, each flag given over them (checked before anything runs)."""
    path = tmp_path / "run.yaml"
    path.write_text("targets: [0.5, 0.8]\nwindow_epochs: 0\nseed: 1\n")
    out = tmp_path / "out"
    assert main(["train", str(path), "--out", str(out)]) == 2  # the file's value is read ...
    assert "--window-epochs: Input should be greater than 0, got 0" in capsys.readouterr().err
    assert main(["train", str(path), "--window-epochs", "3", "--block-size", "0", "--out", str(out)]) == 2
    (line,) = capsys.readouterr().err.splitlines()  # ... and a flag replaces it: only block_size is wrong
    assert "--block-size: Input should be greater than 0, got 0" in line and "window_epochs" not in line
    assert main(["train", str(tmp_path / "missing.yaml"), "--out", str(out)]) == 2
    assert f"config file not found: {tmp_path / 'missing.yaml'}" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, field",
    [
        (["train", "--final-sparsity", "1.5"], "--final-sparsity: Input should be less than 1, got 1.5"),
        (["compare-strategies", "--targets", "0.9", "0.5"], "--targets: must be strictly increasing"),
        (["train", "--workers", "0"], "workers"),
    ],
)
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys, argv, field):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    assert field in capsys.readouterr().err
    assert not out.exists()
