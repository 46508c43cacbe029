"""Training the bundled presets from scratch on CPU: wall and CPU seconds, test and val top-1 (issue 25).

Each preset is trained exactly as on first use (`training.preset.train_preset`, its recipe, its splits) but in
this process and without touching the cache, so the numbers are what a new user's first run costs. CPU
seconds are reported beside wall seconds because a shared machine stretches the wall clock, not the work
(set `OMP_NUM_THREADS=1` there: two torch threads on two busy cores were measured far slower than one).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_presets.py --presets digits-vit digits32-vit
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence

import results_file as results
import torch

from ovit_ray.models import PRESETS
from ovit_ray.pruning.structured import VitCosts
from ovit_ray.training.preset import RECIPES, train_preset


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    args = p.parse_args(argv)
    rows, headline = [], []
    for name in args.presets:
        load = os.getloadavg()[0]
        wall, cpu = time.perf_counter(), time.process_time()
        model, meta = train_preset(name, RECIPES[name], progress=False)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        costs, spec = VitCosts.of(model), PRESETS[name]
        rows.append(
            [
                name,
                spec.dataset,
                f"{spec.image_size}x{spec.image_size}, {costs.widths.tokens[0]} tokens",
                f"{len(costs.widths.heads)} x {costs.widths.heads[0]} heads, width {costs.embed_dim}",
                round(costs.macs() / 1e6, 1),
                meta["epochs"],
                round(100 * meta["test_top1"], 2),
                round(100 * meta["val_top1"], 2),
                round(wall),
                round(cpu),
                f"{load:.1f} / {os.getloadavg()[0]:.1f}",
            ]
        )
        print(rows[-1], flush=True)
        headline.append(
            results.headline(
                f"{name}: trained from scratch on CPU ({torch.get_num_threads()} thread(s))",
                f"{round(wall)} s, test top-1 {100 * meta['test_top1']:.2f}%",
                "",
                f"{round(cpu)} s of CPU; load average {load:.1f} at the start",
            )
        )
    results.write_results(
        "presets",
        title="The bundled presets, trained from scratch on CPU",
        headline=headline,
        tables=[
            results.table(
                "one training run per preset (its recipe: 40 epochs of AdamW, cosine, light augmentation)",
                [
                    "preset",
                    "data",
                    "input",
                    "blocks",
                    "MMAC/image",
                    "epochs",
                    "test top-1 (%)",
                    "val top-1 (%)",
                    "wall (s)",
                    "CPU (s)",
                    "load average start / end",
                ],
                rows,
            )
        ],
        notes="Trained as on first use, on the train split only; test and val are held out (digits: 1,079 / "
        "359 / 359 images). Benchmarks and sweeps load the cached checkpoint afterwards.",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
