"""Invalid models and data are refused with a claygraph error that names the cause, before any
optimising or sampling starts (the soundness issue's list of raw exceptions and silent runs)."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import claygraph as cg
from claygraph.errors import ClaygraphError, DataError, DimError, ModelError

RNG = np.random.default_rng(0)


def poisson_model(data):
    rate = numpyro.sample("rate", dist.LogNormal(0.0, 1.0))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Poisson(rate), obs=data.y)


def log_of_data(data):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    numpyro.factor("f", jnp.sum(jnp.log(data.x)) * mu)


def test_nuts_refuses_observations_outside_the_support():
    y = RNG.poisson(2.0, 30).astype(np.float32)
    y[[3, 17]] = -1.0
    data = cg.Data(y=cg.array(y, "row"))
    with pytest.raises(ModelError, match=r"'y' \(observed, 2 of 30 entries\): not finite under Poisson at "
                                         r"positions 3, 17"):
        cg.infer.nuts(poisson_model, data, chains=2, warmup=20, draws=20)


def test_nuts_refuses_the_log_of_negative_data():
    data = cg.Data(x=cg.array(-np.abs(RNG.normal(size=10)).astype(np.float32), "row"))
    with pytest.raises(ModelError, match="'f'"):
        cg.infer.nuts(log_of_data, data, chains=1, warmup=20, draws=20)


def test_nuts_retries_an_invalid_start():
    """Uniform(0, 1) observations: a scale of exp(-2) is valid, one near exp(2) too; but a start
    where the density is invalid (here: never) is retried rather than sampled from."""
    def bounded(data):
        hi = numpyro.sample("hi", dist.Uniform(0.0, 5.0))
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("y", dist.Uniform(0.0, hi), obs=data.y)

    data = cg.Data(y=cg.array(np.full(20, 2.0, np.float32), "row"))
    res = cg.infer.nuts(bounded, data, chains=2, warmup=100, draws=50, seed=3)
    hi = np.asarray(res.posterior["hi"])
    assert np.all(hi > 2.0), "every draw must respect the support the observations imply"
    assert hi.shape == (2, 50), f"asked for 50 draws per chain (segments are 100), got {hi.shape}"


def test_parameter_shorter_than_its_index_target():
    def short(data):
        a = numpyro.sample("a", dist.Normal(0.0, 1.0).expand([5]).to_event(1))
        numpyro.sample("y", dist.Normal(a[data.g], 1.0), obs=data.y)

    data = cg.Data(g=cg.index(RNG.integers(0, 10, 20).astype(np.int32), "row", into="grp", size=10),
                   y=cg.array(RNG.normal(size=20).astype(np.float32), "row"))
    with pytest.raises(DimError, match=r"site 'a' is indexed along axis 0 \(size 5\) by data 'g'.*'grp' of size 10"):
        cg.lower(short, data)


def test_model_without_latent_sites():
    def nothing(data):
        numpyro.sample("y", dist.Normal(0.0, 1.0), obs=data.y)

    data = cg.Data(y=cg.array(RNG.normal(size=5).astype(np.float32), "row"))
    for method in (cg.infer.map, cg.infer.nuts):
        with pytest.raises(ModelError, match="no latent sample sites"):
            method(nothing, data)


def test_empty_dim_and_string_field_are_refused():
    with pytest.raises(DataError, match="dim 'feature' is empty"):
        cg.Data(X=cg.array(np.zeros((20, 0), np.float32), "row", "feature"))
    with pytest.raises(DataError, match="dtype <U1.*numeric"):
        cg.Data(y=cg.array(np.ones(3, np.float32), "row"), s=cg.array(np.array(["a", "b", "c"]), "row"))
    assert issubclass(DataError, ClaygraphError) and issubclass(ModelError, ClaygraphError)


def test_map_retries_a_start_outside_the_support():
    """hi ~ Uniform(0, 5) with observations at 2: the zero start (hi = 2.5) is valid, but with
    observations at 3 it is not; MAP then starts from a random valid point, as NumPyro does."""
    def bounded(data):
        hi = numpyro.sample("hi", dist.Uniform(0.0, 5.0))
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("y", dist.Uniform(0.0, hi), obs=data.y)

    data = cg.Data(y=cg.array(np.full(20, 3.0, np.float32), "row"))
    res = cg.infer.map(bounded, data, jacobian=False)
    assert 3.0 <= float(res.params["hi"]) < 3.05, res.message


def test_posterior_has_deterministic_sites_and_models_may_index_data_with_traced_values():
    """The posterior holds numpyro.deterministic sites (computed from the draws, data passed in,
    not captured), and a model that indexes its NumPy data with traced indices runs to the end."""
    def model(data):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        shift = numpyro.deterministic("shift", mu * 2.0)
        idx = jnp.arange(data.y.shape[0]) % 2
        numpyro.sample("y", dist.Normal(shift + data.y[idx] * 0.0, 1.0), obs=data.y)

    data = cg.Data(y=cg.array(RNG.normal(size=20).astype(np.float32), "row"))
    res = cg.infer.nuts(model, data, chains=1, warmup=50, draws=20, seed=1)
    shift, mu = np.asarray(res.posterior["shift"]), np.asarray(res.posterior["mu"])
    np.testing.assert_allclose(shift, 2.0 * mu, rtol=1e-6)
