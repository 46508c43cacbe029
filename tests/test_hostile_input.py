"""Hostile input and user mistakes, without Ray: alias bombs, huge counts, secrets in URIs, all-interfaces
binds, cluster files, sync-mlflow from a foreign folder, the output-folder contract, one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from ovit_ray.cli.main import main
from ovit_ray.orchestration.common.secrets import check_no_credentials
from ovit_ray.orchestration.common.stores import default_tracking_uri, sqlite_url
from ovit_ray.orchestration.tracking.client import Tracker
from ovit_ray.orchestration.tracking.outbox import OUTBOX_NAME, OUTBOX_TARGET
from ovit_ray.orchestration.tracking.store import RUN_KEY_TAG
from ovit_ray.orchestration.tune.folder import FolderLock, check_folder, relocate, write_state

ROOT = Path(__file__).resolve().parents[1]
SWEEP = yaml.safe_load((ROOT / "sweeps" / "ci" / "ablation_block_size_digits.yaml").read_text())
BOMB = 'a: &a ["x","x","x","x","x","x","x","x","x"]\n' + "".join(
    f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 9) + "]\n" for i in range(8)
)


@pytest.fixture(autouse=True)
def _spaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OVIT_RAY_SEARCH_SPACES", str(ROOT / "search_spaces"))


def _errors(capsys: pytest.CaptureFixture[str]) -> list[str]:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return err.strip().splitlines()


def _sweep(tmp_path: Path, name: str = "s.yaml", **changes: object) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**SWEEP, **changes}))
    return path


@pytest.mark.slow  # five fresh processes, each importing torch, Ray and MLflow to measure its own peak
def test_alias_bombs_are_refused_fast_in_every_file_kind(tmp_path: Path) -> None:
    """A 0.5 KB file of nested aliases would expand to 9^9 values; each reader refuses it in a fresh process."""
    spaces = tmp_path / "spaces"
    spaces.mkdir()
    (spaces / "bomb.yaml").write_text("params:\n" + "".join(f"  {line}\n" for line in BOMB.splitlines()))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(BOMB)
    space_sweep = _sweep(tmp_path, "space.yaml", search={"space": "bomb"})
    cases = [
        ["sweep", str(sweep), "--dry-run"],
        ["sweep", str(space_sweep), "--dry-run"],
        ["train", str(sweep)],
        ["cluster", "validate", str(sweep)],
    ]
    code = (
        "import resource, sys; from ovit_ray.cli.main import main; rc = main(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
    )
    env = {**os.environ, "OVIT_RAY_SEARCH_SPACES": str(spaces)}
    # The peak of the same command on a one-line file: the imports alone (torch, Ray, MLflow) are ~1 GB.
    (tmp_path / "ok.yaml").write_text("a: 1\n")
    baseline = subprocess.run(
        [sys.executable, "-c", code, "cluster", "validate", str(tmp_path / "ok.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    base_kib = int(baseline.stdout.split()[-1])
    for argv in cases:
        began = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=300, env=env
        )
        assert proc.returncode == 2, (argv, proc.stderr[-2000:])
        assert int(proc.stdout.split()[-1]) - base_kib < 100 * 1024, argv  # KiB: the bomb adds < 100 MiB
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "aliases are expanded" in lines[0] and "Traceback" not in proc.stderr, (
            lines
        )
        assert time.monotonic() - began < 120


def test_huge_counts_and_infinities_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for gradual in (
        {"steps_per_target": 1_000_000_000},
        {"end_epoch": 10_000_000_000},
        {"lr_max": float("inf")},
        {"damp": float("nan")},
        {"window_epochs": 10**40},
    ):
        path = _sweep(tmp_path, gradual={**SWEEP["gradual"], **gradual})
        assert main(["sweep", str(path), "--dry-run", "--out", str(tmp_path / "o")]) == 2
        (line,) = _errors(capsys)
        assert next(iter(gradual)) in line and len(line) < 400
    assert main(["train", "--end-epoch", "10000000000", "--out", str(tmp_path / "t")]) == 2
    (line,) = _errors(capsys)
    assert "--end-epoch" in line and "10000000000" in line
    grid = {"algorithm": "grid", "params": {k: {"grid": list(range(1000))} for k in ("seed", "split_seed")}}
    assert main(["sweep", str(_sweep(tmp_path, search=grid)), "--dry-run"]) == 2
    (line,) = _errors(capsys)
    assert "1000000 trials" in line
    assert not (tmp_path / "o").exists() and not (tmp_path / "t").exists()


def test_one_root_cause_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(SWEEP).replace("targets:", "pattern: 2:4\n  targets:"))
    assert main(["sweep", str(path), "--dry-run"]) == 2
    (line,) = _errors(capsys)
    assert "pattern" in line and "quote it" in line and "2:4" in line
    huge = _sweep(tmp_path, model="x" * 100_000)
    assert main(["sweep", str(huge), "--dry-run"]) == 2
    (line,) = _errors(capsys)
    assert "unknown model" in line and len(line) < 400
    lr = _sweep(
        tmp_path,
        search={
            "algorithm": "random",
            "params": {"lr_min": {"choice": [1e-5, 1e-3]}, "lr_max": {"choice": [1e-2, 5e-4]}},
        },
    )
    assert main(["sweep", str(lr), "--dry-run"]) == 2
    (line,) = _errors(capsys)  # each value alone is fine; together they make a bad trial
    assert "lr_min=0.001" in line and "lr_max=0.0005" in line and "not a valid trial" in line, line
    # Sampled knobs under the default algorithm (grid): one cause, though num_samples is then wrong too
    sampled = _sweep(tmp_path, search={"params": {"damp": {"loguniform": [1e-9, 1e-5]}}, "num_samples": 6})
    assert main(["sweep", str(sampled), "--dry-run"]) == 2
    (line,) = _errors(capsys)
    assert "got sampled damp" in line and "grid, the default" in line, line
    assert main(["sweep", str(tmp_path), "--dry-run"]) == 2
    (line,) = _errors(capsys)
    assert "is a directory" in line


def test_dry_run_checks_model_checkpoint_and_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _sweep(
        tmp_path,
        model="vit_tiny_patch16_22",
        checkpoint="/nope.pt",
        dataset="imagefolder",
        data_root=str(tmp_path / "missing"),
    )
    assert main(["sweep", str(path), "--dry-run"]) == 2
    lines = _errors(capsys)
    assert len(lines) == 3 and all(str(path) in line for line in lines)
    assert (
        "unknown model 'vit_tiny_patch16_22'" in lines[0] and "/nope.pt" in lines[1] and "missing" in lines[2]
    )


SECRET_URIS = [
    "http://mlflow.example:5000/?access_token=SEKRIT",
    "https://mlflow.example/#token=SEKRIT",
    "http://bob:SEKRIT@127.0.0.1:5000",
    "https://h.example/?X-Amz-Signature=SEKRIT",
]


@pytest.mark.parametrize("uri", SECRET_URIS)
def test_secrets_anywhere_in_a_uri_are_refused_and_never_echoed(
    uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sweep", str(_sweep(tmp_path)), "--dry-run", "--mlflow-uri", uri]) == 2
    assert main(["sweep", str(_sweep(tmp_path, mlflow={"uri": uri})), "--dry-run"]) == 2
    assert main(["sweep", str(_sweep(tmp_path, storage=uri.replace("http", "s3", 1))), "--dry-run"]) == 2
    assert main(["sync-mlflow", str(tmp_path), "--mlflow-uri", uri]) == 2
    out, err = capsys.readouterr()
    assert "SEKRIT" not in out + err and err.count("must not carry credentials") == 4


@pytest.mark.parametrize("host", ["0", "0.0.0.0", "::", "::0", "[::]", "0.0", "0:0::0"])
def test_every_all_interfaces_spelling_needs_the_opt_in(
    host: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mlflow-server", "--dir", str(tmp_path / "m"), "--host", host]) == 2
    (line,) = _errors(capsys)
    assert "--allow-public" in line and not (tmp_path / "m").exists()


def test_cluster_validate_reports_every_problem_in_every_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    config["head_start_ray_commands"][1] = config["head_start_ray_commands"][1].replace(
        "--dashboard-host=127.0.0.1", "--dashboard-host=0"
    )
    config["provider"]["security_group"] = {
        "GroupName": "g",
        "IpPermissions": [
            {
                "FromPort": 8265,
                "ToPort": 8265,
                "IpRanges": [{"CidrIp": "0.0.0.0/1"}, {"CidrIp": "128.0.0.0/1"}],
            },
            {"FromPort": 6379, "ToPort": 6379, "Ipv6Ranges": [{"CidrIpv6": "::/0"}]},
        ],
    }
    config["provider"]["aws_credentials"] = {"aws_secret_access_key": "SEKRIT"}
    config["docker"] = {"image": "x", "container_name": "c", "run_options": ["-e HF_TOKEN=SEKRIT"]}
    first = tmp_path / "a.yaml"
    first.write_text(yaml.safe_dump(config))
    broken, missing = tmp_path / "b.yaml", tmp_path / "none.yaml"
    broken.write_text(BOMB)
    assert (
        main(["cluster", "validate", str(first), str(broken), str(missing), str(ROOT / "cluster.yaml")]) == 2
    )
    out, err = capsys.readouterr()
    assert "SEKRIT" not in out + err and "Traceback" not in out + err
    for expected in (
        "'--dashboard-host=0'",
        "IpPermissions.0",
        "IpPermissions.1",
        "aws_credentials.aws_secret_access_key",
        "docker.run_options.0: 'HF_TOKEN=<redacted>'",
    ):
        assert expected in out, out
    assert f"{ROOT / 'cluster.yaml'}: ok" in out and len(err.strip().splitlines()) == 2


def test_sync_mlflow_needs_a_uri_now_and_uploads_only_the_folders_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "job"
    offline = Tracker(out, "e", "http://127.0.0.1:9")  # nothing listens: every call is queued
    run = offline.start_run("r", run_key="k")
    (out / "inside.txt").write_text("ok")
    offline.log_artifact(run, out / "inside.txt")
    secret = tmp_path / "secret.txt"
    secret.write_text("private")
    offline.log_artifact(run, secret)
    assert (out / OUTBOX_NAME).exists()
    assert main(["sync-mlflow", str(out)]) == 2
    (line,) = _errors(capsys)
    assert "--mlflow-uri" in line and "127.0.0.1" in line
    store = default_tracking_uri(tmp_path / "store")
    assert main(["sync-mlflow", str(out), "--mlflow-uri", store]) == 0
    client = Tracker(tmp_path / "store", "e").client
    assert len(client.search_runs([client.get_experiment_by_name("e").experiment_id])) == 1
    uploaded = [p.name for p in (tmp_path / "store" / "artifacts").rglob("*") if p.is_file()]
    assert uploaded == ["inside.txt"]
    assert "secret.txt" in (out / f"{OUTBOX_NAME}.rejected").read_text()


def test_output_folder_contract_before_ray(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ovit_ray.orchestration.kinds.sweep_file import load_sweep
    from ovit_ray.orchestration.tune.driver import run_sweep

    path = _sweep(tmp_path)
    user = tmp_path / "user"
    user.mkdir()
    (user / "sweep.yaml").write_text("mine")
    with pytest.raises(FileExistsError, match="not an ovit-ray sweep folder"):
        run_sweep(load_sweep(path), user)
    assert (
        sorted(p.name for p in user.iterdir()) == ["sweep.yaml"]
        and (user / "sweep.yaml").read_text() == "mine"
    )
    assert main(["sweep", str(path), "--dry-run", "--out", str(user)]) == 2
    assert "not an ovit-ray sweep folder" in _errors(capsys)[0]

    sweep = load_sweep(path)
    out = tmp_path / "out"
    out.mkdir()
    state = check_folder(out, sweep.name, sweep.fingerprint(), resume=False)
    write_state(out, state)
    shutil.copyfile(path, out / "sweep.yaml")
    with FolderLock(out):  # a second writer is refused, naming the holder
        with pytest.raises(FileExistsError, match=f"pid {os.getpid()}"):
            run_sweep(load_sweep(path), out, resume=True)
    for name, content, expected in [
        ("results.parquet", b"PAR1 truncated", "unreadable"),
        ("mlflow.db", b"not sqlite at all" * 100, "is not a SQLite database"),
        ("sweep.json", b"{broken", "damaged"),
    ]:
        (out / name).write_bytes(content)
        with pytest.raises(ValueError, match=expected):
            run_sweep(load_sweep(path), out, resume=True)
        (out / name).unlink()
        if name == "sweep.json":
            write_state(out, state)
    pq.write_table(pa.table({"x": [1]}), out / "results.parquet")
    with pytest.raises(ValueError, match="not a sweep's file"):
        run_sweep(load_sweep(path), out, resume=True)


def test_special_paths_and_moved_folders_keep_mlflow_inside(tmp_path: Path) -> None:
    old = tmp_path / "q 100%20 ?x=1 #frag ü"
    tracker = Tracker(old, "e")
    run = tracker.start_run("r")
    (old / "a.txt").write_text("a")
    tracker.log_artifact(run, old / "a.txt")
    assert sorted(p.name for p in tmp_path.iterdir()) == [old.name]  # nothing created next to it
    assert {p.name for p in old.iterdir()} >= {"mlflow.db", "artifacts"} and list(old.rglob("a.txt"))
    new = tmp_path / "moved ü"
    shutil.copytree(old, new)
    assert relocate(new, {"folder": str(old)})["folder"] == str(new)
    moved = Tracker(new, "e")
    assert moved.find_run({"ovit.run_key": moved.client.get_run(run).data.tags["ovit.run_key"]}) == run
    (new / "b.txt").write_text("b")
    moved.log_artifact(run, new / "b.txt")
    assert list((new / "artifacts").rglob("b.txt")) and not list(old.rglob("b.txt"))


def test_cli_errors_are_one_line_and_internal_errors_point_to_a_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["prune", "--damp", "inf", "--out", str(tmp_path / "p")]) == 2
    assert "damp" in _errors(capsys)[0]
    (tmp_path / "file").write_text("x")
    assert main(["report", str(tmp_path / "file" / "sub")]) == 2
    assert len(_errors(capsys)) == 1
    monkeypatch.setenv("OVIT_RAY_CACHE", str(tmp_path / "cache"))
    import ovit_ray.cli.report as report_cli

    def broken(args: object) -> int:
        raise RuntimeError("boom")

    monkeypatch.setattr(report_cli, "run", broken)
    assert main(["report", str(tmp_path)]) == 70
    (line,) = _errors(capsys)
    assert "internal error (RuntimeError: boom)" in line
    log = Path(line.rsplit("traceback in ", 1)[1])
    assert "Traceback" in log.read_text() and log.is_relative_to(tmp_path / "cache")
    with pytest.raises(RuntimeError, match="boom"):
        main(["--debug", "report", str(tmp_path)])


def _queued(out: Path, records: list[dict[str, object]]) -> None:
    """An outbox as someone else could leave it in a folder (issue 24.1): written by hand, not by a Tracker."""
    out.mkdir(parents=True, exist_ok=True)
    (out / OUTBOX_TARGET).write_text(json.dumps({"uri": "http://h/...", "experiment": "e"}))
    (out / OUTBOX_NAME).write_text("".join(json.dumps(r) + "\n" for r in records))


def test_sync_mlflow_keeps_queued_artifacts_inside_their_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`artifact_path` with `..` or absolute, a symlink leaving the folder, alone or inside a directory
    artifact: each call is refused, nothing outside any folder changes, nothing outside DIR is uploaded."""
    out, store = tmp_path / "job", tmp_path / "store"
    victim = tmp_path / "elsewhere" / "victim"
    victim.mkdir(parents=True)
    (victim / "notes.txt").write_text("mine")
    (tmp_path / "private.txt").write_text("PRIVATE")
    out.mkdir()
    (out / "notes.txt").write_text("overwritten")
    plots = out / "plots"
    plots.mkdir()
    (plots / "ok.txt").write_text("ok")
    (plots / "leak.txt").symlink_to(tmp_path / "private.txt")
    (out / "link.txt").symlink_to(tmp_path / "private.txt")
    (out / "fine.txt").write_text("fine")

    def artifact(path: Path, artifact_path: str | None) -> dict[str, object]:
        return {
            "op": "log_artifact",
            "run_id": "offline-k",
            "path": str(path),
            "artifact_path": artifact_path,
        }

    # store/artifacts/<experiment>/<run>/artifacts/ is four levels below the store: five `..` reach tmp_path
    _queued(
        out,
        [
            {
                "op": "create_run",
                "run_id": "offline-k",
                "run_name": "r",
                "tags": {RUN_KEY_TAG: "k"},
                "start_time": 1,
            },
            artifact(out / "notes.txt", "../../../../../elsewhere/victim"),
            artifact(out / "notes.txt", str(victim)),
            artifact(out / "notes.txt", "a/../../b"),
            artifact(plots, "plots"),
            artifact(out / "link.txt", None),
            artifact(Path("fine.txt"), "kept"),  # relative to the folder: the form a Tracker writes
        ],
    )
    assert main(["sync-mlflow", str(out), "--mlflow-uri", sqlite_url(store / "mlflow.db")]) == 0
    assert (victim / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in victim.iterdir()) == ["notes.txt"]
    uploaded = {p.relative_to(store).as_posix(): p for p in store.rglob("*") if p.is_file()}
    assert all("PRIVATE" not in p.read_text() for p in uploaded.values() if p.suffix == ".txt")
    assert [k for k in uploaded if k.endswith(".txt")] == [k for k in uploaded if k.endswith("kept/fine.txt")]
    rejected = [json.loads(line) for line in (out / f"{OUTBOX_NAME}.rejected").read_text().splitlines()]
    assert len(rejected) == 5
    out_text = capsys.readouterr()
    assert "sent 2 queued call(s)" in out_text.out and "Traceback" not in out_text.err


