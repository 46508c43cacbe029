"""Export + evaluate of a sweep's best model, as a user runs them (two fresh `ovit-ray` processes).

Also checks the sweep's rows: every `best_checkpoint` must exist (target: zero missing rows, also
after the Ray session that wrote them is gone) and the evaluated top-1 must equal the recorded one.
Target: export + evaluate under 30 s on a 2-core machine.
Usage: python benchmarks/bench_export.py [--sweep-dir runs/quickstart] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ovit_ray.orchestration.results.parquet import read_rows


def timed(argv: list[str]) -> tuple[float, str]:
    began = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "ovit_ray.cli.main", *argv], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {out.stderr.strip()}")
    return time.perf_counter() - began, out.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sweep-dir", default="runs/quickstart")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rows = read_rows(Path(args.sweep_dir) / "results.parquet")
    missing = [r for r in rows if not r.get("best_checkpoint") or not Path(r["best_checkpoint"]).is_file()]
    print(f"{len(rows)} rows, {len(missing)} with a missing best checkpoint")
    export_s, evaluate_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            model = Path(tmp) / f"best{i}.safetensors"
            seconds, _ = timed(["export", args.sweep_dir, "--out", str(model)])
            export_s.append(seconds)
            seconds, text = timed(["evaluate", str(model)])
            evaluate_s.append(seconds)
            card = json.loads(model.with_suffix(".json").read_text())
            print(
                f"run {i + 1}: export {export_s[-1]:.1f} s, evaluate {evaluate_s[-1]:.1f} s; {text.strip()}"
            )
            assert f"test top-1 {card['top1']:.4f}" in text, "evaluated top-1 differs from the recorded one"
    total = [a + b for a, b in zip(export_s, evaluate_s, strict=True)]
    print(
        f"median: export {statistics.median(export_s):.1f} s, evaluate {statistics.median(evaluate_s):.1f} s, "
        f"together {statistics.median(total):.1f} s (target < 30 s)"
    )


if __name__ == "__main__":
    main()
