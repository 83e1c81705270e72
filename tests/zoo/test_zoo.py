"""The public model zoo (zoo_models.py): every model lowers with the dims its plates and data give
it, every split the partitioner offers equals NumPyro's potential and gradient, and for a subset a
short NUTS run agrees with NumPyro's own NUTS on the same model and data.

The NUTS comparison is deliberately short (one chain each, 200 warmup + 200 draws) to keep the zoo
cheap; its tolerance is stated where it is asserted.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer import MCMC, NUTS
from numpyro.infer.util import potential_energy
from zoo_models import ZOO, Entry

import claygraph as cg

BY_NAME = {e.name: e for e in ZOO}


def as_jax(data: cg.Data) -> cg.Data:
    """The data as the examples hold them (jnp arrays): NumPyro's contrib scan indexes its
    conditioned data with a traced step, which a NumPy array refuses."""
    return data.with_values({k: jnp.asarray(a.values) for k, a in data.arrays.items()})


def random_params(entry: Entry, data: cg.Data, seed: int) -> dict[str, jax.Array]:
    """Unconstrained values uniform in (-1.5, 1.5) for every latent site (NumPyro's init_to_uniform),
    improper priors included (they cannot be sampled)."""
    arrays = as_jax(data)

    def run():  # jitted: one XLA program, not one per operation of the model
        keys = iter(jax.random.split(jax.random.PRNGKey(seed), 64))
        drawn = {}

        def draw(site):
            if site["type"] != "sample" or site["is_observed"]:
                return None
            t = biject_to(site["fn"].support)
            u = jax.random.uniform(next(keys), t.inverse_shape(site["fn"].shape()), minval=-1.5, maxval=1.5)
            drawn[site["name"]] = u
            return t(u)

        handlers.substitute(handlers.seed(entry.model, 0), substitute_fn=draw)(arrays)
        return drawn

    return jax.jit(run)()


def reference(entry: Entry, data: cg.Data, params):
    f = jax.jit(jax.value_and_grad(lambda z, d: potential_energy(entry.model, (d,), {}, z)))
    return f(params, as_jax(data))


def assert_close(got, ref, where: str) -> None:
    (v, g), (v_ref, g_ref) = got, ref
    assert abs(float(v) - float(v_ref)) <= 1e-4 + 1e-5 * abs(float(v_ref)), f"{where}: potential {v} != {v_ref}"
    assert set(g) == set(g_ref), where
    scale = max([1.0] + [float(jnp.max(jnp.abs(x))) for x in g_ref.values()])
    for k in sorted(g_ref):
        np.testing.assert_allclose(np.asarray(g[k]), np.asarray(g_ref[k]), rtol=1e-4, atol=1e-5 * scale,
                                   err_msg=f"{where}: gradient of {k!r}")


def test_the_zoo_covers_what_users_write():
    assert len(ZOO) >= 20 and len(BY_NAME) == len(ZOO)
    plates_over_params_only = {"hsgp": "basis", "ppca": "factor", "mortality": "time_inc"}
    for name, dim in plates_over_params_only.items():
        assert dim in cg.lower(BY_NAME[name].model, BY_NAME[name].data()).dims, name
    scans = [e.name for e in ZOO if any(n.primitive == "scan" for n in cg.lower(e.model, e.data()).nodes())]
    assert {"ar2_scan", "ar2_lax_scan", "arma11", "garch11"} <= set(scans)
    assert {"mortality", "gp_dense"} <= set(BY_NAME)
    assert {e.name for e in ZOO if e.nuts} >= {"hsgp", "ar2_scan", "mortality", "gp_dense"}


@pytest.mark.parametrize("entry", ZOO, ids=lambda e: e.name)
def test_every_candidate_split_equals_numpyro(entry):
    data = entry.data()
    graph = cg.lower(entry.model, data)
    for site, dims in (entry.dims or {}).items():
        assert graph.param_dims[site] == dims, f"{entry.name}: {site} has dims {graph.param_dims[site]}"
    params = random_params(entry, data, 1)
    ref = reference(entry, data, params)
    assert np.isfinite(float(ref[0])), entry.name
    plan = cg.partition(graph, data, cluster=cg.ClusterSpec.local(devices=2))
    splits = [tuple(c.split) for c in plan.candidates]
    assert () in splits and len(splits) >= 2, f"{entry.name}: only {splits} offered"
    for split in splits:  # 3 devices: no dim here divides evenly, so padding and masks are exercised
        p = cg.partition(graph, data, cluster=cg.ClusterSpec.local(devices=3), split=split)
        assert_close(cg.compile(p).potential_and_grad(params), ref, f"{entry.name} under {split or 'no split'}")
    _check_posterior_sites(entry, data, params)


def _check_posterior_sites(entry: Entry, data: cg.Data, params) -> None:
    """A posterior built from draws (what cg.infer returns) holds every site NumPyro's MCMC returns:
    its latent sample sites and deterministic sites, reparameterised models' user-facing sites too."""
    from claygraph.infer.common import constrain_draws

    arrays = as_jax(data)

    def returned_sites():  # jitted: one XLA program, not one per operation of the model
        fixed = constrained(entry, data, params)
        trace = handlers.trace(handlers.substitute(handlers.seed(entry.model, 0), data=fixed))
        return {k: s["value"] for k, s in trace.get_trace(arrays).items()
                if (s["type"] == "sample" and not s["is_observed"]) or s["type"] == "deterministic"}

    returned = jax.jit(returned_sites)()
    got = constrain_draws(entry.model, data, {k: jnp.stack([v, v]) for k, v in params.items()})
    assert set(returned) <= set(got), f"{entry.name}: the posterior lacks {sorted(set(returned) - set(got))}"
    for k, value in returned.items():
        np.testing.assert_allclose(got[k][0], np.asarray(value), rtol=1e-5, atol=1e-5,
                                   err_msg=f"{entry.name}: site {k!r}")


def constrained(entry: Entry, data: cg.Data, params) -> dict:
    from numpyro.infer.util import constrain_fn

    return constrain_fn(entry.model, (as_jax(data),), {}, params)


def test_a_dense_kernel_under_the_row_split_runs_whole_and_says_so():
    e = BY_NAME["gp_dense"]
    text = cg.partition(e.model, e.data(), cluster=cg.ClusterSpec.local(devices=2), split=("row",)).explain()
    assert "two axes along split dim 'row'" in text


NUTS_ENTRIES = [e for e in ZOO if e.nuts]  # hsgp, mortality, gp_dense, ar2_scan


def _numpyro_draws(entry: Entry, data: cg.Data) -> dict[str, np.ndarray]:
    mcmc = MCMC(NUTS(entry.model), num_warmup=200, num_samples=200, num_chains=1, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), as_jax(data))
    return {k: np.asarray(v) for k, v in mcmc.get_samples().items()}


