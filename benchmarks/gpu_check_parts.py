"""The six parts of `benchmarks/gpu_check.py` (docs/GPU.md): each takes a `Check` (device and sizes), fills
`check.figures` and returns its named pass criteria, or raises `Missing` for what the machine lacks.

Random weights and inputs throughout (nothing is downloaded): every figure is a speed or an agreement between
two computations, never an accuracy.
"""

from __future__ import annotations

import contextlib
import copy
import math
import socket
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from ovit_ray.measure.speed import compare_models
from ovit_ray.pruning import MaskSet, Pruner, PruneSettings, select_prunable
from ovit_ray.pruning.depth import DepthCosts, anneal_activation, drop_attention, merge_mlp
from ovit_ray.pruning.structured import OptinSettings, UnitMasks, VitCosts, masked, optin_scores, shrink
from ovit_ray.pruning.structured.units import block_widths
from ovit_ray.training.comm import Comm
from ovit_ray.training.loop import train_one_epoch

PARTS = ("pruner", "optin", "autocast", "ddp", "speed", "two_four")
# Pass thresholds: relative differences are max |a - b| / max |b| over the compared tensors.
FISHER_DIFF_MAX = 1e-3  # CUDA vs CPU Fisher sums from the same batches (TF32 off)
AGREEMENT_MIN = 0.999  # CUDA vs CPU masks planned from the same sums (float32 elimination, as users run it)
UPDATE_DIFF_MAX = 1e-3  # updated weights kept by both, relative to the largest original weight
SCORE_DIFF_MAX = 1e-3  # OPTIN scores, one candidate per pass vs a batch of them
LOGIT_DIFF_MAX = 1e-3  # shrunk vs masked, merged vs linearised (fp32)
SPARSE_DIFF_MAX = 3e-2  # 2:4 semi-structured vs the same masks dense, fp16 / bf16
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}
# a timm name and its keyword arguments (random weights, nothing downloaded)
Model = tuple[str, dict[str, Any]]
TINY: dict[str, Any] = dict(img_size=16, patch_size=4, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0)


@dataclass(frozen=True)
class Sizes:
    """How big each part runs: the GPU run's real shapes, or the smoke run's tiny ones."""

    small: Model  # DeiT-Small: plan time, OPTIN, autocast, speed and 2:4
    compare: Model  # the model the CUDA and CPU pruners are compared on
    image: int
    block: int  # B of the comparison and the autocast step
    grads: int  # m of the comparison and the autocast step
    grad_batch: int
    plan: tuple[int, int]  # (B, m) of the plan-time figure
    optin_depth: int  # blocks of the OPTIN model (DeiT-Small width); the estimate scales to the full depth
    optin_images: int
    candidates: tuple[int, int]  # one per pass, and the batch
    train: tuple[int, int]  # (steps, batch) of the autocast and DDP steps
    batches: tuple[int, ...]  # speed: latency (1) and throughput batch sizes
    warmup: int
    runs: int
    depth_plan: tuple[tuple[int, ...], tuple[int, ...]]  # blocks whose attention is dropped, MLP merged


GPU_SIZES = Sizes(
    small=("deit_small_patch16_224", {}),
    compare=("deit_tiny_patch16_224", {}),
    image=224,
    block=64,
    grads=16,
    grad_batch=8,
    plan=(192, 256),
    optin_depth=2,
    optin_images=32,
    candidates=(1, 32),
    train=(10, 64),
    batches=(1, 256),
    warmup=10,
    runs=50,
    depth_plan=((8, 9, 10, 11), (4, 5, 6, 7)),
)
SMOKE_SIZES = Sizes(
    small=("vit_tiny_patch16_224", TINY),
    compare=("vit_tiny_patch16_224", TINY),
    image=16,
    block=16,
    grads=4,
    grad_batch=4,
    plan=(32, 8),
    optin_depth=2,
    optin_images=4,
    candidates=(1, 8),
    train=(2, 8),
    batches=(1, 8),
    warmup=1,
    runs=3,
    depth_plan=((1,), (0,)),
)


