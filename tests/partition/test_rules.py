"""Every sharding-rule family checked against the unsharded result on simulated shards.

Each case is a tiny model whose potential exercises one rule in a stated way (the test asserts that
the plan made that decision), compiled under the splits that matter for the rule on three host
devices, and compared with NumPyro's unsplit potential and gradient. Sizes make every split padded:
7 rows, 5 features and 4 groups over 3 devices (blocks of 3, 2 and 2: the last shards are short).

The coverage test at the end lowers the example models and common jax.numpy / jax.nn /
numpyro.distributions code and lists every primitive without a rule.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from models_for_tests import assert_close, random_params, reference

import claygraph as cg
from claygraph import examples
from claygraph.partition import registry
from claygraph.partition.shardings import PARTIAL_SUM, REPLICATED, Partial, Sharded

ROWS, FEATURES, GROUPS, DEVICES = 7, 5, 4, 3
F32 = dict(rtol_value=1e-5, atol_value=1e-4, rtol_grad=1e-4, atol_grad_rel=2e-5)
S = Sharded
P = PARTIAL_SUM
R = REPLICATED


def rule_data(seed: int = 0) -> cg.Data:
    rng = np.random.default_rng(seed)
    g = np.array([0, 0, 0, 0, 0, 2, 3], np.int32)  # skewed; group 1 has no rows
    return cg.Data(
        X=cg.array(rng.normal(size=(ROWS, FEATURES)).astype(np.float32), "row", "feature"),
        x=cg.array(rng.uniform(0.2, 1.5, ROWS).astype(np.float32), "row"),
        y=cg.array(rng.normal(size=ROWS).astype(np.float32), "row"),
        g=cg.index(g, "row", into="group", size=GROUPS),
    )


def with_term(term: Callable) -> Callable:
    """A model whose potential is the priors, a Normal likelihood over rows, and `term(data, m, w, a)`.

    `m` is a scalar, `w` a weight per feature, `a` an intercept per group: every split shards some
    parameter, so the priors and the likelihood give every split a partial sum on the output.
    """

    def model(data):
        m = numpyro.sample("m", dist.Normal(0.0, 1.0))
        with numpyro.plate("feature", data.size("feature")):
            w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        with numpyro.plate("group", data.size("group")):
            a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("y", dist.Normal(m + a[data.g], 2.0), obs=data.y)
        numpyro.factor("term", term(data, m, w, a))

    return model


def shardings_of(plan, node):
    sh = plan.chosen.propagation.shardings
    return [sh[i] for i in node.inputs], [sh[o] for o in node.outputs]


def decisions(plan, primitive: str):
    """(node, decision, input shardings as produced) of every node of `primitive`."""
    prop = plan.chosen.propagation
    return [(n, prop.decisions[n.id], shardings_of(plan, n)[0]) for n in plan.graph.nodes() if n.primitive == primitive]


def made(primitive: str, ins=None, outs=None, have=None, masks=None, local_offset=None, fallback=None):
    """A predicate on a plan: some `primitive` node was decided this way."""

    def ok(plan) -> bool:
        for _, d, h in decisions(plan, primitive):
            if ins is not None and tuple(d.ins) != tuple(ins):
                continue
            if outs is not None and tuple(d.outs) != tuple(outs):
                continue
            if have is not None and tuple(h) != tuple(have):
                continue
            if masks is not None and bool(d.masks) != masks:
                continue
            if local_offset is not None and d.local_offset != local_offset:
                continue
            if fallback is not None and (d.note != "" and d.ins == tuple(R for _ in d.ins)) != fallback:
                continue
            return True
        return False

    ok.__doc__ = (f"{primitive} ins={ins} outs={outs} have={have} masks={masks} offset={local_offset} "
                  f"fallback={fallback}")
    return ok


@dataclass(frozen=True)
class RuleCase:
    id: str
    term: Callable
    expect: dict[tuple[str, ...], list[Callable]] = field(default_factory=dict)  # split -> predicates on the plan


def _per_group_weights():
    """W[group, feature]: a weight vector per group (both axes named by plates)."""
    with numpyro.plate("group", GROUPS, dim=-2), numpyro.plate("feature", FEATURES, dim=-1):
        return numpyro.sample("W", dist.Normal(0.0, 1.0))


def _sum_rows(D, m):
    return jnp.sum(D.x * m)  # a partial sum under the row split


CASES = [
    # -- elementwise ----------------------------------------------------------------------------------
    RuleCase("unary-elementwise",
             lambda D, m, w, a: jnp.sum(jnp.tanh(D.x * m) + jnp.log1p(jnp.exp(-D.x * m)) + jax.nn.sigmoid(D.x * m)
                                        + jax.scipy.special.erf(D.x * m) + jax.scipy.special.gammaln(D.x + m**2)
                                        + jax.scipy.special.digamma(D.x + m**2) + (D.x * m) ** 3),
             {("row",): [made("tanh", ins=(S("row"),), outs=(S("row"),)),
                         made("integer_pow", ins=(S("row"),), outs=(S("row"),)),
                         made("lgamma", outs=(S("row"),)), made("digamma", outs=(S("row"),))]}),
    RuleCase("binary-elementwise-replicated-operand",
             lambda D, m, w, a: -jnp.sum((D.x - m) ** 2 / (1.0 + m**2) + jnp.maximum(D.x, m)),
             {("row",): [made("sub", ins=(S("row"), R), outs=(S("row"),)),
                         made("max", outs=(S("row"),))]}),
    RuleCase("partial-plus-replicated-counted-once",
             lambda D, m, w, a: -(_sum_rows(D, m) + m) ** 2 - (m - _sum_rows(D, m)) ** 2 + 0.5 * (_sum_rows(D, m) - m),
             {("row",): [made("add", have=(P, R), ins=(P, P), outs=(P,)),
                         made("sub", have=(R, P), ins=(P, P), outs=(P,)),
                         made("integer_pow", have=(P,), ins=(R,))]}),
    RuleCase("partial-through-linear-ops",
             lambda D, m, w, a: jnp.log1p(jnp.abs(-(_sum_rows(D, m) * 2.0) / 3.0 + jnp.float32(1.0))),
             {("row",): [made("mul", have=(P, R), outs=(P,)), made("div", have=(P, R), outs=(P,)),
                         made("neg", have=(P,), outs=(P,)), made("abs", have=(P,), ins=(R,))]}),
    RuleCase("select-n",
             lambda D, m, w, a: jnp.sum(jnp.where(D.x > 0.7, D.x * m, -m))
             + jnp.where(m > 0.0, _sum_rows(D, m), -_sum_rows(D, m)) ** 2 * -0.1,
             {("row",): [made("select_n", ins=(S("row"), S("row"), S("row")), outs=(S("row"),)),
                         made("select_n", ins=(R, P, P), outs=(P,))]}),
    # -- shape --------------------------------------------------------------------------------------------
    RuleCase("broadcast-in-dim",
             lambda D, m, w, a: -jnp.sum((jnp.broadcast_to(m, (ROWS,)) - D.x) ** 2)
             - jnp.sum(jnp.broadcast_to((D.x * m)[:, None], (ROWS, 3)) ** 2),
             {("row",): [made("broadcast_in_dim", have=(R,), outs=(S("row"),)),
                         made("broadcast_in_dim", have=(S("row"),), outs=(S("row"),))]}),
    RuleCase("reshape-squeeze-keep-split-axis",
             lambda D, m, w, a: -jnp.sum(jnp.squeeze(jnp.reshape(D.x * m, (ROWS, 1)), axis=1) ** 2),
             {("row",): [made("reshape", outs=(S("row"),)), made("squeeze", outs=(S("row"),))]}),
    RuleCase("reshape-merging-split-axis",
             lambda D, m, w, a: -jnp.sum(jnp.reshape(D.X * w, (-1,)) ** 2) * m**2,
             {("row",): [made("reshape", fallback=True)], ("feature",): [made("reshape", fallback=True)]}),
    RuleCase("transpose",
             lambda D, m, w, a: -jnp.sum((D.X.T @ (D.x * m) - w) ** 2),
             {("row",): [made("transpose", outs=(S("row"),)), made("dot_general", outs=(P,))],
              ("feature",): [made("transpose", outs=(S("feature"),)), made("dot_general", outs=(S("feature"),))]}),
    RuleCase("concatenate",
             lambda D, m, w, a: -jnp.sum(jnp.concatenate([D.X, D.X * m], axis=1) ** 2) * 0.1,
             {("row",): [made("concatenate", outs=(S("row"),))],
              ("feature",): [made("concatenate", fallback=True)]}),
    RuleCase("slice-and-pad-cutting-split-axis",
             lambda D, m, w, a: -jnp.sum(jnp.pad(D.x * m, (1, 0)) ** 2) - jnp.sum(jnp.diff(D.x) * m)
             - jnp.sum(w[1:] * w[:-1]),
             {("row",): [made("pad", fallback=True), made("slice", fallback=True)],
              ("feature",): [made("slice", fallback=True)]}),
    RuleCase("slice-keeping-split-axis",
             lambda D, m, w, a: -jnp.sum(D.X[:, 1:] * m) ** 2,
             {("row",): [made("slice", have=(S("row"),), outs=(S("row"),))]}),
    RuleCase("pad-keeping-split-axis",
             lambda D, m, w, a: -jnp.sum(jnp.pad(D.X, ((0, 0), (1, 0)), constant_values=0.5) * m) ** 2,
             {("row",): [made("pad", have=(S("row"), R), outs=(S("row"),))]}),
    RuleCase("iota",
             lambda D, m, w, a: -jnp.sum(jnp.arange(ROWS, dtype=jnp.float32) * D.x * m) * 0.1,
             {("row",): [made("iota", fallback=True)]}),
    # -- contractions ---------------------------------------------------------------------------------
    RuleCase("dot-general-contracting-and-free",
             lambda D, m, w, a: -jnp.sum((D.X @ w - m) ** 2),
             {("feature",): [made("dot_general", ins=(S("feature"), S("feature")), outs=(P,), masks=True)],
              ("row",): [made("dot_general", ins=(S("row"), R), outs=(S("row"),))]}),
    RuleCase("dot-general-batch",
             lambda D, m, w, a: -jnp.sum(jnp.einsum("nd,nd->n", D.X, D.X * w) * m),
             {("row",): [made("dot_general", ins=(S("row"), S("row")), outs=(S("row"),))],
              ("feature",): [made("dot_general", ins=(S("feature"), S("feature")), outs=(P,))]}),
    RuleCase("dot-general-partial-times-replicated",
             lambda D, m, w, a: -jnp.sum(((D.x * m) @ D.X) @ jnp.arange(1.0, FEATURES + 1.0)),
             {("row",): [made("dot_general", have=(P, R), outs=(P,))]}),
    # -- reductions -----------------------------------------------------------------------------------
    RuleCase("reduce-sum-masked",
             lambda D, m, w, a: -jnp.sum(jnp.sum(D.X * w, axis=1) ** 2) - jnp.sum(D.x * m) ** 2,
             {("feature",): [made("reduce_sum", have=(S("feature"),), outs=(P,), masks=True)],
              ("row",): [made("reduce_sum", have=(S("row"),), outs=(P,), masks=True)]}),
    RuleCase("reduce-max-min-over-unsplit-axis",
             lambda D, m, w, a: jnp.sum(jnp.max(D.X * m, axis=1) - jnp.min(D.X * m, axis=1)),
             {("row",): [made("reduce_max", outs=(S("row"),)), made("reduce_min", outs=(S("row"),))]}),
    RuleCase("cumsum-sort-fallback",
             lambda D, m, w, a: -jnp.sum(jnp.cumsum(D.x * m) * D.y) - jnp.sum(jnp.sort(D.x * m) * D.y),
             {("row",): [made("cumsum", fallback=True), made("sort", fallback=True)]}),
    RuleCase("argmax-fallback",
             lambda D, m, w, a: jnp.sum(jnp.argmax(D.X, axis=1) * m) - jnp.sum(D.X @ w) ** 2,
             {("feature",): [made("argmax", fallback=True)], ("row",): [made("argmax", outs=(S("row"),))]}),
    # -- indexing -------------------------------------------------------------------------------------
    RuleCase("gather-copartitioned-and-replicated",
             lambda D, m, w, a: -jnp.sum((a[D.g] * D.x - m) ** 2),
             {("group",): [made("gather", ins=(S("group"), S("row")), outs=(S("row"),), local_offset=True)],
              ("row",): [made("gather", ins=(R, S("row")), outs=(S("row"),), local_offset=False)]}),
    RuleCase("gather-rows-of-a-matrix-split-along-its-columns",
             lambda D, m, w, a: -jnp.sum((jnp.sum(D.X * _per_group_weights()[D.g], axis=1) - D.y) ** 2),
             {("feature",): [made("gather", ins=(S("feature"), R), outs=(S("feature"),))],
              ("group",): [made("gather", ins=(S("group"), S("row")), outs=(S("row"),), local_offset=True)],
              ("row",): [made("gather", ins=(R, S("row")), outs=(S("row"),))]}),
    RuleCase("scatter-add-fallback",
             lambda D, m, w, a: -jnp.sum(jax.ops.segment_sum(D.x * m, D.g, GROUPS) ** 2) * 0.1,
             {("row",): [made("scatter-add", fallback=True)], ("group",): [made("scatter-add", fallback=True)]}),
]


def _compile_and_compare(model, data, split, devices=DEVICES):
    params = random_params(model, data, seed=3)
    ref = reference(model, data, params)
    graph = cg.lower(model, data)
    plan = cg.partition(graph, data, cluster=cg.ClusterSpec.local(devices=devices), split=split)
    got = cg.compile(plan).potential_and_grad(params)
    assert_close(got, ref, where=f"split={split} devices={devices}", **F32)
    return plan




@pytest.mark.parametrize("case, split", [pytest.param(c, s, id=f"{c.id}-{','.join(s)}")
                                         for c in CASES for s in c.expect])
def test_rule_matches_unsplit(case, split):
    data = rule_data()
    model = with_term(case.term)
    plan = _compile_and_compare(model, data, split)
    for predicate in case.expect[split]:
        assert predicate(plan), f"no node decided as {predicate.__doc__}; fallbacks: " \
                                f"{plan.chosen.propagation.fallbacks}"


@pytest.mark.parametrize("split", [("row",), ("group",), ("feature",)])
def test_sharded_values_have_the_split_axis(split):
    """Under each split, no value is marked split along a dim it lacks (the emitter needs the axis)."""
    data = rule_data()
    plan = _compile_and_compare(with_term(lambda D, m, w, a: jnp.sum(D.X @ w) * 0.0), data, split, devices=2)
    g = plan.graph
    for vid, s in plan.chosen.propagation.shardings.items():
        if isinstance(s, Sharded):
            assert g.value(vid).axis_of(s.dim) is not None, (vid, g.value(vid), s)


# -- padding masks for max and min ----------------------------------------------------------------------
# Padding slots hold copies of a real entry of the same shard, so a missing mask cannot change a
# max or a min: the test asserts that the mask is there, with the identity of the reduction.

@pytest.mark.parametrize("primitive, fill", [("reduce_max", -np.inf), ("reduce_min", np.inf)])
def test_max_min_over_a_padded_split_axis_are_masked_with_their_identity(primitive, fill):
    data = rule_data()
    model = with_term(lambda D, m, w, a: jnp.max(D.x * m) - jnp.min(D.x * m))
    plan = cg.partition(model, data, cluster=cg.ClusterSpec.local(devices=DEVICES), split=("row",))
    found = [d for _, d, h in decisions(plan, primitive) if h == [S("row")]]
    assert found, decisions(plan, primitive)
    (d,) = found
    assert d.outs == (Partial(primitive.removeprefix("reduce_")),)
    assert [m.fill for m in d.masks] == [fill] and d.masks[0].dim == "row"




@pytest.mark.parametrize("term", [
    pytest.param(lambda D, m, w, a: jnp.max(D.x * m) - jnp.min(D.x * m), id="max-min-over-rows"),
    pytest.param(lambda D, m, w, a: jax.nn.logsumexp(D.x * m), id="logsumexp-over-rows"),
])
def test_max_over_split_axis_value(term):
    """The potential alone (no gradient) is right: the rule is; only differentiation fails (below)."""
    data = rule_data()
    model = with_term(term)
    params = random_params(model, data, seed=3)
    v_ref, _ = reference(model, data, params)
    plan = cg.partition(model, data, cluster=cg.ClusterSpec.local(devices=DEVICES), split=("row",))
    assert any(c.kind == "pmax" for c in plan.collectives)
    np.testing.assert_allclose(float(cg.compile(plan).potential(params)), float(v_ref), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("term, split", [
    pytest.param(lambda D, m, w, a: jnp.max(D.x * m) - jnp.min(D.x * m), ("row",), id="max-min-over-rows"),
    pytest.param(lambda D, m, w, a: jax.nn.logsumexp(D.x * m), ("row",), id="logsumexp-over-rows"),
    pytest.param(lambda D, m, w, a: jnp.sum(jax.nn.log_softmax(D.X * w, axis=1)), ("feature",),
                 id="log-softmax-over-features"),
])
def test_max_over_split_axis_gradient(term, split):
    _compile_and_compare(with_term(term), rule_data(), split)


# -- index columns used as numbers ------------------------------------------------------------------



INDEX_AS_NUMBERS = [
    pytest.param(lambda D, m, w, a: -jnp.sum((a[jnp.clip(D.g, 0, GROUPS - 1)] * D.x - m) ** 2), id="clip-then-gather"),
    pytest.param(lambda D, m, w, a: -jnp.sum(D.g.astype(jnp.float32) * D.x * m), id="as-float"),
    pytest.param(lambda D, m, w, a: -jnp.sum(jnp.where(D.g == 3, D.x * m, 0.0) ** 2), id="compare"),
]


@pytest.mark.parametrize("term", INDEX_AS_NUMBERS)
def test_index_column_values_used_as_numbers_under_the_row_split(term):
    """The row split keeps the user's ids: right."""
    _compile_and_compare(with_term(term), rule_data(), ("row",))


