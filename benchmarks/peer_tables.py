"""The peer benchmark's tables, headline and verdicts from its rows (`bench_peer_structured.py`), kept apart
from the runs so a table can be rebuilt from `rows.jsonl` without pruning anything again."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from results_file import headline as headline_item
from results_file import table
from scipy.stats import ttest_rel

from ovit_ray.orchestration.results.stats import Difference, summarize, welch_difference

Row = dict[str, Any]
LABELS = {
    "optin": "OPTIN (ours)",
    "group-l1": "group L1 (ours)",
    "group-l2": "group L2 (ours)",
    "taylor": "Taylor (ours)",
    "random": "random (ours)",
    "structured-magnitude": "heads-first magnitude (ours, retired)",
    "tp-l1": "Torch-Pruning L1",
    "tp-taylor": "Torch-Pruning Taylor",
}
# Pairs compared at every budget: OPTIN against each peer and each of our baselines, and each of our
# criteria against Torch-Pruning's version of the same criterion (same score, different code and allocation).
PAIRS = [
    ("optin", "tp-taylor"),
    ("optin", "tp-l1"),
    ("optin", "taylor"),
    ("optin", "group-l1"),
    ("optin", "group-l2"),
    ("optin", "random"),
    ("taylor", "tp-taylor"),
    ("group-l1", "tp-l1"),
]


def _label(method: str) -> str:
    return LABELS.get(method, method)


def _by_seed(rows: Sequence[Row]) -> dict[int, float]:
    return {int(r["seed"]): float(r["top1"]) for r in rows}


def compare(a: Sequence[Row], b: Sequence[Row], test_images: int) -> tuple[Difference | None, float, str]:
    """Welch interval of top-1 a - b, paired t-test p over shared seeds, and the verdict for a. Two
    deterministic results (no spread over seeds on either side) differ by a fixed number of test images:
    that is reported as such, never as a win or a loss, since no seed noise is there to test against."""
    sa, sb = _by_seed(a), _by_seed(b)
    difference = welch_difference(list(sa.values()), list(sb.values()))
    seeds = sorted(set(sa) & set(sb))
    diffs = [sa[s] - sb[s] for s in seeds]
    p = float("nan")
    if len(seeds) >= 2 and statistics.pstdev(diffs) > 0:
        p = float(ttest_rel([sa[s] for s in seeds], [sb[s] for s in seeds]).pvalue)
    if difference is None:
        return None, p, "n/a (fewer than 2 seeds)"
    if not difference.excludes_zero:
        return difference, p, "ties"
    if difference.low == difference.high:  # no spread on either side: a fixed gap, not a test
        images = round(abs(difference.diff) * test_images)
        side = "higher" if difference.diff > 0 else "lower"
        return difference, p, f"{side} by {images} of {test_images} test images, untested (no seed spread)"
    return difference, p, "wins" if difference.diff > 0 else "loses"


def _p(p: float) -> str:
    return "n/a" if math.isnan(p) else f"{p:.2g}"


def _mean(rows: Sequence[Row], key: str, scale: float = 1.0, digits: int = 2) -> str:
    s = summarize([float(r[key]) * scale for r in rows])
    return f"{s.mean:.{digits}f}" if s.n == 1 or s.std == 0 else f"{s.mean:.{digits}f} ± {s.std:.{digits}f}"


def results_tables(rows: Sequence[Row], test_images: dict[str, int]) -> tuple[list[dict], list[dict], str]:
    """Per preset: the top-1 / MACs / speed table and the comparison table; the headline; the notes.
    `test_images`: the size of each preset's test split."""
    groups: dict[tuple[str, str, float], list[Row]] = defaultdict(list)
    for r in rows:
        groups[(r["preset"], r["method"], float(r["budget"]))].append(r)
    presets = list(dict.fromkeys(r["preset"] for r in rows))

    def timing(preset: str, key: str) -> str:
        return next(
            (r[f"{key}_setting"] for r in rows if r["preset"] == preset and f"{key}_setting" in r), "?"
        )

    runs = {r["preset"]: {"command": r["command"]} for r in rows if "command" in r}  # each preset's own run
    tables: list[dict] = []
    headline: list[dict] = []
    verdicts: dict[tuple[str, str, str], list[str]] = defaultdict(list)
    outside: list[str] = []
    for preset in presets:
        methods = list(dict.fromkeys(m for (p, m, _) in groups if p == preset))
        budgets = sorted({b for (p, _, b) in groups if p == preset}, reverse=True)
        body = []
        for method in methods:
            for budget in budgets:
                found = groups.get((preset, method, budget), [])
                if found:
                    body.append(
                        [
                            _label(method),
                            budget,
                            len(found),
                            _mean(found, "top1", 100),
                            _mean(found, "achieved_ratio", 1, 3),
                            "/".join(str(h) for h in found[0]["heads"]),
                            _mean(found, "speedup_latency"),
                            _mean(found, "speedup_throughput"),
                        ]
                    )
        tables.append(
            table(
                f"{preset}: test top-1 at matched MACs, mean ± std over calibration seeds; speed-ups over dense "
                f"(latency: {timing(preset, 'speedup_latency')}; throughput: {timing(preset, 'speedup_throughput')})",
                [
                    "method",
                    "MACs budget",
                    "seeds",
                    "test top-1 (%)",
                    "achieved MACs ratio",
                    "heads kept per block (seed 0)",
                    "x latency b1",
                    "x throughput",
                ],
                body,
            )
        )
        comparisons = []
        for budget in budgets:
            for a, b in PAIRS:
                if (preset, a, budget) in groups and (preset, b, budget) in groups:
                    d, p, verdict = compare(
                        groups[(preset, a, budget)], groups[(preset, b, budget)], test_images[preset]
                    )
                    shown = (
                        ""
                        if d is None
                        else d.text(100).removesuffix(" *")
                        if "untested" in verdict
                        else d.text(100)
                    )
                    comparisons.append([budget, _label(a), _label(b), shown, _p(p), verdict])
                    verdicts[(preset, a, b)].append(f"{verdict} at {budget} ({shown or 'n/a'} pp, p {_p(p)})")
                    if d is not None and d.excludes_zero and d.low != d.high:
                        outside.append(
                            f"{preset} at {budget}: {_label(a)} {verdict} against {_label(b)} ({shown})"
                        )
                    if a == "optin" and b.startswith("tp-"):
                        if b == "tp-taylor" and budget in (0.7, 0.5) and d is not None:
                            headline.append(
                                headline_item(
                                    f"OPTIN minus Torch-Pruning Taylor, one-shot, {preset}, MACs {budget}",
                                    f"{d.diff * 100:+.2f} [{d.low * 100:+.2f}, {d.high * 100:+.2f}]",
                                    "pp",
                                    f"{verdict}; paired p {_p(p)}; {len(groups[(preset, a, budget)])} seeds, Welch 95%",
                                    **runs.get(preset, {}),
                                )
                            )
        tables.append(
            table(
                f"{preset}: differences of test top-1 (percentage points), a - b",
                [
                    "MACs budget",
                    "a",
                    "b",
                    "a - b, Welch 95% (* excludes 0)",
                    "paired t-test p",
                    "verdict for a",
                ],
                comparisons,
            )
        )
    lines = [
        f"- {preset}, {_label(a)} vs {_label(b)}: " + "; ".join(found) + "."
        for (preset, a, b), found in verdicts.items()
        if b.startswith("tp-")
    ]
    notes = (
        "**Where ours wins, ties or loses against Torch-Pruning** (a win or a loss needs the Welch 95% interval "
        "over the calibration seeds to exclude 0; p is the paired t-test over seeds; two methods without any "
        "seed spread differ by a fixed number of test images, reported as such; the sampling noise of the test "
        "split itself, one image of 359 = 0.28 points, is in none of these intervals):\n\n"
        + "\n".join(lines)
        + "\n\n**Every difference outside the seed noise** (all pairs, including OPTIN against our own "
        "baselines): " + ("; ".join(outside) if outside else "none") + ".\n\n" + NOTES
    )
    return tables, headline, notes


