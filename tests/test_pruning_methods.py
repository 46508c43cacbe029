"""Pruning methods are plug-ins: one registered class is a method everywhere (settings, pruner, config, CLI, docs)."""

import argparse
import re
from pathlib import Path

import pytest
import timm
import torch

from ovit_ray.cli import prune as prune_cli
from ovit_ray.pruning import DEFAULT_PATTERNS, MaskSet, Pruner, PruneSettings, select_prunable
from ovit_ray.pruning.methods import PruningMethod, _registry, method_names, register_method
from ovit_ray.training.spec import RunSpec

BUILT_IN = ("ovit", "woodfisher", "magnitude", "ovit-noupdate")


@pytest.fixture
def keep_random():
    """Registers a toy method defined here, as a user's own module would; the registry is restored afterwards."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(_registry, "_METHODS", dict(_registry._METHODS))

        @register_method
        class KeepRandom(PruningMethod):
            """Random scores, survivors shrunk by half: no Fisher, its own plan and its own write."""

            name = "keep-random"
            needs_fisher = False

            def plan(self, pruner, name):
                scores = torch.rand(pruner.blocks(name).shape, generator=torch.Generator().manual_seed(0))
                return pruner.plan_by_position(name, scores)

            def write(self, pruner, name, plan, pruned):
                return super().write(pruner, name, plan, pruned) / 2

        yield KeepRandom


def tiny_vit() -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, num_classes=10, depth=2, embed_dim=48, num_heads=3
    ).eval()


def test_a_method_defined_in_one_class_prunes_a_real_model(keep_random):
    model = tiny_vit()
    params = select_prunable(model, list(DEFAULT_PATTERNS))
    dense = {n: p.detach().clone() for n, p in params.items()}
    settings = PruneSettings(method="keep-random", block_size=16, scope="uniform")
    assert not settings.uses_fisher
    pruner = Pruner(model, params, MaskSet.dense(params), settings)
    pruner.collect([(torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))])
    assert pruner.fisher is None  # needs_fisher=False: no gradients collected
    pruner.plan()
    masks = pruner.apply(0.5)
    for name, param in params.items():
        assert int((~masks[name]).sum()) == round(0.5 * param.numel())
        assert torch.equal(param.detach(), torch.where(masks[name], dense[name] / 2, 0))
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    # The same name is accepted by run configs and offered by the CLI, with nothing else edited.
    assert RunSpec(method="keep-random").prune_settings().method == "keep-random"
    parser = argparse.ArgumentParser()
    prune_cli.register(parser.add_subparsers())
    assert parser.parse_args(["prune", "--method", "keep-random"]).method == ["keep-random"]
    assert method_names() == (*BUILT_IN, "keep-random")


def test_unknown_method_is_one_line_listing_the_registered_names(keep_random):
    names = ", ".join((*BUILT_IN, "keep-random"))
    for settings in (PruneSettings, RunSpec):  # one declaration of the knob: one message
        with pytest.raises(ValueError) as err:
            settings(method="obs2")
        assert str(err.value) == f"method: must be one of {names} (got 'obs2')"


def test_a_name_is_registered_once(keep_random):
    class Again(keep_random):
        pass

    with pytest.raises(ValueError, match="pruning method 'keep-random' is already registered by"):
        register_method(Again)


def test_built_in_methods_in_their_order():
    assert method_names() == BUILT_IN


def test_readme_documents_every_registered_method():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("## Pruning methods", 1)[1].split("\n## ", 1)[0]
    documented = re.findall(r"^\| `([^`]+)` \|", table, flags=re.MULTILINE)
    assert documented == list(method_names())