class Missing(Exception):
    """What the machine lacks for a part (a GPU, Ray, NCCL, semi-structured sparsity): the part is skipped."""


@dataclass
class Check:
    """One run of the check: where the accelerated side runs (CUDA, or the CPU in smoke mode) and how big."""

    device: torch.device
    sizes: Sizes
    smoke: bool
    no_ray: bool = False
    seed: int = 0
    figures: dict[str, Any] = field(default_factory=dict)

    def model(self, which: Model, **override: Any) -> Any:
        """A timm model (typed Any: its blocks and attributes are read by name) with seeded random weights."""
        torch.manual_seed(self.seed)
        return timm.create_model(which[0], pretrained=False, **{**which[1], **override}).eval()

    def batches(self, count: int, size: int, classes: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed)
        shape = (size, 3, self.sizes.image, self.sizes.image)
        return [
            (torch.randn(shape, generator=g), torch.randint(0, classes, (size,), generator=g))
            for _ in range(count)
        ]

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    b = b.to(a.device, torch.float64)
    return float((a.double() - b).abs().max() / b.abs().max().clamp(min=1e-30))


def timed(check: Check, fn: Callable[[], Any]) -> tuple[Any, float]:
    check.sync()
    began = time.perf_counter()
    out = fn()
    check.sync()
    return out, time.perf_counter() - began


# -- (a) the pruner ---------------------------------------------------------------------------------------
@contextlib.contextmanager
def exact_fp32() -> Iterator[None]:
    """TF32 off (cuDNN's patch-embedding convolution uses it by default): the CUDA gradients in true fp32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def part_pruner(check: Check) -> dict[str, bool]:
    with exact_fp32():
        checks = compare_pruners(check)
    plan_time(check)
    return checks


def compare_pruners(check: Check) -> dict[str, bool]:
    """The same model, batches and settings on the CPU and the device: Fisher sums from each side's own
    gradients, then plan and apply from the CPU's sums on both sides."""
    s, fig = check.sizes, check.figures
    model = check.model(s.compare)
    classes = model.num_classes
    batches = check.batches(s.grads, s.grad_batch, classes)
    settings = PruneSettings(
        method="ovit", block_size=s.block, num_grads=s.grads, grad_batch_size=s.grad_batch
    )
    pruners = {}
    for side, where in (("cpu", torch.device("cpu")), ("accel", check.device)):
        copy_ = copy.deepcopy(model).to(where)
        params = select_prunable(copy_)
        pruners[side] = Pruner(copy_, params, MaskSet.dense(params), settings)
        pruners[side].collect(batches)
    cpu, accel = pruners["cpu"], pruners["accel"]
    sums = cpu.fisher_sums()
    fig["fisher_diff"] = max(rel_diff(accel.fisher_sums().sums[n], sums.sums[n]) for n in sums.sums)
    same = copy.deepcopy(sums)  # plan and apply from identical sums on both sides
    same.sums = {n: t.to(check.device) for n, t in same.sums.items()}
    accel.fisher = same
    _, fig["plan_s_cpu"] = timed(check, cpu.plan)
    _, fig["plan_s_accel"] = timed(check, accel.plan)
    masks = {side: p.apply(0.5) for side, p in pruners.items()}
    total = agree = 0
    update = 0.0
    for name, original in cpu.original.items():
        a, b = masks["accel"][name].cpu(), masks["cpu"][name]
        total, agree = total + a.numel(), agree + int((a == b).sum())
        both = a & b
        w_accel, w_cpu = accel.params[name].detach().cpu(), cpu.params[name].detach()
        gap = float((w_accel[both] - w_cpu[both]).abs().max()) if both.any() else 0.0
        update = max(update, gap / float(original.abs().max()))
    fig.update(mask_agreement=agree / total, update_diff=update, weights=total)
    return {
        f"Fisher sums agree (<= {FISHER_DIFF_MAX:g})": fig["fisher_diff"] <= FISHER_DIFF_MAX,
        f"masks agree (>= {AGREEMENT_MIN:.1%})": fig["mask_agreement"] >= AGREEMENT_MIN,
        f"updates agree (<= {UPDATE_DIFF_MAX:g})": update <= UPDATE_DIFF_MAX,
        "exact sparsity": masks["accel"].counts()[0] == round(0.5 * total),
    }


