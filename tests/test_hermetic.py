"""The suite runs hermetically (tests/conftest.py): nothing it reads lives in the user's home."""
import os
from pathlib import Path

from conftest import HERMETIC_ROOT


def _inside(path: Path) -> bool:
    return Path(HERMETIC_ROOT).resolve() in path.resolve().parents


def test_cost_profile_and_caches_point_into_the_runs_own_folder():
    from claygraph.partition.cluster import ClusterSpec, default_profile_path
    from claygraph.runtime.jax_cache import cache_folder

    assert _inside(default_profile_path()) and not default_profile_path().exists()
    assert _inside(cache_folder())
    assert "JAX_COMPILATION_CACHE_DIR" not in os.environ
    # the built-in figures: no calibrated profile is read
    assert ClusterSpec.local(devices=2) == ClusterSpec.built_in(devices=2)


def test_jax_compilation_cache_is_isolated_per_run():
    import jax

    from claygraph.runtime import jax_cache

    folder = jax_cache.enable()
    assert folder is not None and _inside(folder)
    assert jax.config.jax_compilation_cache_dir == str(folder)
