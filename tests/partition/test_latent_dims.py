"""Plates over parameters only define latent dims (basis functions, years of a random walk): they
are inferred, offered as splits, and every candidate equals NumPyro."""
from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from models_for_tests import assert_close, random_params, reference

import claygraph as cg
from claygraph.errors import ModelError


def hsgp(data):
    """A Hilbert-space GP: the plate over basis functions names no data dim."""
    m, half_width = 7, 3.0
    ls = numpyro.sample("ls", dist.LogNormal(0.0, 1.0))
    with numpyro.plate("basis", m):
        beta = numpyro.sample("beta", dist.Normal(0.0, 1.0))
    freqs = jnp.pi * jnp.arange(1, m + 1) / (2 * half_width)
    phi = jnp.sin(freqs[None, :] * (data.x[:, None] + half_width)) / jnp.sqrt(half_width)
    spd = jnp.exp(-0.5 * (ls * freqs) ** 2) * ls
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(phi @ (jnp.sqrt(spd) * beta), 0.3), obs=data.y)


def random_walk(data):
    """Yearly effects as a cumulative sum of increments, gathered by each row's year."""
    scale = numpyro.sample("scale", dist.HalfNormal(1.0))
    with numpyro.plate("year", data.size("year")):
        inc = numpyro.sample("inc", dist.Normal(0.0, 1.0))
    effect = jnp.cumsum(inc * scale)
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(effect[data.t], 1.0), obs=data.y)


def _data(kind: str, n: int = 23):
    rng = np.random.default_rng(0)
    y = cg.array(rng.normal(size=n).astype(np.float32), "row")
    if kind == "hsgp":
        return cg.Data(x=cg.array(rng.uniform(-2, 2, n).astype(np.float32), "row"), y=y)
    return cg.Data(t=cg.index(rng.integers(0, 6, n).astype(np.int32), "row", into="year", size=6), y=y)


@pytest.mark.parametrize("model,kind,latent", [(hsgp, "hsgp", "basis"), (random_walk, "rw", "year")])
def test_latent_dims_are_inferred_split_and_exact(model, kind, latent):
    data = _data(kind)
    graph = cg.lower(model, data)
    assert latent in graph.dims
    params = random_params(model, data, 1)
    ref = reference(model, data, params)
    plan = cg.partition(graph, data, cluster=cg.ClusterSpec.local(devices=2))
    splits = [c.split for c in plan.candidates]
    assert (latent,) in splits
    for split in splits:
        for devices in (2, 3):
            p = cg.partition(graph, data, cluster=cg.ClusterSpec.local(devices=devices), split=split)
            assert_close(cg.compile(p).potential_and_grad(params), ref, rtol_value=1e-5, rtol_grad=1e-4,
                         where=f"{model.__name__} under {split} on {devices} devices")


def test_a_plate_over_observations_must_name_a_data_dim():
    def model(data):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("obs", data.size("row")):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=data.y)

    with pytest.raises(ModelError, match="plate 'obs' .* has observed sites under it but is not a dim of the data"):
        cg.lower(model, _data("hsgp"))


AGES, AREAS, YEARS = 4, 3, 5


def mortality(data):
    """NumPyro's mortality example in small: a padded, cumulated drift and per-age and per-area
    effects make an age x space x time rate tensor, gathered by three index columns at once."""
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 1.0))
    with numpyro.plate("age_groups", AGES):
        a_age = numpyro.sample("a_age", dist.Normal(0.0, 1.0))
    with numpyro.plate("space", AREAS):
        a_space = numpyro.sample("a_space", dist.Normal(0.0, 1.0))
    with numpyro.plate("time_inc", YEARS - 1):
        drift = numpyro.sample("drift", dist.Normal(0.0, 0.3))
    walk = jnp.pad(jnp.cumsum(drift), (1, 0))
    rate = alpha + a_age[:, None, None] + a_space[None, :, None] + walk[None, None, :]
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Poisson(jnp.exp(rate[data.age, data.space, data.time])), obs=data.y)


def test_multi_column_gather_of_a_padded_random_walk_on_every_split():
    rng = np.random.default_rng(0)
    n = 30
    data = cg.Data(age=cg.index(rng.integers(0, AGES, n).astype(np.int32), "row", into="age_groups", size=AGES),
                   space=cg.index(rng.integers(0, AREAS, n).astype(np.int32), "row", into="space", size=AREAS),
                   time=cg.index(rng.integers(0, YEARS, n).astype(np.int32), "row", into="time", size=YEARS),
                   y=cg.array(rng.poisson(2.0, n).astype(np.float32), "row"))
    graph = cg.lower(mortality, data)
    assert {"age_groups", "space", "time", "time_inc"} <= set(graph.dims)
    params = random_params(mortality, data, 1)
    ref = reference(mortality, data, params)
    plan = cg.partition(graph, data, cluster=cg.ClusterSpec.local(devices=2))
    for split in [c.split for c in plan.candidates]:
        p = cg.partition(graph, data, cluster=cg.ClusterSpec.local(devices=3), split=split)
        assert_close(cg.compile(p).potential_and_grad(params), ref, rtol_value=1e-5, rtol_grad=1e-4,
                     where=f"mortality under {split}")
