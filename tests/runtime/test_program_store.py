"""Programs kept across processes (claygraph.runtime.program_store): a stored program runs without tracing
its function, computes what jit computes, and never loads where anything it depends on changed."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import claygraph as cg
from claygraph.runtime import program_store


class State(NamedTuple):
    x: jax.Array
    memory: dict
    nothing: None
    count: jax.Array


def _step(state: State, data) -> State:
    _step.traces += 1  # runs only while JAX traces it
    x = state.x - 0.1 * (state.x - data["target"]) + state.memory["m"].sum(0)
    return State(x, {"m": state.memory["m"] * 0.5}, None, state.count + 1)


def _args(n: int = 5):
    state = State(jnp.arange(n, dtype=jnp.float32), {"m": jnp.ones((3, n), jnp.float32)}, None, jnp.int32(0))
    return state, {"target": jnp.full(n, 2.0, jnp.float32)}


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAYGRAPH_JAX_CACHE", str(tmp_path / "jax"))
    _step.traces = 0
    return tmp_path / "jax" / "programs"


def test_a_stored_program_runs_as_jit_does_and_a_later_instance_loads_it_without_tracing(store):
    expected = jax.jit(_step)(*_args())
    traced = _step.traces
    first = program_store.Stored(_step, ("step", 1), donate_argnums=0)
    out = first(*_args())
    assert len(list(store.glob("*.program"))) == 1
    before = _step.traces
    again = program_store.Stored(_step, ("step", 1), donate_argnums=0)  # what a fresh process builds
    out2 = again(*_args())
    assert _step.traces == before > traced  # loading traced nothing
    for o in (out, out2):
        assert isinstance(o, State) and o.nothing is None and int(o.count) == 1
        for a, b in zip(jax.tree.leaves(o), jax.tree.leaves(expected)):
            np.testing.assert_array_equal(a, b)


def test_anything_the_program_depends_on_gives_it_a_place_of_its_own(store):
    program_store.Stored(_step, ("step", 1))(*_args(5))
    program_store.Stored(_step, ("step", 1))(*_args(6))  # shapes
    program_store.Stored(_step, ("step", 2))(*_args(5))  # the caller's key (settings)
    program_store.Stored(_step, ("step", 1), donate_argnums=0)(*_args(5))  # donation
    s, d = _args(5)
    program_store.Stored(_step, ("step", 1))(s._replace(x=s.x.astype(jnp.float16)), d)  # dtypes
    assert len(list(store.glob("*.program"))) == 5


def test_a_changed_claygraph_never_loads_what_an_older_one_stored(store, monkeypatch):
    program_store.Stored(_step, ("step", 1))(*_args())
    monkeypatch.setattr(program_store, "_CODE", "another claygraph")
    traces = _step.traces
    program_store.Stored(_step, ("step", 1))(*_args())
    assert _step.traces > traces and len(list(store.glob("*.program"))) == 2


def test_a_damaged_program_is_exported_again(store):
    expected = jax.jit(_step)(*_args())
    program_store.Stored(_step, ("step", 1))(*_args())
    (path,) = store.glob("*.program")
    path.write_bytes(path.read_bytes()[:100])
    out = program_store.Stored(_step, ("step", 1))(*_args())
    np.testing.assert_array_equal(out.x, expected.x)
    assert program_store._parse(path) is not None  # replaced by a whole one


def test_with_the_cache_off_nothing_is_written(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAYGRAPH_JAX_CACHE", "0")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    out = program_store.Stored(_step, ("step", 1))(*_args())
    assert int(out.count) == 1 and not any(tmp_path.rglob("*.program"))


def test_a_function_that_cannot_be_exported_runs_as_plain_jit(store):
    def with_callback(state, data):
        y = jax.pure_callback(lambda v: np.asarray(v) * 2, jax.ShapeDtypeStruct(state.x.shape, state.x.dtype),
                              state.x)
        return state._replace(x=y)

    plain = program_store.STATS["plain"]
    out = program_store.Stored(with_callback, ("callback",))(*_args())
    np.testing.assert_array_equal(out.x, 2 * np.arange(5))
    assert program_store.STATS["plain"] == plain + 1 and not list(store.glob("*.program"))


def test_the_first_state_of_a_group_split_holds_its_memory_sharded_and_two_chunks_share_one_program(store):
    """The L-BFGS memory of a sharded site starts sharded as the chunk leaves it: one chunk program for the
    whole fit (a replicated start made the second chunk a program of its own, compiled again)."""
    from bench.workloads import w2_data, w2_model

    exported = program_store.STATS["exported"]
    r = cg.infer.map(w2_model, w2_data(2_000, 40, 3), runtime=cg.runtime.Local(devices=2), split=("group",),
                     chunk=5, max_iter=12, tol=0.0)
    assert r.iterations == 12  # three chunks
    assert program_store.STATS["exported"] - exported == 2  # the start and one chunk
    assert len(list(store.glob("*.program"))) == 2


@pytest.mark.parametrize("guide", ["meanfield", "lowrank"])
def test_advi_on_a_group_split_runs_every_chunk_on_one_program(store, guide):
    """Adam's moments of a sharded site start sharded as the loop keeps them (they were replicated: the second
    chunk compiled again)."""
    from bench.workloads import w2_data, w2_model

    exported = program_store.STATS["exported"]
    cg.infer.vi(w2_model, w2_data(2_000, 40, 3), runtime=cg.runtime.Local(devices=2), split=("group",), guide=guide,
                steps=30, chunk=10, init="zero", draws=5)
    assert program_store.STATS["exported"] - exported == 1


FIT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import claygraph as cg
    import claygraph.glm
    from claygraph.runtime import program_store
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2_000, 6)).astype(np.float32)
    y = (X @ np.linspace(-1, 1, 6) + rng.normal(size=2_000) > 0).astype(np.float32)
    m = cg.glm.LogisticRegression(tol=1e-6).fit(X, y)
    json.dump({"coef": m.coef_.tolist(), "intercept": m.intercept_.tolist(), "stats": program_store.STATS},
              sys.stdout)
""")


def test_a_fresh_process_with_a_warm_cache_traces_no_loop_and_fits_the_same(tmp_path):
    env = {**os.environ, "CLAYGRAPH_JAX_CACHE": str(tmp_path / "jax"), "JAX_PLATFORMS": "cpu"}
    runs = [json.loads(subprocess.run([sys.executable, "-c", FIT], env=env, capture_output=True, text=True,
                                      check=True, timeout=300).stdout) for _ in range(2)]
    assert runs[0]["stats"] == {"loaded": 0, "exported": 2, "plain": 0}  # the loop's start and its chunk
    assert runs[1]["stats"] == {"loaded": 2, "exported": 0, "plain": 0}
    assert runs[0]["coef"] == runs[1]["coef"] and runs[0]["intercept"] == runs[1]["intercept"]
    assert len(list(Path(tmp_path, "jax", "programs").glob("*.program"))) == 2
