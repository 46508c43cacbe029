"""Which weights are prunable: a list of regular expressions over parameter names (timm naming)."""

from __future__ import annotations

import re
from collections.abc import Sequence

from torch import nn

from ovit_ray.pruning.names import DEFAULT_PATTERNS


def select_prunable(model: nn.Module, patterns: Sequence[str] = DEFAULT_PATTERNS) -> dict[str, nn.Parameter]:
    """Parameters whose full name matches one of `patterns` (re.fullmatch), in model order.

    A pattern that matches nothing is an error rather than a silent no-op, because it usually means the
    pattern was written for another naming scheme.
    """
    if not patterns:
        raise ValueError("params: at least one parameter pattern is required")
    named = dict(model.named_parameters())
    selected: dict[str, nn.Parameter] = {}
    for pattern in patterns:
        try:
            regex = re.compile(pattern)
        except re.error as err:
            raise ValueError(f"params: invalid regular expression {pattern!r}: {err}") from None
        hits = [name for name in named if regex.fullmatch(name)]
        if not hits:
            raise ValueError(
                f"params: pattern {pattern!r} matches no parameter of the model "
                f"(example names: {', '.join(list(named)[:4])}, ...)"
            )
        selected.update((name, named[name]) for name in hits)
    return {name: named[name] for name in named if name in selected}
