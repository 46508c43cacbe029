"""Gradual pruning with recovery fine-tuning on one worker of a (possibly) data-parallel run, without Ray.

`run.GradualRun` is the loop; its hosts (`hosts.Reporter`: Ray Train, Ray Tune, or `LocalReporter`) carry
metrics and checkpoints out. The other modules hold its parts: one pruning step over workers
(`prune_step`), collectives (`comm`), data shards (`worker_data`), and the best epoch per target (`bests`).
"""

from ovit_ray.training.gradual.run import GradualRun, run_gradual
from ovit_ray.training.hosts import CorruptCheckpointError, LocalReporter, Reporter, verify_state

__all__ = ["CorruptCheckpointError", "GradualRun", "LocalReporter", "Reporter", "run_gradual", "verify_state"]
