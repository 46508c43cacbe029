"""Issue 24, the seams between commands: damaged or foreign stores refused in one line before Ray, torch or a
dataset loads (24.9); a sweep's place in shared Tune storage is its own (24.2); sweeps whose trials failed
never exit 0 (24.6); moved folders resume and export from their own files (24.7); a transfer of a folder with
several source trials runs every job once (24.5). The toy kind here makes failures and stops happen at known
trials, through the real CLI, driver, MLflow and (in the `ray` tests) Ray Tune."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient
from pydantic import BaseModel, ConfigDict

from ovit_ray.cli.main import main
from ovit_ray.knobs import Knobs, knob
from ovit_ray.orchestration.common.stores import sqlite_url
from ovit_ray.orchestration.kinds import ExperimentKind, Host, register_kind
from ovit_ray.orchestration.kinds.sweep_file import load_sweep
from ovit_ray.orchestration.results.parquet import read_rows
from ovit_ray.orchestration.tune.folder import (
    PLACE_FILE,
    check_folder,
    check_place,
    experiment_name,
    write_state,
)

HERE = Path(__file__).resolve().parent
MODULE = Path(__file__).stem
GRADUAL = {
    "name": "g",
    "model": "digits-vit",
    "gradual": {"targets": [0.5], "window_epochs": 1, "max_steps_per_epoch": 1},
}


class SeamSpec(Knobs):
    value: int = knob(0, "the trial's number; its top-1 is value / 10", ge=0)
    folder: str = knob("", "where each start of a trial adds a line to started-<value>")
    fail_at: int = knob(-1, "the value whose trial raises an error")
    stop_at: int = knob(-1, "the value whose trial stops the sweep as Ctrl-C would, until <folder>/release")


class SeamResult(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@register_kind
class Seam(ExperimentKind):
    name = "seam"
    summary = "a test's kind: fails or stops at a chosen trial"
    spec = SeamSpec
    result = SeamResult
    target_name = "step"
    targets_knob = None

    def targets(self, spec: Any) -> list[float]:
        return [1.0]

    def run(self, spec: Any, host: Host) -> None:
        from ovit_ray.training.result import TargetResult

        folder = Path(spec.folder)
        with (folder / f"started-{spec.value}").open("a") as marks:
            marks.write("started\n")
        if spec.value == spec.fail_at:
            raise RuntimeError(f"trial {spec.value} broke")
        if spec.value == spec.stop_at and not (folder / "release").exists():
            raise KeyboardInterrupt  # what Ctrl-C raises in this process
        host.target(TargetResult(target=1.0, top1=spec.value / 10, val_top1=spec.value / 10))


def _seam_sweep(
    path: Path, marks: Path, *, name: str = "seam", search: dict | None = None, **top: Any
) -> Path:
    """A sweep file of the seam kind; its trials mark their starts in `marks`."""
    marks.mkdir(parents=True, exist_ok=True)
    options = {k: top.pop(k) for k in ("fail_at", "stop_at") if k in top}
    sweep = {
        "name": name,
        "imports": [MODULE],
        "seam": {"folder": str(marks), **options},
        "search": search or {"params": {"value": {"grid": [1, 2]}}},
        "resources": {"cpus_per_worker": 0.5},
        "mlflow": {"experiment": "seams"},
        **top,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(sweep))
    return path


def _starts(marks: Path, value: int) -> int:
    path = marks / f"started-{value}"
    return path.read_text().count("started") if path.exists() else 0


def _statuses(out: Path) -> dict[int, str]:
    return {t["value"]: t["status"] for t in read_rows(out / "trials.parquet")}


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _resumable(sweep_path: Path, out: Path, **changes: Any) -> dict[str, Any]:
    """A sweep folder as a stopped run leaves it (its state and sweep copy), without running anything."""
    sweep = load_sweep(sweep_path)
    out.mkdir(parents=True)
    state = {**check_folder(out, sweep.name, sweep.fingerprint(), resume=False), **changes}
    write_state(out, state)
    shutil.copyfile(sweep_path, out / "sweep.yaml")
    return state


# -- 24.9: damaged and foreign stores, before Ray, torch or a dataset ------------------------------------


def test_damaged_and_unusable_stores_are_one_line_before_ray_or_torch_loads(tmp_path: Path) -> None:
    """Each case runs the real command (not --dry-run, then --dry-run) in one fresh process, which must end
    every case with exit 2 and one line, never having imported Ray or torch, and change no file."""
    sweep = tmp_path / "g.yaml"
    sweep.write_text(yaml.safe_dump(GRADUAL))
    shared = tmp_path / "shared"
    on_shared = tmp_path / "g-shared.yaml"
    on_shared.write_text(yaml.safe_dump({**GRADUAL, "storage": str(shared)}))
    cases: list[tuple[list[str], str]] = []

    out = tmp_path / "optuna-db"
    _resumable(sweep, out)
    (out / "optuna.db").write_bytes(b"garbage " * 64)
    cases.append((["sweep", str(sweep), "--out", str(out), "--resume"], "optuna.db is not a SQLite database"))

    out = tmp_path / "tuner-here"
    state = _resumable(sweep, out)
    place = out / "ray" / experiment_name(state)
    place.mkdir(parents=True)
    (place / PLACE_FILE).write_text(json.dumps({"sweep_id": state["sweep_id"]}))
    (place / "tuner.pkl").write_bytes(b"not a pickle")
    cases.append((["sweep", str(sweep), "--out", str(out), "--resume"], "Tune's saved tuner is damaged"))

    out = tmp_path / "tuner-shared"
    state = _resumable(on_shared, out)
    place = shared / experiment_name(state)
    place.mkdir(parents=True)
    (place / PLACE_FILE).write_text(json.dumps({"sweep_id": state["sweep_id"]}))
    (place / "tuner.pkl").write_bytes(b"\x80" + b"\x00" * 7)  # truncated
    cases.append((["sweep", str(on_shared), "--out", str(out), "--resume"], "Tune's saved tuner is damaged"))

    out = tmp_path / "occupied"
    state = _resumable(on_shared, out)
    place = shared / experiment_name(state)
    place.mkdir(parents=True)
    (place / PLACE_FILE).write_text(json.dumps({"sweep_id": "someoneelse"}))
    cases.append(
        (["sweep", str(on_shared), "--out", str(out), "--resume"], "already holds sweep someoneelse")
    )

    out = tmp_path / "foreign-place"
    state = _resumable(on_shared, out)
    (shared / experiment_name(state)).mkdir(parents=True)
    (shared / experiment_name(state) / "tuner.pkl").write_bytes(b"a user's own file")
    cases.append(
        (["sweep", str(on_shared), "--out", str(out), "--resume"], "holds files that are not this sweep's")
    )

    finished = tmp_path / "truncated"
    _resumable(sweep, finished, finished=True)
    (finished / "trials.parquet").write_bytes(b"PAR1\x00\x00")
    cases.append((["sweep", str(sweep), "--out", str(finished), "--resume"], "trials.parquet: unreadable"))

    new = tmp_path / "new"
    for url, expected in [
        ("sqlite:////proc/study.db", "/proc is not a folder this user can write"),
        (sqlite_url(tmp_path / "no" / "such" / "study.db"), "is not a folder"),
        ("postgresql://db.example/study", "postgresql URLs need the Python driver"),
        ("bogus://db.example/study", "'bogus' names no database"),
    ]:
        cases.append((["sweep", str(sweep), "--out", str(new), "--optuna-storage", url], expected))
    cases += [([*argv, "--dry-run"], expected) for argv, expected in cases]
    before = _tree(tmp_path)
    code = (
        "import json, sys; from ovit_ray.cli.main import main; "
        "codes = [main(argv) for argv in json.loads(sys.argv[1])]; "
        "print(json.dumps({'codes': codes, 'loaded': sorted({'ray', 'torch', 'optuna'} & set(sys.modules))}))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps([argv for argv, _ in cases])],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    lines = proc.stderr.strip().splitlines()
    assert result["codes"] == [2] * len(cases) and len(lines) == len(cases), proc.stderr
    for line, (argv, expected) in zip(lines, cases, strict=True):
        assert line.startswith("ovit-ray sweep: error: ") and expected in line, (argv, line)
    assert result["loaded"] == []  # refused before Ray, torch or Optuna was imported
    assert _tree(tmp_path) == before and not new.exists()  # nothing written, nothing changed
    state = json.loads((finished / "sweep.json").read_text())
    assert state["finished"] and not state["interrupted"]  # never both


def test_a_place_in_storage_is_the_sweeps_own_or_refused(tmp_path: Path) -> None:
    """A user's `tuner.pkl` where a sweep would write, or another sweep of the same name there: refused,
    the files untouched; the sweep's own place (its id in the marker) is accepted."""
    storage = str(tmp_path)
    assert check_place(storage, "s-abc", "abc", resume=False) is False  # nothing there yet
    (tmp_path / "s-abc").mkdir()
    (tmp_path / "s-abc" / "tuner.pkl").write_bytes(b"someone's")
    for resume in (False, True):
        with pytest.raises(FileExistsError, match="holds files that are not this sweep's"):
            check_place(storage, "s-abc", "abc", resume)
    (tmp_path / "s-abc" / PLACE_FILE).write_text('{"sweep_id": "xyz"}')
    with pytest.raises(FileExistsError, match="already holds sweep xyz"):
        check_place(storage, "s-abc", "abc", resume=True)
    (tmp_path / "s-abc" / PLACE_FILE).write_text("{not json")
    with pytest.raises(FileExistsError, match="not this sweep's"):
        check_place(storage, "s-abc", "abc", resume=True)
    assert (tmp_path / "s-abc" / "tuner.pkl").read_bytes() == b"someone's"
    (tmp_path / "s-def").mkdir()
    (tmp_path / "s-def" / PLACE_FILE).write_text('{"sweep_id": "def"}')
    assert check_place(storage, "s-def", "def", resume=True) is True


