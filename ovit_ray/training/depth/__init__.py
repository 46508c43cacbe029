"""BoundaryDPT training (issue 16): the two-stage depth-pruning run (drop attention sublayers, then anneal
and merge MLP activations, or the other order), optional BoundaryDPT+ width pruning, with KD from the dense
teacher; per-epoch checkpoints and resume through the gradual run's hosts; the result row with measured speed.

The package exports the (torch-free) spec only, so sweep files validate without torch: the loop is
`run.run_depth`, its structural steps `stages`, the row `result.depth_row`.
"""

from ovit_ray.training.depth.spec import DepthSpec

__all__ = ["DepthSpec"]
