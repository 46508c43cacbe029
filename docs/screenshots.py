"""Regenerate the README's MLflow screenshots (docs/img/*.png) from a real sweep, in headless Chromium.

Usage: python docs/screenshots.py [--out runs/quickstart]
Runs `ovit-ray sweep sweeps/quickstart.yaml` into --out unless a finished sweep is already there, starts
`mlflow server` on that folder (127.0.0.1, a free port), and saves: the runs table sorted by the
objective, the best trial's charts (top-1 vs sparsity among them), the experiment's chart view and
the compare page of all trials. Needs Debian's `chromium` (the Makefile's set-up installs it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

from ovit_ray.orchestration.results.table import sweep_objective
from ovit_ray.orchestration.tracking.server import MlflowServer
from ovit_ray.orchestration.tracking.ui import compare_url, experiment_url, render, run_url

ROOT = Path(__file__).resolve().parents[1]
SIZE = (1800, 1300)


def ensure_sweep(out: Path) -> None:
    state = out / "sweep.json"
    if state.exists() and json.loads(state.read_text()).get("finished"):
        return
    resume = ["--resume"] if state.exists() else []
    subprocess.run(
        [
            sys.executable,
            "-m",
            "ovit_ray.cli.main",
            "sweep",
            str(ROOT / "sweeps" / "quickstart.yaml"),
            "--out",
            str(out),
            *resume,
        ],
        check=True,
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "runs" / "quickstart"), help="sweep output folder")
    parser.add_argument("--img", default=str(ROOT / "docs" / "img"), help="where the PNGs go")
    args = parser.parse_args()
    out, img = Path(args.out).resolve(), Path(args.img)
    img.mkdir(parents=True, exist_ok=True)
    ensure_sweep(out)
    sweep_name = json.loads((out / "sweep.json").read_text())["name"]
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    experiment = next(e for e in client.search_experiments() if e.name != "Default")
    objective, mode = sweep_objective(out)
    runs = client.search_runs(
        [experiment.experiment_id],
        "attributes.status = 'FINISHED'",
        order_by=[f"metrics.{objective} {'DESC' if mode == 'max' else 'ASC'}"],
    )
    trials = [
        r for r in runs if r.data.tags.get("ovit.role") == "trial" and r.data.tags.get("pruned") != "true"
    ]
    best = trials[0]
    server = MlflowServer(out).start()
    try:
        exp = experiment.experiment_id
        shots = {
            "mlflow_runs_table.png": experiment_url(server.url, exp, "table", objective=objective),
            "mlflow_trial_charts.png": run_url(server.url, exp, best.info.run_id, "model-metrics"),
            "mlflow_chart_view.png": experiment_url(server.url, exp, "chart", objective=objective),
            "mlflow_compare.png": compare_url(server.url, exp, [r.info.run_id for r in trials]),
        }
        for (
            name,
            url,
        ) in shots.items():  # the trial's charts page is tall: the series come after the epoch metrics
            size = (SIZE[0], 2600) if name == "mlflow_trial_charts.png" else SIZE
            render(url, screenshot=(img / name).resolve(), size=size, budget_ms=60000)
            print(f"{img / name}  <- {url}")
    finally:
        server.stop()
    print(f"sweep {sweep_name}: {len(trials)} finished trial(s); best {best.info.run_name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
