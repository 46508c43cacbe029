"""The `digits32-vit` preset (issue 25) is declared as the benchmarks expect: 6 blocks of 6 heads on 65 tokens
of 32x32 digits, a recipe and a cache key of its own. Nothing here trains it (benchmarks do, once)."""

import torch

from ovit_ray.models import PRESETS, create_model
from ovit_ray.pruning.structured import VitCosts
from ovit_ray.training.preset import RECIPES, _checkpoint_path, preset_dataset


def test_digits32_is_wider_and_deeper_than_digits_vit_on_65_tokens():
    model = create_model("digits32-vit").eval()
    costs, small = VitCosts.of(model), VitCosts.of(create_model("digits-vit"))
    assert costs.widths.heads == (6,) * 6 and costs.widths.neurons == (384,) * 6
    assert costs.widths.tokens == (65,) * 6 and costs.embed_dim == 96
    assert costs.macs() > 10 * small.macs()
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    prunable = [m.weight for b in model.blocks for m in (b.attn.qkv, b.attn.proj, b.mlp.fc1, b.mlp.fc2)]
    assert all(w.numel() % 64 == 0 for w in prunable)  # every oViT block size the sweeps use divides them


def test_digits32_trains_on_the_digits_splits_at_32_pixels_under_its_own_cache_key():
    spec = PRESETS["digits32-vit"]
    assert (spec.dataset, spec.image_size, spec.num_classes) == ("digits", 32, 10)
    data = preset_dataset("digits32-vit")
    image, _ = data.test[0]
    assert tuple(image.shape) == (3, 32, 32)
    assert len(data.test) == len(preset_dataset("digits-vit").test)  # the same held-out images, upsampled 4x
    path = _checkpoint_path("digits32-vit", RECIPES["digits32-vit"])
    assert path.name.startswith("digits32-vit-") and path != _checkpoint_path(
        "digits-vit", RECIPES["digits-vit"]
    )
