"""Sweep report: Pareto frontier, the seed table, and the files written (real matplotlib, no Ray)."""

from __future__ import annotations

from pathlib import Path

from ovit_ray.orchestration.results.report import pareto_front, seed_summary, write_report_files


def _row(trial: str, block_size: int, seed: int, target: float, top1: float) -> dict:
    return {
        "trial_id": trial,
        "strategy": "sweep",
        "method": "ovit",
        "block_size": block_size,
        "seed": seed,
        "target_sparsity": target,
        "achieved_sparsity": target,
        "top1": top1,
        "top1_final": top1,
        "epochs": int(target * 10),
        "flops_reduction": 1 / (1 - target),
        "cpu_hours": 0.001 * seed,
        "gpu_hours": 0.0,
        "trial_cpu_hours": 0.002,
        "trial_gpu_hours": 0.0,
    }


ROWS = [
    _row(f"t{b}-{s}", b, s, target, top1)
    for b, tops in ((64, (0.96, 0.96, 0.96)), (16, (0.90, 0.92, 0.94)), (256, (0.5, 0.5, 0.5)))
    for s, top1 in enumerate(tops)
    for target in (0.5, 0.9)
]


def test_pareto_front_drops_points_beaten_on_both_axes() -> None:
    assert pareto_front([(0.5, 0.9), (0.6, 0.8), (0.7, 0.95), (0.9, 0.7)]) == [(0.7, 0.95), (0.9, 0.7)]


def test_seed_summary_groups_by_searched_knob_and_target_with_mean_and_std() -> None:
    table = seed_summary(ROWS)
    assert [(t["block_size"], t["target_sparsity"]) for t in table] == [
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
    assert {
        "top1_vs_sparsity.png",
        "compute_per_strategy.png",
        "top1_vs_block_size.png",
        "seed_summary.md",
    } <= names
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


def _sweep_dir(tmp_path: Path) -> Path:
    """A sweep output as `ovit-ray sweep` writes it: 3 finished trials (lr_max and λ searched), 1 stopped."""
    from ovit_ray.orchestration.results.parquet import append_rows
    from ovit_ray.orchestration.results.schemas import SWEEP_RESULTS, SWEEP_TRIALS
    from ovit_ray.orchestration.specs.run import PLACEMENT_FIELDS, GradualConfig

    out = tmp_path / "quick"
    (out).mkdir()
    (out / "sweep.yaml").write_text("search:\n  objectives: [{metric: top1_final, mode: max}]\n")
    finals = {"t_a": 0.80, "t_b": 0.90, "t_c": 0.90, "t_d": None}  # t_b and t_c tie on the objective
    for i, (trial, final) in enumerate(finals.items()):
        knobs = GradualConfig(
            targets=[0.5, 0.75, 0.9],
            block_size=64,
            num_grads=128,
            damp=10.0 ** -(6 + i),
            lr_max=1e-3 * (i + 1),
        ).model_dump(exclude=PLACEMENT_FIELDS)
        base = {"trial_id": trial, "sweep": "quick", "strategy": "sweep", **knobs}
        if final is None:
            append_rows(
                out / "trials.parquet",
                [
                    {
                        **base,
                        "status": "stopped_early",
                        "epochs_total": 2,
                        "trial_cpu_hours": 0.001,
                        "top1_last": 0.4,
                    }
                ],
                ["trial_id"],
                SWEEP_TRIALS,
            )
            continue
        mean = final - (0.01 if trial == "t_c" else 0.02)  # t_c wins the tie on mean top-1
        rows = [
            {
                **base,
                "target_sparsity": s,
                "achieved_sparsity": s,
                "top1": top1,
                "epochs": e,
                "top1_final": final,
                "top1_mean": mean,
                "epochs_total": 6,
                "trial_cpu_hours": 0.0123,
                "trial_gpu_hours": 0.0,
            }
            for s, top1, e in ((0.5, 0.97, 2), (0.75, 0.95, 4), (0.9, final, 6))
        ]
        append_rows(out / "results.parquet", rows, ["trial_id", "target_sparsity"], SWEEP_RESULTS)
        append_rows(
            out / "trials.parquet",
            [{k: v for k, v in rows[-1].items() if k in SWEEP_TRIALS.names} | {"status": "finished"}],
            ["trial_id"],
            SWEEP_TRIALS,
        )
    return out


def test_report_ranks_trials_marks_the_best_and_fits_80_columns(tmp_path: Path, capsys) -> None:
    from ovit_ray.cli.main import main

    assert main(["report", str(_sweep_dir(tmp_path))]) == 0
    text = capsys.readouterr().out
    lines = [line for line in text.splitlines() if not line.startswith("plot: ")]  # paths: as long as tmp
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

    from ovit_ray.cli.main import main

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
    from ovit_ray.cli.main import main
    from ovit_ray.orchestration.results.parquet import append_rows
    from ovit_ray.orchestration.results.schemas import RUN_RESULTS
    from ovit_ray.orchestration.specs.run import PLACEMENT_FIELDS, GradualConfig
    from ovit_ray.orchestration.train.job import KEY_COLUMNS

    knobs = GradualConfig(targets=[0.5, 0.9]).model_dump(exclude=PLACEMENT_FIELDS)
    runs = [
        ("sweep", "k1", ((0.5, 0.95), (0.9, 0.85))),
        ("independent", "k2", ((0.5, 0.96),)),
        ("independent", "k3", ((0.9, 0.88),)),
    ]
    rows = [
        {
            "run_key": key,
            "run_name": f"{strategy}-{key}",
            "strategy": strategy,
            **knobs,
            "target_sparsity": s,
            "achieved_sparsity": s,
            "top1": top1,
            "epochs": 3,
            "run_total_epochs": 4,
            "run_cpu_hours": 0.002,
            "run_gpu_hours": 0.0,
        }
        for strategy, key, points in runs
        for s, top1 in points
    ]
    append_rows(tmp_path / "results.parquet", rows, KEY_COLUMNS, RUN_RESULTS)
    assert main(["report", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    order = [
        name for line in text.splitlines() for name in line.split() if name.endswith(("-k1", "-k2", "-k3"))
    ]
    assert order == ["independent-k2", "independent-k3", "sweep-k1"]  # by top-1 at each run's last target
    assert "strat" in text and "@50" in text and "@90" in text