@pytest.mark.parametrize("devices", [2, 3])
@pytest.mark.parametrize("term", INDEX_AS_NUMBERS)
def test_index_column_values_used_as_numbers_under_the_group_split(term, devices):
    _compile_and_compare(with_term(term), rule_data(), ("group",), devices=devices)


# -- a fallback whose result reaches the output without a psum ----------------------------------------



def _rows_only(term):
    """A model whose only row-dependent term is `term` (no likelihood over rows)."""

    def model(data):
        m = numpyro.sample("m", dist.Normal(0.0, 1.0))
        numpyro.factor("term", term(data, m))

    return model


@pytest.mark.parametrize("term", [
    pytest.param(lambda D, m: -jnp.sum((jnp.cumsum(D.x) - m) ** 2), id="cumsum"),
    pytest.param(lambda D, m: -jnp.sum(jnp.sort(D.x * m) * jnp.arange(ROWS)), id="sort"),
    pytest.param(lambda D, m: -jnp.sum(jax.ops.segment_sum(D.x * m, D.g, GROUPS) ** 2), id="segment-sum"),
])
def test_fallback_result_reaching_the_output(term):
    _compile_and_compare(_rows_only(term), rule_data(), ("row",), devices=2)


# -- coverage -------------------------------------------------------------------------------------------

