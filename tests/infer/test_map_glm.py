"""MAP agrees with the unsplit MAP; LogisticRegression on every split agrees with scikit-learn (the
estimators' own tests: tests/glm)."""
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from sklearn.linear_model import LogisticRegression as SkLogisticRegression

import claygraph as cg


@pytest.fixture(scope="module")
def w1_small():
    """W1's shape at test scale: X ~ N(0,1), w ~ N(0,1)/sqrt(D), y ~ Bernoulli(sigmoid(X w))."""
    rng = np.random.default_rng(0)
    n, d = 1500, 5
    X = rng.normal(size=(n, d)).astype(np.float32)
    w = rng.normal(size=d) / np.sqrt(d)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ w + 0.2)))).astype(np.float64)
    return X, y


@pytest.mark.parametrize("devices,split", [(1, None), (2, ()), (2, ("row",)), (2, ("feature",)), (3, ("row",))])
@pytest.mark.parametrize("fit_intercept", [False, True])
def test_logistic_regression_equals_scikit_learn(w1_small, devices, split, fit_intercept):
    X, y = w1_small
    ref = SkLogisticRegression(C=1.0, fit_intercept=fit_intercept, tol=1e-10, max_iter=5000).fit(X, y)
    m = cg.glm.LogisticRegression(C=1.0, fit_intercept=fit_intercept, tol=1e-8, split=split,
                                  runtime=cg.runtime.Local(devices=devices)).fit(X, y)
    assert np.max(np.abs(m.coef_ - ref.coef_)) < 1e-4
    assert np.allclose(m.intercept_, ref.intercept_, atol=1e-4)
    assert np.allclose(m.predict_proba(X), ref.predict_proba(X), atol=1e-4)
    assert m.score(X, y) == pytest.approx(ref.score(X, y), abs=1e-3)
    assert m.n_iter_[0] > 0


def hier_model(data):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([data.X.shape[1]]).to_event(1))
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    s = numpyro.sample("s", dist.LogNormal(-1.0, 0.5))
    with numpyro.plate("group", data.size("group")):
        a = numpyro.sample("a", dist.Normal(mu, s))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Bernoulli(logits=a[data.g] + data.X @ w), obs=data.y)


def hier_data(groups=23, n=2000, seed=1):
    rng = np.random.default_rng(seed)
    g = np.minimum(rng.zipf(1.5, n) - 1, groups - 1)
    X = rng.normal(size=(n, 3)).astype(np.float32)
    a = rng.normal(0.2, 0.6, groups)
    y = (rng.random(n) < 1 / (1 + np.exp(-(a[g] + X @ np.array([0.5, -0.3, 0.1]))))).astype(np.float32)
    return cg.Data(X=cg.array(X, "row", "feature"), g=cg.index(g, "row", into="group", size=groups),
                   y=cg.array(y, "row"))


# 3 devices and the row split (MAP on a row split: test_logistic_regression_equals_scikit_learn) are long
@pytest.mark.parametrize("devices,split", [(2, ("group",)), pytest.param(3, ("group",), marks=pytest.mark.long),
                                           pytest.param(2, ("row",), marks=pytest.mark.long)])
def test_hierarchical_map_split_equals_unsplit(devices, split):
    data = hier_data()
    ref = cg.infer.map(hier_model, data)
    res = cg.infer.map(hier_model, data, runtime=cg.runtime.Local(devices=devices), split=split)
    assert res.plan.split == split
    assert ref.converged
    assert res.objective == pytest.approx(ref.objective, rel=1e-5)
    for k in ref.params:
        np.testing.assert_allclose(res.params[k], ref.params[k], rtol=2e-3, atol=2e-3)
    assert res.params["a"].shape == (23,)  # the user's group order, no padding


def test_map_without_jacobian_is_the_constrained_mode():
    """Normal likelihood with a HalfNormal scale: the constrained-space mode of sigma solves
    d/dsigma [-n log sigma - SS/(2 sigma^2) - sigma^2/2] = 0; with the Jacobian the mode moves."""
    rng = np.random.default_rng(2)
    y = rng.normal(0.0, 2.0, 400).astype(np.float32)
    data = cg.Data(y=cg.array(y, "row"))

    def model(data):
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("y", dist.Normal(0.0, sigma), obs=data.y)

    n, ss = len(y), float(np.sum(y.astype(np.float64) ** 2))
    # -n/s + ss/s^3 - s = 0  <=>  s^4 + n s^2 - ss = 0
    s2 = (-n + np.sqrt(n * n + 4 * ss)) / 2
    no_jac = cg.infer.map(model, data, jacobian=False)
    with_jac = cg.infer.map(model, data)
    assert float(no_jac.params["sigma"]) == pytest.approx(np.sqrt(s2), rel=1e-4)
    # with the log-Jacobian (+log s) the stationarity condition gains +1/s: (1 - n)/s + ss/s^3 - s = 0
    s2j = (-(n - 1) + np.sqrt((n - 1) ** 2 + 4 * ss)) / 2
    assert float(with_jac.params["sigma"]) == pytest.approx(np.sqrt(s2j), rel=1e-4)
