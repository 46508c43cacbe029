import copy
import math

import pytest
import torch
from safetensors import safe_open
from torch import nn
from torch.utils.data import Subset

from ovit_ray.data import load_dataset
from ovit_ray.models import create_model, load_checkpoint
from ovit_ray.training.loop import distillation_loss, evaluate, make_loader, train_one_epoch
from ovit_ray.training.preset import load_preset_model, preset_checkpoint, preset_dataset, preset_meta


class WeightMasks(dict):
    """A minimal mask set (name -> bool tensor) with the `apply(model)` contract of MaskSet."""

    @torch.no_grad()
    def apply(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, keep in self.items():
            params[name].mul_(keep)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _small_model() -> nn.Module:
    torch.manual_seed(0)
    return create_model("digits-vit", embed_dim=64, depth=1, num_heads=2)


def test_make_loader_order_depends_only_on_seed(digits):
    def first_labels(seed):
        return next(iter(make_loader(digits.train, 32, shuffle=True, seed=seed)))[1]

    assert torch.equal(first_labels(3), first_labels(3))
    assert not torch.equal(first_labels(3), first_labels(4))
    ordered = next(iter(make_loader(digits.val, 8, shuffle=False, seed=0)))[1]
    assert ordered.tolist() == [int(digits.val.labels[i]) for i in range(8)]


def test_evaluate_untrained_model_is_near_chance(digits):
    stats = evaluate(_small_model(), make_loader(digits.val, 128, shuffle=False, seed=0), device="cpu")
    assert 0.0 <= stats["top1"] <= 0.35
    assert 1.5 < stats["loss"] < 4.0  # ln(10) = 2.30 for uniform predictions


def test_short_training_improves_accuracy_and_steps_scheduler(digits):
    model = _small_model()
    train_loader = make_loader(digits.train, 64, shuffle=True, seed=0)
    val_loader = make_loader(digits.val, 256, shuffle=False, seed=0)
    before = evaluate(model, val_loader, device="cpu")["top1"]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    losses = []
    for _ in range(4):
        stats = train_one_epoch(
            model, train_loader, optimizer, loss_fn=nn.CrossEntropyLoss(), device="cpu", scheduler=scheduler
        )
        losses.append(stats["loss"])
    assert stats["steps"] == len(train_loader) == math.ceil(1079 / 64)
    assert scheduler.last_epoch == 4 * len(train_loader)  # stepped once per optimizer step
    assert losses[-1] < losses[0]
    after = evaluate(model, val_loader, device="cpu")["top1"]
    assert after > before + 0.3 and after > 0.6


def test_masks_are_reapplied_after_every_step(digits):
    model = _small_model()
    weight = model.blocks[0].mlp.fc1.weight
    masks = WeightMasks({"blocks.0.mlp.fc1.weight": torch.rand_like(weight) > 0.5})
    masks.apply(model)
    loader = make_loader(Subset(digits.train, range(256)), 64, shuffle=True, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    train_one_epoch(model, loader, optimizer, loss_fn=nn.CrossEntropyLoss(), device="cpu", masks=masks)
    pruned = ~masks["blocks.0.mlp.fc1.weight"]
    assert torch.all(weight[pruned] == 0)
    assert torch.count_nonzero(weight[~pruned]) == (~pruned).sum()


def test_distillation_loss_properties():
    logits = torch.randn(8, 10)
    assert distillation_loss(logits, logits, temperature=4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(logits, torch.randn(8, 10), temperature=2.0).item() > 0.0


def test_distillation_pulls_student_toward_teacher(digits):
    teacher = _small_model()
    loader = make_loader(Subset(digits.train, range(512)), 64, shuffle=True, seed=0)
    train_one_epoch(
        teacher,
        loader,
        torch.optim.AdamW(teacher.parameters(), lr=3e-3),
        loss_fn=nn.CrossEntropyLoss(),
        device="cpu",
    )
    torch.manual_seed(1)
    student = create_model("digits-vit", embed_dim=64, depth=1, num_heads=2)
    x = torch.stack([digits.val[i][0] for i in range(128)])

    def gap():
        with torch.no_grad():
            return distillation_loss(student.eval()(x), teacher.eval()(x), temperature=2.0).item()

    start = gap()
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)
    stats = train_one_epoch(
        student,
        loader,
        optimizer,
        loss_fn=nn.CrossEntropyLoss(),
        device="cpu",
        teacher=copy.deepcopy(teacher),
        distill_weight=1.0,
        distill_temperature=2.0,
    )
    assert math.isfinite(stats["loss"])
    assert gap() < 0.5 * start


def test_empty_loader_raises():
    model = _small_model()
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, [], device="cpu")


def test_preset_reaches_95_percent_and_is_cached(digits_preset, digits):
    state, masks, meta = load_checkpoint(digits_preset)
    assert digits_preset.name.startswith("digits-vit-") and masks == {}
    assert (
        meta["val_top1"] >= 0.95 and meta["test_top1"] >= 0.95 and meta["epochs"] > 0 and meta["seconds"] > 0
    )

    mtime = digits_preset.stat().st_mtime_ns
    assert preset_checkpoint("digits-vit") == digits_preset
    assert digits_preset.stat().st_mtime_ns == mtime  # served from cache, not retrained
    assert preset_meta("digits-vit") == meta
    with safe_open(str(digits_preset), framework="pt") as f:
        assert all(k.startswith("model.") for k in f.keys())

    model = load_preset_model("digits-vit")
    assert not model.training
    splits = preset_dataset("digits-vit")
    assert len(splits.val) == len(digits.val) and torch.equal(splits.test.labels, digits.test.labels)
    for name in ("val", "test"):
        loader = make_loader(getattr(splits, name), 256, shuffle=False, seed=0)
        assert evaluate(model, loader, device="cpu")["top1"] == pytest.approx(meta[f"{name}_top1"])
