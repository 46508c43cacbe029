"""Export + evaluate of a sweep's best model, as a user runs them (fresh `ovit-ray` processes).

Also checks the sweep's rows: every kept model must exist (target: zero missing rows, also after the Ray
session that wrote them is gone; paths relative to the folder, as `export` resolves them) and the evaluated
top-1 of every exported file must equal the recorded one. Target: export + evaluate under 30 s on a 2-core
machine. With `--format onnx pt2` the export also writes (and checks) those files, and each is evaluated
through its own runtime.
Usage: python benchmarks/bench_export.py [--sweep-dir runs/quickstart] [--repeats 3] [--format onnx pt2]
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

import results_file as results

from ovit_ray.orchestration.train.export import checkpoint_location
from ovit_ray.orchestration.train.folders import open_source


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
    parser.add_argument("--format", nargs="*", default=[], choices=("onnx", "pt2"))
    args = parser.parse_args()
    folder = open_source(args.sweep_dir)
    rows = folder.rows
    column = folder.layout.model_column
    missing = [
        r
        for r in rows
        if not r.get(column) or not Path(checkpoint_location(folder.path, str(r[column]))).is_file()
    ]
    print(f"{len(rows)} rows, {len(missing)} with a missing kept model")
    export_s, evaluate_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            model = Path(tmp) / f"best{i}.safetensors"
            formats = ["--format", *args.format] if args.format else []
            seconds, _ = timed(["export", args.sweep_dir, "--out", str(model), *formats])
            export_s.append(seconds)
            card = json.loads(model.with_suffix(".json").read_text())
            assert not card.get("formats_skipped"), card.get("formats_skipped")
            evaluated = 0.0
            for suffix in (".safetensors", *(f".{f}" for f in args.format)):
                seconds, text = timed(["evaluate", str(model.with_suffix(suffix))])
                evaluated += seconds
                print(f"run {i + 1}: {text.strip()} ({seconds:.1f} s)")
                assert f"test top-1 {card['top1']:.4f}" in text, (
                    f"{suffix}: top-1 differs from the recorded one"
                )
            evaluate_s.append(evaluated)
            print(f"run {i + 1}: export {export_s[-1]:.1f} s, evaluate {evaluate_s[-1]:.1f} s")
    total = [a + b for a, b in zip(export_s, evaluate_s, strict=True)]
    print(
        f"median: export {statistics.median(export_s):.1f} s, evaluate {statistics.median(evaluate_s):.1f} s, "
        f"together {statistics.median(total):.1f} s (target < 30 s)"
    )
    results.write_results(
        "export",
        title="Export + evaluate of a sweep's best model"
        + (f" (with {', '.join(args.format)})" if args.format else ""),
        headline=[
            results.headline(
                "`ovit-ray export` + `ovit-ray evaluate` of a sweep's best model (two fresh processes)",
                round(statistics.median(total), 1),
                "s",
                f"median of {args.repeats}; target < 30 s",
            )
        ],
        tables=[
            results.table(
                f"sweep {args.sweep_dir}",
                ["what", "result"],
                [
                    ["result rows whose kept model is missing", f"{len(missing)} of {len(rows)}"],
                    ["`ovit-ray export`, median (s)", round(statistics.median(export_s), 1)],
                    ["`ovit-ray evaluate`, median (s)", round(statistics.median(evaluate_s), 1)],
                    ["together, median (s)", round(statistics.median(total), 1)],
                ],
            )
        ],
        notes="Each `ovit-ray export` and `ovit-ray evaluate` is a fresh process, as a user runs them; the "
        "evaluated top-1 was checked equal to the recorded one in every run.",
    )


if __name__ == "__main__":
    main()
