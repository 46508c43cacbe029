import os

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="session")
def digits_preset(tmp_path_factory):
    """Checkpoint path of the digits-vit preset, trained once per session into a private cache."""
    from ovit_ray.training.preset import preset_checkpoint

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OVIT_RAY_CACHE", str(tmp_path_factory.mktemp("ovit-ray-cache")))
        yield preset_checkpoint("digits-vit", progress=False)


@pytest.fixture(scope="module")
def ray_local():
    """One private local Ray instance per test module (start-up costs seconds); never `ray stop`."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()