def plan_time(check: Check) -> None:
    """DeiT-Small's plan at (B, m): random gradients (plan time depends on the shapes alone) folded into the
    sums by the library's `FisherSums`, then `Pruner.plan` and `apply(0.5)` timed on the device."""
    from ovit_ray.pruning.gradients import FisherSums, grads_per_flush

    block, grads = check.sizes.plan
    model = check.model(check.sizes.small).to(check.device)
    params = select_prunable(model)
    shapes = {n: p.numel() for n, p in params.items()}
    settings = PruneSettings(method="ovit", block_size=block, num_grads=grads)
    sums = FisherSums(
        shapes, block, grads_per_flush(sum(shapes.values()), grads, torch.float64, 2**30), check.device
    )
    g = torch.Generator(device=check.device).manual_seed(check.seed)

    def fold() -> None:
        for _ in range(grads):
            sums.add({n: 1e-2 * torch.randn(k, generator=g, device=check.device) for n, k in shapes.items()})
        sums.finish()

    _, check.figures["plan_fisher_s"] = timed(check, fold)
    pruner = Pruner(model, params, MaskSet.dense(params), settings)
    pruner.fisher = sums
    _, check.figures["plan_s"] = timed(check, pruner.plan)
    _, check.figures["plan_apply_s"] = timed(check, lambda: pruner.apply(0.5))
    check.figures["plan_weights"] = sum(shapes.values())


# -- (b) OPTIN scoring ------------------------------------------------------------------------------------
def part_optin(check: Check) -> dict[str, bool]:
    s, fig = check.sizes, check.figures
    model = check.model(s.small, depth=s.optin_depth).to(check.device)
    g = torch.Generator().manual_seed(check.seed)
    images = torch.randn(s.optin_images, 3, s.image, s.image, generator=g)
    flat = {}
    for k in s.candidates:
        settings = OptinSettings(candidates_per_pass=k)
        scores, seconds = timed(check, partial(optin_scores, model, images, settings, progress=False))
        flat[k] = torch.cat([*scores.heads, *scores.neurons]).double().cpu()
        fig[f"seconds_k{k}"] = seconds
    heads, neurons = block_widths(model)
    units = [h + n for h, n in zip(heads, neurons, strict=True)]
    with torch.device("meta"):
        full: Any = timm.create_model(s.small[0], pretrained=False, **s.small[1])
    full_depth = len(full.blocks)
    # a candidate of block l runs the blocks after it: the work is counted in candidate-blocks
    work = sum((len(units) - layer) * u for layer, u in enumerate(units))
    full_work = sum((full_depth - layer) * units[0] for layer in range(full_depth))
    one, batch = s.candidates
    fig.update(
        units=sum(units),
        per_candidate_ms_k1=1e3 * fig[f"seconds_k{one}"] / sum(units),
        per_candidate_ms_batched=1e3 * fig[f"seconds_k{batch}"] / sum(units),
        batching_speedup=fig[f"seconds_k{one}"] / fig[f"seconds_k{batch}"],
        full_model_estimate_s=fig[f"seconds_k{batch}"] / work * full_work,
        full_depth=full_depth,
        score_diff=rel_diff(flat[batch], flat[one]),
    )
    return {
        "scores finite": all(bool(torch.isfinite(f).all()) for f in flat.values()),
        f"batched == one per pass (<= {SCORE_DIFF_MAX:g})": fig["score_diff"] <= SCORE_DIFF_MAX,
    }


