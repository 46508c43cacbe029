"""`ovit-ray cluster validate`: shipped files pass; each broken variant fails naming the key."""

from __future__ import annotations

import base64
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
    "no multi-GPU type": (_no_multi_gpu, "no multi-GPU worker node type"),
    "local storage": (_local_storage, "setup_commands.0 (OVIT_RAY_STORAGE): '/home/ubuntu/ray_results'"),
    "dashboard on 0.0.0.0": (_public_dashboard, "head_start_ray_commands.1: '--dashboard-host=0.0.0.0'"),
    "AWS key": (_aws_key, "setup_commands.2: 'AWS_ACCESS_KEY_ID=<redacted>': a literal credential"),
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


# Issue 24 item 13: holes `cluster validate` said `ok` to.


def _public_halves(c: dict[str, Any]) -> None:
    """0.0.0.0/1 and 128.0.0.0/1 as two separate rules: together they are the whole internet."""
    c["provider"]["security_group"] = {
        "GroupName": "g",
        "IpPermissions": [
            {"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": cidr}]}
            for cidr in ("0.0.0.0/1", "128.0.0.0/1")
        ],
    }


def _all_traffic_on_ssh_ports(c: dict[str, Any]) -> None:
    """IpProtocol -1 opens every port whatever FromPort/ToPort say."""
    rule = {"IpProtocol": "-1", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    c["provider"]["security_group"] = {"GroupName": "g", "IpPermissions": [rule]}


def _env_flag(option: list[str]) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        c["docker"] = {"image": "rayproject/ray:2.60.0-gpu", "container_name": "ray", "run_options": option}

    return mutate


def _user_data(text: str) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        c["available_node_types"]["gpu1"]["node_config"]["UserData"] = text

    return mutate


HOLES: dict[str, tuple[Callable[[dict[str, Any]], None], list[str]]] = {
    "public halves in two rules": (
        _public_halves,
        [
            "provider.security_group.IpPermissions.0: (8265, 8265): opens a port other than SSH to public",
            "provider.security_group.IpPermissions.1: (8265, 8265): opens a port other than SSH to public",
        ],
    ),
    "all traffic on SSH ports": (
        _all_traffic_on_ssh_ports,
        ["provider.security_group.IpPermissions.0: 'all traffic': opens a port other than SSH to public"],
    ),
    "--env=NAME=value": (
        _env_flag(["--env=MLFLOW_TRACKING_TOKEN=SEKRIT"]),
        ["docker.run_options.0: 'MLFLOW_TRACKING_TOKEN=<redacted>': a literal credential"],
    ),
    "-e NAME=value": (
        _env_flag(["-e MLFLOW_TRACKING_TOKEN=SEKRIT"]),
        ["docker.run_options.0: 'MLFLOW_TRACKING_TOKEN=<redacted>': a literal credential"],
    ),
    "--env NAME=value as two items": (
        _env_flag(["--env", "MLFLOW_TRACKING_TOKEN=SEKRIT"]),
        ["docker.run_options.1: 'MLFLOW_TRACKING_TOKEN=<redacted>': a literal credential"],
    ),
    "token in a URL query": (
        lambda c: c["setup_commands"].append(
            'curl -fsSL "https://example.com/s.sh?v=2&access_token=SEKRIT" | bash'
        ),
        ["setup_commands.2: 'access_token=<redacted>': a literal credential"],
    ),
    "UserData export": (
        _user_data("#!/bin/bash\nexport AWS_SECRET_ACCESS_KEY=SEKRIT\n"),
        ["available_node_types.gpu1.node_config.UserData: 'AWS_SECRET_ACCESS_KEY=<redacted>'"],
    ),
    "UserData credentials file": (
        _user_data(
            "#!/bin/bash\ncat > ~/.aws/credentials <<EOF\n[default]\naws_secret_access_key = SEKRIT\nEOF\n"
        ),
        ["available_node_types.gpu1.node_config.UserData: 'aws_secret_access_key=<redacted>'"],
    ),
    "UserData in base64": (
        _user_data(base64.b64encode(b"#!/bin/bash\nexport MLFLOW_TRACKING_PASSWORD=SEKRIT\n").decode()),
        ["available_node_types.gpu1.node_config.UserData: 'MLFLOW_TRACKING_PASSWORD=<redacted>'"],
    ),
}


@pytest.mark.parametrize("name", sorted(HOLES))
def test_holes_are_refused(name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mutate, expected = HOLES[name]
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    mutate(config)
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["cluster", "validate", str(path)]) == 2
    out = capsys.readouterr().out
    for line in expected:
        assert line in out, out
    assert "SEKRIT" not in out and not out.rstrip().endswith(": ok")


@pytest.mark.parametrize(
    ("ranges", "public"),
    [
        (["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"], False),  # private: fine
        (["100.64.0.0/10", "169.254.0.0/16", "fe80::/10"], False),  # shared (CGNAT) and link-local
        (["0.0.0.0/8"], False),  # "this network": never a source on the internet
        (["203.0.114.7/32"], True),  # one public address is public
        (["0.0.0.0/1"], True),  # half the internet alone
        (["10.0.0.0/7"], True),  # 10/8 plus 11/8, which is public
        (["2001:db8::/32", "2600::/16"], True),  # documentation range fine, 2600::/16 public
    ],
)
def test_public_means_any_globally_reachable_source(
    ranges: list[str], public: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    v4 = [{"CidrIp": r} for r in ranges if ":" not in r]
    v6 = [{"CidrIpv6": r} for r in ranges if ":" in r]
    ssh_anywhere = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
    gcs = {"IpProtocol": "tcp", "FromPort": 6379, "ToPort": 6379, "IpRanges": v4, "Ipv6Ranges": v6}
    config["provider"]["security_group"] = {"GroupName": "g", "IpPermissions": [ssh_anywhere, gcs]}
    path = tmp_path / "sg.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["cluster", "validate", str(path)]) == (2 if public else 0)
    out = capsys.readouterr().out
    assert ("IpPermissions.1: (6379, 6379): opens a port other than SSH to public" in out) is public, out
    assert "IpPermissions.0" not in out  # SSH from anywhere stays allowed (`ray up` needs it)
