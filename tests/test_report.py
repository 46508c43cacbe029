"""Sweep report: Pareto frontier, the seed table, and the files written (real matplotlib, no Ray)."""

from __future__ import annotations

from pathlib import Path

from ovit_ray.cli.main import main
from ovit_ray.orchestration.kinds import get_kind
from ovit_ray.orchestration.kinds.gradual import GradualSpec
from ovit_ray.orchestration.results.parquet import append_rows
from ovit_ray.orchestration.results.report import pareto_front, seed_summary, write_report_files
from ovit_ray.orchestration.results.schemas import results_schema, trials_schema
from ovit_ray.orchestration.results.strategies import strategy_table

GRADUAL = get_kind("gradual")
KNOBS = GradualSpec(targets=[0.5, 0.9]).model_dump()


def _row(trial: str, block_size: int, seed: int, target: float, top1: float) -> dict:
    return {
        "sweep": "abl",
        "kind": "gradual",
        "trial_id": trial,
        **KNOBS,
        "block_size": block_size,
        "seed": seed,
        "target": target,
        "achieved_sparsity": target,
        "top1": top1,
        "macs_ratio": 1 - target,
        "epochs_trained": int(target * 10),
        "cpu_hours": 0.001 * seed,
        "gpu_hours": 0.0,
    }


def _trial(rows: list[dict]) -> dict:
    """The trials.parquet row of a finished trial (its knobs, totals and allocated hours)."""
    last = rows[-1]
    knobs = {k: v for k, v in last.items() if k in GradualSpec.model_fields}
    return {
        "sweep": last["sweep"],
        "kind": "gradual",
        "trial_id": last["trial_id"],
        **knobs,
        "status": "finished",
        "top1_final": last["top1"],
        "top1_mean": sum(r["top1"] for r in rows) / len(rows),
        "epochs_total": last["epochs_trained"],
        "cpu_hours": last["cpu_hours"],
        "gpu_hours": 0.0,
        "allocated_cpu_hours": 2 * last["cpu_hours"] + 0.001,
    }


def _folder(out: Path, rows: list[dict], trials: list[dict], objective: str | None = None) -> Path:
    """An output folder as every command writes it: results.parquet (per trial and target), trials.parquet."""
    out.mkdir(parents=True)
    if objective is not None:
        (out / "sweep.yaml").write_text(f"search:\n  objectives: [{{metric: {objective}, mode: max}}]\n")
    append_rows(out / "results.parquet", rows, ["trial_id", "target"], results_schema(GRADUAL))
    append_rows(out / "trials.parquet", trials, ["trial_id"], trials_schema(GRADUAL))
    return out


def _ablation(out: Path, rows: list[dict]) -> Path:
    trials = [
        _trial([r for r in rows if r["trial_id"] == t]) for t in dict.fromkeys(r["trial_id"] for r in rows)
    ]
    return _folder(out, rows, trials)


ROWS = [
    _row(f"t{b}-{s}", b, s, target, top1)
    for b, tops in ((64, (0.96, 0.96, 0.96)), (16, (0.90, 0.92, 0.94)), (256, (0.5, 0.5, 0.5)))
    for s, top1 in enumerate(tops)
    for target in (0.5, 0.9)
]


def test_pareto_front_drops_points_beaten_on_both_axes() -> None:
    assert pareto_front([(0.5, 0.9), (0.6, 0.8), (0.7, 0.95), (0.9, 0.7)]) == [(0.7, 0.95), (0.9, 0.7)]


def test_seed_summary_groups_by_searched_knob_and_target_with_mean_and_std() -> None:
    table = seed_summary(ROWS, ["block_size"])
    assert [(t["block_size"], t["target"]) for t in table] == [
        (16, 0.5),
        (16, 0.9),
        (64, 0.5),
        (64, 0.9),
        (256, 0.5),
        (256, 0.9),
    ]  # numeric order, not text
    assert all(t["seeds"] == 3 for t in table)
    assert "seed" not in table[0]
    assert table[0]["top1 (%)"] == "92.00 ± 2.00"  # 90, 92, 94: sample std 2
    assert table[2]["top1 (%)"] == "96.00 ± 0.00"
    assert table[1]["macs_ratio"] == "0.10 ± 0.00" and table[1]["epochs_trained"] == "9.00 ± 0.00"
    assert table[1]["achieved_sparsity"] == "90.00 ± 0.00"


