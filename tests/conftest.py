import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


@pytest.fixture(scope="session")
def digits_preset(tmp_path_factory):
    """Checkpoint path of the digits-vit preset in a private cache, trained once per session, or once
    per `$OVIT_RAY_TEST_PRESETS` folder when set (make test-fast and test-rest share one). Reuse is safe:
    the file name carries a hash of the architecture and recipe, so a changed preset is trained again."""
    from ovit_ray.training.preset import preset_checkpoint

    cache = tmp_path_factory.mktemp("ovit-ray-cache")
    kept = Path(os.environ["OVIT_RAY_TEST_PRESETS"]) if os.environ.get("OVIT_RAY_TEST_PRESETS") else None
    for earlier in kept.glob("digits-vit-*.safetensors") if kept else ():
        shutil.copy2(earlier, cache)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("OVIT_RAY_CACHE", str(cache))
        path = preset_checkpoint("digits-vit", progress=False)
        if kept and not (kept / path.name).exists():
            kept.mkdir(parents=True, exist_ok=True)
            partial = kept / f".{path.name}.{os.getpid()}"
            shutil.copy2(path, partial)
            os.replace(partial, kept / path.name)  # whole or absent for a concurrent session
        yield path


@pytest.fixture(scope="module")
def ray_local():
    """One private local Ray instance per test module (start-up costs seconds); never `ray stop`."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False)
    yield ray
    ray.shutdown()