# -- 24.6: failed trials never exit 0; a depth beyond the model fails the dry-run ------------------------


def test_a_local_sweep_whose_trial_failed_exits_1_and_says_how_many(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _seam_sweep(
        tmp_path / "s.yaml",
        tmp_path / "marks",
        fail_at=2,
        search={"params": {"value": {"grid": [1, 2, 3]}}},
        resources={"local": True},
    )
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "2 finished, 0 stopped early, 1 failed" in printed and "1 trial(s) failed" in printed, printed
    trials = read_rows(out / "trials.parquet")
    assert {t["value"]: t["status"] for t in trials} == {1: "finished", 2: "failed", 3: "finished"}
    assert "trial 2 broke" in next(t["error"] for t in trials if t["value"] == 2)
    assert main(["sweep", str(path), "--out", str(out), "--resume"]) == 1  # still not complete
    assert [_starts(tmp_path / "marks", v) for v in (1, 2, 3)] == [1, 1, 1]


def test_a_depth_beyond_the_model_in_any_sampled_value_fails_the_dry_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sampled knobs are checked at every value they can take (a choice, both ends of a range), not only
    the first: `attention: {randint: [1, 8]}` on 4 blocks failed its trials after Ray started."""
    for params, expected in [
        ({"attention": {"randint": [1, 8]}}, "depth.attention: removes 8 of the model's 4 blocks"),
        ({"activation": {"choice": [1, 100]}}, "depth.activation: removes 100 of the model's 4 blocks"),
    ]:
        path = tmp_path / "d.yaml"
        depth = {"attention": 1, "activation": 1}
        search = {"algorithm": "random", "num_samples": 2, "params": params}
        path.write_text(
            yaml.safe_dump({"name": "d", "model": "digits-vit", "depth": depth, "search": search})
        )
        assert main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "o")]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert expected in line and str(path) in line, line
    assert not (tmp_path / "o").exists()


# -- 24.7: moved folders ----------------------------------------------------------------------------


def test_a_stopped_local_sweep_moved_with_mv_resumes_from_its_new_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Trial 2 stops the sweep as Ctrl-C would (exit 130); the folder is `mv`ed; the resume from the new
    path finishes it there (MLflow store included) without running trial 1 again, and the old path stays
    gone. A second resume of the finished, moved again folder changes nothing."""
    marks = tmp_path / "marks"
    path = _seam_sweep(
        tmp_path / "s.yaml",
        marks,
        stop_at=2,
        search={"params": {"value": {"grid": [1, 2, 3]}}},
        resources={"local": True},
    )
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 130
    assert json.loads((out / "sweep.json").read_text())["interrupted"]
    assert _statuses(out) == {1: "finished", 2: "interrupted"}
    moved = tmp_path / "moved 100%20 ?x #y"
    out.rename(moved)
    (marks / "release").touch()
    capsys.readouterr()
    assert main(["sweep", str(path), "--out", str(moved), "--resume"]) == 0
    shown = capsys.readouterr().out
    assert "3 finished, 0 stopped early, 0 failed" in shown
    assert (
        "1 of them ended before this run" in shown and "3 done, 0 stopped, 0 failed, 0 running of 3" in shown
    )
    assert _statuses(moved) == {1: "finished", 2: "finished", 3: "finished"}
    assert [_starts(marks, v) for v in (1, 2, 3)] == [1, 2, 1]  # trial 1 did not run again
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["marks", "s.yaml", moved.name]
    )
    state = json.loads((moved / "sweep.json").read_text())
    assert state["finished"] and not state["interrupted"] and state["folder"] == str(moved)
    client = MlflowClient(sqlite_url(moved / "mlflow.db"))
    runs = client.search_runs([client.get_experiment_by_name("seams").experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}  # the sweep's and 3 trials'

    again = tmp_path / "again"
    moved.rename(again)
    before = read_rows(again / "results.parquet")
    assert main(["sweep", str(path), "--out", str(again), "--resume"]) == 0
    assert "3 finished" in capsys.readouterr().out
    assert read_rows(again / "results.parquet") == before and [_starts(marks, v) for v in (1, 2, 3)] == [
        1,
        2,
        1,
    ]


@pytest.mark.slow  # a real gradual trial (the digits preset, one step per epoch)
def test_a_finished_sweep_moved_with_mv_resumes_and_exports_its_own_files(
    digits_preset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OVIT_RAY_CACHE", str(digits_preset.parent))
    path = tmp_path / "g.yaml"
    path.write_text(yaml.safe_dump({**GRADUAL, "resources": {"local": True}}))
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 0
    (row,) = read_rows(out / "results.parquet")
    assert row["kept_model"] and not Path(row["kept_model"]).is_absolute()
    moved = tmp_path / "moved"
    out.rename(moved)
    capsys.readouterr()
    assert main(["sweep", str(path), "--out", str(moved), "--resume"]) == 0
    assert "1 finished, 0 stopped early, 0 failed" in capsys.readouterr().out
    exported = tmp_path / "best.safetensors"
    assert main(["export", str(moved), "--out", str(exported)]) == 0
    card = json.loads(exported.with_suffix(".json").read_text())
    assert Path(card["source"]["checkpoint"]).is_relative_to(moved)
    assert not out.exists()


# -- 24.5: a transfer of several source trials ---------------------------------------------------------


@pytest.fixture
def sources(tmp_path: Path) -> Path:
    """A sources folder with two trials' kept models (same file name, different trials), real checkpoints."""
    import torch
    from source_folders import kept_model, write_sources

    from ovit_ray.models import create_model, save_checkpoint
    from ovit_ray.pruning import DEFAULT_PATTERNS, MaskSet, select_prunable

    folder = write_sources(tmp_path / "sources", ["digits-vit"], ["ovit", "magnitude"])
    torch.manual_seed(0)
    model = create_model("digits-vit")
    masks = {
        n: p.detach().abs() > p.detach().abs().median()
        for n, p in select_prunable(model, DEFAULT_PATTERNS).items()
    }
    MaskSet(masks).apply(model)
    for method in ("ovit", "magnitude"):
        meta = {"target": 0.5, "method": method, "model": "digits-vit", "trial": f"digits-vit-{method}"}
        (folder / kept_model("digits-vit", method)).parent.mkdir(parents=True)
        save_checkpoint(folder / kept_model("digits-vit", method), model, masks, meta)
    return folder


def _transfer_argv(sources: Path, out: Path) -> list[str]:
    return [
        "transfer",
        str(sources),
        "--dataset",
        "lfw",
        "--mode",
        "sparse",
        "dense",
        "--no-dense-source",
        "--epochs",
        "1",
        "--max-steps-per-epoch",
        "1",
        "--warmup-epochs",
        "0",
        "--light",
        "--out",
        str(out),
    ]


@pytest.mark.slow  # four tiny fine-tunings in a child process, then in this one
def test_transfer_of_two_source_trials_runs_every_job_once_and_resumes_only_the_rest(
    sources: Path, tmp_path: Path
) -> None:
    """Stopped (SIGINT) once its first job has finished, then run again: every source x mode job ends
    finished under its own key, the jobs finished before the stop are not run again, and a third run
    changes nothing."""
    out = tmp_path / "t"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ovit_ray.cli.main", *_transfer_argv(sources, out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 600
    while not ((out / "trials.parquet").exists() and read_rows(out / "trials.parquet")):
        assert proc.poll() is None, f"the transfer ended early: {proc.stderr.read() if proc.stderr else ''}"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(120) == 130
    first = {t["trial_id"]: t for t in read_rows(out / "trials.parquet") if t["status"] == "finished"}
    assert 1 <= len(first) < 4
    assert main(_transfer_argv(sources, out)) == 0
    trials = read_rows(out / "trials.parquet")
    rows = read_rows(out / "results.parquet")
    assert len(trials) == 4 and {t["status"] for t in trials} == {"finished"}
    jobs = {(r["source_trial"], r["mode"]) for r in rows}
    assert jobs == {(f"digits-vit-{m}", mode) for m in ("ovit", "magnitude") for mode in ("sparse", "dense")}
    assert len(rows) == 4 and len({r["trial_id"] for r in rows}) == 4  # every source its own key
    for trial_id, before in first.items():  # finished before the stop: kept, not run again
        again = next(t for t in trials if t["trial_id"] == trial_id)
        assert again["trial_seconds"] == before["trial_seconds"]
    client = MlflowClient(sqlite_url(out / "mlflow.db"))
    experiment = client.get_experiment_by_name("ovit-ray-transfer").experiment_id
    children = client.search_runs([experiment], "tags.`ovit.role` = 'trial'")
    assert len(children) == 4 and {r.info.status for r in children} == {"FINISHED"}
    assert main(_transfer_argv(sources, out)) == 0
    assert read_rows(out / "results.parquet") == rows


# -- Ray Tune --------------------------------------------------------------------------------------------


@pytest.mark.ray
def test_two_sweeps_of_one_name_on_one_storage_keep_their_own_trials(
    tmp_path: Path, ray_local: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two sweep files named alike on one `storage:`: each finishes with its own trials in its own place,
    a user's files in the storage stay as they were, the first's resume (moved with `mv` first) reports
    its own counts and runs nothing again; its Optuna study holds its own completed trials."""
    import optuna

    storage = tmp_path / "shared"
    (storage / "same").mkdir(parents=True)  # where an older version put a sweep named `same`
    (storage / "same" / "tuner.pkl").write_bytes(b"a user's tuner")
    (storage / "tuner.pkl").write_bytes(b"another")
    marks_a, marks_b = tmp_path / "marks-a", tmp_path / "marks-b"
    first = _seam_sweep(
        tmp_path / "a.yaml",
        marks_a,
        name="same",
        search={"algorithm": "optuna", "num_samples": 3, "params": {"value": {"randint": [0, 1000]}}},
        storage=str(storage),
    )
    second = _seam_sweep(tmp_path / "b.yaml", marks_b, name="same", storage=str(storage))
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    assert main(["sweep", str(first), "--out", str(out_a)]) == 0
    assert main(["sweep", str(second), "--out", str(out_b)]) == 0
    assert _statuses(out_b) == {1: "finished", 2: "finished"}
    ran_a = sorted(int(p.name.split("-")[1]) for p in marks_a.glob("started-*"))
    assert len(read_rows(out_a / "trials.parquet")) == 3 and set(_statuses(out_a)) == set(ran_a)
    places = {
        json.loads((storage / name / PLACE_FILE).read_text())["sweep_id"]: name
        for name in os.listdir(storage)
        if (storage / name / PLACE_FILE).exists()
    }
    ids = {json.loads((out / "sweep.json").read_text())["sweep_id"] for out in (out_a, out_b)}
    assert set(places) == ids and all(places[i] == f"same-{i}" for i in ids)
    assert (storage / "same" / "tuner.pkl").read_bytes() == b"a user's tuner"
    assert (storage / "tuner.pkl").read_bytes() == b"another"

    moved = tmp_path / "a-moved"
    out_a.rename(moved)
    capsys.readouterr()
    assert main(["sweep", str(first), "--out", str(moved), "--resume"]) == 0
    assert "3 finished, 0 stopped early, 0 failed" in capsys.readouterr().out
    assert sum(_starts(marks_a, v) for v in ran_a) == 3  # nothing ran again
    state = json.loads((moved / "sweep.json").read_text())
    assert state["finished"] and not state["interrupted"] and not out_a.exists()
    study = optuna.load_study(study_name=state["study_name"], storage=sqlite_url(moved / "optuna.db"))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 3


@pytest.mark.ray
def test_a_tune_sweep_whose_trial_failed_exits_1_and_says_how_many(
    tmp_path: Path, ray_local: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _seam_sweep(tmp_path / "s.yaml", tmp_path / "marks", fail_at=2, resources={"max_failures": 0})
    out = tmp_path / "out"
    assert main(["sweep", str(path), "--out", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "1 finished, 0 stopped early, 1 failed" in printed and "1 trial(s) failed" in printed, printed
    assert _statuses(out) == {1: "finished", 2: "failed"}
    assert main(["sweep", str(path), "--out", str(out), "--resume"]) == 1
    assert "1 trial(s) failed" in capsys.readouterr().out
