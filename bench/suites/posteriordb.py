"""Every posteriordb reference posterior: claygraph's NUTS, Laplace and full-rank VI against Stan.

NUTS is held to the issue's tolerance (`posteriordb.check_mcmc`: means within 0.1 reference sd plus
z Monte Carlo errors, sds within the larger of 10% and z standard errors of the sd ratio, z for a
false-failure rate of 1e-4 per posterior: support/stats.py); Laplace and VI are approximations, so the report
gives their largest mean error (in reference sd) and their range of sd ratios, not a verdict.
"""
from __future__ import annotations

import time

from bench.sizes import Sizes
from bench.suites import SuiteEnv, not_available

# warmup and draws per chain, 2 chains; the smoke mode runs only the two cheapest posteriors
STEPS = {"smoke": (200, 200), "quick": (500, 500), "full": (1000, 1000), "gpu": (1000, 1000)}
SMOKE_SET = ("sblrc-blr", "kidiq-kidscore_momiq")


def _spread(rows) -> dict:
    return {"max_z": max(r.z for r in rows), "sd_ratio_min": min(r.sd_ratio for r in rows),
            "sd_ratio_max": max(r.sd_ratio for r in rows)}


def _one(name: str, warmup: int, draws: int) -> dict:
    import numpy as np

    import claygraph as cg
    from support import posteriordb as pdb

    ref = pdb.load(name)
    out = {"name": name, "parameters": len(ref.parameters)}
    t = time.perf_counter()
    res = cg.infer.nuts(ref.model, ref.data, chains=2, warmup=warmup, draws=draws, seed=0)
    check = pdb.check_mcmc(ref, res.posterior)
    summary = res.summary()
    out["nuts"] = {"wall_s": time.perf_counter() - t, "passed": check.ok, "failures": check.failures,
                   "min_ess_bulk": float(summary["ess_bulk"].min()), "max_rhat": float(summary["r_hat"].max()),
                   **_spread(check.rows)}
    for method, fit in (("laplace", lambda: cg.infer.laplace(ref.model, ref.data, draws=4000)),
                        ("vi_fullrank", lambda: cg.infer.vi(ref.model, ref.data, guide="fullrank", draws=4000))):
        t = time.perf_counter()
        try:
            post = {k: np.asarray(v.values)[0] for k, v in fit().posterior.items()}
            out[method] = {"wall_s": time.perf_counter() - t, **_spread(pdb.compare(ref, post))}
        except Exception as e:  # e.g. no mode (Laplace needs one): recorded, not fatal
            out[method] = {"wall_s": time.perf_counter() - t, "error": f"{type(e).__name__}: {e}"[:300]}
    return out


def run(sizes: Sizes, env: SuiteEnv) -> dict:
    from support import posteriordb as pdb

    root = pdb.default_root()
    if not root.is_dir():
        return not_available(f"posteriordb references not found at {root} (set CLAYGRAPH_POSTERIORDB)")
    names = sorted(pdb.POSTERIORS) if sizes.mode != "smoke" else list(SMOKE_SET)
    warmup, draws = STEPS[sizes.mode]
    rows = []
    for name in names:
        env.log(f"  posteriordb: {name}")
        try:
            rows.append(_one(name, warmup, draws))
        except Exception as e:
            rows.append({"name": name, "error": f"{type(e).__name__}: {e}"[:300]})
    passed = sum(bool(r.get("nuts", {}).get("passed")) for r in rows)
    return {"status": "ok", "chains": 2, "warmup": warmup, "draws": draws, "posteriors": rows,
            "nuts_passed": passed, "total": len(rows)}
