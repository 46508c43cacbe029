"""The structured frontier on digits32-vit (issue 25.3): which pruning method buys how much measured speed for
how much top-1, and which differences between methods stand out of the seed noise.

Runs the three sweep files of sweeps/frontier_digits32/ through the one driver, in this process, one trial at
a time (two models timed at once on a 2-core machine would slow each other):
  structured.yaml  OPTIN and the baselines sharing its search, shrink and budgets (group L1, group L2, Taylor,
                   random) at MACs 0.9 / 0.7 / 0.5, one-shot, 3 calibration seeds;
  oneshot.yaml     oViT unstructured one-shot at sparsity 0.5 / 0.7 / 0.9 (dense kernels), 3 seeds;
  depth.yaml       BoundaryDPT (1-2 attention sublayers dropped x 1-2 activations merged, attention first)
                   and BoundaryDPT+ (then OPTIN width to 0.7), fine-tuned with KD for a few epochs, 3 seeds;
then reads their results.parquet, adds Torch-Pruning 1.6.1's L1 and Taylor rows measured on the same preset,
splits, calibration images and budgets by benchmarks/bench_peer_structured.py (from its results file), and
writes benchmarks/results/frontier_digits32.json: the frontier table (`results.frontier.frontier_rows`: top-1
mean ± std over seeds and the measured speed-ups per method and budget), the differences of top-1 between
methods at each MACs budget and between BoundaryDPT and BoundaryDPT+ at each depth plan with Welch 95%
intervals (`results.frontier.method_differences`, `results.stats`), and which of them exclude 0.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_frontier.py --out runs/bench_frontier
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_frontier.py --quick   # one seed, one budget, tiny timings

The sweeps alone: `ovit-ray sweep sweeps/frontier_digits32/*.yaml --out runs/bench_frontier` (the folders this
script reads; it resumes them, or only reads them once finished). A --quick run may take `--model digits-vit`
(no digits32-vit training) and writes its results file into --out (or $OVIT_RAY_BENCH_RESULTS).
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import results_file as results
from peer_tables import LABELS
from sweep_runs import Row, results_folder, run_folder

from ovit_ray.orchestration.common.yaml_files import read_yaml_mapping
from ovit_ray.orchestration.results.frontier import frontier_rows, label, method_differences, plot_frontier
from ovit_ray.orchestration.results.stats import pairwise_table

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "sweeps" / "frontier_digits32" / f"{n}.yaml" for n in ("structured", "oneshot", "depth")]
PEER_FILE = ROOT / "benchmarks" / "results" / "peer_structured.json"
PEERS = {text: name for name, text in LABELS.items() if name.startswith("tp-")}  # "Torch-Pruning L1" -> tp-l1
MODEL = "digits32-vit"
QUICK_TIMING = {"throughput_batch": 8, "latency_runs": 3, "throughput_runs": 2}
QUICK: dict[str, dict[str, Any]] = {
    "structured": {"budgets": [0.5]},  # calibration as in the full run: its rows match the peer run's ours
    "oneshot": {"sparsities": [0.5], "num_grads": 16},
    "depth": {
        "stage1_epochs": 1,
        "stage2_epochs": 1,
        "final_epochs": 1,
        "max_steps_per_epoch": 2,
        "calib_size": 8,
    },
}
QUICK_GRIDS = {"attention": [1], "activation": [1]}  # depth: one plan, with and without the width step


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--out", help="holds one folder per sweep (default: runs/bench_frontier, _quick with --quick)"
    )
    p.add_argument(
        "--files", nargs="+", type=Path, default=FILES, help="the sweep files (default: the three)"
    )
    p.add_argument("--peer", type=Path, default=PEER_FILE, help="the peer benchmark's results file")
    p.add_argument(
        "--quick", action="store_true", help="a smoke run: one seed, one budget, one depth plan, tiny timings"
    )
    p.add_argument("--model", default=MODEL, help=f"with --quick only: the model (default: {MODEL})")
    args = p.parse_args(argv)
    if args.model != MODEL and not args.quick:
        p.error(f"--model: only with --quick (the full run is the {MODEL} frontier), got {args.model}")
    args.out = Path(args.out or ("runs/bench_frontier_quick" if args.quick else "runs/bench_frontier"))
    return args


def quick_variant(raw: dict[str, Any], model: str) -> dict[str, Any]:
    """The sweep scaled to a smoke run: one seed, one budget, one depth plan, tiny timings."""
    kind = next(k for k in QUICK if k in raw)
    params = dict(raw.get("search", {}).get("params", {}))
    params.update({k: {"grid": v} for k, v in QUICK_GRIDS.items() if k in params})
    return {
        **raw,
        "name": f"{raw['name']}_quick",
        "model": model,
        "seeds": [0],
        kind: {**raw[kind], **QUICK_TIMING, **QUICK[kind]},
        "search": {**raw.get("search", {}), "params": params},
    }


def stand_ins(cell: str, n: int, scale: float = 1.0) -> list[float]:
    """`n` values whose mean and sample std are those of a 'mean ± std' cell (std 0 without '±'). Welch's
    interval reads only the mean, the std and n of each side, so these give the interval the seed values
    would (up to the cell's rounding)."""
    parts = cell.split(" ± ")
    mean, std = float(parts[0]), float(parts[1]) if len(parts) > 1 else 0.0
    if n == 1:
        return [mean * scale]
    z = [i - (n - 1) / 2 for i in range(n)]
    spread = statistics.stdev(z)
    return [(mean + std * zi / spread) * scale for zi in z]


def peer_rows(path: Path, model: str) -> tuple[list[Row], str]:
    """Torch-Pruning's rows on `model` from the peer benchmark's results file, one per seed (stand-in values
    with each cell's mean and std), as structured rows; and where they come from."""
    data = json.loads(path.read_text())
    table = next((t for t in data["tables"] if t["title"].startswith(f"{model}: test top-1")), None)
    if table is None:
        return [], f"{path.name} has no {model} table"
    at = {c: i for i, c in enumerate(table["columns"])}
    rows = []
    for cells in table["rows"]:
        method = PEERS.get(cells[at["method"]])
        if method is None:
            continue
        n = int(cells[at["seeds"]])
        top1 = stand_ins(cells[at["test top-1 (%)"]], n, 0.01)
        latency = stand_ins(cells[at["x latency b1"]], n)
        throughput = stand_ins(cells[at["x throughput"]], n)
        for i in range(n):
            rows.append(
                {
                    "kind": "structured",
                    "method": method,
                    "target": float(cells[at["MACs budget"]]),
                    "seed": i,
                    "top1": top1[i],
                    "speedup_latency": latency[i],
                    "speedup_throughput": throughput[i],
                }
            )
    return (
        rows,
        f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path} of {data['date']}",
    )


