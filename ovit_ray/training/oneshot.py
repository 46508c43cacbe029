"""One-shot pruning: several methods x several sparsities from one model, one Fisher per method."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from ovit_ray.measure import PeakRSS
from ovit_ray.pruning import MaskSet, Pruner, PruneSettings, count_params_and_flops, select_prunable
from ovit_ray.training.loop import evaluate, make_loader
from ovit_ray.training.setup import JobStart

Row = dict[str, object]


def oneshot_rows(
    start: JobStart,
    settings_per_method: Sequence[PruneSettings],
    sparsities: Sequence[float | None],
    *,
    param_patterns: Sequence[str] | None = None,
    seed: int = 0,
    device: str = "cpu",
    eval_batch_size: int = 256,
    progress: bool = True,
    on_row: Callable[[Row, MaskSet], None] | None = None,
) -> list[Row]:
    """Prune `start.model` with each settings object to each sparsity and evaluate top-1 before/after
    (`top1` on the held-out test split, `val_top1` beside it).

    The Fisher and the elimination plan are computed once per method and reused for every sparsity;
    every sparsity starts again from the original weights. `None` in `sparsities` means "implied by the
    N:M pattern". `param_patterns` None prunes every block's attention and MLP weights (`select_prunable`).
    Returns one row per (method, sparsity), with the columns of results.parquet.
    """
    model = start.model.to(device)
    params = select_prunable(model, param_patterns)
    masks = MaskSet(start.masks) if start.masks else MaskSet.dense(params)
    masks.apply(model)
    val_loader = make_loader(start.data.val, eval_batch_size, shuffle=False, seed=seed)
    test_loader = make_loader(start.data.test, eval_batch_size, shuffle=False, seed=seed)
    dense, dense_val = evaluate(model, test_loader, device=device), evaluate(model, val_loader, device=device)
    input_size = (start.data.in_chans, start.data.image_size, start.data.image_size)
    flops_dense = count_params_and_flops(model, masks, input_size).flops_dense
    rows: list[Row] = []
    for settings in settings_per_method:
        grad_loader = make_loader(start.data.train, settings.grad_batch_size, shuffle=True, seed=seed)
        pruner = Pruner(model, params, masks, settings)
        with PeakRSS() as plan_rss:
            began = time.perf_counter()
            pruner.collect(grad_loader, progress=progress)
            fisher_seconds = time.perf_counter() - began
            pruner.plan()
            plan_seconds = time.perf_counter() - began - fisher_seconds
        for sparsity in sparsities:
            with PeakRSS() as apply_rss:
                began = time.perf_counter()
                new_masks = pruner.apply(sparsity)
                apply_seconds = time.perf_counter() - began
            new_masks.apply(model)
            after = evaluate(model, test_loader, device=device)
            counts = count_params_and_flops(model, new_masks, input_size)
            row: Row = {
                "method": settings.method,
                "pattern": settings.pattern,
                "scope": settings.scope,
                "target_sparsity": settings.pattern_sparsity if sparsity is None else sparsity,
                "achieved_sparsity": new_masks.sparsity(),
                "top1": after["top1"],
                "val_top1": evaluate(model, val_loader, device=device)["top1"],
                "top1_dense": dense["top1"],
                "val_top1_dense": dense_val["top1"],
                "block_size": settings.block_size,
                "num_grads": settings.num_grads if settings.uses_fisher else 0,
                "damp": settings.damp,
                "grad_batch_size": settings.grad_batch_size,
                "dtype": settings.dtype,
                "fisher_seconds": fisher_seconds,
                "plan_seconds": plan_seconds,
                "apply_seconds": apply_seconds,
                "prune_seconds": fisher_seconds + plan_seconds + apply_seconds,
                "peak_rss_mb": max(plan_rss.peak_mb, apply_rss.peak_mb),
                "params_total": counts.params_total,
                "params_prunable": counts.params_prunable,
                "params_nonzero": counts.params_nonzero,
                "flops_dense": flops_dense,
                "flops_nonzero": counts.flops_nonzero,
                "seed": seed,
                "model_source": start.source,
            }
            rows.append(row)
            if on_row is not None:  # the model is pruned to this row's masks until the next sparsity
                on_row(row, new_masks)
        pruner.restore()
    return rows
