"""MLflow's web UI rendered by headless Chromium (Debian's `chromium` package): DOM text for the browser
test, PNGs for the README (`docs/screenshots.py`).

Why a real browser: the runs table, the nesting of trials under their sweep and the GenAI-vs-training
layout exist only after MLflow's JavaScript ran; the REST API cannot show them.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser")  # Debian, Ubuntu
# MLflow 3's GenAI navigation (sidebar entries of the GenAI layout; "Traces" exists in both layouts).
GENAI_MARKERS = ("Judges", "Prompts", "Evaluation runs", "Agent versions")
# The UI's own switch between its layouts; the experiment's kind tag picks the experiment page's layout.
TRAINING = "workflowType=machine_learning"


def chromium() -> str | None:
    """The browser binary on PATH, or None (the Makefile's set-up installs Debian's `chromium`)."""
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def render(
    url: str,
    *,
    screenshot: Path | None = None,
    size: tuple[int, int] = (1600, 1000),
    budget_ms: int = 20000,
    timeout_s: float = 180.0,
) -> str:
    """The page's DOM after `budget_ms` of virtual time (scripts and API calls done), or, with
    `screenshot`, a PNG of it. A fresh profile each time: no column choices remembered from earlier."""
    binary = chromium()
    if binary is None:
        raise FileNotFoundError("chromium not found on PATH; install it with `apt-get install -y chromium`")
    with tempfile.TemporaryDirectory(prefix="ovit-chromium-") as profile:
        args = [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"]
        args += ["--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]
        args += [f"--virtual-time-budget={budget_ms}"]
        args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
        done = subprocess.run([*args, url], capture_output=True, text=True, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"chromium failed ({done.returncode}) on {url}: {done.stderr[-500:]}")
    return done.stdout


def experiment_url(server: str, experiment_id: str, view: str = "table", objective: str | None = None) -> str:
    """The experiment's runs: `table` or `chart` view. Sorted by an `objective` metric the table lists
    every trial flat, best first (unsorted, MLflow folds the trials under their sweep run)."""
    mode = {"table": "TABLE", "chart": "CHART"}[view]
    order = f"&orderByKey=metrics.%60{objective}%60&orderByAsc=false" if objective else ""
    return f"{server}/#/experiments/{experiment_id}/runs?{TRAINING}&compareRunsMode={mode}{order}"


def run_url(server: str, experiment_id: str, run_id: str, tab: str = "") -> str:
    """A run's page: overview (params, metrics, parent), or `model-metrics` (its charts)."""
    return f"{server}/#/experiments/{experiment_id}/runs/{run_id}{'/' + tab if tab else ''}?{TRAINING}"


def compare_url(server: str, experiment_id: str, run_ids: list[str]) -> str:
    """MLflow's compare page: the runs side by side, one row per param (knob) and metric."""
    runs = ",".join(f"%22{r}%22" for r in run_ids)
    return f"{server}/#/compare-runs?runs=[{runs}]&experiments=[%22{experiment_id}%22]&{TRAINING}"
