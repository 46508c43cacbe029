"""GPU check (issue 27): every CUDA path of ovit-ray proven in one run of a few minutes on one GPU.

Parts (docs/GPU.md says what each proves and how to read the table). Each reports pass, fail or skip with its
figures; a part that needs what the machine lacks (a GPU, Ray, NCCL, semi-structured sparsity) says so in one
line and the others run on:

  pruner    the Pruner on CUDA against the CPU on identical inputs (Fisher sums, then plan and apply from the
            same sums: mask agreement, largest update difference), and DeiT-Small's plan time at B=192, m=256
  optin     OPTIN scores (`optin_scores`) of DeiT-Small blocks, one candidate per pass and a batch of them:
            time per candidate, the scores' agreement and the whole-model estimate
  autocast  a gradual pruning step (one worker's: Pruner collect, plan, apply; then `train_one_epoch` with the
            masks kept) under bf16 autocast
  ddp       a DDP training step with the NCCL backend, one GPU, world size 1, through the TorchTrainer of
            gradual and depth runs (`fit_on_ray`); without Ray, the same step under torch.distributed alone
  speed     OPTIN-shrunk (half the heads and neurons) and depth-pruned DeiT-Small against dense, in fp16 and
            bf16, timed in one interleaved loop (`measure.speed.compare_models`)
  two_four  2:4 masks from the Pruner, the pruned weights as `torch.sparse.to_sparse_semi_structured` tensors,
            timed against dense and against the same masks kept dense

Needs torch, timm and ovit_ray (with its light dependencies: pydantic, rich, numba, scipy); Ray and MLflow
only for the TorchTrainer path of `ddp`. From the repository root:

    PYTHONPATH=. python benchmarks/gpu_check.py --out gpu_check.json   # + benchmarks/results/gpu_check.json
    .venv/bin/python benchmarks/gpu_check.py --cpu-smoke                # tiny: every path but the CUDA calls

The parts live in gpu_check_parts.py; this file runs them, prints the table and writes the results file.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import timm
import torch

try:  # the GPU machine may lack one of the package's own light dependencies (docs/GPU.md, "Running it")
    from gpu_check_parts import GPU_SIZES, PARTS, RUNNERS, SMOKE_SIZES, Check, Missing, Sizes
    from results_file import RESULTS_DIR, check_results, command, headline, load_average, machine, table
except ModuleNotFoundError as missing:
    sys.exit(f"gpu_check: Python package {missing.name!r} is missing here; see docs/GPU.md, 'Running it'")


# -- running, reporting -----------------------------------------------------------------------------------
def one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text[:300] or type(error).__name__


def run_part(name: str, check: Check) -> dict[str, Any]:
    """One part's outcome: pass (every check holds), fail (one does not, or the part raised: the other parts
    run on), or skip (the machine lacks what it needs)."""
    check.figures = {}
    on_cuda = check.device.type == "cuda"
    if on_cuda:
        torch.cuda.reset_peak_memory_stats(check.device)
    began, checks, error = time.perf_counter(), {}, None
    try:
        checks = RUNNERS[name](check)
        failed = [label for label, ok in checks.items() if not ok]
        status, note = ("fail", "failed: " + "; ".join(failed)) if failed else ("pass", "; ".join(checks))
    except Missing as why:
        status, note = "skip", str(why)
    except Exception as err:  # a part's failure is its own row: the others run on
        status, note, error = "fail", f"{type(err).__name__}: {one_line(err)}", traceback.format_exc()
    outcome = {
        "part": name,
        "status": status,
        "seconds": round(time.perf_counter() - began, 3),
        "note": note,
        "checks": checks,
        "figures": check.figures,
        "error": error,
    }
    if on_cuda:
        outcome["peak_gib"] = round(torch.cuda.max_memory_allocated(check.device) / 2**30, 2)
    gc.collect()
    if on_cuda:
        torch.cuda.empty_cache()
    return outcome


def _largest(fig: Mapping[str, Any], dtype: str) -> list[Any]:
    """The speed table's row of `dtype` at the largest batch."""
    return [r for r in fig["table"]["rows"] if r[0] == dtype][-1]


SUMMARIES: dict[str, Callable[[Mapping[str, Any], Sizes], str]] = {
    "pruner": lambda f, s: (
        f"masks agree {f['mask_agreement']:.4%}, update diff {f['update_diff']:.1e}; "
        f"B={s.plan[0]} m={s.plan[1]} plan {f['plan_s']:.2f} s"
    ),
    "optin": lambda f, s: (
        f"{f['per_candidate_ms_batched']:.2f} ms/candidate batched "
        f"({f['batching_speedup']:.1f}x K=1), whole model ~{f['full_model_estimate_s'] / 60:.1f} min"
    ),
    "autocast": lambda f, s: f"prune {f['prune_s']:.2f} s, train {f['images_per_s']:.0f} img/s bf16",
    "ddp": lambda f, s: f"{f['backend']}, world {f['world_size']}, via {f['through']}",
    "speed": lambda f, s: "bf16 batch {1}: shrunk {3}x, depth {4}x".format(*_largest(f, "bf16")),
    "two_four": lambda f, s: "fp16 batch {1}: 2:4 sparse {4}x dense".format(*_largest(f, "fp16")),
}


def summary(outcome: Mapping[str, Any], sizes: Sizes) -> str:
    try:
        return SUMMARIES[outcome["part"]](outcome["figures"], sizes)
    except (KeyError, IndexError):  # the part stopped before its figures
        return ""


def print_table(outcomes: list[dict[str, Any]], sizes: Sizes, where: str) -> None:
    print(f"\ngpu_check: {where}")
    print(f"{'part':<9} {'status':<6} {'s':>7}  figures")
    for o in outcomes:
        print(f"{o['part']:<9} {o['status']:<6} {o['seconds']:>7.1f}  {summary(o, sizes)}")
    for o in outcomes:
        if o["status"] != "pass":
            print(f"  {o['part']}: {o['status']}: {o['note']}")