NOTES = """\
What was compared: one-shot structured pruning (no fine-tuning) of the bundled presets' attention heads and MLP
neurons at MACs budgets given as ratios of the dense MACs, every method on the same trained weights, the same
32 calibration images per seed (seeds 0, 1, 2; the training images `calibration_batch` draws for our structured
jobs, with their labels for the Taylor criteria) and the same held-out test split. MACs are counted by `VitCosts` for every
model. Our methods share one budget search (`search_flops`, which stops short of the budget by less than one
unit) and differ only in their scores. Torch-Pruning 1.6.1 (`pip install -e '.[bench]'`) ranks globally with
its own importance (L1 group magnitude; first-order Taylor on the gradient of the calibration batch's
cross-entropy; both mean-reduced over the group and mean-normalised, its defaults), removes whole heads
(`prune_num_heads=True`, head dimensions kept) and MLP neurons, and never the residual width; its pruning ratio
(one ratio for heads and neurons, then the neuron ratio alone when a whole head jumps over the window) is
bisected until the MACs are within 1% of the budget. Its kept units are read back as masks, and its pruned
model is checked equal to `shrink(dense, masks)` (`tp_vs_shrunk_max_logit_diff` in the rows), so every model
is evaluated and timed the same way: all of a preset's models and the dense one in one interleaved loop
(speed-ups are median ratios over the dense model in that loop, one intra-op thread).

Two traps of Torch-Pruning with timm 1.0.31, found in issue 25 and avoided: its ViT example replaces the
attention forward with one that lacks the `attn_mask` argument timm's `Block` passes (here timm's own forward
runs; only `num_heads` and `attn_dim` are set after pruning), and its Hessian importance keeps only the last
sample's gradient in 1.6.1 (not used). The glue (`benchmarks/peer_torch_pruning.py`) is ours; none of
Torch-Pruning's example code is copied."""
