"""The plan verifier finds the broken invariants a wrong rule leaves behind, and passes every
plan the real rules make (it runs on every candidate in the test suite: CLAYGRAPH_CHECKS=1)."""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import claygraph as cg
from claygraph.errors import PartitionError
from claygraph.partition import registry
from claygraph.partition.registry import Decision
from claygraph.partition.shardings import PARTIAL_SUM, Partial


def sum_times_max(data):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    v = data.v + mu
    numpyro.factor("f", jnp.sum(v) * jnp.max(v))


def _data(n=9):
    return cg.Data(v=cg.array(np.random.default_rng(0).normal(size=n).astype(np.float32), "row"))


def test_verifier_passes_the_real_rules():
    data = _data()
    plan = cg.partition(sum_times_max, data, cluster=cg.ClusterSpec.local(devices=2), split="row")
    plan.verify()


def test_sum_times_max_equals_numpyro_on_every_split():
    """The example that once came out 0.1% to 70% wrong: sum(v) * max(v) over a split dim."""
    from numpyro.infer.util import potential_energy

    data = _data(101)
    params = {"mu": jnp.asarray(0.3, jnp.float32)}
    ref = float(potential_energy(sum_times_max, (data,), {}, params))
    for devices in (2, 3, 4):
        plan = cg.partition(sum_times_max, data, cluster=cg.ClusterSpec.local(devices=devices), split="row")
        assert float(cg.compile(plan).potential(params)) == pytest.approx(ref, rel=1e-5)


def _old_mul_rule(original):
    """The rule as it was: a Partial(max) operand of mul passed through unconverted."""

    def rule(node, ins, shs, outs, ctx):
        if node.primitive == "mul" and PARTIAL_SUM in shs and Partial("max") in shs:
            return Decision(tuple(shs), (PARTIAL_SUM,))
        return original(node, ins, shs, outs, ctx)

    return rule


def test_verifier_catches_a_partial_max_reaching_mul(monkeypatch):
    registry.import_rules()
    entry = registry.PRIMITIVES["mul"]
    monkeypatch.setitem(registry.PRIMITIVES, "mul", dataclasses.replace(entry, sharding=_old_mul_rule(entry.sharding)))
    monkeypatch.setenv("CLAYGRAPH_CHECKS", "0")
    plan = cg.partition(sum_times_max, _data(), cluster=cg.ClusterSpec.local(devices=2), split="row")
    with pytest.raises(PartitionError, match=r"P\(max\), which mul does not commute with"):
        plan.verify()
    monkeypatch.setenv("CLAYGRAPH_CHECKS", "1")  # on: the candidate is refused as it is built
    with pytest.raises(PartitionError, match="cannot be made"):
        cg.partition(sum_times_max, _data(), cluster=cg.ClusterSpec.local(devices=2), split="row")


def test_verifier_catches_a_partial_sum_in_a_nonlinear_op(monkeypatch):
    registry.import_rules()
    entry = registry.PRIMITIVES["exp"]

    def keeps_partial(node, ins, shs, outs, ctx):
        return Decision(tuple(shs), tuple(shs))

    monkeypatch.setitem(registry.PRIMITIVES, "exp", dataclasses.replace(entry, sharding=keeps_partial))
    monkeypatch.setenv("CLAYGRAPH_CHECKS", "0")

    def model(data):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        numpyro.factor("f", jnp.exp(jnp.sum(data.v) * mu))

    plan = cg.partition(model, _data(), cluster=cg.ClusterSpec.local(devices=2), split="row")
    with pytest.raises(PartitionError, match=r"Partial\(sum\) inputs \[0\] reach an op that is not linear"):
        plan.verify()


def test_verifier_catches_unmasked_padding(monkeypatch):
    registry.import_rules()
    entry = registry.PRIMITIVES["reduce_sum"]

    def no_masks(node, ins, shs, outs, ctx):
        d = entry.sharding(node, ins, shs, outs, ctx)
        return dataclasses.replace(d, masks=())

    monkeypatch.setitem(registry.PRIMITIVES, "reduce_sum", dataclasses.replace(entry, sharding=no_masks))
    monkeypatch.setenv("CLAYGRAPH_CHECKS", "0")
    plan = cg.partition(sum_times_max, _data(9), cluster=cg.ClusterSpec.local(devices=2), split="row")
    with pytest.raises(PartitionError, match="without masking the padding"):
        plan.verify()


