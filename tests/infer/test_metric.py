"""The low-rank + diagonal metric learnt in Stan's windows (claygraph.infer.metric)."""
from __future__ import annotations

import inspect

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from blackjax.mcmc.metrics import LowRankInverseMassMatrix

import claygraph as cg
from claygraph.infer import metric
from claygraph.infer.chains import ADAPTATIONS, Settings


def _inverse_mass(imm: LowRankInverseMassMatrix) -> np.ndarray:
    s, u, lam = (np.asarray(x, np.float64) for x in imm)
    inner = np.eye(len(s)) + u @ np.diag(lam - 1.0) @ u.T
    return s[:, None] * inner * s[None, :]


def _learn(cov: np.ndarray, n: int, seed: int = 0, rule: metric.LowRankRule | None = None):
    """One window of n exact Gaussian draws and their gradients through the MetricCore."""
    x = np.random.default_rng(seed).multivariate_normal(np.zeros(len(cov)), cov, size=n).astype(np.float32)
    g = -(x @ np.linalg.inv(cov)).astype(np.float32)
    core = metric.low_rank_core(n, rule or metric.LowRankRule())
    state, update = core.init(len(cov)), jax.jit(core.update)  # jitted: one program, not one per operation
    for xi, gi in zip(x, g):
        state = update(state, jnp.asarray(xi), jnp.asarray(gi))
    return core.final(state).inverse_mass_matrix


def _whitened_spectrum(imm, cov) -> np.ndarray:
    """Eigenvalues of M^1/2 cov M^1/2 (all 1 for the ideal metric)."""
    w, v = np.linalg.eigh(np.linalg.inv(_inverse_mass(imm)))
    half = (v * np.sqrt(w)) @ v.T
    return np.linalg.eigvalsh(half @ cov @ half)


def test_correlated_2d_gaussian_metric_is_its_covariance():
    sd = np.array([0.01, 30.0])
    cov = np.array([[1.0, 0.95], [0.95, 1.0]]) * np.outer(sd, sd)
    metric = _learn(cov, 4000)
    learnt = _inverse_mass(metric)
    # both scaled eigenvalues (6.2 and 0.16) lie outside [1/2, 2]: the metric is the whole covariance
    np.testing.assert_allclose(learnt, cov, rtol=0.1, atol=0.05 * np.sqrt(np.outer(np.diag(cov), np.diag(cov))).min())
    assert np.all(np.abs(np.log(_whitened_spectrum(metric, cov))) < np.log(1.15))


def test_correlated_10d_gaussian_is_whitened_within_the_cutoff():
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    sd = np.exp(rng.uniform(-3, 3, size=10))
    cov = np.outer(sd, sd) * (q @ np.diag(np.geomspace(1e-3, 30.0, 10)) @ q.T)
    cov = (cov + cov.T) / 2
    spectrum = _whitened_spectrum(_learn(cov, 2000), cov)
    diag_only = _whitened_spectrum(LowRankInverseMassMatrix(np.sqrt(np.diag(cov)), np.zeros((10, 1)), np.ones(1)), cov)
    assert spectrum.max() / spectrum.min() < 2.5 * 2.5  # what is left lies within the cutoff band
    assert diag_only.max() / diag_only.min() > 100  # and a diagonal metric alone would leave far more


def test_short_window_keeps_the_diagonal_only_and_finite():
    cov = np.eye(40) + 0.9 * (np.ones((40, 40)) - np.eye(40))
    imm = _learn(cov, 10)  # 10 draws for 40 dimensions: no trustworthy low-rank estimate
    assert np.all(np.asarray(imm.lam) == 1.0)
    assert np.all(np.isfinite(np.asarray(imm.sigma))) and np.all(np.asarray(imm.sigma) > 0)


def test_fewer_draws_than_directions_gives_no_extreme_eigenvalues():
    """Why nutpie's estimate froze chains in Stan's short windows: with fewer draws (12) than the
    subspace has directions (20), draws and gradients each have no variance in some of its
    directions, and a nearly unregularised geometric mean puts eigenvalues in the thousands there.
    The identity's pseudo-draws keep them moderate even with the window-length gate off."""
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(30, 30)))
    cov = q @ np.diag(np.exp(np.linspace(-2, 2, 30))) @ q.T
    ungated = {"min_draws": 0, "draws_per_direction": 0.0}
    nearly_unregularised = np.asarray(_learn(cov, 12, rule=metric.LowRankRule(prior_draws=1e-6, **ungated)).lam)
    assert nearly_unregularised.max() > 1000
    lam = np.asarray(_learn(cov, 12, rule=metric.LowRankRule(**ungated)).lam)
    assert lam.min() > 0.1 and lam.max() < 10
    assert np.all(np.asarray(_learn(cov, 12).lam) == 1.0)  # and by default such a window gives no correction


def test_constant_coordinate_keeps_its_previous_scale():
    m = metric.Moments(jnp.asarray(10), jnp.zeros(2), jnp.asarray([0.0, 4.0]), jnp.zeros(2), jnp.asarray([0.0, 1.0]))
    d = np.asarray(metric.diagonal(m, jnp.asarray([0.3, 0.3])))
    assert np.all(np.isfinite(d)) and d[0] == pytest.approx(0.3 * 10 / 15 + 1e-3 * 5 / 15, rel=1e-5)


def _bounded_model(data):
    """A bounded weight p in (0, 1) and scale s > 0 beside two strongly correlated slopes
    (a predictor far from zero)."""
    p = numpyro.sample("p", dist.Beta(2.0, 2.0))
    s = numpyro.sample("s", dist.HalfNormal(1.0))
    beta = numpyro.sample("beta", dist.Normal(0.0, 5.0).expand([2]).to_event(1))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(data.X @ beta + p, s), obs=data.y)


def test_window_low_rank_nuts_on_a_bounded_posterior_does_not_freeze():
    rng = np.random.default_rng(0)
    X = np.stack([np.ones(60), rng.normal(10.0, 1.0, 60)], axis=1).astype(np.float32)
    y = (X @ np.array([0.5, 0.3]) + 0.7 + rng.normal(0, 0.3, 60)).astype(np.float32)
    data = cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(y, "row"))
    res = cg.infer.nuts(_bounded_model, data, chains=2, warmup=200, draws=200, seed=1,
                        adaptation="window_low_rank", progress=False)
    post = res.posterior
    for name in ("p", "s", "beta"):
        sds = np.asarray(post[name].std("draw").values)
        assert np.all(sds > 1e-3), (name, sds)  # every chain moved in every coordinate
    assert 0.15 < float(post["s"].mean()) < 0.5
    assert not res.restarted  # the metric did not need the window fallback


def test_default_adaptation_is_named_in_settings():
    assert Settings().adaptation == "window_low_rank" in ADAPTATIONS
    assert inspect.signature(cg.infer.nuts).parameters["adaptation"].default == Settings().adaptation


@pytest.mark.parametrize("d,rows", [(1, 20), (3, 40), (50, 3)])
def test_metric_keeps_its_shape_when_dimensions_or_buffer_rows_are_fewer_than_the_rank(d, rows):
    core = metric.low_rank_core(rows)
    state = core.init(d)
    for x in np.random.default_rng(0).normal(size=(30, d)).astype(np.float32):
        state = core.update(state, jnp.asarray(x), jnp.asarray(-x))
    imm = core.final(state).inverse_mass_matrix
    assert imm.U.shape == (d, 10) and imm.lam.shape == (10,)
    assert np.all(np.isfinite(np.asarray(imm.sigma)))