def test_artifact_paths_are_checked_where_they_are_written(tmp_path: Path) -> None:
    """Defence in depth: the Tracker refuses a bad `artifact_path` when asked, the store when it copies."""
    tracker = Tracker(tmp_path / "out", "e")
    run = tracker.start_run("r")
    (tmp_path / "out" / "a.txt").write_text("a")
    for bad in ("../x", "/abs/x", "a/../../x", "x/./../.."):
        with pytest.raises(ValueError, match="artifact_path"):
            tracker.log_artifact(run, tmp_path / "out" / "a.txt", bad)
        with pytest.raises(ValueError, match="artifact_path"):
            tracker.store.log_artifact(run, tmp_path / "out" / "a.txt", bad)
    # A symlink planted in the store's artifacts folder does not redirect the copy outside it.
    tracker.log_artifact(run, tmp_path / "out" / "a.txt", "sub")
    (copied,) = (tmp_path / "out" / "artifacts").rglob("sub/a.txt")
    (tmp_path / "target").mkdir()
    copied.parent.rename(copied.parent.with_name("moved"))
    copied.parent.symlink_to(tmp_path / "target")
    with pytest.raises(ValueError, match="outside"):
        tracker.log_artifact(run, tmp_path / "out" / "a.txt", "sub")
    assert not list((tmp_path / "target").iterdir())