def _combined(expr):
    def model(data):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("grp", data.size("grp")):
            a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        v = data.v * mu + a[data.g]
        numpyro.factor("f", expr(v))

    return model


COMBINED = {
    "sum(v) * max(v)": lambda v: jnp.sum(v) * jnp.max(v),
    "min(v) * sum(v)": lambda v: jnp.min(v) * jnp.sum(v),
    "sum(v) / max(v)": lambda v: jnp.sum(v) / (1.0 + jnp.abs(jnp.max(v))),
    "(sum(v) - max(v)) * min(v)": lambda v: (jnp.sum(v) - jnp.max(v)) * jnp.min(v),
}


@pytest.mark.parametrize("name", sorted(COMBINED))
def test_partial_sums_combined_with_max_and_min(name):
    """The issue's examples, under the row and the group split on 2-4 devices, equal NumPyro."""
    from models_for_tests import assert_close, random_params, reference

    rng = np.random.default_rng(1)
    n, groups = 37, 5
    data = cg.Data(v=cg.array(rng.normal(size=n).astype(np.float32), "row"),
                   g=cg.index(rng.integers(0, groups, n).astype(np.int32), "row", into="grp", size=groups))
    model = _combined(COMBINED[name])
    params = random_params(model, data, 2)
    ref = reference(model, data, params)
    graph = cg.lower(model, data)
    for split, devices in ((("row",), 2), (("row",), 3), (("grp",), 2), (("grp",), 4)):
        plan = cg.partition(graph, data, cluster=cg.ClusterSpec.local(devices=devices), split=split)
        assert_close(cg.compile(plan).potential_and_grad(params), ref, rtol_value=1e-5, rtol_grad=1e-4,
                     where=f"{name} under {split} on {devices} devices")


def gp_model(data):
    ls = numpyro.sample("ls", dist.LogNormal(0.0, 1.0))
    var = numpyro.sample("var", dist.LogNormal(0.0, 1.0))
    noise = numpyro.sample("noise", dist.LogNormal(0.0, 1.0))
    x = data.x
    k = var * jnp.exp(-0.5 * (x[:, None] - x[None, :]) ** 2 / ls**2) + (noise + 1e-4) * jnp.eye(x.shape[0])
    numpyro.sample("y", dist.MultivariateNormal(jnp.zeros(x.shape[0]), covariance_matrix=k), obs=data.y)


def test_dense_kernel_over_two_row_axes_equals_numpyro_on_every_split():
    """K[i, j] has dims (row, row): one mesh axis cannot cut both, so the ops on it run whole
    (and the plan says so) instead of crashing on mismatched local shapes."""
    from models_for_tests import assert_close, candidate_splits, random_params, reference

    rng = np.random.default_rng(0)
    data = cg.Data(x=cg.array(rng.normal(size=13).astype(np.float32), "row"),
                   y=cg.array(rng.normal(size=13).astype(np.float32), "row"))
    params = random_params(gp_model, data, 1)
    ref = reference(gp_model, data, params)
    graph = cg.lower(gp_model, data)
    for split in candidate_splits(graph, data):
        for devices in (2, 3):
            plan = cg.partition(graph, data, cluster=cg.ClusterSpec.local(devices=devices), split=split)
            assert_close(cg.compile(plan).potential_and_grad(params), ref, rtol_value=1e-5, rtol_grad=1e-4,
                         where=f"GP kernel under {split} on {devices} devices")
            if split:
                assert any("two axes along split dim 'row'" in f for f in plan.chosen.propagation.fallbacks)


def test_slices_of_a_concatenation_along_rows():
    """Found by the fuzzer: `both[:n]` of a concatenation along rows is along `row` again, but its
    values come in the user's order; it must be laid out before it meets split values."""
    from models_for_tests import assert_close, random_params, reference

    def model(data):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        x = jnp.asarray(data.x)
        both = jnp.concatenate([x * mu, jnp.sin(x)])
        numpyro.factor("f", jnp.sum((both[:x.shape[0]] * 0.5 + both[x.shape[0]:] * 0.7) * x))

    data = _data(11)
    data = cg.Data(x=cg.array(np.asarray(data.v), "row"))
    params = random_params(model, data, 1)
    ref = reference(model, data, params)
    for devices in (2, 3, 4):
        plan = cg.partition(model, data, cluster=cg.ClusterSpec.local(devices=devices), split="row")
        assert_close(cg.compile(plan).potential_and_grad(params), ref, rtol_value=1e-5, rtol_grad=1e-4,
                     where=f"row split on {devices} devices")
