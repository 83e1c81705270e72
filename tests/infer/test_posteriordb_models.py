"""posteriordb translations (support/posteriordb.py): every posterior loads, traces and lowers, and for
three cheap posteriors NumPyro's own NUTS recovers the Stan reference, which checks the
translations independently of claygraph's inference."""
import jax
import numpy as np
import pytest
from numpyro.diagnostics import effective_sample_size
from numpyro.infer import MCMC, NUTS
from numpyro.infer.util import initialize_model

import claygraph as cg
from support import posteriordb as pdb

ROOT = pdb.default_root()
pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason=f"posteriordb references not found at {ROOT}")

ALL = sorted(pdb.POSTERIORS)


def test_every_folder_has_a_translation():
    folders = {p.name for p in ROOT.iterdir() if (p / "reference.json").exists()}
    assert folders == set(pdb.POSTERIORS)
    assert len(folders) == 14


# the three posteriors test_nuts_references.py samples in the default suite; the others: long (docs/testing.md)
SAMPLED = ("eight_schools-eight_schools_noncentered", "kidiq-kidscore_momiq", "sblrc-blr")


@pytest.mark.parametrize("name", [n if n in SAMPLED else pytest.param(n, marks=pytest.mark.long) for n in ALL])
def test_loads_traces_and_covers_the_reference(name):
    ref = pdb.load(name)
    assert ref.name == name and ref.parameters == list(ref.reference)
    assert len(ref.parameters) == ref.info["n_parameters"]
    for stats in ref.reference.values():
        assert set(stats) == {"mean", "sd", "mcse_mean", "q05", "q50", "q95"} and stats["sd"] > 0
    for arr in ref.data.arrays.values():
        assert arr.dtype in (np.float32, np.int32) and len(arr.dims) == len(arr.shape)

    init = initialize_model(jax.random.PRNGKey(0), ref.model, model_args=(ref.data,))
    assert np.isfinite(float(init.potential_fn(init.param_info.z)))
    trace = init.model_trace
    sites = {k for k, s in trace.items() if s["type"] in ("sample", "deterministic")}
    for p in ref.parameters:
        base, idx = pdb.parse_name(p)
        assert base in sites, (p, sorted(sites))
        value = np.asarray(trace[base]["value"])
        assert value.ndim == len(idx) and all(i < n for i, n in zip(idx, value.shape)), (p, value.shape)
    # every latent site is a reference parameter or the source of a deterministic one
    latent = {k for k, s in trace.items() if s["type"] == "sample" and not s["is_observed"]}
    bases = {pdb.parse_name(p)[0] for p in ref.parameters}
    assert latent <= bases | {"theta_trans"}, latent - bases


@pytest.mark.parametrize("name", ALL)
def test_lowers_with_claygraph(name):
    ref = pdb.load(name)
    graph = cg.lower(ref.model, ref.data)
    latent = {pdb.parse_name(p)[0] for p in ref.parameters} - {"theta"}
    assert latent <= set(graph.param_dims)


def test_parse_name():
    assert pdb.parse_name("sigma") == ("sigma", ())
    assert pdb.parse_name("beta[2]") == ("beta", (1,))
    assert pdb.parse_name("x[1,2]") == ("x", (0, 1))
    assert pdb.parse_name("x[3, 10]") == ("x", (2, 9))
    with pytest.raises(ValueError):
        pdb.parse_name("beta[0]")
    with pytest.raises(ValueError):
        pdb.parse_name("beta[")


def test_compare_indexes_elements_and_2d_names():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 2, 3)) + np.arange(6).reshape(2, 3)
    ref = pdb.Reference(name="toy", model=None, data=None, parameters=["x[1,1]", "x[2,3]", "s"],
                        reference={"x[1,1]": dict(mean=0.0, sd=1.0, mcse_mean=0.01, q05=-1.64, q50=0, q95=1.64),
                                   "x[2,3]": dict(mean=5.0, sd=2.0, mcse_mean=0.01, q05=0, q50=5, q95=10),
                                   "s": dict(mean=1.0, sd=0.5, mcse_mean=0.01, q05=0, q50=1, q95=2)})
    rows = pdb.compare(ref, {"x": x, "s": rng.normal(1.0, 0.5, size=(4000, 1))})
    assert [r.param for r in rows] == ["x[1,1]", "x[2,3]", "s"]
    assert rows[0].z < 0.1 and abs(rows[0].sd_ratio - 1) < 0.05
    assert rows[1].z < 0.1 and abs(rows[1].sd_ratio - 0.5) < 0.05
    assert rows[1].z == pytest.approx(abs(x[:, 1, 2].mean() - 5.0) / 2.0)
    assert rows[2].z < 0.1
    with pytest.raises(KeyError):
        pdb.compare(ref, {"x": x})
    assert len(pdb.compare(ref, {"x": x}, missing="skip")) == 2
    table = pdb.format_table(rows)
    assert "x[2,3]" in table and "sd_ratio" in table


# -- NumPyro's NUTS against the reference ---------------------------------------------------------

CHEAP = {"sblrc-blr": 500, "eight_schools-eight_schools_noncentered": 500, "kidiq-kidscore_momiq": 1000}


@pytest.mark.parametrize("name", sorted(CHEAP))
@pytest.mark.long  # docs/testing.md: NumPyro's own NUTS against the references: checks the translations once
def test_numpyro_nuts_matches_the_reference(name):
    ref = pdb.load(name)
    mcmc = MCMC(NUTS(ref.model), num_warmup=CHEAP[name], num_samples=1000, num_chains=1, progress_bar=False)
    mcmc.run(jax.random.PRNGKey(1), ref.data)
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples().items()}
    latent = {k: v for k, v in samples.items() if k != "theta"}

    rows = pdb.compare(ref, samples)
    assert [r.param for r in rows] == ref.parameters
    table = pdb.format_table(rows, title=name)
    print(table)
    for r in rows:
        base, idx = pdb.parse_name(r.param)
        draws = samples[base][(slice(None),) + idx]
        ess = float(effective_sample_size(draws[None]))
        mcse = np.hypot(r.ref_mcse, r.sd / np.sqrt(ess))
        assert abs(r.mean - r.ref_mean) < 0.15 * r.ref_sd + 4 * mcse, (r, ess, table)
        assert abs(r.sd_ratio - 1) < 0.15, (r, table)

    if "theta" in samples:  # eight schools: theta is derived from the latents when not given
        derived = pdb.compare(ref, latent)
        assert [r.param for r in derived] == ref.parameters
        assert all(abs(a.mean - b.mean) < 1e-4 * b.ref_sd for a, b in zip(derived, rows))
