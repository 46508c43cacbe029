"""Transfer sweep files (a top-level `transfer:` section): make the pruned sources, then transfer them.

Stage 1, per (source model, method, source seed): one gradual run of the sweep strategy through the
targets, keeping the best-on-val checkpoint of every target (`<out>/sources/...`). Stage 2: every
target checkpoint plus the dense source model, x target dataset x mode x seed, through
`orchestration.transfer` (Tune grid, or in process with `light`). Both stages skip finished work,
so re-running the file resumes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ovit_ray.orchestration.common.yaml_files import read_yaml_mapping
from ovit_ray.orchestration.specs.run import make_config
from ovit_ray.orchestration.specs.validation import Strict, validate_file
from ovit_ray.training.spec import MethodName

# `orchestration.transfer.grid` (torch, timm) and Parquet are imported by the functions that run the
# sweep: `ovit-ray sweep` asks `is_transfer_file` of every sweep file, dry runs included.


class Pair(Strict):
    source_model: str
    dataset: str
    data_root: str | None = None


class SourceStage(Strict):
    methods: list[MethodName] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    train: dict[str, Any] = Field(default_factory=dict)  # gradual-run fields (targets, window_epochs, ...)


class TransferStage(Strict):
    pairs: list[Pair] = Field(min_length=1)
    source: SourceStage
    modes: list[Literal["sparse", "dense"]] = Field(["sparse"], min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    epochs: int = Field(10, gt=0)
    lr: float = Field(1e-3, gt=0)
    max_steps_per_epoch: int | None = Field(None, gt=0)
    light: bool = False  # run jobs in the driver process instead of Tune trials


class Mlflow(Strict):
    experiment: str = "ovit-ray-transfer"
    tracking_uri: str | None = None


class TransferSweep(Strict):
    name: str
    transfer: TransferStage
    mlflow: Mlflow = Field(default_factory=Mlflow)


def is_transfer_file(path: str | Path) -> bool:
    return "transfer" in read_yaml_mapping(path, "sweep file")


def load_transfer_sweep(path: str | Path) -> TransferSweep:
    sweep = validate_file(TransferSweep, read_yaml_mapping(path, "sweep file"), Path(path))
    for i, pair in enumerate(sweep.transfer.pairs):  # the source runs' knobs, checked before anything runs
        make_config({**sweep.transfer.source.train, "model": pair.source_model, "seed": 0})
        if pair.dataset == "":
            raise ValueError(f"{path}: transfer.pairs.{i}.dataset: empty")
    return sweep


def _make_sources(sweep: TransferSweep, model: str, out: Path) -> Path:
    """Gradual runs of every method x source seed for `model`; their per-target rows in one Parquet file."""
    from ovit_ray.orchestration.results.parquet import append_rows, read_rows
    from ovit_ray.orchestration.results.schemas import TRANSFER_SOURCES
    from ovit_ray.orchestration.transfer.grid import RESULTS_FILE
    from ovit_ray.training.gradual import LocalReporter, run_gradual

    folder = out / "sources" / model
    results = folder / RESULTS_FILE
    done = {(r["method"], r["seed"]) for r in read_rows(results)} if results.exists() else set()
    for method in sweep.transfer.source.methods:
        for seed in sweep.transfer.source.seeds:
            if (method, seed) in done:
                continue
            config = make_config(
                {**sweep.transfer.source.train, "model": model, "method": method, "seed": seed}
            )
            run_dir = folder / f"{method}-seed{seed}"
            # best checkpoints: run_dir/state/best/
            summary = run_gradual(config, config.schedule(), LocalReporter(run_dir / "state"))
            append_rows(
                results,
                [
                    {
                        "method": method,
                        "seed": seed,
                        "model": model,
                        "block_size": config.block_size,
                        "num_grads": config.num_grads,
                        "damp": config.damp,
                        **{
                            k: t[k]
                            for k in (
                                "target_sparsity",
                                "achieved_sparsity",
                                "top1",
                                "val_top1",
                                "checkpoint",
                                "epochs",
                            )
                        },
                    }
                    for t in summary["targets"]
                ],
                ["method", "seed", "target_sparsity"],
                TRANSFER_SOURCES,
            )
    return folder


def run_transfer_sweep(
    path: str | Path, out: str | Path, *, mlflow_uri: str | None = None
) -> list[dict[str, Any]]:
    """Run (or resume) a transfer sweep file into `out`; returns the transfer rows."""
    from ovit_ray.orchestration.transfer.grid import dense_source, find_sources, run_transfers, transfer_jobs

    sweep = load_transfer_sweep(path)
    out = Path(out)
    stage = sweep.transfer
    jobs = []
    for pair in stage.pairs:
        sources = find_sources(
            _make_sources(sweep, pair.source_model, out), model=pair.source_model, dense=False
        )
        base = {
            "epochs": stage.epochs,
            "lr": stage.lr,
            "data_root": pair.data_root,
            "max_steps_per_epoch": stage.max_steps_per_epoch,
        }
        jobs += transfer_jobs(
            [*sources, dense_source(pair.source_model)], [pair.dataset], stage.modes, stage.seeds, base
        )
    return run_transfers(
        jobs,
        out,
        light=stage.light,
        experiment=sweep.mlflow.experiment,
        mlflow_uri=mlflow_uri or sweep.mlflow.tracking_uri,
    )
