"""Transfer ablation: pruned checkpoints (and the dense source) x modes x seeds, as a Tune grid.

Sources come from a checkpoint file or a results folder (`ovit-ray sweep` / `train` / a transfer
sweep's source stage): every row whose best checkpoint is on disk is one source, labelled with the
method, knobs and target that produced it. Each (source, mode, seed) is one job; jobs already in the
Parquet file are skipped, so a re-run resumes. Jobs run as Ray Tune grid trials (one CPU each), or in
this process (`light=True`: what the benchmarks use on a busy 2-core machine). Every finished job
is one MLflow child run under the transfer's parent run and one Parquet row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ovit_ray.models import SUFFIXES, load_checkpoint
from ovit_ray.orchestration.results import RESULTS_FILE
from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.orchestration.results.schemas import TRANSFER_RESULTS
from ovit_ray.orchestration.tune.grid import GridKind, run_grid
from ovit_ray.training.transfer import TransferSpec, run_transfer

KEY_COLUMNS = ["source", "dataset", "mode", "seed"]
SOURCE_KNOBS = ("block_size", "num_grads", "damp", "strategy", "trial_id")
DENSE = "dense"


@dataclass(frozen=True)
class Source:
    """A model to transfer: its checkpoint (None: the dense source model) and where it came from."""

    label: str
    model: str
    checkpoint: str | None
    method: str
    target_sparsity: float
    knobs: dict[str, Any] = field(default_factory=dict)


def dense_source(model: str) -> Source:
    return Source(label=f"{model}/{DENSE}", model=model, checkpoint=None, method=DENSE, target_sparsity=0.0)


def _from_rows(rows: Sequence[Mapping[str, Any]], model: str) -> list[Source]:
    sources = []
    for r in rows:
        path = r.get("best_checkpoint") or r.get("checkpoint")
        if not path or not Path(path).is_file():
            continue
        knobs = {k: r[k] for k in SOURCE_KNOBS if r.get(k) is not None}
        label = f"{r.get('method')}/s{r['target_sparsity']:.4f}/seed{r.get('seed', 0)}/{Path(path).stem}"
        sources.append(
            Source(
                label=label,
                model=str(r.get("model") or model),
                checkpoint=str(path),
                method=str(r.get("method")),
                target_sparsity=float(r["target_sparsity"]),
                knobs={**knobs, "source_seed": r.get("seed")},
            )
        )
    return sources


def find_sources(
    path: str | Path, *, model: str = "digits-vit", methods: Sequence[str] | None = None, dense: bool = True
) -> list[Source]:
    """Sources in a checkpoint file or a results folder (rows whose checkpoint file exists), plus the
    dense source model as the reference unless `dense=False`."""
    path = Path(path)
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise ValueError(
                f"CHECKPOINT_OR_SWEEP_DIR: {path} is neither a folder nor a {'/'.join(SUFFIXES)} file"
            )
        meta = load_checkpoint(path)[2]
        found = [
            Source(
                label=path.stem,
                model=str(meta.get("model", model)),
                checkpoint=str(path),
                method=str(meta.get("method", "unknown")),
                target_sparsity=float(meta.get("target", 0.0)),
            )
        ]
    elif (path / RESULTS_FILE).is_file():
        found = _from_rows(read_rows(path / RESULTS_FILE), model)
    else:
        raise FileNotFoundError(
            f"CHECKPOINT_OR_SWEEP_DIR: {path} is not a checkpoint nor a folder with {RESULTS_FILE}"
        )
    if methods:
        found = [s for s in found if s.method in methods]
    if not found:
        raise ValueError(
            f"CHECKPOINT_OR_SWEEP_DIR: no checkpoint on disk in {path}"
            + (f" for methods {list(methods)}" if methods else "")
        )
    models = {s.model for s in found}
    return found + [dense_source(m) for m in sorted(models)] if dense else found


def transfer_jobs(
    sources: Sequence[Source],
    datasets: Sequence[str],
    modes: Sequence[str],
    seeds: Sequence[int],
    base: Mapping[str, Any],
) -> list[dict[str, Any]]:
    """The grid: every source x dataset x mode x seed (the dense source once per dataset and seed:
    its two modes are the same run)."""
    jobs = []
    for source in sources:
        for dataset in datasets:
            for mode in modes if source.checkpoint else ["dense"]:
                for seed in seeds:
                    jobs.append(
                        {
                            "source": dataclasses.asdict(source),
                            "spec": {
                                **base,
                                "dataset": dataset,
                                "mode": mode,
                                "seed": seed,
                                "source_model": source.model,
                                "checkpoint": source.checkpoint,
                            },
                        }
                    )
    return jobs


def job_key(job: Mapping[str, Any]) -> tuple[Any, ...]:
    spec = job["spec"]
    return job["source"]["label"], spec["dataset"], spec["mode"], spec["seed"]


def run_job(job: Mapping[str, Any]) -> dict[str, Any]:
    """One transfer run -> its Parquet row (source method, knobs, target; transfer metrics)."""
    source = job["source"]
    row = run_transfer(TransferSpec(**job["spec"]))
    return {
        "source": source["label"],
        "source_method": source["method"],
        "target_sparsity": source["target_sparsity"],
        **source["knobs"],
        **row,
    }


def run_transfers(
    jobs: Sequence[dict[str, Any]],
    out: str | Path,
    *,
    light: bool = False,
    experiment: str = "ovit-ray-transfer",
    mlflow_uri: str | None = None,
    cpus_per_trial: float = 1.0,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run the jobs not yet in `<out>/results.parquet`; each finished one becomes an MLflow child run
    and a Parquet row. Returns all rows of the file."""
    return run_grid(
        TRANSFER,
        jobs,
        out,
        light=light,
        experiment=experiment,
        mlflow_uri=mlflow_uri,
        cpus_per_trial=cpus_per_trial,
        progress=progress,
    )


METRICS = (
    "top1",
    "val_top1",
    "source_top1",
    "achieved_sparsity",
    "final_sparsity",
    "cpu_hours",
    "gpu_hours",
    "seconds",
)

TRANSFER = GridKind(
    name="transfer",
    run_job=run_job,
    job_key=job_key,
    key_columns=KEY_COLUMNS,
    schema=TRANSFER_RESULTS,
    metrics=METRICS,
    step_column="epochs",
)