def test_one_seed_prints_the_value_without_a_spread_and_writes_no_seed_table(tmp_path: Path) -> None:
    one_seed = [r for r in ROWS if r["seed"] == 0]
    assert seed_summary(one_seed, ["block_size"])[0]["top1 (%)"] == "90.00"
    names = {p.name for p in write_report_files(_ablation(tmp_path / "one", one_seed))}
    assert "top1_vs_target.png" in names and "seed_summary.md" not in names


def test_report_files_are_written(tmp_path: Path) -> None:
    out = _ablation(tmp_path / "abl", ROWS)
    paths = write_report_files(out)
    names = {p.name for p in paths}
    assert {
        "top1_vs_target.png",
        "hours_per_strategy.png",
        "top1_vs_block_size.png",
        "seed_summary.md",
    } <= names
    assert all(p.parent == out / "plots" and p.stat().st_size > 0 for p in paths)
    table = (out / "plots" / "seed_summary.md").read_text().splitlines()
    assert table[0] == "## mean ± std over seeds"
    assert table[2].startswith("| block_size | target | seeds | top1 (%) |")  # the varying knob, not the seed
    assert len(table) >= 4 + 6 and table[10] == ""  # then the pairwise differences


def test_seed_table_file_has_the_pairwise_differences(tmp_path: Path) -> None:
    write_report_files(_ablation(tmp_path / "abl", ROWS))
    text = (tmp_path / "abl" / "plots" / "seed_summary.md").read_text()
    lines = [line for line in text.splitlines() if line.startswith("| 0.9 | block_size=64 | block_size=256")]
    assert len(lines) == 1 and "| +46.00 [+46.00, +46.00] * | True |" in lines[0]  # no spread on either side
    assert "| 0.5 | block_size=64 | block_size=16 | 3, 3 |" in text


def _sweep_dir(tmp_path: Path) -> Path:
    """A sweep output as `ovit-ray sweep` writes it: 3 finished trials (lr_max and λ searched), 1 stopped."""
    finals = {"t_a": 0.80, "t_b": 0.90, "t_c": 0.90, "t_d": None}  # t_b and t_c tie on the objective
    rows, trials = [], []
    for i, (trial, final) in enumerate(finals.items()):
        knobs = GradualSpec(
            targets=[0.5, 0.75, 0.9],
            block_size=64,
            num_grads=128,
            damp=10.0 ** -(6 + i),
            lr_max=1e-3 * (i + 1),
        ).model_dump()
        base = {"sweep": "quick", "kind": "gradual", "trial_id": trial, **knobs}
        if final is None:
            trials.append({**base, "status": "stopped_early", "epochs_total": 2, "cpu_hours": 0.001})
            continue
        mean = final - (0.01 if trial == "t_c" else 0.02)  # t_c wins the tie on mean top-1
        rows += [
            {**base, "target": s, "achieved_sparsity": s, "top1": top1, "epochs_trained": e}
            for s, top1, e in ((0.5, 0.97, 2), (0.75, 0.95, 4), (0.9, final, 6))
        ]
        trials.append(
            {
                **base,
                "status": "finished",
                "top1_final": final,
                "top1_mean": mean,
                "epochs_total": 6,
                "cpu_hours": 0.0123,
                "allocated_cpu_hours": 0.02,
            }
        )
    return _folder(tmp_path / "quick", rows, trials, objective="top1_final")


