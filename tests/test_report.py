"""Sweep report: Pareto frontier, the seed table, and the files written (real matplotlib, no Ray)."""

from __future__ import annotations

from pathlib import Path

from ovit_ray.orchestration.report import pareto_front, seed_summary, write_report_files


def _row(trial: str, block_size: int, seed: int, target: float, top1: float) -> dict:
    return {"trial_id": trial, "strategy": "sweep", "method": "ovit", "block_size": block_size, "seed": seed,
            "target_sparsity": target, "achieved_sparsity": target, "top1": top1, "top1_final": top1,
            "epochs": int(target * 10), "flops_reduction": 1 / (1 - target), "cpu_hours": 0.001 * seed,
            "gpu_hours": 0.0, "trial_cpu_hours": 0.002, "trial_gpu_hours": 0.0}


ROWS = [_row(f"t{b}-{s}", b, s, target, top1)
        for b, tops in ((64, (0.96, 0.96, 0.96)), (16, (0.90, 0.92, 0.94)), (256, (0.5, 0.5, 0.5)))
        for s, top1 in enumerate(tops) for target in (0.5, 0.9)]


def test_pareto_front_drops_points_beaten_on_both_axes() -> None:
    assert pareto_front([(0.5, 0.9), (0.6, 0.8), (0.7, 0.95), (0.9, 0.7)]) == [(0.7, 0.95), (0.9, 0.7)]


def test_seed_summary_groups_by_searched_knob_and_target_with_mean_and_std() -> None:
    table = seed_summary(ROWS)
    assert [(t["block_size"], t["target_sparsity"]) for t in table] == [
        (16, 0.5), (16, 0.9), (64, 0.5), (64, 0.9), (256, 0.5), (256, 0.9)]  # numeric order, not text
    assert all(t["seeds"] == 3 for t in table)
    assert "seed" not in table[0]
    assert table[0]["top1 (%)"] == "92.00 ± 2.00"  # 90, 92, 94: sample std 2
    assert table[2]["top1 (%)"] == "96.00 ± 0.00"
    assert table[1]["FLOP reduction (x)"] == "10.00 ± 0.00"
    assert table[0]["CPU-hours x1000 so far"] == "1.00 ± 1.00"


def test_one_seed_prints_the_value_without_a_spread_and_writes_no_seed_table(tmp_path: Path) -> None:
    one_seed = [r for r in ROWS if r["seed"] == 0]
    assert seed_summary(one_seed)[0]["top1 (%)"] == "90.00"
    names = {p.name for p in write_report_files(one_seed, tmp_path)}
    assert "top1_vs_sparsity.png" in names and "seed_summary.md" not in names


def test_report_files_are_written(tmp_path: Path) -> None:
    paths = write_report_files(ROWS, tmp_path / "plots")
    names = {p.name for p in paths}
    assert {"top1_vs_sparsity.png", "compute_per_strategy.png", "top1_vs_block_size.png", "seed_summary.md"} <= names
    assert all(p.stat().st_size > 0 for p in paths)
    table = (tmp_path / "plots" / "seed_summary.md").read_text().splitlines()
    assert table[0].startswith("| strategy | method | block_size | target_sparsity | seeds | top1 (%)")
    assert len(table) >= 2 + 6 and table[8] == ""  # then the pairwise differences



def test_seed_table_file_has_the_pairwise_differences(tmp_path: Path) -> None:
    write_report_files(ROWS, tmp_path)
    text = (tmp_path / "seed_summary.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("| 0.9 | block_size=64 | block_size=256")]
    assert len(lines) == 1 and "| +46.00 [+46.00, +46.00] * | True |" in lines[0]  # no spread on either side
    assert "| 0.5 | block_size=64 | block_size=16 | 3, 3 |" in text
