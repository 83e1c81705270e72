"""claygraph's NUTS against the Stan reference posteriors (posteriordb): a cheap set here; the
whole set runs in `claygraph bench --suite posteriordb`.

Tolerance (`posteriordb.check_mcmc`, support/stats.py): every parameter's posterior mean within 0.1
reference sd plus z Monte Carlo standard errors, its sd within the larger of 10% and z standard errors
of the sd ratio, and its split R-hat under the bound for the run's chains and ESS; z and the bound for a
nominal rate of 1e-6 per posterior (half for the means and sds, half for the R-hats), which leaves a
factor of 100 for the approximations' error: a stated false-failure rate of at most 1e-4 per posterior.
Seed study: docs/testing.md.
"""
import numpy as np
import pytest

import claygraph as cg
from support import posteriordb as pdb
from support import stats

ROOT = pdb.default_root()
pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason=f"posteriordb references not found at {ROOT}")


@pytest.mark.parametrize("name", ["sblrc-blr", "kidiq-kidscore_momiq", "eight_schools-eight_schools_noncentered"])
def test_nuts_matches_the_reference(name):
    ratios, report = reference_check(name, seed=2)
    assert all(r < 1 for _, r in ratios), report


ALPHA = 1e-6  # each posterior's nominal rate: a stated false-failure rate of 1e-4 (see test_nuts.py)


def reference_check(name: str, seed: int) -> tuple[list[tuple[str, float]], str]:
    """(each check's statistic / its bound: above 1 fails, what failed and the table) for one NUTS run
    on posterior `name`."""
    ref = pdb.load(name)
    res = cg.infer.nuts(ref.model, ref.data, chains=2, warmup=500, draws=1000, seed=seed)
    check = pdb.check_mcmc(ref, res.posterior, alpha=ALPHA / 2)
    assert [r.param for r in check.rows] == ref.parameters
    columns = [(f"{k}{list(i)}", v.values[(slice(None), slice(None)) + i])
               for k, v in res.posterior.items() for i in np.ndindex(*v.shape[2:])]
    rhats = [(f"R-hat {k}", *stats.rhat_ok(x, ALPHA / 2 / len(columns))) for k, x in columns]
    bad = [f"{k} {r:.4f} > bound {b:.4f}" for k, ok, r, b in rhats if not ok]
    ratios = list(check.ratios) + [(k, (r - 1) / (b - 1)) for k, _, r, b in rhats]
    return ratios, "\n".join(check.failures + bad) + "\n" + check.table


def test_the_check_can_fail():
    """Draws shifted by 0.3 sd, or 20% too wide, fail; the reference's own shape passes."""
    ref = pdb.load("sblrc-blr")
    rng = np.random.default_rng(0)
    means = np.array([ref.reference[f"beta[{i}]"]["mean"] for i in range(1, 6)])
    sds = np.array([ref.reference[f"beta[{i}]"]["sd"] for i in range(1, 6)])
    s_mean, s_sd = ref.reference["sigma"]["mean"], ref.reference["sigma"]["sd"]

    def posterior(shift=0.0, widen=1.0):
        beta = means + sds * (shift + widen * rng.standard_normal((2, 4000, 5)))
        return {"beta": beta, "sigma": s_mean + s_sd * rng.standard_normal((2, 4000))}

    assert pdb.check_mcmc(ref, posterior()).ok
    shifted = pdb.check_mcmc(ref, posterior(shift=0.3))
    assert len(shifted.failures) == 5 and all(f.startswith("beta[") for f in shifted.failures)
    assert len(pdb.check_mcmc(ref, posterior(widen=1.2)).failures) == 5