def test_report_ranks_trials_marks_the_best_and_fits_80_columns(tmp_path: Path, capsys) -> None:
    assert main(["report", str(_sweep_dir(tmp_path))]) == 0
    text = capsys.readouterr().out
    lines = [line for line in text.splitlines() if str(tmp_path) not in line]  # paths: as long as tmp
    assert max(len(line) for line in lines) <= 80
    assert "t…" not in text and "…" not in text  # headers are short names, never cut
    header = next(line for line in lines if line.lstrip().startswith("#"))
    assert header.split()[:5] == [
        "#",
        "trial",
        "status",
        "λ",
        "lr",
    ]  # searched knobs only: B, m, λ first; lr_max
    body = [line.split() for line in lines if line[:3].strip().isdigit()]
    ranks = [
        (cells[0], cells[1], cells[2]) for cells in body if cells[1] in ("*", "t_a", "t_b", "t_c", "t_d")
    ]
    assert ranks[0] == ("1", "*", "t_c")  # tie on the objective broken by mean top-1
    assert [r[-1] if r[1] == "*" else r[1] for r in ranks] == ["t_c", "t_b", "t_a", "t_d"]
    stopped = next(cells for cells in body if "t_d" in cells)
    assert "stopped" in stopped and "-" in stopped  # stopped-early trial listed, no per-target top-1
    assert "90.0" in text and "@90" in text and "CPU-h" in text


def test_report_wide_csv_and_markdown(tmp_path: Path, capsys) -> None:
    import csv
    import io

    out = str(_sweep_dir(tmp_path))
    assert main(["report", out, "--wide"]) == 0
    wide = capsys.readouterr().out.splitlines()
    assert sum(1 for line in wide if line.lstrip().startswith("#")) == 1  # one block
    assert main(["report", out, "--csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["trial"] for r in table] == ["t_c", "t_b", "t_a", "t_d"]
    assert {"lr_max", "damp", "top1_at_0.5", "top1_at_0.9", "epochs", "cpu_hours"} <= set(table[0])
    assert table[0]["best"] == "*" and table[3]["status"] == "stopped"
    assert main(["report", out, "--markdown"]) == 0
    md = capsys.readouterr().out.splitlines()
    assert md[0].startswith("| # | best | trial | status | λ | lr |") and md[1].startswith("|---:|")


def test_report_reads_train_and_compare_strategies_outputs(tmp_path: Path, capsys) -> None:
    """compare-strategies writes a gradual sweep folder with one trial per strategy: `report` ranks them, and
    the strategy table compares them per target, with loop and allocated hours."""
    runs = [
        ("sweep", "k1", ((0.5, 0.95), (0.9, 0.85)), 4),
        ("independent", "k2", ((0.5, 0.96), (0.9, 0.88)), 6),
    ]
    rows = [
        {
            "sweep": "compare-strategies",
            "kind": "gradual",
            "trial_id": f"{strategy}-{key}",
            **KNOBS,
            "strategy": strategy,
            "target": s,
            "achieved_sparsity": s,
            "top1": top1,
            "val_top1": top1,
            "epochs_trained": 2 if strategy == "independent" else round(4 * s),
        }
        for strategy, key, points, _ in runs
        for s, top1 in points
    ]
    trials = [
        {
            "sweep": "compare-strategies",
            "kind": "gradual",
            "trial_id": f"{strategy}-{key}",
            **KNOBS,
            "strategy": strategy,
            "status": "finished",
            "epochs_total": epochs,
            "cpu_hours": 0.002,
            "allocated_cpu_hours": 0.001 * epochs,
        }
        for strategy, key, _, epochs in runs
    ]
    out = _folder(tmp_path / "compare", rows, trials)
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    order = [name for line in text.splitlines() for name in line.split() if name.endswith(("-k1", "-k2"))]
    assert order == ["independent-k2", "sweep-k1"]  # by validation top-1 at the last target
    assert "strat" in text and "@50" in text and "@90" in text
    table = strategy_table(out).splitlines()
    assert table[1].split() == ["target", "top-1", "indep", "ep", "indep", "top-1", "sweep", "ep", "sweep"]
    assert table[3].split() == ["0.5", "96.0", "2.0", "95.0", "2.0"]
    assert table[4].split() == ["0.9", "88.0", "2.0", "85.0", "4.0"]
    assert "independent    6 epochs, CPU-hours 0.0060 allocated (0.0020 in the loop)" in table
    assert "sweep          4 epochs, CPU-hours 0.0040 allocated (0.0020 in the loop)" in table
    assert max(len(line) for line in table) <= 80