# Primitives that lowering produces for common code but that have no sharding rule: they run through
# the general fallback (inputs gathered to every shard, computed in the user's layout).
UNSUPPORTED = {
    "stack",  # jnp.stack (a primitive in jax 0.10); also inside Beta.log_prob
    "tile",  # jnp.tile
    "cholesky",  # MultivariateNormal(covariance_matrix=...)
    "triangular_solve",  # MultivariateNormal.log_prob
    "cond",  # control flow inside MultivariateNormal (jnp.linalg); lowering does not inline it
    "platform_index",  # chooses the branch of that cond by backend
}


def _likelihood_model(make_site):
    def model(data):
        m = numpyro.sample("m", dist.Normal(0.0, 1.0))
        s = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
        with numpyro.plate("row", data.size("row")):
            make_site(data, m, s)

    return model


def _obs(d, value):
    return lambda data, m, s: numpyro.sample("obs", d(data, m, s), obs=value(data))


LIKELIHOODS = {
    "Normal": _obs(lambda D, m, s: dist.Normal(m, s), lambda D: D.x),
    "StudentT": _obs(lambda D, m, s: dist.StudentT(3.0, m, s), lambda D: D.x),
    "Gamma": _obs(lambda D, m, s: dist.Gamma(s, jnp.exp(m)), lambda D: D.x),
    "Beta": _obs(lambda D, m, s: dist.Beta(s, jnp.exp(m)), lambda D: D.x / 2.0),
    "Poisson": _obs(lambda D, m, s: dist.Poisson(jnp.exp(m)), lambda D: D.k),
    "NegativeBinomial2": _obs(lambda D, m, s: dist.NegativeBinomial2(jnp.exp(m), s), lambda D: D.k),
    "GammaPoisson": _obs(lambda D, m, s: dist.GammaPoisson(s, jnp.exp(m)), lambda D: D.k),
    "BernoulliLogits": _obs(lambda D, m, s: dist.Bernoulli(logits=m * D.x), lambda D: D.b),
    "BinomialLogits": _obs(lambda D, m, s: dist.Binomial(5, logits=m * D.x), lambda D: D.k),
    "LogNormal": _obs(lambda D, m, s: dist.LogNormal(m, s), lambda D: D.x),
    "HalfCauchy": _obs(lambda D, m, s: dist.HalfCauchy(s), lambda D: D.x),
    "HalfNormal": _obs(lambda D, m, s: dist.HalfNormal(s), lambda D: D.x),
    "Exponential": _obs(lambda D, m, s: dist.Exponential(s), lambda D: D.x),
    "Cauchy": _obs(lambda D, m, s: dist.Cauchy(m, s), lambda D: D.x),
    "Laplace": _obs(lambda D, m, s: dist.Laplace(m, s), lambda D: D.x),
    "InverseGamma": _obs(lambda D, m, s: dist.InverseGamma(s, 1.0), lambda D: D.x),
    "CategoricalLogits": _obs(lambda D, m, s: dist.Categorical(logits=D.p * m), lambda D: D.k % 3),
    "Dirichlet": _obs(lambda D, m, s: dist.Dirichlet(jnp.ones(3) * s), lambda D: D.p),
    "MultivariateNormal": _obs(lambda D, m, s: dist.MultivariateNormal(jnp.zeros(3) + m, jnp.eye(3) * s),
                               lambda D: D.p),
}

