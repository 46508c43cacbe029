"""`benchmarks/gpu_check.py --cpu-smoke` runs every path of the GPU check but the CUDA calls, so the script
cannot rot between the rare runs on a GPU (issue 27). The fast tier runs the DDP part under torch.distributed
alone (`--no-ray`); the Ray tier runs it through the TorchTrainer a cluster uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
sys.path.insert(0, str(ROOT / "benchmarks"))

import gpu_check  # noqa: E402
import gpu_check_parts  # noqa: E402
from results_file import RESULTS_DIR, check_results  # noqa: E402

COMMITTED = RESULTS_DIR / "gpu_check.json"


def _stamp() -> float | None:
    return COMMITTED.stat().st_mtime if COMMITTED.exists() else None


def test_cpu_smoke_runs_every_path_but_the_cuda_calls(tmp_path):
    before = _stamp()
    out = tmp_path / "smoke.json"
    assert gpu_check.main(["--cpu-smoke", "--no-ray", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    check_results(data, "gpu_check")  # the benchmarks' results format, the raw parts beside it
    parts = {p["part"]: p for p in data["parts"]}
    assert list(parts) == list(gpu_check_parts.PARTS)
    for name in ("pruner", "optin", "autocast", "speed"):
        assert parts[name]["status"] == "pass", parts[name]["note"]
        assert parts[name]["checks"] and all(parts[name]["checks"].values())
    pruner = parts["pruner"]["figures"]
    assert pruner["mask_agreement"] == 1.0 and pruner["update_diff"] == 0.0  # both sides on the CPU here
    assert pruner["plan_s"] > 0 and pruner["plan_weights"] > 0
    optin = parts["optin"]["figures"]
    assert optin["score_diff"] <= gpu_check_parts.SCORE_DIFF_MAX and optin["full_model_estimate_s"] > 0
    assert parts["autocast"]["checks"]["forward ran in bf16"]
    speed = parts["speed"]["figures"]["table"]["rows"]
    assert [(r[0], r[1]) for r in speed] == [("fp16", 1), ("fp16", 8), ("bf16", 1), ("bf16", 8)]
    # the parts a CPU lacks say why in one line, with what they could still check
    ddp, two_four = parts["ddp"], parts["two_four"]
    assert ddp["status"] == "skip" and "\n" not in ddp["note"]
    assert (
        "--no-ray was given" in ddp["note"]
        and "torch.distributed alone: pass (gloo, world size 1)" in ddp["note"]
    )
    assert ddp["figures"]["pruned_stay_zero"] and ddp["figures"]["all_reduce"] == 1.0
    assert two_four["status"] == "skip" and "CUDA only" in two_four["note"]
    assert two_four["figures"]["two_of_four_rows"] and two_four["figures"]["sparsity"] == 0.5
    assert data["headline"][0]["value"] == "4 of 6"
    assert _stamp() == before  # a smoke run never replaces the GPU results file


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer of a machine without a GPU")
def test_without_a_gpu_every_part_says_so_in_one_line(tmp_path, capsys):
    before = _stamp()
    out = tmp_path / "none.json"
    assert gpu_check.main(["--out", str(out)]) == 0
    parts = json.loads(out.read_text())["parts"]
    assert {p["status"] for p in parts} == {"skip"}
    assert all(p["note"].startswith("no CUDA GPU visible") for p in parts)
    assert "no CUDA GPU visible" in capsys.readouterr().out
    assert _stamp() == before


def test_a_failing_part_is_its_own_row_and_the_rest_runs_on(tmp_path, monkeypatch):
    def broken(check: gpu_check_parts.Check) -> dict[str, bool]:
        raise RuntimeError("planted\nfailure")

    monkeypatch.setitem(gpu_check_parts.RUNNERS, "optin", broken)
    out = tmp_path / "broken.json"
    assert gpu_check.main(["--cpu-smoke", "--only", "optin", "autocast", "--out", str(out)]) == 1
    parts = {p["part"]: p for p in json.loads(out.read_text())["parts"]}
    assert parts["optin"]["status"] == "fail" and parts["optin"]["note"] == "RuntimeError: planted failure"
    assert "Traceback" in parts["optin"]["error"]
    assert parts["autocast"]["status"] == "pass"
    assert parts["pruner"]["note"] == "not run (--skip / --only)"


@pytest.mark.ray
def test_ddp_runs_through_the_torch_trainer_a_cluster_uses(tmp_path):
    out = tmp_path / "ddp.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu-smoke", "--only", "ddp", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ddp = next(p for p in json.loads(out.read_text())["parts"] if p["part"] == "ddp")
    assert ddp["status"] == "pass", ddp["note"]
    assert ddp["figures"]["backend"] == "gloo" and ddp["figures"]["world_size"] == 1
    assert ddp["figures"]["through"].startswith("Ray Train TorchTrainer")