def environment(device: torch.device) -> dict[str, Any]:
    env: dict[str, Any] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "timm": timm.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            memory_gib=round(props.total_memory / 2**30, 1),
        )
        env["driver"] = _read(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    env["commit"] = _read(["git", "rev-parse", "--short", "HEAD"])
    return env


def _read(cmd: list[str]) -> str | None:
    try:
        return (
            subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=True).stdout.strip() or None
        )
    except (OSError, subprocess.SubprocessError):
        return None


def results(
    outcomes: list[dict[str, Any]], sizes: Sizes, env: Mapping[str, Any], smoke: bool
) -> dict[str, Any]:
    """The results file (benchmarks/results_file.py's format), every part's raw outcome under `parts`."""
    fig = {o["part"]: o["figures"] for o in outcomes}
    passed = sum(o["status"] == "pass" for o in outcomes)
    others = "; ".join(f"{o['part']}: {o['status']}" for o in outcomes if o["status"] != "pass")
    items = [headline("parts passed", f"{passed} of {len(outcomes)}", "", others)]
    for part, name, key, unit, scale in (
        ("pruner", f"DeiT-Small plan time, B={sizes.plan[0]}, m={sizes.plan[1]}", "plan_s", "s", 1),
        (
            "pruner",
            "CUDA vs CPU masks planned from the same Fisher sums (DeiT-Tiny, 50%)",
            "mask_agreement",
            "%",
            100,
        ),
        (
            "optin",
            "OPTIN scores of the whole DeiT-Small (32 images), estimated",
            "full_model_estimate_s",
            "min",
            1 / 60,
        ),
    ):
        if key in fig.get(part, {}):
            items.append(
                headline(name, round(fig[part][key] * scale, 4), unit, "smoke sizes" if smoke else "")
            )
    tables = [
        table(
            "Parts",
            ["part", "status", "seconds", "figures", "note"],
            [[o["part"], o["status"], o["seconds"], summary(o, sizes), o["note"]] for o in outcomes],
        )
    ]
    for part, title in (
        ("speed", "OPTIN-shrunk (half the heads and neurons) and depth-pruned vs dense"),
        ("two_four", "2:4 semi-structured vs dense"),
    ):
        if "table" in fig.get(part, {}):
            tables.append(table(title, fig[part]["table"]["columns"], fig[part]["table"]["rows"]))
    data = {
        "benchmark": "gpu_check",
        "title": "GPU check: every CUDA path of ovit-ray in one run (issue 27)"
        + (" [CPU smoke]" if smoke else ""),
        "command": command(),
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "load": load_average(),
        "headline": items,
        "tables": tables,
        "notes": "One run of `benchmarks/gpu_check.py` (docs/GPU.md): each part passes when every check in "
        "its note holds; a part that needs what the machine lacks is skipped with the reason. Random weights "
        "and inputs (speed and agreement only, no accuracy); speed-ups are medians of one interleaved loop.",
        "environment": dict(env),
        "parts": outcomes,
    }
    data = json.loads(json.dumps(data, default=str))
    check_results(data, "gpu_check")
    return data


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    partial.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    partial.replace(path)
    print(f"results: {path}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--cpu-smoke", action="store_true", help="tiny sizes on the CPU: every path but the CUDA calls"
    )
    p.add_argument(
        "--skip",
        nargs="+",
        default=[],
        choices=PARTS,
        metavar="PART",
        help=f"parts not to run: {', '.join(PARTS)}",
    )
    p.add_argument("--only", nargs="+", choices=PARTS, metavar="PART", help="run only these parts")
    p.add_argument(
        "--no-ray", action="store_true", help="ddp: the step under torch.distributed alone, as without Ray"
    )
    p.add_argument(
        "--out", type=Path, help="write the results (with each part's raw figures) to this JSON file too"
    )
    p.add_argument(
        "--no-results-file",
        action="store_true",
        help="GPU run: leave benchmarks/results/gpu_check.json alone",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    smoke = args.cpu_smoke
    device = torch.device("cpu") if smoke else torch.device("cuda", 0)
    check = Check(device=device, sizes=SMOKE_SIZES if smoke else GPU_SIZES, smoke=smoke, no_ray=args.no_ray)
    chosen = [p for p in PARTS if p not in args.skip and (args.only is None or p in args.only)]
    gpu = not smoke and torch.cuda.is_available()
    outcomes = []
    for name in PARTS:
        if name not in chosen:
            outcome = {"part": name, "status": "skip", "seconds": 0.0, "note": "not run (--skip / --only)"}
        elif not smoke and not gpu:
            note = "no CUDA GPU visible (torch.cuda.is_available() is False); --cpu-smoke runs the CPU paths"
            outcome = {"part": name, "status": "skip", "seconds": 0.0, "note": note}
        else:
            print(f"gpu_check: {name} ...", flush=True)
            outcome = run_part(name, check)
        outcomes.append({"checks": {}, "figures": {}, "error": None, **outcome})
    env = environment(device if gpu else torch.device("cpu"))
    versions = f"torch {env['torch']}, CUDA {env['cuda']}, timm {env['timm']}"
    where = f"{env.get('gpu', 'CPU smoke' if smoke else 'no GPU')}; {versions}"
    print_table(outcomes, check.sizes, where)
    data = results(outcomes, check.sizes, env, smoke)
    if gpu and not args.no_results_file:
        write_json(RESULTS_DIR / "gpu_check.json", data)
    if args.out:
        write_json(args.out, data)
    return 1 if any(o["status"] == "fail" for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
