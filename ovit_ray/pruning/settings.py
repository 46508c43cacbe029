"""The pruner's knobs, declared once (`ovit_ray.knobs`) and checked once, so the math below can trust them.

These declarations are the only ones: a gradual run's spec, a sweep's search space, `ovit-ray prune`'s
flags, the Parquet columns and the MLflow params all read the defaults, bounds and help text from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import AfterValidator, BeforeValidator, model_validator

from ovit_ray.knobs import Choices, Knobs, knob
from ovit_ray.pruning.methods import get_method, method_names
from ovit_ray.pruning.names import DTYPE_NAMES, SCOPES, parse_pattern

if TYPE_CHECKING:
    import torch

__all__ = ["MAX_COUNT", "SCOPES", "MethodName", "PruneSettings", "dtype_of", "parse_pattern"]

# Upper bound of counts (block size, gradients, batch sizes): a typo such as `num_grads: 1e12` is a clear
# error, not an allocation that exhausts memory. Bounds that depend on the model or the data (a block no
# larger than the largest prunable tensor, no more images per gradient than the train split) are checked
# where those are known.
MAX_COUNT = 1_000_000


def dtype_of(name: str) -> torch.dtype:
    """The torch dtype named `name` (one of `DTYPE_NAMES`). torch is imported here, not at module
    level: checking settings (a sweep's `--dry-run`) must not import it."""
    import torch

    dtype: torch.dtype = getattr(torch, name)
    return dtype


def _registered_method(name: str) -> str:
    if name not in method_names():
        raise ValueError(f"must be one of {', '.join(method_names())}")
    return name


def _pattern_text(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):  # YAML 1.1 reads 2:4 as 2 * 60 + 4
        raise ValueError("quote it, e.g. '2:4' (YAML reads an unquoted N:M as a base-60 number)")
    if isinstance(value, tuple | list) and len(value) == 2:  # (N, M), as the pruner's callers may pass it
        value = f"{value[0]}:{value[1]}"
    if isinstance(value, str):
        try:
            parse_pattern(value)
        except ValueError as err:  # its message names the field already: pydantic names it again
            raise ValueError(str(err).removeprefix("pattern: ")) from None
    return value


# A pruning method's name, checked against the registry when validated (plug-ins registered later count).
MethodName = Annotated[str, Choices(method_names), AfterValidator(_registered_method)]
PatternText = Annotated[str, BeforeValidator(_pattern_text)]
Dtype = Literal["float32", "float64"]
assert set(DTYPE_NAMES) == {"float32", "float64"} and set(SCOPES) == {"global", "uniform"}


class PruneSettings(Knobs):
    """One pruning configuration.

    damp is the absolute dampening lambda added to the Fisher of gradients of the *mean* loss over
    batches of `grad_batch_size`; it scales with gradient magnitude, so keep the three together.
    pattern N:M makes masks semi-structured; the sparsity is then (M - N) / M.
    dtype is the elimination's precision, fisher_dtype that of the Fisher sums and their inverse: float32
    elimination on a float64 inverse gave >= 99.998% the float64 masks (lambda 1e-8..1e-6, B 64/192, real
    gradients; BENCHMARKS.md), all-float32 as little as 98.6%; float32 sums halve memory for large models.
    """

    method: MethodName = knob("ovit", "pruning method (see the methods table)")
    block_size: int = knob(64, "Fisher block size B", label="B", log=True, gt=0, le=MAX_COUNT)
    num_grads: int = knob(
        64, "gradients per Fisher m (summed over all workers)", label="m", log=True, gt=0, le=MAX_COUNT
    )
    damp: float = knob(1e-7, "absolute dampening lambda of the Fisher", label="λ", log=True, gt=0)
    grad_batch_size: int = knob(16, "images per gradient", label="gb", gt=0, le=MAX_COUNT)
    pattern: PatternText | None = knob(
        None, "N:M semi-structured masks, e.g. 2:4 (sets the sparsity to 1 - N/M)"
    )
    scope: Literal["global", "uniform"] = knob(
        "global", "one threshold over all layers (global) or the same sparsity per layer (uniform)"
    )
    dtype: Dtype = knob("float32", "precision of the pruner's elimination")
    fisher_dtype: Dtype = knob("float64", "precision of the Fisher sums and their inverse")
    chunk_bytes: int | None = knob(
        None, "inverse-Fisher bytes per elimination chunk (default: sized from B and the CPU's cache)", gt=0
    )

    @model_validator(mode="after")
    def _pattern_fits_blocks(self) -> PruneSettings:
        if self.nm is not None and self.block_size % self.nm[1]:
            raise ValueError(
                f"block_size: must be a multiple of M={self.nm[1]} for the N:M pattern {self.pattern}, "
                f"got {self.block_size}"
            )
        return self

    def unused(self) -> set[str]:
        """The Fisher's knobs mean nothing to a method that needs no Fisher (magnitude)."""
        return set() if self.uses_fisher else {"num_grads", "damp", "grad_batch_size", "fisher_dtype"}

    @property
    def nm(self) -> tuple[int, int] | None:
        """The pattern as (N, M), or None."""
        return None if self.pattern is None else parse_pattern(self.pattern)

    @property
    def uses_fisher(self) -> bool:
        return get_method(self.method).needs_fisher

    @property
    def pattern_sparsity(self) -> float | None:
        return None if self.nm is None else 1 - self.nm[0] / self.nm[1]

    @property
    def torch_dtype(self) -> torch.dtype:
        return dtype_of(self.dtype)