FUNCTIONS = {
    "logsumexp": lambda D, m, w, a: jax.nn.logsumexp(D.x * m),
    "softplus": lambda D, m, w, a: -jnp.sum(jax.nn.softplus(D.X @ w)),
    "log_softmax": lambda D, m, w, a: jnp.sum(jax.nn.log_softmax(D.p * m, axis=-1)),
    "where": lambda D, m, w, a: jnp.sum(jnp.where(D.x > 0.5, D.x * m, -m)),
    "cumsum": lambda D, m, w, a: -jnp.sum(jnp.cumsum(D.x * m) ** 2),
    "sort": lambda D, m, w, a: -jnp.sum(jnp.sort(D.x * m) * jnp.arange(D.size("row"))),
    "concatenate": lambda D, m, w, a: -jnp.sum(jnp.concatenate([w, a]) ** 2),
    "stack": lambda D, m, w, a: -jnp.sum(jnp.stack([w, w * m]) ** 2),
    "tile-repeat": lambda D, m, w, a: -jnp.sum(jnp.tile(w, 2) ** 2) - jnp.sum(jnp.repeat(w, 2) ** 2),
    "clip": lambda D, m, w, a: -jnp.sum(jnp.clip(D.X @ w, -1, 1) ** 2),
    "argmax": lambda D, m, w, a: jnp.sum(jnp.argmax(D.X, axis=1) * m),
    "segment_sum": lambda D, m, w, a: -jnp.sum(jax.ops.segment_sum(D.x * m, D.g, D.size("group")) ** 2),
    "at-add": lambda D, m, w, a: -jnp.sum(jnp.zeros(D.size("group")).at[D.g].add(D.x * m) ** 2),
    "take_along_axis": lambda D, m, w, a: jnp.sum(jnp.take_along_axis(D.p * m, (D.k % 3)[:, None], axis=1)),
    "einsum": lambda D, m, w, a: -jnp.sum(jnp.einsum("nd,d->n", D.X, w) ** 2),
    "mean-var": lambda D, m, w, a: -jnp.var(D.x * m) - jnp.mean(D.x * m),
    "norm": lambda D, m, w, a: -jnp.linalg.norm(w),
    "max-min-prod": lambda D, m, w, a: jnp.max(D.x * m) - jnp.min(D.x * m) + jnp.prod(D.x * m),
    "special": lambda D, m, w, a: jnp.sum(jax.scipy.special.expit(D.x * m) + jax.scipy.special.erf(D.x * m)
                                          + jax.scipy.special.gammaln(D.x + m**2)
                                          + jax.scipy.special.digamma(D.x + m**2)
                                          + jax.scipy.special.xlogy(D.x, D.x + m**2)),
    "dynamic_slice": lambda D, m, w, a: -jax.lax.dynamic_slice_in_dim(w, 1, 1)[0] ** 2,
    "outer-flip-diff-pad": lambda D, m, w, a: -jnp.sum(jnp.outer(w, w)) - jnp.sum(jnp.flip(w) * w)
    - jnp.sum(jnp.diff(w) ** 2) - jnp.sum(jnp.pad(w, (1, 1)) ** 2),
    "floor-remainder-sign-abs": lambda D, m, w, a: jnp.sum(jnp.floor(D.x * m) + jnp.remainder(D.x, 0.3))
    + jnp.sum(jnp.sign(w) * jnp.abs(w)),
    "logaddexp": lambda D, m, w, a: jnp.sum(jnp.logaddexp(D.x * m, 0.0)),
}


