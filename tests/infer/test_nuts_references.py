"""claygraph's NUTS against the Stan reference posteriors (posteriordb): a cheap set here; the
whole set runs in `claygraph bench --suite posteriordb`.

Tolerance (the issue's, in `posteriordb.check_mcmc`): every parameter's posterior mean within
0.1 reference sd plus four Monte Carlo standard errors (ours from the bulk ESS of that element,
combined with the reference's mcse), and its sd within 10% of the reference sd.
"""
import numpy as np
import pytest

import claygraph as cg
from support import posteriordb as pdb

ROOT = pdb.default_root()
pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason=f"posteriordb references not found at {ROOT}")


@pytest.mark.parametrize("name", ["sblrc-blr", "kidiq-kidscore_momiq", "eight_schools-eight_schools_noncentered"])
def test_nuts_matches_the_reference(name):
    ref = pdb.load(name)
    res = cg.infer.nuts(ref.model, ref.data, chains=2, warmup=500, draws=1000, seed=2)
    check = pdb.check_mcmc(ref, res.posterior)
    print(check.table)
    assert check.ok, "\n".join(check.failures) + "\n" + check.table
    assert [r.param for r in check.rows] == ref.parameters
    assert float(res.summary()["r_hat"].max()) < 1.02


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
