"""Every timm ViT family people prune: the default prunable weights come from the model (attention and MLP
Linears of each transformer block, whatever the family names them), and unstructured one-shot pruning hits
its sparsity exactly on one tiny configuration of each. Structured and depth pruning name the one family
they support."""

from __future__ import annotations

import pytest
import timm
import torch
from torch import nn

from ovit_ray.pruning import MaskSet, Pruner, PruneSettings, select_prunable
from ovit_ray.pruning.depth.structure import vit_blocks
from ovit_ray.pruning.structured.units import check_vit
from ovit_ray.training.spec import RunSpec

VIT = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2)
SWIN = dict(img_size=16, patch_size=4, embed_dim=16, depths=(1, 1), num_heads=(1, 2), window_size=2)
FUSED = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
TWO_BLOCKS = ("blocks.0", "blocks.1")
SWIN_BLOCKS = ("layers.0.blocks.0", "layers.1.blocks.0")
# family: (timm name, tiny architecture, block paths, each block's attention and MLP Linears in model order)
FAMILIES = {
    "vit": ("vit_tiny_patch16_224", VIT, TWO_BLOCKS, FUSED),
    "deit-distilled": ("deit_tiny_distilled_patch16_224", VIT, TWO_BLOCKS, FUSED),
    "dinov2-registers": ("vit_small_patch14_reg4_dinov2", VIT, TWO_BLOCKS, FUSED),
    "beit": ("beit_base_patch16_224", VIT, TWO_BLOCKS, FUSED),
    "swin": ("swin_tiny_patch4_window7_224", SWIN, SWIN_BLOCKS, FUSED),
    # Swin-V2's attention holds a position-bias MLP (attn.cpb_mlp.N): not a projection, left dense
    "swinv2": ("swinv2_tiny_window8_256", SWIN, SWIN_BLOCKS, FUSED),
    "eva02": ("eva02_tiny_patch14_224", VIT, TWO_BLOCKS, FUSED),  # fused qkv, packed SwiGLU fc1
    "eva02-clip": (  # split q/k/v and a gated SwiGLU with separate gate and value Linears
        "eva02_base_patch16_clip_224",
        VIT,
        TWO_BLOCKS,
        ("attn.q_proj", "attn.k_proj", "attn.v_proj", "attn.proj", "mlp.fc1_g", "mlp.fc1_x", "mlp.fc2"),
    ),
    "pvt-v2": (  # stages.N.blocks.M, a separate q and kv, an MLP with a depthwise conv between fc1 and fc2
        "pvt_v2_b0",
        dict(embed_dims=(16, 32), depths=(1, 1), num_heads=(1, 2), mlp_ratios=(2, 2), sr_ratios=(2, 1)),
        ("stages.0.blocks.0", "stages.1.blocks.0"),
        ("attn.q", "attn.kv", "attn.proj", "mlp.fc1", "mlp.fc2"),
    ),
}


def tiny(family: str) -> nn.Module:
    name, arch, _, _ = FAMILIES[family]
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=5, **arch).eval()


def expected_names(family: str) -> list[str]:
    _, _, blocks, linears = FAMILIES[family]
    return [f"{block}.{linear}.weight" for block in blocks for linear in linears]


@pytest.mark.parametrize("family", list(FAMILIES))
def test_defaults_are_the_attention_and_mlp_linears_and_oneshot_is_exact(family):
    model = tiny(family)
    size = FAMILIES[family][1].get("img_size", 32)  # PVT-v2 takes any size
    params = select_prunable(model)
    assert list(params) == expected_names(family)
    assert all(p.dim() == 2 for p in params.values())

    settings = PruneSettings(method="ovit", block_size=16, num_grads=4, grad_batch_size=2)
    pruner = Pruner(model, params, MaskSet.dense(params), settings)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(2, 3, size, size, generator=g), torch.randint(0, 5, (2,), generator=g))] * 4
    pruner.collect(batches)
    pruner.plan()
    masks = pruner.apply(0.5)
    pruned, total = masks.counts()
    assert total == sum(p.numel() for p in params.values())
    assert pruned == round(0.5 * total)  # exactly round(s * d) over the selected weights
    for name, param in params.items():
        assert torch.all(param[~masks[name]] == 0), name
    assert torch.isfinite(model(batches[0][0])).all()


def test_user_patterns_override_the_model_defaults():
    model = tiny("swin")
    picked = select_prunable(model, [r"layers\.1\.blocks\.\d+\.mlp\.fc\d\.weight", r"head\.fc\.weight"])
    assert list(picked) == [
        "layers.1.blocks.0.mlp.fc1.weight",
        "layers.1.blocks.0.mlp.fc2.weight",
        "head.fc.weight",
    ]
    with pytest.raises(
        ValueError, match=r"pattern 'blocks\\\\.\\\\d\+\\\\.attn\\\\.qkv\\\\.weight' matches no"
    ):
        select_prunable(model, [r"blocks\.\d+\.attn\.qkv\.weight"])  # the ViT naming, not Swin's


def test_a_hand_written_transformer_block_is_found_by_its_attribute_names():
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attention = nn.Module()
            self.attention.wq, self.attention.out = nn.Linear(8, 8), nn.Linear(8, 8)
            self.ffn = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
            self.gate = nn.Linear(8, 8)  # beside the sublayers: not a projection of either

    model = nn.Sequential(Block(), nn.Linear(8, 3))
    assert list(select_prunable(model)) == [
        "0.attention.wq.weight",
        "0.attention.out.weight",
        "0.ffn.0.weight",
        "0.ffn.2.weight",
    ]


def test_a_model_without_transformer_blocks_needs_patterns():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(
        ValueError, match=r"^params: Sequential has no transformer block .* \(example names: 0\.weight"
    ):
        select_prunable(model)


def test_runs_default_to_the_models_own_weights():
    assert RunSpec().patterns is None
    assert RunSpec(patterns=(r"blocks\.0\.attn\.qkv\.weight",)).patterns == (r"blocks\.0\.attn\.qkv\.weight",)


@pytest.mark.parametrize("family", ["swin", "eva02"])
def test_structured_and_depth_pruning_name_the_family_they_support(family):
    model = tiny(family)
    module = type(model).__module__.rsplit(".", 1)[-1]
    for check in (check_vit, vit_blocks):
        with pytest.raises(ValueError) as err:
            check(model)
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith("structured and depth pruning support timm VisionTransformer models only")
        assert f"got {type(model).__name__} of the {module} family" in message
    check_vit(tiny("dinov2-registers"))  # registers and LayerScale: still a VisionTransformer