# -- (c) a gradual step under bf16 autocast ---------------------------------------------------------------
def part_autocast(check: Check) -> dict[str, bool]:
    s, fig = check.sizes, check.figures
    model = check.model(s.small).to(check.device)
    params = select_prunable(model)
    settings = PruneSettings(
        method="ovit", block_size=s.block, num_grads=s.grads, grad_batch_size=s.grad_batch
    )
    grad_batches = check.batches(s.grads, s.grad_batch, model.num_classes)

    def prune() -> MaskSet:  # `training.gradual.prune_step` on one worker (its module needs the data stack)
        pruner = Pruner(model, params, MaskSet.dense(params), settings)
        pruner.collect(grad_batches)
        pruner.plan()
        return pruner.apply(0.5)

    masks, fig["prune_s"] = timed(check, prune)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    masks.attach(optimizer, model)
    seen: set[torch.dtype] = set()
    probe = model.blocks[0].attn.qkv.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    steps, batch = s.train
    loader = check.batches(steps, batch, model.num_classes)
    stats, seconds = timed(
        check,
        lambda: train_one_epoch(
            model, loader, optimizer, loss_fn=F.cross_entropy, device=check.device, amp_dtype=torch.bfloat16
        ),
    )
    probe.remove()
    pruned, total = masks.counts()
    fig.update(
        train_s=seconds, images_per_s=steps * batch / seconds, loss=stats["loss"], sparsity=pruned / total
    )
    return {
        "forward ran in bf16": seen == {torch.bfloat16},
        "loss finite": math.isfinite(stats["loss"]),
        "weights stay fp32": all(p.dtype == torch.float32 for p in model.parameters()),
        "exact sparsity kept": pruned == round(0.5 * total),
        "pruned weights stay zero": all(bool((p[~masks[n]] == 0).all()) for n, p in params.items()),
    }


# -- (d) DDP ----------------------------------------------------------------------------------------------
def ddp_step(device: torch.device, config: Mapping[str, Any]) -> dict[str, Any]:
    """A masked training step of the gradual loop's `train_one_epoch` on a DDP-wrapped model, in the process
    group the caller set up (Ray Train's, or torch.distributed's alone)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    name, kwargs = config["model"]
    model = timm.create_model(name, pretrained=False, **kwargs).to(device)
    params = select_prunable(model)
    g = torch.Generator().manual_seed(0)
    masks = MaskSet({n: torch.rand(p.shape, generator=g) >= 0.5 for n, p in params.items()}).to(device)
    masks.apply(model)
    ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    masks.attach(optimizer, model)
    size, (steps, batch) = config["image"], config["train"]
    loader = [
        (torch.randn(batch, 3, size, size, generator=g), torch.randint(0, 10, (batch,), generator=g))
    ] * steps
    stats = train_one_epoch(ddp, loader, optimizer, loss_fn=F.cross_entropy, device=device)
    comm = Comm(dist.get_rank(), dist.get_world_size(), device)
    flag = torch.ones(1, device=comm.device)
    dist.all_reduce(flag)
    return {
        "backend": str(dist.get_backend()),
        "world_size": dist.get_world_size(),
        "loss": stats["loss"],
        "all_reduce": float(flag.item()),
        "pruned_stay_zero": all(bool((p[~masks[n]] == 0).all()) for n, p in params.items()),
    }


def ray_loop(config: dict[str, Any], reporter: Any) -> dict[str, Any]:
    """A kind's loop as the TorchTrainer's `train_worker` runs it: the DDP step on this worker's device."""
    import ray.train.torch

    return ddp_step(ray.train.torch.get_device(), config)


def fit_on_ray(config: dict[str, Any], *, use_gpu: bool) -> dict[str, Any]:
    """Rank 0's result of `ray_loop` run by the one TorchTrainer of every kind
    (`orchestration.train.job.torch_trainer`: NCCL on GPUs, gloo on CPUs), one worker, in a private Ray.
    The one place this script reaches the orchestration (being refactored): re-point it here."""
    import ray.cloudpickle

    from ovit_ray.orchestration.common.ray_session import ray_session
    from ovit_ray.orchestration.train.job import torch_trainer
    from ovit_ray.training.spec import TrainSpec

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import it by name
    spec = TrainSpec(workers=1, cpus_per_worker=1.0, gpus_per_worker=1.0 if use_gpu else 0.0)
    with tempfile.TemporaryDirectory() as storage, ray_session(num_cpus=2, num_gpus=int(use_gpu)):
        loop = {"loop": ray_loop, "config": config, "kept": f"{storage}/kept"}
        trainer = torch_trainer(loop, spec, name="gpu-check-ddp", storage_path=storage, max_failures=0)
        return dict(trainer.fit().return_value["summary"])  # type: ignore[attr-defined]