def coverage_data() -> cg.Data:
    rng = np.random.default_rng(0)
    n = 6
    return cg.Data(
        X=cg.array(rng.normal(size=(n, 3)).astype(np.float32), "row", "feature"),
        x=cg.array(rng.uniform(0.1, 1.1, n).astype(np.float32), "row"),
        k=cg.array(rng.integers(0, 5, n).astype(np.int32), "row"),
        b=cg.array((rng.random(n) < 0.5).astype(np.float32), "row"),
        p=cg.array(np.full((n, 3), 1 / 3, np.float32), "row", "cat"),
        g=cg.index(rng.integers(0, 4, n).astype(np.int32), "row", into="group", size=4),
    )


def _function_model(term):
    def model(data):
        m = numpyro.sample("m", dist.Normal(0.0, 1.0))
        with numpyro.plate("feature", data.size("feature")):
            w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        with numpyro.plate("group", data.size("group")):
            a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        numpyro.factor("term", term(data, m, w, a))

    return model


@functools.cache
def lowered_primitives() -> dict[str, set[str]]:
    """primitive -> the models whose lowered graph has it."""
    graphs = {name: cg.lower(ex.model, ex.data)
              for name, ex in ((n, make()) for n, make in sorted(examples.EXAMPLES.items()))}
    data = coverage_data()
    graphs |= {f"dist:{k}": cg.lower(_likelihood_model(f), data) for k, f in LIKELIHOODS.items()}
    graphs |= {f"fn:{k}": cg.lower(_function_model(f), data) for k, f in FUNCTIONS.items()}
    found: dict[str, set[str]] = {}
    for name, g in graphs.items():
        for p in g.primitive_counts():
            found.setdefault(p, set()).add(name)
    return found


