"""Compile once: refits reuse the split function and its jits; the graph fingerprint tells models apart."""
import jax.monitoring
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import claygraph as cg
from claygraph.partition.cache import COMPILED, CompileCache
from claygraph.runtime import jax_cache


def model_with_scale(scale):
    def model(data):
        w = numpyro.sample("w", dist.Normal(0.0, scale).expand([data.X.shape[1]]).to_event(1))
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("y", dist.Bernoulli(logits=data.X @ w), obs=data.y)

    return model


def _data(n=400, d=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    return cg.Data(X=cg.array(X, "row", "feature"), y=cg.array((rng.random(n) < 0.5).astype(np.float32), "row"))


def test_fingerprint_is_stable_and_sees_constants():
    data = _data()
    a = cg.lower(model_with_scale(1.0), data).fingerprint()
    assert a == cg.lower(model_with_scale(1.0), data).fingerprint()  # a new closure, the same graph
    assert a != cg.lower(model_with_scale(2.0), data).fingerprint()  # the prior's scale is a constant
    assert a != cg.lower(model_with_scale(1.0), _data(n=401)).fingerprint()  # shapes
    assert len(a) == 64 and int(a, 16) >= 0


def test_refit_reuses_the_program_and_compiles_nothing():
    compiles = []

    def on_event(name, secs, **_):
        if name == "/jax/core/compile/backend_compile_duration":
            compiles.append(name)

    jax.monitoring.register_event_duration_secs_listener(on_event)
    data = _data(seed=1)
    first = cg.infer.map(model_with_scale(1.0), data)
    hits, before = COMPILED.hits, len(compiles)
    second = cg.infer.map(model_with_scale(1.0), _data(seed=2), tol=1e-8)  # new values, new tol: same program
    assert COMPILED.hits == hits + 1
    assert len(compiles) == before  # nothing traced into XLA again
    assert second.converged and first.converged
    assert not np.allclose(first.params["w"], second.params["w"])  # the new data were used


def test_cache_is_bounded_and_counts():
    c = CompileCache(max_entries=2)
    built = []
    for k in ("a", "b", "a", "c", "b"):
        c.get(k, lambda k=k: built.append(k) or k.upper())
    assert built == ["a", "b", "c", "b"] and len(c) == 2 and c.hits == 1 and c.misses == 4


@pytest.mark.parametrize("value,expected", [("0", None), ("off", None), ("False", None), ("/tmp/x", "/tmp/x")])
def test_persistent_cache_folder_from_the_environment(monkeypatch, value, expected):
    monkeypatch.setenv(jax_cache.ENV, value)
    folder = jax_cache.cache_folder()
    assert (None if folder is None else str(folder)) == expected


def test_persistent_cache_folder_is_per_user(monkeypatch, tmp_path):
    monkeypatch.delenv(jax_cache.ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert jax_cache.cache_folder() == tmp_path / "claygraph" / "jax"
