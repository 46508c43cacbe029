"""The seeded fuzz harness of benchmarks/bench_fuzz.py on a few hundred inputs (the benchmark runs
2,000 per kind): sweep files, search spaces, cluster files and CLI flags through the real CLI, no Ray;
and (slow tier) issue 24's storage URLs, folder names, counts, model cards and depth blocks."""

from __future__ import annotations

import resource
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import bench_fuzz  # noqa: E402


def test_fuzzed_inputs_exit_0_or_2_with_one_line_and_bounded_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The harness points OVIT_RAY_SEARCH_SPACES at its own copies; undone after the test, so later
    # tests find the shipped search spaces.
    monkeypatch.setenv("OVIT_RAY_SEARCH_SPACES", str(tmp_path / "search_spaces"))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    light = tuple(k for k in bench_fuzz.KINDS if k not in bench_fuzz.HEAVY_KINDS)
    report = bench_fuzz.fuzz(light, 75, seed=1, work=tmp_path)
    for kind, stats in report.items():
        assert stats["inputs"] == 75 and stats["exit0"] + stats["exit2"] == 75, (kind, stats.get("other"))
        assert not stats["violations"], (kind, stats["violations"][:3])
        assert stats["exit2"] >= 20, kind  # most mutations are mistakes the CLI must name
    # Peak RSS of this process: what earlier tests imported (up to ~1.1 GB) plus what the inputs add
    # (torch + timm, ~0.7 GB, once an input names a timm model; a fresh process stays < 1 GB: BENCHMARKS.md).
    assert report["flags"]["peak_rss_mb"] - max(before, 1100) < 300


@pytest.mark.slow  # opens an MLflow store or loads a model per input, exports one model (a few minutes)
def test_storage_urls_folder_names_counts_cards_and_depth_keep_the_contract(tmp_path: Path) -> None:
    """Issue 24's families (every one of `fuzz_inputs.FAMILIES`): nothing outside the output folder changes
    (victim files, a user's database, the exported model), no traceback, no exit 70, no run allocating 1 GB,
    one line per refusal."""
    assert {"storage", "folders", "numbers", "cards", "depth"} <= set(bench_fuzz.HEAVY_KINDS)
    report = bench_fuzz.fuzz(bench_fuzz.HEAVY_KINDS, 0, seed=2, work=tmp_path, per_heavy_kind=15)
    for kind, stats in report.items():
        assert stats["inputs"] == 15 and stats["exit0"] + stats["exit2"] == 15, (kind, stats.get("other"))
        assert not stats["violations"], (kind, stats["violations"][:3])
        assert stats["tracebacks"] == stats["exit70"] == stats["over_1gb"] == stats["outside_changes"] == 0
    assert report["numbers"]["exit2"] == 15 and report["storage"]["exit2"] >= 5
    assert report["folders"]["exit0"] == 15  # every oddly named folder replays into its own store
    assert report["cards"]["exit2"] >= 8 and report["depth"]["exit2"] >= 8  # most mutations are mistakes