def test_every_lowered_primitive_has_a_rule_or_is_listed_unsupported():
    registry.import_rules()
    found = lowered_primitives()
    missing = sorted(set(found) - set(registry.PRIMITIVES))
    print(f"\n{len(found)} primitives lowered; without a sharding rule:")
    for p in missing:
        print(f"  {p:<20} {'(UNSUPPORTED)' if p in UNSUPPORTED else '(NOT LISTED)':<16} in {sorted(found[p])}")
    assert set(missing) <= UNSUPPORTED, f"primitives without a rule or an UNSUPPORTED entry: " \
                                        f"{sorted(set(missing) - UNSUPPORTED)}"
    stale = sorted(UNSUPPORTED & set(registry.PRIMITIVES))
    assert not stale, f"these have a rule now; remove them from UNSUPPORTED: {stale}"


@pytest.mark.parametrize("name", ["Beta", "MultivariateNormal"])
def test_unsupported_primitives_fall_back_to_the_right_value(name):
    """A likelihood whose lowering has primitives without a rule still computes the right value."""
    data = coverage_data()
    model = _likelihood_model(LIKELIHOODS[name])
    plan = _compile_and_compare(model, data, ("row",), devices=2)
    assert any(p in f for f in plan.chosen.propagation.fallbacks for p in UNSUPPORTED)


def test_rule_registry_refuses_duplicates():
    registry.import_rules()
    with pytest.raises(ValueError, match="already registered"):
        registry.rule("add")(lambda *a: None)


def test_every_registered_rule_is_exercised_by_the_lowered_code():
    """The registry has no dead entries for primitives the tests never see, listed for the record."""
    registry.import_rules()
    unseen = sorted(set(registry.PRIMITIVES) - set(lowered_primitives()))
    print(f"\nregistered rules not produced by the coverage models: {unseen}")
    assert "dot_general" not in unseen and "gather" not in unseen and "reduce_sum" not in unseen
