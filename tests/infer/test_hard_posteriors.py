"""The hard-posterior suite at reduced length (bench/suites/hard.py runs it in full against NumPyro):
its references are sound, and NUTS with its defaults agrees with them on the funnels and the weakly
identified hierarchy that the default metric once got wrong."""
import json

import jax
import numpy as np
import pytest
from numpyro.infer import Predictive

import claygraph as cg
from support import hard
from support import posteriordb as pdb

pytestmark = pytest.mark.skipif(not pdb.default_root().is_dir(), reason="posteriordb references not found")

OWN = [n for n in hard.NAMES if n in hard.OWN]


def test_the_suite_has_at_least_fifteen_posteriors_each_with_a_reference():
    assert len(hard.NAMES) >= 15
    for name in hard.NAMES:
        ref = hard.load(name)
        assert ref.parameters and all(np.isfinite(ref.reference[p]["sd"]) for p in ref.parameters)


@pytest.mark.parametrize("name", [n for n in OWN if n not in hard.POSTERIORDB_ALIAS])
def test_a_stored_reference_passed_its_own_checks_and_names_the_models_sites(name):
    stored = json.loads((hard.REFERENCES / f"{name}.json").read_text())
    assert stored["max_rhat"] <= 1.01 and stored["min_ess_bulk"] >= 2000
    assert stored["divergences"] <= hard.MAX_DIVERGENT * stored["draws"]
    assert stored["method"]["seed"] == hard.REF_SEED
    ref = hard.load(name)
    # every reference parameter is an element of a site of the model (drawn from its prior here)
    prior = Predictive(ref.model, num_samples=3)(jax.random.PRNGKey(0), ref.data)
    rows = pdb.compare(ref, {k: np.asarray(v) for k, v in prior.items()})
    assert [r.param for r in rows] == ref.parameters


# the funnel and the weakly identified hierarchy in the default suite; the other two funnels (20-25 s each)
# in the long one (docs/testing.md)
HARD_RUNS = ["eight_schools_centered", "smoking_status",
             pytest.param("radon_centered", marks=pytest.mark.long),
             pytest.param("glmm_poisson_centered", marks=pytest.mark.long)]


@pytest.mark.filterwarnings("ignore::claygraph.infer.nuts.SamplingWarning")
@pytest.mark.parametrize("name", HARD_RUNS)
def test_nuts_defaults_agree_with_the_reference(name):
    """4 chains x 500 + 500 with every default; the check is posteriordb's (means within 0.1 sd plus z
    MCSE, sds within 10% or z standard errors, z for a false-failure rate of 1e-4 over all its checks,
    support/stats.py), so a sampler that works fails it with probability at most 1e-4."""
    ref = hard.load(name)
    res = cg.infer.nuts(ref.model, ref.data, chains=4, warmup=500, draws=500, seed=0, progress=False)
    check = pdb.check_mcmc(ref, res.posterior)
    assert check.ok, (check.failures, res.notes)
