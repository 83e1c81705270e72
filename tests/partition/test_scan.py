"""`lax.scan` (and what NumPyro's contrib scan lowers to): dims come through the body, a scan along
a split dim runs whole on every shard (and the plan says so), and every candidate equals NumPyro."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from models_for_tests import assert_close, random_params, reference

import claygraph as cg
from claygraph.errors import DimError


def latent_ar1(data):
    """A latent AR(1) process over the years, written with scan, seen with noise per series."""
    rho = numpyro.sample("rho", dist.Uniform(-1.0, 1.0))
    with numpyro.plate("series", data.size("series")):
        level = numpyro.sample("level", dist.Normal(0.0, 1.0))
        with numpyro.plate("time", data.size("time")):
            eps = numpyro.sample("eps", dist.Normal(0.0, 0.5))

    def step(prev, e):
        x = rho * prev + e
        return x, x

    _, path = jax.lax.scan(step, level, eps)  # path: (time, series)
    with numpyro.plate("series", data.size("series"), dim=-1):
        with numpyro.plate("time", data.size("time"), dim=-2):
            numpyro.sample("y", dist.Normal(path, 0.3), obs=data.y)


def _data(t=9, s=5):
    rng = np.random.default_rng(0)
    return cg.Data(y=cg.array(rng.normal(size=(t, s)).astype(np.float32), "time", "series"))


def _scan_node(graph):
    (node,) = [n for n in graph.nodes() if n.primitive == "scan"]
    return node


def test_dims_come_through_the_body():
    data = _data()
    graph = cg.lower(latent_ar1, data)
    node = _scan_node(graph)
    # the carry (level) is along series; the stacked path along (time, series): neither is named by
    # the scan's outputs' consumers alone, the body's `rho * prev + e` links them
    assert [graph.value(o).dims for o in node.outputs] == [("series",), ("time", "series")]
    assert graph.param_dims["eps"] == ("time", "series")


@pytest.mark.parametrize("devices", [2, 3])
def test_every_candidate_equals_numpyro(devices):
    data = _data()
    graph = cg.lower(latent_ar1, data)
    params = random_params(latent_ar1, data, 1)
    ref = reference(latent_ar1, data, params)
    plan = cg.partition(graph, data, cluster=cg.ClusterSpec.local(devices=2))
    splits = [c.split for c in plan.candidates]
    assert ("time",) in splits and ("series",) in splits
    for split in splits:
        p = cg.partition(graph, data, cluster=cg.ClusterSpec.local(devices=devices), split=split)
        assert_close(cg.compile(p).potential_and_grad(params), ref, rtol_value=1e-5, rtol_grad=1e-4,
                     where=f"latent_ar1 under {split} on {devices} devices")


def test_a_scan_along_a_split_dim_runs_whole_and_the_plan_says_so():
    data = _data()
    along = cg.partition(latent_ar1, data, cluster=cg.ClusterSpec.local(devices=2), split=("time",)).explain()
    assert "scan runs its steps in order along split dim 'time'" in along
    across = cg.partition(latent_ar1, data, cluster=cg.ClusterSpec.local(devices=2), split=("series",)).explain()
    assert "scan's body is not split" in across


def test_the_cost_counts_every_step():
    from claygraph.partition.rules_control import scan_flops

    graph = cg.lower(latent_ar1, _data(t=9))
    node = _scan_node(graph)
    longer = _scan_node(cg.lower(latent_ar1, _data(t=18)))
    assert scan_flops(longer, [], []) == pytest.approx(2 * scan_flops(node, [], []))
    assert scan_flops(node, [], []) >= 9 * 2 * 5  # a mul and an add of 5 series per step


def test_conflicting_dims_in_a_body_name_the_line():
    def model(data):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([data.size("feature")]).to_event(1))
        prior = jnp.sum(w * data.z)  # w is along feature

        def step(c, x_t):
            return c + w * x_t, None  # x_t is along series, w along feature: equal sizes, other dims

        total, _ = jax.lax.scan(step, jnp.zeros(data.size("feature")), data.x)
        numpyro.factor("f", jnp.sum(total) + prior)

    rng = np.random.default_rng(0)
    data = cg.Data(x=cg.array(rng.normal(size=(4, 3)).astype(np.float32), "time", "series"),
                   z=cg.array(rng.normal(size=3).astype(np.float32), "feature"))
    with pytest.raises(DimError, match=r"in its body: `mul` \(.*test_scan.py") as err:
        cg.lower(model, data)
    assert "'feature'" in str(err.value) and "'series'" in str(err.value)


def test_dims_come_through_nested_scans():
    """A scan inside a scan's body (fori_loop over a static range inside a time step)."""
    def model(data):
        with numpyro.plate("series", data.size("series")):
            level = numpyro.sample("level", dist.Normal(0.0, 1.0))

        def step(prev, y_t):
            smoothed = jax.lax.fori_loop(0, 2, lambda i, v: 0.5 * v + 0.5 * y_t, prev)
            return smoothed, smoothed

        _, path = jax.lax.scan(step, level, data.y)
        with numpyro.plate("series", data.size("series"), dim=-1):
            with numpyro.plate("time", data.size("time"), dim=-2):
                numpyro.sample("obs", dist.Normal(path, 1.0), obs=data.y)

    data = _data()
    graph = cg.lower(model, data)
    outer = _scan_node(graph)
    assert [graph.value(o).dims for o in outer.outputs] == [("series",), ("time", "series")]
    params = random_params(model, data, 2)
    ref = reference(model, data, params)
    for split in [("time",), ("series",)]:
        p = cg.partition(graph, data, cluster=cg.ClusterSpec.local(devices=3), split=split)
        assert_close(cg.compile(p).potential_and_grad(params), ref, rtol_value=1e-5, rtol_grad=1e-4,
                     where=f"nested scans under {split}")
