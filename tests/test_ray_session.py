"""Our commands shut down only the Ray instance they started, and ask for token auth where Ray reads it.

Real Ray, in this process: `ray` is imported before any command runs, as in a script or a notebook
(where setting RAY_AUTH_MODE "before ray is imported" did nothing).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray
import yaml

from ovit_ray.cli.main import main
from ovit_ray.orchestration.cluster.local import start_head
from ovit_ray.orchestration.common.ray_session import ray_session, reload_ray_auth

pytestmark = pytest.mark.ray
TINY = {"targets": [0.5], "window_epochs": 1, "num_grads": 16, "block_size": 32, "max_steps_per_epoch": 2}


@pytest.fixture
def env() -> Iterator[pytest.MonkeyPatch]:
    """`monkeypatch` for Ray's auth variables: Ray caches them, so it re-reads them once they are back
    (a later `ray.init` in this process would otherwise disagree with the instance it starts)."""
    with pytest.MonkeyPatch.context() as patch:
        yield patch
    reload_ray_auth()


def _train_args(out: Path) -> list[str]:
    args = ["train", "--out", str(out)]
    for key, value in TINY.items():
        flag = f"--{key.replace('_', '-')}"
        args += [flag, *map(str, value)] if isinstance(value, list) else [flag, str(value)]
    return args


def test_train_shuts_down_the_ray_it_started(tmp_path: Path, digits_preset: Path) -> None:
    assert not ray.is_initialized()
    assert main(_train_args(tmp_path / "out")) == 0
    assert not ray.is_initialized()  # was left running


def test_sweep_leaves_a_ray_started_by_its_caller_running(tmp_path: Path, digits_preset: Path) -> None:
    from ovit_ray.orchestration.kinds.sweep_file import load_sweep
    from ovit_ray.orchestration.tune.driver import run_sweep

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump({"name": "t", "model": "digits-vit", "gradual": TINY, "search": {"algorithm": "grid"}})
    )
    ray.init(address="local", num_cpus=2, include_dashboard=False)
    try:
        node = ray.get_runtime_context().get_node_id()
        assert run_sweep(load_sweep(sweep), tmp_path / "out").counts["finished"] == 1
        assert ray.is_initialized() and ray.get_runtime_context().get_node_id() == node  # was shut down
    finally:
        ray.shutdown()


def test_train_joins_a_token_cluster_with_only_the_token_path_set(
    tmp_path: Path, digits_preset: Path, env: pytest.MonkeyPatch
) -> None:
    env.delenv("RAY_AUTH_MODE", raising=False)
    with start_head(tmp_path / "cluster", num_cpus=2) as cluster:
        env.setenv("RAY_AUTH_TOKEN_PATH", cluster.env["RAY_AUTH_TOKEN_PATH"])
        assert main([*_train_args(tmp_path / "out"), "--address", cluster.address]) == 0
    assert not ray.is_initialized() and "RAY_AUTH_MODE" not in os.environ


def test_a_local_instance_we_start_runs_with_token_auth(env: pytest.MonkeyPatch) -> None:
    from ray._raylet import AuthenticationMode, get_authentication_mode  # type: ignore[attr-defined]

    env.delenv("RAY_AUTH_MODE", raising=False)
    with ray_session(num_cpus=1) as started:
        assert started and get_authentication_mode() == AuthenticationMode.TOKEN
        node = ray.nodes()[0]
        assert node["Alive"]
        with ray_session() as nested:  # an inner session leaves Ray to the outer one
            assert not nested
        assert ray.is_initialized()
    assert not ray.is_initialized() and "RAY_AUTH_MODE" not in os.environ
