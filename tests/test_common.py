"""The shared helpers of `orchestration/common`: atomic writes, network helpers, secrets (no Ray)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ovit_ray.orchestration.common.atomic import write_atomic, write_json_atomic
from ovit_ray.orchestration.common.net import binds_all_interfaces, free_ports, port_in_use
from ovit_ray.orchestration.common.secrets import check_no_credentials, redact_uri, uri_secret


def test_atomic_write_replaces_whole_files_and_leaves_nothing_behind_on_failure(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "state.json", {"a": Path("x")})
    assert json.loads(path.read_text()) == {"a": "x"}
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by others like any result file

    def broken(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(path, broken)
    assert json.loads(path.read_text()) == {"a": "x"} and [p.name for p in tmp_path.iterdir()] == [
        "state.json"
    ]


def test_net_helpers() -> None:
    ports = free_ports(3)
    assert len(set(ports)) == 3 and not any(port_in_use(p) for p in ports)
    assert all(binds_all_interfaces(h) for h in ("0.0.0.0", "0", "::", "[::]", "", "*", "0x0"))
    assert not any(binds_all_interfaces(h) for h in ("127.0.0.1", "10.0.0.1", "localhost"))


def test_secrets_never_echo_the_uri() -> None:
    assert uri_secret("http://u:p@host/x") and uri_secret("https://h/?sig=1") and uri_secret("https://h/#t")
    assert uri_secret("/tmp/a?b#c") is None and redact_uri("https://u:p@host:5000/x?y") == "https://host/..."
    with pytest.raises(ValueError, match="must not carry credentials") as err:
        check_no_credentials("https://user:hunter2@mlflow.example/")
    assert "hunter2" not in str(err.value)
