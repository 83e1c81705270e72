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
