"""The best epoch of each target's fine-tune window, chosen on validation, and the row it closes with.

Held by `GradualRun` and saved in its resume state (`best`, `rows` are plain JSON). Best files are
named by target and epoch, so a crash between two of them never loses the one that was reported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ovit_ray.pruning import Accounting
from ovit_ray.training.result import TargetResult
from ovit_ray.training.spec import Window

_FLOPS = ("flops_dense", "flops_nonzero", "flops_reduction")


def target_key(target: float) -> str:
    return f"{target:.4f}"


class TargetBests:
    def __init__(
        self, best: dict[str, dict[str, Any]] | None = None, rows: list[dict[str, Any]] | None = None
    ):
        self.best: dict[str, dict[str, Any]] = best or {}
        self.rows: list[dict[str, Any]] = rows or []
        self.pending: str | None = None  # a new best file, to go out with this epoch's checkpoint

    def offer(
        self, window: Window, metrics: Mapping[str, Any], epoch: int, count: Callable[[], Accounting]
    ) -> None:
        """Remember the epoch if it beats the window's best on validation; `count` gives its FLOPs
        (from the model in memory, masks included), called only for a new best."""
        key = target_key(window[0])
        if key in self.best and self.best[key]["val_top1"] >= metrics["val_top1"]:
            return
        counts = count()
        self.pending = f"target_{key}_epoch{epoch:04d}.safetensors"
        self.best[key] = {
            "top1": metrics["top1"],
            "val_top1": metrics["val_top1"],
            "epoch": epoch,
            "sparsity": metrics["sparsity"],
            "checkpoint": self.pending,
            "flops_dense": counts.flops_dense,
            "flops_nonzero": counts.flops_nonzero,
            "flops_reduction": counts.flops_reduction,
            "params_nonzero": counts.params_nonzero,
        }

    def file_meta(self, window: Window) -> dict[str, Any]:
        """What a best file's metadata says about its epoch."""
        best = self.best[target_key(window[0])]
        return {"target": window[0], **{k: best[k] for k in ("epoch", "top1", "val_top1", "sparsity")}}

    def close(self, window: Window, metrics: Mapping[str, Any]) -> TargetResult:
        """The window ended: its result (kept in `rows` for the run's summary, and reported)."""
        best = self.best[target_key(window[0])]
        flops_dense, flops_nonzero = best.get("flops_dense"), best.get("flops_nonzero")
        result = TargetResult(
            target=window[0],
            top1=best["top1"],
            val_top1=best["val_top1"],
            achieved_sparsity=best["sparsity"],
            macs_ratio=flops_nonzero / flops_dense if flops_dense and flops_nonzero is not None else None,
            gmacs=None if flops_nonzero is None else flops_nonzero / 2e9,  # 2 FLOPs per multiply-add
            params=best.get("params_nonzero"),
            epochs_trained=window[2],
            best_epoch=best["epoch"],
            kept_model=best["checkpoint"],
            cpu_hours=metrics["cpu_hours"],
            gpu_hours=metrics["gpu_hours"],
        )
        self.rows.append(
            {
                **{k: v for k, v in result.payload().items() if k != "extra"},
                "target_sparsity": window[0],
                "epochs": window[2],
                "checkpoint": best["checkpoint"],
                **{k: best.get(k) for k in _FLOPS},
            }
        )
        return result

    def current_files(self) -> tuple[set[str], list[str]]:
        """(the best file of each target, the name prefixes of all its candidates): what to keep."""
        return {b["checkpoint"] for b in self.best.values()}, [f"target_{k}_" for k in self.best]
