"""W2: hierarchical logistic regression with NUTS; claygraph against NumPyro, in one run.

Every method runs in its own subprocess (so that NumPyro's `parallel` chains get one forced host
device per chain) and runs twice there with JAX's persistent compilation cache on: the first
run compiles, the second loads the compiled programs, so its wall time is the sampling time and
the difference estimates compilation. Reported: minimum bulk ESS over every element of mu,
sigma, z (the non-centred group effects) and w; that ESS per second of sampling; maximum R-hat.
"""
from __future__ import annotations

from bench.sizes import Sizes
from bench.suites import SuiteEnv, not_available
from bench.timing import run_isolated

TIMEOUT_S = 3600
METHODS = ("claygraph", "numpyro-sequential", "numpyro-parallel")


def _devices(method: str, sizes: Sizes) -> int:
    return sizes.w2_chains if method == "numpyro-parallel" else 1


def ratios(rows: list[dict]) -> None:
    """claygraph's ESS/s divided by each peer's (> 1: claygraph is better)."""
    ours = next((r for r in rows if r["method"] == "claygraph" and r["status"] == "ok"), None)
    if ours is None:
        return
    ours["ess_per_s_over_peer"] = {r["method"]: ours["ess_per_s"] / r["ess_per_s"] for r in rows
                                   if r["method"] != "claygraph" and r["status"] == "ok" and r["ess_per_s"] > 0}


def run(sizes: Sizes, env: SuiteEnv) -> dict:
    import claygraph as cg

    s = {"n": sizes.w2_n, "groups": sizes.w2_groups, "d": sizes.w2_d, "chains": sizes.w2_chains,
         "warmup": sizes.w2_warmup, "draws": sizes.w2_draws}
    rows = []
    for method in METHODS:
        if method == "claygraph" and not hasattr(cg.infer, "nuts"):
            rows.append({"method": method, **not_available("claygraph.infer has no `nuts` yet")})
            continue
        devices = _devices(method, sizes)
        env.log(f"  w2: {method} ({s['chains']} chains, {s['warmup']}+{s['draws']}) on {devices} device(s)")
        try:
            rows.append(run_isolated("nuts", {"method": method, "sizes": s}, devices, TIMEOUT_S, env.platform)
                        | {"method": method, "devices": devices})
        except Exception as e:
            rows.append({"method": method, "status": "error", "note": str(e)[-800:]})
    ratios(rows)
    return {"status": "ok", "sizes": s, "methods": rows}
