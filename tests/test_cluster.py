"""`ovit-ray cluster validate`: shipped files pass; each broken variant fails naming the key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from ovit_ray.cli.main import main

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted(REPO.glob("cluster*.yaml"))


def test_shipped_files_pass(capsys: pytest.CaptureFixture[str]) -> None:
    assert {p.name for p in SHIPPED} >= {"cluster.yaml", "cluster_gcp.yaml"}
    assert main(["cluster", "validate", *map(str, SHIPPED)]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{p}: ok" for p in SHIPPED]


def _no_gpu(c: dict[str, Any]) -> None:
    for spec in c["available_node_types"].values():
        spec["resources"]["GPU"] = 0


def _no_multi_gpu(c: dict[str, Any]) -> None:
    del c["available_node_types"]["gpu8"]


def _local_storage(c: dict[str, Any]) -> None:
    c["setup_commands"][0] = "echo 'export OVIT_RAY_STORAGE=/home/ubuntu/ray_results' >> ~/.bashrc"


def _public_dashboard(c: dict[str, Any]) -> None:
    c["head_start_ray_commands"][1] = c["head_start_ray_commands"][1].replace("127.0.0.1", "0.0.0.0")


def _aws_key(c: dict[str, Any]) -> None:
    c["setup_commands"].append("export AWS_ACCESS_KEY_ID=AKIAABCDEFGHIJKLMNOP")


def _literal_password(c: dict[str, Any]) -> None:
    c["setup_commands"].append("export MLFLOW_TRACKING_PASSWORD=hunter2")


def _auth_disabled(c: dict[str, Any]) -> None:
    c["worker_start_ray_commands"][1] = c["worker_start_ray_commands"][1].replace(
        "RAY_AUTH_MODE=token", "RAY_AUTH_MODE=disabled"
    )


def _typo(c: dict[str, Any]) -> None:
    c["idle_timout_minutes"] = c.pop("idle_timeout_minutes")


def _fractional_gpu(c: dict[str, Any]) -> None:
    c["available_node_types"]["gpu1"]["resources"]["GPU"] = 0.5


def _warm_gpu(c: dict[str, Any]) -> None:
    c["available_node_types"]["gpu1"]["min_workers"] = 1


BROKEN: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "no GPU type": (_no_gpu, "available_node_types: ['gpu1', 'gpu8']: no worker node type declares"),
    "no multi-GPU type": (_no_multi_gpu, "no multi-GPU worker type"),
    "local storage": (_local_storage, "setup_commands.0 (OVIT_RAY_STORAGE): '/home/ubuntu/ray_results'"),
    "dashboard on 0.0.0.0": (_public_dashboard, "head_start_ray_commands.1: '--dashboard-host=0.0.0.0'"),
    "AWS key": (_aws_key, "setup_commands.2: '<redacted>': contains an AWS access key id"),
    "literal password": (_literal_password, "'MLFLOW_TRACKING_PASSWORD=<redacted>': a literal credential"),
    "auth disabled": (_auth_disabled, "worker_start_ray_commands.1: 'RAY_AUTH_MODE=disabled'"),
    "typo key": (_typo, "'idle_timout_minutes' was unexpected"),
    "fractional GPU": (_fractional_gpu, "available_node_types.gpu1.resources.GPU: 0.5: Ray schema"),
    "GPU min_workers": (_warm_gpu, "available_node_types.gpu1.min_workers: 1: GPU nodes must scale to zero"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_variant_fails_naming_the_key(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mutate, expected = BROKEN[name]
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    mutate(config)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["cluster", "validate", str(path)]) == 2
    out = capsys.readouterr().out
    assert expected in out, out
    assert "AKIAABCDEFGHIJKLMNOP" not in out and "hunter2" not in out
    assert not out.rstrip().endswith(": ok")


def test_missing_and_malformed_files_are_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cluster", "validate", str(tmp_path / "nope.yaml")]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_workers: [1,\n")
    assert main(["cluster", "validate", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "not found" in err[0] and "not valid YAML" in err[1]
