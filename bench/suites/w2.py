"""W2: hierarchical logistic regression with NUTS; claygraph against NumPyro, in one run.

Every method runs in its own subprocess (so that NumPyro's `parallel` chains get one forced host
device per chain) and runs twice there with JAX's persistent compilation cache on: the first
run compiles, the second loads the compiled programs, so its wall time is the sampling time and
the difference estimates compilation. Each method has a time limit (LIMIT_S): a first run over
half of it is not repeated, and a method past it is reported as timed out. Reported: minimum
bulk ESS over every element of mu, sigma, z (the non-centred group effects) and w; that ESS per
second of sampling, and per second of the first run (compile included); ESS per gradient
evaluation (leapfrog steps of the sampling phase, summed over chains); maximum R-hat; how
claygraph's chains ran. nutpie runs the PyMC version of W2 (see PEERS_ENV).
"""
from __future__ import annotations

import time

from bench.sizes import Sizes
from bench.suites import SuiteEnv, not_available
from bench.timing import IsolatedError, run_isolated

# Each method's time limit, both runs together (a method past it is reported "timed out" with how long
# it ran, never left to stall the suite); a first run over half of it is not repeated
LIMIT_S = 300
START_S = 60  # the subprocess's start-up and data set-up, on top of the limit
# NumPyro's sequential chains are left out: on this machine they were never faster than its parallel
# chains (DESIGN.md: 203 s against 198 s), and the run is long enough as it is
METHODS = ("claygraph", "numpyro-parallel", "nutpie")
# nutpie + PyMC pin an older numba than claygraph's: install them apart (`pip install --target DIR
# nutpie pymc`, or the `bench-peers` extra in an environment of their own) and name DIR here
PEERS_ENV = "CLAYGRAPH_BENCH_PEERS"


def _devices(method: str, sizes: Sizes) -> int:
    return sizes.w2_chains if method == "numpyro-parallel" else 1


def _extra_env(method: str) -> dict[str, str] | None:
    """The nutpie run's import path: the peers' directory before everything else."""
    import os

    from bench import REPO

    peers = os.environ.get(PEERS_ENV)
    if method != "nutpie" or not peers:
        return None
    return {"PYTHONPATH": os.pathsep.join([str(REPO), peers] + [p for p in os.environ.get("PYTHONPATH", "").split(
        os.pathsep) if p])}


def ratios(rows: list[dict]) -> None:
    """claygraph's ESS/s divided by each peer's (> 1: claygraph is better)."""
    ours = next((r for r in rows if r["method"] == "claygraph" and r["status"] == "ok"), None)
    if ours is None:
        return
    peers = [r for r in rows if r["method"] != "claygraph" and r["status"] == "ok"]
    ours["ess_per_s_over_peer"] = {r["method"]: ours["ess_per_s"] / r["ess_per_s"] for r in peers
                                   if ours.get("ess_per_s") and r.get("ess_per_s")}
    with_compile = ours["ess_per_s_with_compile"]
    ours["ess_per_s_with_compile_over_peer"] = {r["method"]: with_compile / r["ess_per_s_with_compile"]
                                                for r in peers if r.get("ess_per_s_with_compile")}


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
        spec = {"method": method, "sizes": s, "limit_s": LIMIT_S}
        t0 = time.perf_counter()
        try:
            rows.append(run_isolated("nuts", spec, devices, LIMIT_S + START_S, env.platform, _extra_env(method))
                        | {"method": method, "devices": devices})
        except IsolatedError as e:
            late = time.perf_counter() - t0 >= LIMIT_S + START_S
            rows.append({"method": method, "devices": devices, "status": "timed out" if late else "error",
                         "note": (f"no result within its {LIMIT_S + START_S} s limit (killed)" if late
                                  else str(e)[-800:])})
    ratios(rows)
    return {"status": "ok", "sizes": s, "methods": rows}