def verdict(pair: Row) -> str:
    """Where a pair's Welch interval puts a - b: within the seed noise, outside it, or untestable (no spread
    over seeds on either side: a fixed gap of a few test images, not a test)."""
    low, high = pair["a - b, 95% CI"].split("[")[1].split("]")[0].split(", ")
    if not pair["excludes 0"]:
        return "within the noise"
    if low == high:
        return "no seed spread on either side (a fixed gap, untested)"
    return "outside the noise: a " + ("higher" if float(low) > 0 else "lower")


def differences(rows: Sequence[Row]) -> tuple[list[Row], list[Row]]:
    """Structured methods (ours and Torch-Pruning's) at each MACs budget; BoundaryDPT vs BoundaryDPT+ at each
    depth plan; each pair with its verdict."""
    structured = [
        {
            **p,
            "budget": p["budget"].removesuffix("/t0.00"),
            "a": p["a"].removeprefix("label="),
            "b": p["b"].removeprefix("label="),
        }
        for p in method_differences(rows)
    ]
    depth = [
        {**r, "label": label(r), "plan": f"attention {r['attention']}, activation {r['activation']}"}
        for r in rows
        if r.get("kind") == "depth"
    ]
    plans = [
        {**p, "a": p["a"].removeprefix("label="), "b": p["b"].removeprefix("label=")}
        for p in pairwise_table(depth, ["label"], within="plan")
    ]
    return [{**p, "verdict": verdict(p)} for p in structured], [{**p, "verdict": verdict(p)} for p in plans]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows: list[Row] = []
    seconds, failed = 0.0, 0
    for path in args.files:
        raw = read_yaml_mapping(path, "sweep file")
        if args.quick:
            raw = quick_variant(raw, args.model)
        ran = run_folder(raw, args.out / raw["name"], path=path)
        rows += ran.rows
        seconds += ran.wall_s
        failed += sum(t["status"] == "failed" for t in ran.trials)
    peers, peer_source = peer_rows(args.peer, args.model)
    if args.quick:
        budgets = {float(b) for b in QUICK["structured"]["budgets"]}
        peers = [r for r in peers if r["target"] in budgets]
    everything = rows + peers
    frontier = [{k: v for k, v in r.items() if k != "tokens"} for r in frontier_rows(everything)]
    by_budget, by_plan = differences(everything)
    outside = [p for p in by_budget + by_plan if p["verdict"].startswith("outside")]
    fixed = [p for p in by_budget + by_plan if p["verdict"].startswith("no seed spread")]
    tested = len(by_budget) + len(by_plan) - len(fixed)

    def named(p: Row) -> str:
        where = p.get("budget") or p.get("plan")
        return f"{p['a']} vs {p['b']} at {where}: {p['a - b, 95% CI']}"

    found = (
        f"{len(outside)} of {tested} tested differences fall outside the seed noise (about {0.05 * tested:.0f} "
        "would by chance alone, at 95% each): " + "; ".join(map(named, outside))
        if outside
        else f"none of the {tested} tested differences falls outside the seed noise (every Welch 95% interval includes 0)"
        if tested
        else "no difference could be tested (fewer than 2 seeds per method)"
    ) + (
        f"; {len(fixed)} pair(s) without seed spread on either side differ by a fixed gap, untested"
        if fixed
        else ""
    )
    print(f"\nfrontier ({args.model}): {found}")
    print(f"plot: {plot_frontier(everything, args.out / 'frontier.png')}")
    optin = next((r for r in frontier if r["method"] == "optin" and r["budget"] == "0.50"), None)
    headline = [
        results.headline(
            f"frontier on {args.model}: differences of top-1 between methods outside the seed noise",
            f"{len(outside)} of {tested}",
            "pairs",
            "Welch 95% intervals excluding 0: "
            + ("; ".join(map(named, outside[:3])) if outside else "none")
            + (f"; {len(outside) - 3} more in the table" if len(outside) > 3 else ""),
        )
    ]
    if optin is not None:
        headline.append(
            results.headline(
                f"OPTIN at MACs 0.5 on {args.model}, one-shot",
                optin["test top-1 (%)"],
                "%",
                f"x{optin['x throughput']} throughput, x{optin['x latency b1']} batch-1 latency; {optin['n']} seeds",
            )
        )
    results.write_results(
        "frontier_digits32",
        title=f"The structured frontier on {args.model}: OPTIN, baselines, Torch-Pruning, BoundaryDPT(+), oViT",
        headline=headline,
        tables=[
            results.table_of_dicts(
                "test top-1 (%) mean ± std over seeds, measured speed-ups over dense (median ratios)",
                frontier,
            ),
            results.table_of_dicts(
                "structured methods at each MACs budget: test top-1 a - b (pp), Welch 95%", by_budget
            ),
            results.table_of_dicts(
                "BoundaryDPT vs BoundaryDPT+ at each depth plan: test top-1 a - b (pp), Welch 95%", by_plan
            ),
        ],
        notes=f"**{found[0].upper() + found[1:]}.** Sweeps: {', '.join(str(p.relative_to(ROOT) if p.is_relative_to(ROOT) else p) for p in args.files)}"
        f"{' (scaled down: --quick)' if args.quick else ''}, run in one process one trial at a time "
        f"({failed} failed trial(s) left out). *budget*: the MACs ratio for structured methods and Torch-Pruning "
        "(`tp-l1`, `tp-taylor`), the sparsity for `ovit` (unstructured, one-shot), the width ratio (1.00: none) "
        "and the depth plan (a: attention sublayers dropped, v: activations merged) for `boundarydpt(+)`. "
        "Structured, Torch-Pruning and oViT points are one-shot (no fine-tuning); BoundaryDPT(+) points are "
        "fine-tuned with KD (stage epochs in depth.yaml), so their top-1 is not a like-for-like comparison with "
        "the one-shot points at similar speed. Every model of ours is timed against the dense one in one "
        "interleaved loop inside its trial; Torch-Pruning's rows come from the peer benchmark "
        f"({peer_source}), timed in that run's own loop with the same settings on the same machine: its "
        "speed-ups are comparable, not from the same loop. Its per-seed values are not in that file: each cell's "
        "mean and std over its seeds stand in for them (Welch's interval reads only those and n, so the interval "
        "is the one the seed values give, up to the file's rounding). A pair with no spread over seeds on either "
        "side differs by a fixed number of test images and is marked untested, not outside the noise.",
        results_dir=results_folder(args.quick, args.out),
        seconds_total=round(seconds, 1),
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
