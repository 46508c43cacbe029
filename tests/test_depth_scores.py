"""Depth pruning's candidate scores (issue 16): cosine distance, masked-forward distillation, Taylor saliency."""

from __future__ import annotations

import copy

import torch
from tiny_vits import tiny_vit
from torch import nn

from ovit_ray.pruning.depth import (
    DepthScoreSettings,
    anneal_activation,
    depth_scores,
    drop_attention,
)
from ovit_ray.pruning.structured import OptinSettings

SCORERS = {"cosine", "distill", "md", "kd", "taylor"}


def _images(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(n, 3, 16, 16, dtype=dtype, generator=torch.Generator().manual_seed(3))


def test_scores_have_one_entry_per_block_and_are_deterministic_for_a_seed() -> None:
    model = tiny_vit(random_norms=True)
    x = _images(4)
    settings = DepthScoreSettings(optin=OptinSettings(gram_tokens=20, seed=3), taylor=True)
    first, again = (depth_scores(model, x, settings) for _ in range(2))
    other = depth_scores(model, x, DepthScoreSettings(optin=OptinSettings(gram_tokens=20, seed=4)))
    for kind in ("attention", "activation"):
        assert set(first.of(kind)) == SCORERS
        for name, value in first.of(kind).items():
            assert value.shape == (3,) and torch.isfinite(value).all() and (value >= 0).all()
            assert torch.equal(value, again.of(kind)[name]), (kind, name)
        assert not torch.equal(first.of(kind)["md"], other.of(kind)["md"])
        assert "taylor" not in other.of(kind)
    assert model.training is False and all(p.grad is None for p in model.parameters())


def test_removed_candidates_score_infinite_and_a_zeroed_attention_scores_zero() -> None:
    model = tiny_vit(random_norms=True)
    drop_attention(model.blocks[0])
    anneal_activation(model.blocks[2], 0.0)
    with torch.no_grad():  # block 1's attention adds nothing: removing it changes nothing
        model.blocks[1].attn.proj.weight.zero_()
        model.blocks[1].attn.proj.bias.zero_()
    scores = depth_scores(model, _images(4), DepthScoreSettings(taylor=True))
    for name in SCORERS:
        assert scores.attention[name][0] == torch.inf and scores.activation[name][2] == torch.inf
        assert torch.isfinite(scores.activation[name][:2]).all()
    assert abs(float(scores.attention["cosine"][1])) < 1e-12
    assert float(scores.attention["md"][1]) < 1e-9 and float(scores.attention["kd"][1]) < 1e-9
    assert float(scores.attention["distill"][1]) < 1e-9 and float(scores.attention["taylor"][1]) < 1e-12
    assert float(scores.attention["cosine"][2]) > 1e-4 and float(scores.attention["distill"][2]) > 1e-4


def _reference(
    model: nn.Module, x: torch.Tensor, edited: nn.Module, layer: int
) -> tuple[float, float, float]:
    """Cosine (at block `layer`'s output, not the last block), MD and KD of an edited copy from full forward
    passes, with every token in the Gram matrices."""

    def run(m: nn.Module) -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        features: list[torch.Tensor] = []
        inputs: list[torch.Tensor] = []
        hooks = [b.norm1.register_forward_hook(lambda _m, _i, out: features.append(out)) for b in m.blocks]
        hooks.append(m.norm.register_forward_hook(lambda _m, _i, out: features.append(out)))
        hooks += [b.register_forward_pre_hook(lambda _m, args: inputs.append(args[0])) for b in m.blocks]
        with torch.no_grad():
            logits = m(x)
        for hook in hooks:
            hook.remove()
        return features, inputs, logits

    def gram(f: torch.Tensor) -> torch.Tensor:
        flat = nn.functional.normalize(f.flatten(0, 1), dim=-1)
        return flat @ flat.T

    teacher, inputs, t_logits = run(model)
    student, student_inputs, s_logits = run(edited)
    md = sum(
        float(((gram(s) - gram(t)) ** 2).sum())
        for s, t in list(zip(student, teacher, strict=True))[layer + 1 :]
    )
    p, q = t_logits.log_softmax(-1), s_logits.log_softmax(-1)
    kd = float((p.exp() * (p - q)).sum()) * 16.0
    out, edited_out = inputs[layer + 1], student_inputs[layer + 1]  # the block's output
    cosine = float((1 - nn.functional.cosine_similarity(edited_out, out, dim=-1)).mean())
    return cosine, md, kd


def test_distill_and_cosine_equal_full_passes_of_the_edited_model() -> None:
    model = tiny_vit(random_norms=True).double()
    x = _images(2, torch.float64)
    scores = depth_scores(model, x)
    for kind, layer in (("attention", 1), ("activation", 0), ("activation", 1)):
        edited = copy.deepcopy(model)
        if kind == "attention":
            drop_attention(edited.blocks[layer])
        else:
            anneal_activation(edited.blocks[layer], 0.0)
        cosine, md, kd = _reference(model, x, edited, layer)
        got = scores.of(kind)
        assert (
            abs(float(got["md"][layer]) - md) <= 1e-7 * md and abs(float(got["kd"][layer]) - kd) <= 1e-7 * kd
        )
        if kind == "activation":  # the block's output with the activation removed against the intact one
            assert abs(float(got["cosine"][layer]) - cosine) <= 1e-9


def test_taylor_equals_the_derivative_along_the_annealing_path() -> None:
    """For one image, |dL/da| at a = 1 of the annealed activation is the activation's Taylor score."""
    model = tiny_vit(random_norms=True).double()
    x = _images(1, torch.float64)
    score = depth_scores(model, x, DepthScoreSettings(taylor=True)).activation["taylor"]
    with torch.no_grad():
        target = model(x).argmax(-1)
        loss = [nn.functional.cross_entropy(model(x), target)]
        act = anneal_activation(model.blocks[1], 1.0)
        eps = 1e-6
        act.a = 1.0 - eps
        loss.append(nn.functional.cross_entropy(model(x), target))
    assert abs(float(score[1]) - abs(float(loss[0] - loss[1])) / eps) <= 1e-4 * float(score[1])


def test_depth_scores_are_cached_per_weights_images_and_settings(tmp_path) -> None:
    from ovit_ray.pruning.depth import DepthScoreSettings
    from ovit_ray.training.depth.stages import cached_depth_scores

    model, images = tiny_vit(random_norms=True), torch.randn(4, 3, 16, 16)
    settings = DepthScoreSettings()
    first = cached_depth_scores(model, images, settings, tmp_path)
    (saved,) = (tmp_path / "depth-scores").iterdir()
    again = cached_depth_scores(model, images, settings, tmp_path)  # read back, not recomputed
    assert saved.stat().st_mtime_ns == next((tmp_path / "depth-scores").iterdir()).stat().st_mtime_ns
    for kind in ("attention", "activation"):
        assert first.of(kind).keys() == again.of(kind).keys()
        assert all(torch.equal(first.of(kind)[k], again.of(kind)[k]) for k in first.of(kind))
    with torch.no_grad():
        model.head.weight.add_(1.0)  # other weights: another entry
    cached_depth_scores(model, images, settings, tmp_path)
    assert len(list((tmp_path / "depth-scores").iterdir())) == 2
