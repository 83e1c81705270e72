"""MAP says what stopped it, and `converged` agrees with the rule that did (issue: messages naming the real cause)."""
import importlib

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import claygraph as cg
from claygraph.errors import ModelError


def normal_model(data):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=data.y)


def lognormal_model(data):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.LogNormal(mu, 1.0), obs=data.y)


def logistic(data):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([data.X.shape[1]]).to_event(1))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Bernoulli(logits=data.X @ w), obs=data.y)


@pytest.fixture(scope="module")
def normal_data():
    y = np.random.default_rng(0).normal(3.0, 1.0, 500).astype(np.float32)
    return cg.Data(y=cg.array(y, "row"))


@pytest.fixture(scope="module")
def logistic_data():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(2000, 8)).astype(np.float32)
    y = (rng.random(2000) < 1 / (1 + np.exp(-X @ rng.normal(size=8)))).astype(np.float32)
    return cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(y, "row"))


def test_stopped_on_tol_reports_converged(logistic_data):
    res = cg.infer.map(logistic, logistic_data)
    assert res.converged and res.stop == "tol"
    assert res.message.startswith("converged: max|grad|")
    # the default tolerance is relative to the objective where it is tested
    assert res.grad_max <= 1e-6 * abs(res.objective) * (1 + 1e-6)


def test_absolute_scale_is_tighter(logistic_data):
    loose = cg.infer.map(logistic, logistic_data, tol=1e-3)
    tight = cg.infer.map(logistic, logistic_data, tol=1e-3, scale=1.0)
    assert loose.converged and tight.converged
    assert tight.grad_max <= 1e-3 < loose.grad_max or tight.iterations >= loose.iterations


def test_max_iter_reached_is_not_converged(logistic_data):
    res = cg.infer.map(logistic, logistic_data, max_iter=2, tol=1e-12)
    assert not res.converged and res.stop == "max_iter" and res.iterations == 2
    assert "max_iter=2" in res.message and "not converged" in res.message


def test_max_iter_zero_returns_the_start(normal_data):
    res = cg.infer.map(normal_model, normal_data, max_iter=0)
    assert res.iterations == 0 and not res.converged
    assert "max_iter=0" in res.message
    assert float(res.params["mu"]) == 0.0
    assert np.isfinite(res.objective)


def test_start_at_the_optimum_stops_at_once(normal_data):
    first = cg.infer.map(normal_model, normal_data, tol=1e-5)
    again = cg.infer.map(normal_model, normal_data, tol=1e-5, init=first.unconstrained)
    assert again.converged and again.stop == "tol" and again.iterations == 0
    assert float(again.params["mu"]) == pytest.approx(float(first.params["mu"]), abs=1e-5)


def test_invalid_observations_are_named(normal_data):
    y = np.abs(np.random.default_rng(2).normal(size=300)).astype(np.float32) + 0.1
    y[17] = -1.0  # log of a negative observation: the density is zero for every parameter
    data = cg.Data(y=cg.array(y, "row"))
    with pytest.raises(ModelError, match="cannot start") as e:
        cg.infer.map(lognormal_model, data)
    msg = str(e.value)
    assert "'y' (observed, 1 of 300 entries)" in msg and "support" in msg
    assert "HalfNormal" not in msg  # not the unbounded-density message


def test_non_integer_counts_are_named():
    def poisson(data):
        b = numpyro.sample("b", dist.Normal(0.0, 1.0))
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("y", dist.Poisson(jnp.exp(b)), obs=data.y)

    y = np.array([0.0, 1.0, 2.5, 3.0, 1.0], np.float32)
    with pytest.raises(ModelError, match=r"'y' \(observed, 1 of 5 entries\)"):
        cg.infer.map(poisson, cg.Data(y=cg.array(y, "row")))


def test_invalid_observations_with_max_iter_zero(normal_data):
    y = np.full(10, -1.0, np.float32)
    with pytest.raises(ModelError, match="cannot start"):
        cg.infer.map(lognormal_model, cg.Data(y=cg.array(y, "row")), max_iter=0)


