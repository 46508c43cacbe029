"""Depth pruning of timm ViTs after BoundaryDPT (issue 16): whole attention sublayers dropped, MLP activations
annealed to the identity and the linearised MLPs merged into one d x d Linear.

BoundaryDPT has no public code or paper body; the two-stage scheme and its insights are from its abstract,
everything else (scorers, annealing form, merge, selection rules) is our reconstruction (docs:
structured_pruning.md sections 5 and 6).

How a `training/` two-stage driver uses these pieces (on the dense, or OPTIN-shrunk, teacher copy):

0. Budgets: counts (attention drops, activation removals), or `counts_for_speedup(scores, scorer,
   DepthCosts.of(model), target)` for a target analytic speed-up. Scores are per type ("gradient disparity"):
   `depth_scores(model, calibration_images, DepthScoreSettings(...))`, cached by the caller per (model,
   weights, seed); `select(scores, scorer, n_attention, n_activation) -> DepthPlan`.
1. Stage 1 (longer; attention recovers slowly): `drop_attention(model.blocks[b])` for every b in
   `plan.drop_attention`, rebuild the optimiser (the dropped parameters are gone, the kept `proj.bias` is a new
   one), fine-tune with KD from the dense teacher. Optionally re-score before stage 2 on the stage-1 model:
   dropped attentions then score +inf and never come back.
2. Stage 2 (shorter; activations recover fast): `anneal_activation(model.blocks[b], 1.0)` for every b in
   `plan.linearise` (the model is unchanged at a = 1), then each step `set_activation_mix(model, a)` with a going
   from 1 to 0 over the stage's steps (e.g. linear in the step; a = 0 exactly by the stage's last step), with KD.
   A checkpoint's `state_dict` carries a; save `depth_structure(model)` beside it and resume with
   `rebuild_depth(dense_model, structure)` + `load_state_dict`.
3. After stage 2 (and after BoundaryDPT+'s width pruning, which works on the linearised model because it is
   still made of timm `Mlp`s): `merge_mlp(block)` on every linearised block, which is exact (logits to 1e-5) and
   keeps the two thin GEMMs where the MLP is narrower than d/2. Save the merged model with
   `depth_structure`; `DepthCosts.of(model).macs()` is its analytic cost.
"""

from .costs import DepthCosts
from .edits import (
    AnnealedActivation,
    anneal_activation,
    annealed_activations,
    drop_attention,
    is_linearised,
    merge_mlp,
    set_activation_mix,
)
from .scores import DepthScores, DepthScoreSettings, depth_scores
from .select import DepthPlan, counts_for_speedup, ranking, select
from .structure import depth_structure, rebuild_depth

__all__ = [
    "AnnealedActivation",
    "DepthCosts",
    "DepthPlan",
    "DepthScoreSettings",
    "DepthScores",
    "anneal_activation",
    "counts_for_speedup",
    "annealed_activations",
    "depth_scores",
    "depth_structure",
    "drop_attention",
    "is_linearised",
    "merge_mlp",
    "ranking",
    "rebuild_depth",
    "select",
    "set_activation_mix",
]
