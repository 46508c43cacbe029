"""Per-trial overhead of the one driver (issue 23): Ray Tune vs the in-process executor (`resources.local`).

Runs the same grid of trials one at a time (so no trial waits for another) through `run_sweep`, once on each
executor, for two workloads:
  noop     a benchmark kind (`overhead_kind.py`) whose trial reports one result at once and does nothing else:
           everything between the driver starting the trial and that report is the driver's;
  gradual  one epoch of gradual pruning on digits-vit to sparsity 0.5 (what a real trial does).
From the driver's own records (MLflow run start / end times and metric timestamps, trials.parquet) it reports
the median over trials of
  first report   trial start (the driver's start event) -> its first report reaching the driver, minus the time
                 the loop spent before that report (model and data set-up, the report's trip back);
  in trial       the trial's wall time (placement to release) minus its time inside the training loop (also
                 shown for the first trial alone: on Tune it is the first on a fresh actor, imports included);
  between trials the gap between consecutive trial ends minus the loop time (adds Tune's scheduling and actor
                 hand-over between trials);
and, per sweep, its fixed costs: from the sweep's start (its MLflow run) to the first trial's start (Ray's
start and, on Tune, the first trial actor's: Tune signals a trial's start once its actor runs, and hands that
actor to the next trial), and from the last trial's end to the sweep's end (summary and plots).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sweep_overhead.py --trials 6 --out runs/bench_overhead
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_sweep_overhead.py --quick   # 2 trials, 2 steps
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import overhead_kind
import results_file as results
from mlflow import MlflowClient
from sweep_runs import Ran, loop_seconds, results_folder, run_folder

from ovit_ray.orchestration.common.stores import default_tracking_uri

EXECUTORS = ("tune", "local")
WORKLOADS = ("noop", "gradual")
EXPERIMENT = "bench-sweep-overhead"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=6, help="trials per sweep (default: 6)")
    p.add_argument("--executors", nargs="+", choices=EXECUTORS, default=list(EXECUTORS))
    p.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    p.add_argument("--max-steps", type=int, help="cap the gradual trials' epoch (default: the whole split)")
    p.add_argument("--out", default="runs/bench_overhead", help="holds one folder per sweep")
    p.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run: 2 trials, 2 steps per epoch; its results file goes to --out "
        "(or $OVIT_RAY_BENCH_RESULTS)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.trials, args.max_steps = 2, 2
    return args


def overhead_sweep(args: argparse.Namespace, workload: str, executor: str) -> dict[str, Any]:
    section = (
        {overhead_kind.NAME: {}}
        if workload == "noop"
        else {
            "model": "digits-vit",
            "gradual": {
                "targets": [0.5],
                "window_epochs": 1,
                "num_grads": 16,
                "max_steps_per_epoch": args.max_steps,
            },
        }
    )
    return {
        "name": f"overhead_{workload}_{executor}" + ("_quick" if args.quick else ""),
        **section,
        "seeds": list(range(args.trials)),
        "search": {"max_concurrent_trials": 1},
        "resources": {"workers": 1, "cpus_per_worker": 1, "local": executor == "local"},
        "mlflow": {"experiment": EXPERIMENT},
    }


def trial_times(ran: Ran) -> list[dict[str, float]]:
    """The sweep's start and end, then per finished trial in end order: start, first report and end (s, the
    driver's clock), loop seconds before the first report and in all, wall seconds held."""
    client = MlflowClient(default_tracking_uri(ran.out))
    experiment = client.get_experiment_by_name(EXPERIMENT)
    assert experiment is not None, f"no MLflow experiment {EXPERIMENT} in {ran.out}"
    found = client.search_runs([experiment.experiment_id])
    runs = {r.data.tags["ovit.trial_id"]: r for r in found if r.data.tags.get("ovit.role") == "trial"}
    (sweep,) = [r for r in found if r.data.tags.get("ovit.role") == "sweep"]
    times = [{"start": sweep.info.start_time / 1e3, "end": sweep.info.end_time / 1e3}]
    for trial in ran.trials:
        if trial["status"] != "finished":
            continue
        run = runs[trial["trial_id"]]
        keys = [k for k in ("val_top1", "val_top1_vs_sparsity", "val_top1_vs_step") if k in run.data.metrics]
        first = min(
            (m for k in keys for m in client.get_metric_history(run.info.run_id, k)),
            key=lambda m: m.timestamp,
        )
        hours = [m for m in client.get_metric_history(run.info.run_id, "cpu_hours") if m.step == first.step]
        before = (
            3600 * hours[0].value / float(trial.get("cpus_per_worker") or 1.0) if "val_top1" in keys else 0.0
        )
        times.append(
            {
                "start": run.info.start_time / 1e3,
                "first": first.timestamp / 1e3,
                "end": run.info.end_time / 1e3,
                "loop_first": before,
                "loop": loop_seconds(trial),
                "held": float(trial["trial_seconds"]),
            }
        )
    return [times[0], *sorted(times[1:], key=lambda t: t["end"])]