NEW_SECRET_FORMS = [
    "http://h.example/;token=SEKRIT",
    "http://h.example/x;password=SEKRIT/y",
    "http://h.example/?a=1&password=SEKRIT",
    "http://h.example/?a=1;token=SEKRIT",
    "http://h.example/%3Btoken%3DSEKRIT",
    "postgresql://bob:SEKRIT@db.example/optuna",
    "mysql://db.example/optuna?password=SEKRIT",
]


@pytest.mark.parametrize("uri", NEW_SECRET_FORMS)
def test_every_form_of_a_credential_in_a_storage_url_is_refused(
    uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 24.4: `;token=`, `&password=`, encoded forms and userinfo, for MLflow and Optuna storage
    (`check_no_credentials` is what `sweep --dry-run` and every command naming a store call)."""
    assert main(["sync-mlflow", str(tmp_path), "--mlflow-uri", uri]) == 2
    with pytest.raises(ValueError, match="--optuna-storage must not carry credentials") as err:
        check_no_credentials(uri, "--optuna-storage")
    out, errors = capsys.readouterr()
    assert "SEKRIT" not in out + errors + str(err.value) and errors.count("must not carry credentials") == 1


def test_crash_logs_redact_credentials_in_argv_and_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OVIT_RAY_CACHE", str(tmp_path / "cache"))
    storage = "postgresql://bob:SEKRIT@db.example/optuna"
    monkeypatch.setattr(
        sys,
        "argv",
        ["ovit-ray", "report", str(tmp_path), "--optuna-storage", storage, "--x=http://h/;token=SEKRIT"],
    )
    import ovit_ray.cli.report as report_cli

    def broken(args: object) -> int:
        raise RuntimeError("cannot reach postgresql://bob:SEKRIT@db.example/optuna?sslpassword=SEKRIT")

    monkeypatch.setattr(report_cli, "run", broken)
    assert main(["report", str(tmp_path)]) == 70
    (line,) = _errors(capsys)
    log = Path(line.rsplit("traceback in ", 1)[1]).read_text()
    assert "SEKRIT" not in line + log
    assert "postgresql://db.example/..." in log and "RuntimeError" in log and "Traceback" in log


@pytest.mark.parametrize("device", ["bogus", "cuda", "cuda:99", "cpu:x"])
def test_prune_names_an_unusable_device_in_one_line(
    device: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import torch

    if device.startswith("cuda") and torch.cuda.device_count() > 99:
        pytest.skip("this machine has the device")
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    assert main(["prune", "--device", device, "--out", str(tmp_path / "p")]) == 2
    (line,) = _errors(capsys)
    assert "device" in line and repr(device) in line and not (tmp_path / "p").exists()


def test_prune_refuses_someone_elses_results_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "theirs"
    out.mkdir()
    pq.write_table(pa.table({"name": ["x"], "score": [1.0]}), out / "results.parquet")
    before = (out / "results.parquet").read_bytes()
    for extra in (["--method", "optin", "--flops-ratio", "0.5"], ["--method", "magnitude"]):
        assert main(["prune", *extra, "--out", str(out), "--no-progress"]) == 2
        (line,) = _errors(capsys)
        assert "results.parquet" in line and "--out" in line
    assert (out / "results.parquet").read_bytes() == before


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (["--port", "70000"], "--port"),
        (["--port", "-1"], "--port"),
        (["--host", "::ffff:0.0.0.0"], "--allow-public"),
        (["--host", "[::ffff:0:0]"], "--allow-public"),
    ],
)
def test_mlflow_server_flags_are_checked_before_anything_starts(
    flags: list[str], expected: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["mlflow-server", "--dir", str(tmp_path / "m"), *flags]) == 2
    (line,) = _errors(capsys)
    assert expected in line and not (tmp_path / "m").exists()


def test_mlflow_server_refuses_a_mlflow_db_that_is_not_a_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mlflow.db").write_bytes(b"not sqlite" * 100)
    assert main(["mlflow-server", "--dir", str(tmp_path)]) == 2
    (line,) = _errors(capsys)
    assert "not a SQLite database" in line and "mlflow.db" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db"]


JOIN = (
    "import sys, time; from ovit_ray.orchestration.common.ray_session import ray_session\n"
    "began = time.monotonic()\n"
    "try:\n"
    "    with ray_session(sys.argv[1]):\n"
    "        pass\n"
    "except (OSError, ValueError) as err:\n"
    "    print(f'{type(err).__name__}: {err}'); print(round(time.monotonic() - began)); sys.exit(2)\n"
)


@pytest.mark.ray  # imports Ray and calls ray.init, each in a fresh process (an abandoned join stays there)
def test_ray_addresses_that_do_not_answer_fail_in_one_line_within_the_limit(tmp_path: Path) -> None:
    """Issue 24.12: `--address 127.0.0.1:1` retried forever, `auto` with a stale cluster file hung."""
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "ray_current_cluster").write_text("127.0.0.1:1")
    env = {**os.environ, "OVIT_RAY_CONNECT_TIMEOUT_S": "3", "RAY_TMPDIR": str(tmp_path)}
    env.pop("RAY_ADDRESS", None)
    with socket.socket() as mute:  # accepts connections, never speaks Ray
        mute.bind(("127.0.0.1", 0))
        mute.listen(16)
        port = mute.getsockname()[1]
        for address, expected in [
            (
                "127.0.0.1:1",
                "ConnectionError: Ray cluster at 127.0.0.1:1 is not reachable (Connection refused)",
            ),
            ("auto", "TimeoutError: no Ray cluster answered at auto within 3 s"),
            (f"127.0.0.1:{port}", f"TimeoutError: no Ray cluster answered at 127.0.0.1:{port} within 3 s"),
        ]:
            proc = subprocess.run(
                [sys.executable, "-c", JOIN, address], capture_output=True, text=True, timeout=120, env=env
            )
            assert proc.returncode == 2, (address, proc.stdout, proc.stderr[-2000:])
            message, seconds = proc.stdout.strip().splitlines()[-2:]
            assert message.startswith(expected), message
            assert int(seconds) < 15, (address, seconds)
