"""The row of a finished BoundaryDPT run, in the `structured_results` schema so the frontier shows it beside
OPTIN and unstructured pruning: test top-1 of the best-on-validation final model (loaded back from its kept
file, so the row also proves it rebuilds), top-1 right after removal, per-stage epochs, analytic MACs and
parameters (`DepthCosts`), and dense vs pruned latency and throughput measured in one interleaved loop."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ovit_ray.pruning.depth import DepthCosts
from ovit_ray.training.depth.spec import DepthSpec
from ovit_ray.training.loop import evaluate, make_loader
from ovit_ray.training.setup import build_model_and_data, job_start
from ovit_ray.training.structured import SpeedSettings, speed_columns

Row = dict[str, Any]


def depth_row(spec: DepthSpec, summary: Mapping[str, Any], speed: SpeedSettings | None = None) -> Row:
    """One row for the run that returned `summary` (rank 0's, whose best checkpoint is a local path); speed
    columns when `speed` is given."""
    dense_start = job_start(spec)
    best = summary["best"]
    pruned_start = build_model_and_data(
        spec.model,
        checkpoint=best["checkpoint"],
        dataset=spec.dataset,
        data_root=spec.data_root,
        split_seed=spec.split_seed,
        progress=False,
    )
    device = speed.device if speed else "cpu"
    dense, pruned = (s.model.to(device).eval() for s in (dense_start, pruned_start))
    loaders = {
        split: make_loader(getattr(dense_start.data, split), spec.eval_batch_size, shuffle=False, seed=0)
        for split in ("test", "val")
    }

    def top1(model: torch.nn.Module, split: str) -> float:
        return evaluate(model, loaders[split], device=device)["top1"]

    costs, dense_costs = DepthCosts.of(pruned), DepthCosts.of(dense)
    structure, notes = summary["structure"], summary["notes"]
    macs, dense_macs = costs.macs(), dense_costs.macs()
    merge = notes.get("merge_check", {})
    row: Row = {
        "run_key": spec.run_key,
        "model": spec.model,
        "method": "boundarydpt",
        "flops_ratio": None,
        "achieved_flops_ratio": macs / dense_macs,
        "heads_kept": list(structure["heads"]),
        "neurons_kept": list(structure["neurons"]),
        "gmacs": macs / 1e9,
        "gmacs_dense": dense_macs / 1e9,
        "gmacs_sparse": macs / 1e9,
        "params": costs.params(),
        "params_dense": dense_costs.params(),
        "params_nonzero": costs.params(),
        "achieved_sparsity": 0.0,
        "calib_size": spec.calib_size,
        "seed": spec.seed,
        "depth_scorer": spec.scorer,
        "attn_dropped": len(summary["plan"][0]),
        "act_linearised": len(summary["plan"][1]),
        "mlps_merged": sum(state == "merged" for state in structure["mlp"]),
        "stage_order": spec.stage_order,
        "width_ratio": spec.width_ratio,
        "stage1_epochs": spec.stage1_epochs,
        "stage2_epochs": spec.stage2_epochs,
        "final_epochs": spec.final_epochs if spec.width_ratio is not None else 0,
        "epochs": summary["total_epochs"],
        "best_epoch": best["epoch"],
        "top1": top1(pruned, "test"),
        "val_top1": top1(pruned, "val"),
        "top1_after_removal": notes["top1_after_removal"],
        "top1_linearised": merge.get("top1_linearised"),
        "top1_dense": top1(dense, "test"),
        "val_top1_dense": top1(dense, "val"),
        "cpu_hours": summary["cpu_hours"],
        "gpu_hours": summary["gpu_hours"],
        "model_source": dense_start.source,
        "checkpoint": str(best["checkpoint"]),
    }
    if speed is not None:
        row.update(speed_columns(dense, pruned, dense_start, speed))
    return row