def test_unbounded_density_says_so():
    rng = np.random.default_rng(4)
    groups = 30
    g = rng.integers(0, groups, 300)
    y = rng.normal(0.0, 1.0, 300).astype(np.float32)
    data = cg.Data(g=cg.index(g, "row", into="group", size=groups), y=cg.array(y, "row"))

    def funnel(data):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        tau = numpyro.sample("tau", dist.HalfNormal(1.0))
        with numpyro.plate("group", data.size("group")):
            a = numpyro.sample("a", dist.Normal(mu, tau))
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("y", dist.Normal(a[data.g], 1.0), obs=data.y)

    for jacobian in (False, True):
        seen: list[int] = []
        with pytest.raises(ModelError, match="MAP has no mode to find") as e:
            cg.infer.map(funnel, data, jacobian=jacobian, max_iter=3000,
                         on_chunk=lambda i, v, seen=seen: seen.append(i))
        assert "'tau'" in str(e.value) and "cannot start" not in str(e.value)
        assert "HalfNormal, HalfCauchy or Exponential scale prior it grows without bound" in str(e.value)
        assert seen == []  # named before the first iteration (it ran 110 before tau left e^±20)


def test_a_scale_prior_that_vanishes_at_zero_is_not_named_with_few_groups():
    """LogNormal(-1, 0.5) scales of a centred hierarchy over 300 products: the objective along the probe's ray
    falls from -10 to -40 but ever more slowly (the prior's pull, 4 (log s + 1) per unit, soon matches the
    300 groups' collapse): no error before the fit."""
    from claygraph.examples import hier_logistic_model, make_hier_logistic

    map_module = importlib.import_module("claygraph.infer.map")
    ex = make_hier_logistic(n=3_000, products=300, d=2, seed=0)
    session = cg.infer.common.setup(hier_logistic_model, ex.data)
    sites = {s.name: s.support for s in session.plan.graph.meta.info.sites}
    assert sites["s_a"] == "Positive"
    assert map_module._falls_without_bound(session, session.plan.graph, sites) is None


def test_the_same_prior_over_thousands_of_groups_is_named_with_what_to_do():
    """The same model over 3,000 products: each unit of log-scale toward 0 gains about 3,000 (one per group
    collapsing onto the mean) against the LogNormal prior's 4 (log s + 1), so the fall does not slow down over
    the probe's range; the density peaks near log s = -750, a collapse. MAP names the site before the first
    iteration and says to write the groups non-centred, not to use the prior the model already has."""
    from claygraph.examples import hier_logistic_model, make_hier_logistic

    ex = make_hier_logistic(n=6_000, products=3_000, d=2, seed=0)
    seen: list[int] = []
    with pytest.raises(ModelError, match="MAP has no mode to find") as e:
        cg.infer.map(hier_logistic_model, ex.data, on_chunk=lambda i, v: seen.append(i))
    assert "'s_a'" in str(e.value) or "'s_b'" in str(e.value)
    assert "non-centred" in str(e.value) and "a collapse, not an estimate" in str(e.value)
    assert seen == []


def test_a_scale_that_runs_off_away_from_the_zero_point_is_named_at_its_chunk():
    """The probe sees a density unbounded along a scale with the other sites at 0; one observation with a learnt
    mean and scale is unbounded only where the mean meets it (mu = 3): the chunks' check names it at the chunk
    where the scale passes e^-20, long before max_iter."""
    map_module = importlib.import_module("claygraph.infer.map")
    data = cg.Data(y=cg.array(np.array([3.0], np.float32), "row"))

    def one(data):
        mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("y", dist.Normal(mu, sigma), obs=data.y)

    session = cg.infer.common.setup(one, data, jacobian=False)
    assert map_module._falls_without_bound(session, session.plan.graph, {"sigma": "Positive"}) is None
    seen = []
    with pytest.raises(ModelError, match="MAP diverged: site 'sigma'"):
        cg.infer.map(one, data, jacobian=False, max_iter=3000, on_chunk=lambda i, v: seen.append(i))
    assert seen and seen[-1] <= 100, seen


def test_bad_settings_are_refused(normal_data):
    with pytest.raises(ValueError, match="max_iter"):
        cg.infer.map(normal_model, normal_data, max_iter=-1)