def without_ray(config: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """The same step in a one-process group of torch.distributed (where Ray is missing)."""
    import torch.distributed as dist

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        return ddp_step(device, config)
    finally:
        dist.destroy_process_group()


def part_ddp(check: Check) -> dict[str, bool]:
    import torch.distributed as dist

    if not dist.is_available() or (not check.smoke and not dist.is_nccl_available()):
        raise Missing("this torch was built without torch.distributed / NCCL")
    config = {"model": check.sizes.compare, "image": check.sizes.image, "train": check.sizes.train}
    expected = "gloo" if check.smoke else "nccl"
    try:
        if check.no_ray:
            raise ModuleNotFoundError("--no-ray", name="ray")
        result = fit_on_ray(config, use_gpu=not check.smoke)
        check.figures["through"] = "Ray Train TorchTrainer (orchestration.train.job.torch_trainer)"
    except ModuleNotFoundError as missing:
        result = without_ray(config, torch.device("cuda", 0) if not check.smoke else torch.device("cpu"))
        check.figures.update(result, through="torch.distributed alone")
        alone = "pass" if result["backend"] == expected and result["pruned_stay_zero"] else "fail"
        why = "--no-ray was given" if check.no_ray else f"{missing.name} is not installed"
        raise Missing(
            f"{why}, so the TorchTrainer path did not run; the same DDP step under "
            f"torch.distributed alone: {alone} ({result['backend']}, world size {result['world_size']})"
        ) from None
    check.figures.update(result)
    return {
        f"backend {expected}": result["backend"] == expected,
        "world size 1": result["world_size"] == 1,
        "loss finite": math.isfinite(result["loss"]),
        "all_reduce": result["all_reduce"] == 1.0,
        "pruned weights stay zero": result["pruned_stay_zero"],
    }


# -- (e) structured and depth speed-ups -------------------------------------------------------------------
@torch.no_grad()
def part_speed(check: Check) -> dict[str, bool]:
    s, fig = check.sizes, check.figures
    dense = check.model(s.small).to(check.device)
    heads, neurons = block_widths(dense)
    keep = UnitMasks.first(dense, [h // 2 for h in heads], [n // 2 for n in neurons])
    shrunk = shrink(dense, keep)
    drop, linearise = s.depth_plan
    linear = copy.deepcopy(dense)
    for b in drop:
        drop_attention(linear.blocks[b])
    for b in linearise:
        anneal_activation(linear.blocks[b], 0.0)
    depth = copy.deepcopy(linear)
    for b in linearise:
        merge_mlp(depth.blocks[b])
    x = torch.randn(4, 3, s.image, s.image, generator=torch.Generator().manual_seed(0)).to(check.device)
    with exact_fp32(), masked(dense, keep):
        reference, small, merged, linearised = dense(x), shrunk(x), depth(x), linear(x)
    fig.update(
        shrunk_diff=rel_diff(small, reference),
        merged_diff=rel_diff(merged, linearised),
        shrunk_macs=VitCosts.of(shrunk).macs() / VitCosts.of(dense).macs(),
        depth_macs=1 / DepthCosts.of(dense).speedup(drop, linearise),
    )
    rows: list[list[Any]] = []
    fig["table"] = {"columns": ["dtype", "batch", "dense ms", "shrunk x", "depth x"], "rows": rows}
    for dtype_name, dtype in DTYPES.items():
        for batch in s.batches:
            comparison = compare_models(
                {"dense": dense, "shrunk": shrunk, "depth": depth},
                batch_size=batch,
                image_size=s.image,
                device=check.device,
                dtype=dtype,
                warmup=s.warmup,
                runs=s.runs,
            )
            median = {name: stats.median_s for name, stats in comparison.stats.items()}
            rows.append(
                [dtype_name, batch, round(1e3 * median["dense"], 3)]
                + [round(comparison.speedups[k], 3) for k in ("shrunk", "depth")]
            )
    return {
        f"shrunk == masked (fp32, <= {LOGIT_DIFF_MAX:g})": fig["shrunk_diff"] <= LOGIT_DIFF_MAX,
        f"merged == linearised (fp32, <= {LOGIT_DIFF_MAX:g})": fig["merged_diff"] <= LOGIT_DIFF_MAX,
        "every speed-up measured": all(math.isfinite(v) and v > 0 for r in rows for v in r[3:]),
    }


# -- (f) 2:4 semi-structured ------------------------------------------------------------------------------
@torch.no_grad()
def part_two_four(check: Check) -> dict[str, bool]:
    s, fig = check.sizes, check.figures
    dense = check.model(s.small).to(check.device)
    pruned = copy.deepcopy(dense)
    params = select_prunable(pruned)
    pruner = Pruner(
        pruned,
        params,
        MaskSet.dense(params),
        PruneSettings(method="magnitude", block_size=s.block, pattern=(2, 4)),
    )
    pruner.collect([])
    pruner.plan()
    masks = pruner.apply(None)
    two_of_four = all(bool((m.reshape(m.shape[0], -1, 4).sum(-1) == 2).all()) for _, m in masks.items())
    fig.update(sparsity=masks.sparsity(), two_of_four_rows=two_of_four)
    if check.device.type != "cuda":
        raise Missing(
            "semi-structured sparsity runs on CUDA only: the 2:4 masks were built and checked, not converted"
        )
    if torch.cuda.get_device_capability(check.device) < (8, 0):
        raise Missing(
            "semi-structured sparsity needs compute capability 8.0+, "
            f"this GPU has {torch.cuda.get_device_capability(check.device)}"
        )
    from torch.sparse import to_sparse_semi_structured

    x = torch.randn(4, 3, s.image, s.image, generator=torch.Generator().manual_seed(0)).to(check.device)
    rows: list[list[Any]] = []
    diffs: dict[str, float] = {}  # filled as they come: a dtype refused later keeps the earlier figures
    columns = ["dtype", "batch", "dense ms", "2:4 kept dense x", "2:4 sparse x"]
    fig.update(sparse_diff=diffs, table={"columns": columns, "rows": rows})
    for dtype_name, dtype in DTYPES.items():
        cast = copy.deepcopy(pruned).to(dtype)
        sparse = copy.deepcopy(cast)
        try:
            for name in params:
                module = sparse.get_submodule(name.removesuffix(".weight"))
                module.weight = nn.Parameter(
                    to_sparse_semi_structured(module.weight.detach()), requires_grad=False
                )
            diffs[dtype_name] = rel_diff(sparse(x.to(dtype)).float(), cast(x.to(dtype)).float())
        except (RuntimeError, ValueError, TypeError, NotImplementedError) as error:
            raise Missing(
                f"to_sparse_semi_structured ({dtype_name}): {str(error).splitlines()[0][:160]}"
            ) from None
        for batch in s.batches:
            comparison = compare_models(
                {"dense": dense, "2:4 kept dense": cast, "2:4 sparse": sparse},
                batch_size=batch,
                image_size=s.image,
                device=check.device,
                dtype=dtype,
                warmup=s.warmup,
                runs=s.runs,
            )
            median_ms = round(1e3 * comparison.stats["dense"].median_s, 3)
            speedups = [round(comparison.speedups[k], 3) for k in ("2:4 kept dense", "2:4 sparse")]
            rows.append([dtype_name, batch, median_ms, *speedups])
    return {
        "2 of every 4 kept": two_of_four,
        f"sparse == masked dense (<= {SPARSE_DIFF_MAX:g})": all(d <= SPARSE_DIFF_MAX for d in diffs.values()),
    }


RUNNERS: dict[str, Callable[[Check], dict[str, bool]]] = {
    "pruner": part_pruner,
    "optin": part_optin,
    "autocast": part_autocast,
    "ddp": part_ddp,
    "speed": part_speed,
    "two_four": part_two_four,
}