def measure(ran: Ran) -> dict[str, Any]:
    sweep, *times = trial_times(ran)
    first = [t["first"] - t["start"] - t["loop_first"] for t in times]
    held = [t["held"] - t["loop"] for t in times]  # in end order: one at a time, also start order
    gaps = [b["end"] - a["end"] - b["loop"] for a, b in zip(times, times[1:], strict=False)]
    return {
        "trials": len(times),
        "first report (s)": round(statistics.median(first), 2),
        "in trial (s)": round(statistics.median(held), 2),
        "in the first trial (s)": round(held[0], 2),
        "between trials (s)": round(statistics.median(gaps), 2) if gaps else None,
        "loop (s)": round(statistics.median(t["loop"] for t in times), 2),
        "to first trial (s)": round(times[0]["start"] - sweep["start"], 1),
        "after last trial (s)": round(sweep["end"] - times[-1]["end"], 1),
        "sweep wall (s)": round(ran.wall_s, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    found = []
    for workload in args.workloads:
        for executor in args.executors:
            ran = run_folder(overhead_sweep(args, workload, executor), out / f"{workload}_{executor}")
            if ran.wall_s == 0.0:
                raise SystemExit(
                    f"{ran.out}: finished before; its timings are that run's: choose a new --out"
                )
            found.append({"workload": workload, "executor": executor, **measure(ran)})
            print(", ".join(f"{k} {v}" for k, v in found[-1].items()), flush=True)
    medians = {(f["workload"], f["executor"]): f for f in found}
    results.write_results(
        "sweep_overhead",
        title="Sweeps: the driver's per-trial overhead, Ray Tune vs in-process",
        headline=[
            results.headline(
                f"driver overhead per trial, {executor} executor (trial start to first report)",
                medians[("noop", executor)]["first report (s)"],
                "s",
                f"median of {args.trials} trials that only report; between trials "
                f"{medians[('noop', executor)]['between trials (s)']} s",
            )
            for executor in args.executors
            if ("noop", executor) in medians
        ],
        tables=[results.table_of_dicts("medians over trials, one trial at a time", found)],
        notes="Each sweep runs its trials one at a time through `run_sweep`, on Ray Tune or in this process "
        "(`resources.local`). *first report*: from the driver's trial-start event to the trial's first report "
        "reaching the driver (MLflow run start and metric timestamps), minus the loop's time before it; *in "
        "trial*: the trial's wall time (trials.parquet `trial_seconds`) minus its time in the training loop; "
        "*between trials*: the gap between consecutive trial ends minus the next trial's loop time; *to first "
        "trial*: the sweep's start (its MLflow run) to the first trial's start: Ray's start and, on Tune, the "
        "first trial actor's start-up, since Tune signals a trial's start once its actor runs; *after last "
        "trial*: the summary and plots. Workloads: "
        "`noop`, a kind whose trial only reports; `gradual`, one epoch of gradual pruning to 0.5 on digits-vit "
        f"(m 16{f', {args.max_steps} steps' if args.max_steps else ''}). Tune reuses an ended trial's actor for "
        "the next one (`reuse_actors`).",
        results_dir=results_folder(args.quick, out),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