@pytest.mark.long  # docs/testing.md: NUTS is checked against exact and reference posteriors in tests/infer
@pytest.mark.parametrize("entry", NUTS_ENTRIES, ids=lambda e: e.name)
def test_short_nuts_agrees_with_numpyro(entry):
    data = entry.data()
    res = cg.infer.nuts(entry.model, data, chains=1, warmup=200, draws=200, seed=0)
    ours = {k: res.posterior[k].values.reshape((-1, *res.posterior[k].shape[2:])) for k in res.posterior.data_vars}
    theirs = _numpyro_draws(entry, data)
    # every site NumPyro's MCMC returns (deterministic and reparameterised sites included)
    assert set(theirs) <= set(ours), f"{entry.name}: posterior lacks {sorted(set(theirs) - set(ours))}"
    for k, b in theirs.items():
        a = ours[k]
        assert a.shape[1:] == b.shape[1:], (k, a.shape, b.shape)
        if np.all(a > 0) and np.all(b > 0):  # positive sites on the log scale (LogNormal(0, 10) tails)
            a, b = np.log(a), np.log(b)
        # 200 draws each, robust summaries: medians within half a posterior sd (from the
        # interquartile range) plus 0.05, and spreads within a factor of 3 (one short chain on a
        # ridge, as mortality's intercepts are, estimates its spread loosely); a wrong log density
        # moves the medians by several sd
        q_a, q_b = np.percentile(a, [25, 50, 75], axis=0), np.percentile(b, [25, 50, 75], axis=0)
        sd_a, sd_b = (q_a[2] - q_a[0]) / 1.349, (q_b[2] - q_b[0]) / 1.349
        gap = np.abs(q_a[1] - q_b[1]) - (0.5 * (sd_a + sd_b) / 2 + 0.05)
        assert np.all(gap <= 0), f"{entry.name}: {k} medians {q_a[1]} vs NumPyro {q_b[1]} (sd {sd_a}, {sd_b})"
        ratio = (sd_a + 1e-3) / (sd_b + 1e-3)
        assert np.all((ratio > 1 / 3) & (ratio < 3.0)), f"{entry.name}: {k} sd {sd_a} vs NumPyro {sd_b}"
