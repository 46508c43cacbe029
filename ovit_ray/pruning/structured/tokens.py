"""Token merging with a per-block schedule r_l (ToMe, Bolya et al., ICLR 2023, written from the paper): the
token part of OPTIN's τ configuration, and the only way fewer tokens reach later blocks of a timm ViT.

In every block with r_l > 0, between attention and MLP (so block l's MLP already sees n - r_l tokens): the
unprotected tokens are split alternately into A and B, each A token is matched with its most similar B token
by the cosine of their attention keys averaged over heads, and the r most similar pairs are merged by their
size-weighted average. Prefix tokens (cls, dist, registers: `num_prefix_tokens`) are never merged, r is capped
at half the unprotected tokens, and each token's size (how many patches it holds) is tracked: attention adds
log(size) to its logits (proportional attention) and average pooling weights tokens by size. A block whose
attention was shrunk to nothing (`ConstantBranch`) has no keys: it matches tokens by its `norm1` output.

Installing swaps the class of the model and its blocks for the subclasses below (state_dict keys unchanged,
pickles and deep-copies), so the same code serves the dense, the masked and the shrunk model. On a masked
model the keys still include the masked heads, so only the shrunk model merges as its own heads see it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from .units import attention_of, check_vit

__all__ = ["merge_schedule", "merge_tokens", "merged_tokens", "merging", "unmerge_tokens"]


class _Sizes:
    """The token sizes (B, N, 1) of the running forward pass, shared by the model and its blocks; None until
    the first merge (every size 1)."""

    def __init__(self) -> None:
        self.size: torch.Tensor | None = None


def merged_tokens(tokens: int, prefix: int, r: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The tokens each block takes in and the merges it really makes under schedule `r` (each r_l capped at
    half of its unprotected tokens), starting from `tokens` of which `prefix` are protected."""
    counts, merges = [], []
    for wanted in r:
        if wanted < 0:
            raise ValueError(f"a merge schedule needs r >= 0, got {list(r)}")
        merges.append(min(wanted, (tokens - prefix) // 2))
        counts.append(tokens)
        tokens -= merges[-1]
    return tuple(counts), tuple(merges)


def _merge(
    x: torch.Tensor, metric: torch.Tensor, size: torch.Tensor | None, r: int, prefix: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bipartite soft matching: x (B, N, C) with r of its A tokens merged into their best B tokens, and the
    new sizes. Order: prefix tokens, the unmerged A tokens in their order, then the B tokens."""
    size = size if size is not None else x.new_ones(*x.shape[:2], 1)
    keys = nn.functional.normalize(metric[:, prefix:], dim=-1)
    best, match = (keys[:, 0::2] @ keys[:, 1::2].transpose(1, 2)).max(dim=-1)
    order = torch.sort(best, dim=-1, descending=True, stable=True).indices
    src, kept = order[:, :r, None], order[:, r:].sort(dim=-1).values[..., None]
    dst = match[..., None].gather(1, src)
    width = x.shape[-1]
    body, body_size = x[:, prefix:], size[:, prefix:]
    a, b, size_a, size_b = body[:, 0::2], body[:, 1::2], body_size[:, 0::2], body_size[:, 1::2]
    total = (b * size_b).scatter_add(
        1, dst.expand(-1, -1, width), (a * size_a).gather(1, src.expand(-1, -1, width))
    )
    size_b = size_b.scatter_add(1, dst, size_a.gather(1, src))
    merged = [x[:, :prefix], a.gather(1, kept.expand(-1, -1, width)), total / size_b]
    sizes = [size[:, :prefix], size_a.gather(1, kept), size_b]
    return torch.cat(merged, dim=1), torch.cat(sizes, dim=1)


class MergingBlock(Block):
    """A timm `Block` that merges `merge_r` tokens between its attention and its MLP."""

    merge_r: int
    merge_first: bool  # the first block starts every forward pass afresh
    merge_prefix: int
    merge_sizes: _Sizes

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        if attn_mask is not None or is_causal:
            raise ValueError("a token-merging block takes no attention mask")
        if self.merge_first:
            self.merge_sizes.size = None
        size = self.merge_sizes.size
        attn = attention_of(self)
        r = min(self.merge_r, (x.shape[1] - self.merge_prefix) // 2)
        outputs: list[torch.Tensor] = []
        handle = (
            attn.qkv.register_forward_hook(lambda _m, _i, out: outputs.append(out))
            if attn is not None and r > 0
            else None
        )
        try:
            normed = self.norm1(x)
            bias = size.log().transpose(1, 2)[:, None] if size is not None else None  # (B, 1, 1, N)
            x = x + self.drop_path1(self.ls1(self.attn(normed, attn_mask=bias)))
        finally:
            if handle is not None:
                handle.remove()
        if r > 0:
            if attn is not None:
                metric = outputs[0].unflatten(-1, (3, attn.num_heads, attn.head_dim))[:, :, 1].mean(dim=2)
            else:
                metric = normed
            x, self.merge_sizes.size = _merge(x, metric, size, r, self.merge_prefix)
        return x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))


class MergingVisionTransformer(VisionTransformer):
    """A timm `VisionTransformer` whose average pooling weights the merged tokens by their size."""

    merge_sizes: _Sizes

    def pool(self, x: torch.Tensor, pool_type: str | None = None) -> torch.Tensor:
        pool_type = self.global_pool if pool_type is None else pool_type
        size = self.merge_sizes.size
        if size is None or pool_type not in ("avg", "avgmax"):
            return super().pool(x, pool_type)
        start = 0 if self.pool_include_prefix else self.num_prefix_tokens
        tokens, weight = x[:, start:], size[:, start:]
        mean = (tokens * weight).sum(dim=1) / weight.sum(dim=1)
        return mean if pool_type == "avg" else 0.5 * (tokens.amax(dim=1) + mean)


def _set_class(module: nn.Module, cls: type[nn.Module]) -> None:
    module.__class__ = cls


def merge_tokens(model: nn.Module, r: Sequence[int]) -> nn.Module:
    """Make the model merge `r[l]` tokens in block l from now on (in place; returned for chaining). Only
    plain timm `VisionTransformer`s of `Block`s without an attention-pooling head are supported."""
    vit = check_vit(model)
    if type(vit) not in (VisionTransformer, MergingVisionTransformer) or vit.attn_pool is not None:
        raise ValueError("token merging needs a plain timm VisionTransformer without attention pooling")
    blocks = list(vit.blocks)
    if len(r) != len(blocks) or any(k < 0 for k in r):
        raise ValueError(f"need one r >= 0 per block ({len(blocks)}), got {list(r)}")
    if any(type(b) not in (Block, MergingBlock) for b in blocks):
        raise ValueError("token merging needs timm's plain Block in every block")
    sizes = _Sizes()
    vit.__class__ = MergingVisionTransformer
    vit.merge_sizes = sizes
    for index, (block, wanted) in enumerate(zip(blocks, r, strict=True)):
        block.__class__ = MergingBlock
        block.merge_r, block.merge_first = int(wanted), index == 0
        block.merge_prefix, block.merge_sizes = int(vit.num_prefix_tokens), sizes
    return vit


def merge_schedule(model: nn.Module) -> tuple[int, ...]:
    """The r per block the model merges (all zeros when it does not merge)."""
    return tuple(b.merge_r if isinstance(b, MergingBlock) else 0 for b in check_vit(model).blocks)


def unmerge_tokens(model: nn.Module) -> nn.Module:
    """Undo `merge_tokens` (in place; returned for chaining)."""
    vit = check_vit(model)
    for block in vit.blocks:
        if isinstance(block, MergingBlock):
            _set_class(block, Block)
            for name in ("merge_r", "merge_first", "merge_prefix", "merge_sizes"):
                delattr(block, name)
    if isinstance(vit, MergingVisionTransformer):
        _set_class(vit, VisionTransformer)
        del vit.merge_sizes
    return vit


@contextmanager
def merging(model: nn.Module, r: Sequence[int]) -> Iterator[nn.Module]:
    """The model merging `r[l]` tokens in block l for the duration of the `with` block, then as before."""
    before = merge_schedule(model) if isinstance(model, MergingVisionTransformer) else None
    merge_tokens(model, r)
    try:
        yield model
    finally:
        if before is None:
            unmerge_tokens(model)
        else:
            merge_tokens(model, before)
