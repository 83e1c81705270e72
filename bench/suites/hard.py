"""The hard-posterior suite: NUTS's defaults judged by the worst posterior, against NumPyro's defaults.

Every posterior of `support.hard` (posteriordb's references, funnels, weakly identified
global-plus-offset hierarchies, a horseshoe, W2 at test size) runs in this process under:
- `claygraph`: `cg.infer.nuts` with its defaults (the `window_low_rank` metric, warm-up that extends
  itself while the metric still moves, the fallback to the diagonal window metric);
- `claygraph-window`: the same with the diagonal window metric from the start;
- `numpyro`: NumPyro's NUTS with its defaults (chains one after another, `chain_method="sequential"`),
the same chains, warm-up, draws and seed. Reported per posterior and method: min bulk ESS over every
parameter, the sampling phase's gradient evaluations (leapfrog steps over all chains), ESS per
gradient, ESS per second of the whole call (compiling included, for both: in-process caches are cleared
before every run, JAX's persistent compilation cache, which claygraph turns on, serves both), the warm-up
used, and
agreement with the reference (`support.hard.agreement`: means within 0.1 sd + 4 MCSE, sds within
10% + 4 standard errors). A second call of each at the same shapes would not compile; the suite
does not repeat runs (its length is the point: 20 posteriors).

Run alone: `python -m bench.suites.hard [quick|full] [name,name,...]` (JSON lines to stdout).
"""
from __future__ import annotations

import json
import sys
import time

from bench.sizes import Sizes
from bench.suites import SuiteEnv, not_available

METHODS = ("claygraph", "claygraph-window", "numpyro")
STEPS = {"smoke": (200, 200), "quick": (500, 500), "full": (1000, 1000), "gpu": (1000, 1000)}
CHAINS = 4
SEED = 0


def _summary(ref, post: dict, grads: int, wall: float) -> dict:
    import numpy as np

    from claygraph.infer.common import arviz
    from support import hard

    az = arviz()
    ess = az.ess(post, method="bulk")
    least = min(float(np.nanmin(ess[k].values)) for k in ess.data_vars)
    rhat = az.rhat(post)
    ok, failures, worst = hard.agreement(ref, post)
    return {"min_ess_bulk": least, "max_rhat": max(float(np.nanmax(rhat[k].values)) for k in rhat.data_vars),
            "gradients": grads, "ess_per_gradient": least / max(grads, 1), "wall_s": wall,
            "ess_per_s": least / wall, "agrees": ok, "agreement_worst": worst, "failures": failures[:3]}


def one(name: str, method: str, warmup: int, draws: int) -> dict:
    import warnings

    import jax
    import numpy as np

    from claygraph.partition.cache import COMPILED
    from support import hard

    ref = hard.load(name)
    COMPILED.clear()  # no method reuses another's compiled programs (JAX's persistent cache serves both alike)
    jax.clear_caches()
    t = time.perf_counter()
    extra = {}
    if method == "numpyro":
        from numpyro.infer import MCMC, NUTS

        m = MCMC(NUTS(ref.model), num_warmup=warmup, num_samples=draws, num_chains=CHAINS,
                 chain_method="sequential", progress_bar=False)
        m.run(jax.random.PRNGKey(SEED), ref.data, extra_fields=("num_steps", "diverging"))
        post = {k: np.asarray(v) for k, v in m.get_samples(group_by_chain=True).items()}
        fields = m.get_extra_fields()
        grads = int(np.asarray(fields["num_steps"]).sum())
        extra = {"divergences": int(np.asarray(fields["diverging"]).sum()), "warmup_used": [warmup] * CHAINS}
    else:
        import claygraph as cg

        adaptation = {"claygraph": {}, "claygraph-window": {"adaptation": "window"}}[method]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = cg.infer.nuts(ref.model, ref.data, chains=CHAINS, warmup=warmup, draws=draws, seed=SEED,
                                progress=False, **adaptation)
        post = {k: res.posterior[k].values for k in res.posterior.data_vars}
        grads = int(sum(np.sum(s["n_steps"]) for c in res.chains for s in c.stats))
        extra = {"divergences": int(res.inference_data.sample_stats["diverging"].values.sum()),
                 "warmup_used": res.warmup_steps, "notes": sorted(set(res.restarted.values()))}
    return {"name": name, "method": method, **_summary(ref, post, grads, time.perf_counter() - t), **extra}


def verdicts(rows: list[dict]) -> dict:
    """Per claygraph method: posteriors where its min bulk ESS is at least NumPyro's, where it agrees
    with the reference (and NumPyro's), and the median of its ESS per second over NumPyro's."""
    import numpy as np

    by = {(r["name"], r["method"]): r for r in rows if "error" not in r}
    names = list(dict.fromkeys(r["name"] for r in rows))
    out = {}
    for m in dict.fromkeys(r["method"] for r in rows):
        pairs = [(by.get((n, m)), by.get((n, "numpyro"))) for n in names]
        pairs = [(a, b) for a, b in pairs if a is not None and b is not None]
        out[m] = {"posteriors": len(pairs), "ess_at_least_numpyro": sum(a["min_ess_bulk"] >= b["min_ess_bulk"]
                                                                         for a, b in pairs),
                  "agrees": sum(bool(a["agrees"]) for a, _ in pairs),
                  "median_ess_per_s_over_numpyro": float(np.median([a["ess_per_s"] / b["ess_per_s"] for a, b in pairs
                                                                    if b["ess_per_s"] > 0])) if pairs else None}
    return out


def run(sizes: Sizes, env: SuiteEnv, emit=None, names: tuple[str, ...] | None = None) -> dict:
    from support import hard
    from support import posteriordb as pdb

    if not pdb.default_root().is_dir():
        return not_available(f"posteriordb references not found at {pdb.default_root()}")
    warmup, draws = STEPS[sizes.mode]
    rows = []
    for name in names or hard.NAMES:
        for method in METHODS:
            env.log(f"  hard: {name} {method}")
            try:
                rows.append(one(name, method, warmup, draws))
            except Exception as e:  # noqa: BLE001 (a posterior that fails is reported, not fatal to the suite)
                rows.append({"name": name, "method": method, "error": f"{type(e).__name__}: {e}"[:300]})
            if emit is not None:
                emit(rows[-1])
    return {"status": "ok", "chains": CHAINS, "warmup": warmup, "draws": draws, "seed": SEED, "runs": rows,
            "summary": verdicts(rows)}


if __name__ == "__main__":
    from bench.sizes import FULL, QUICK

    size = {"quick": QUICK, "full": FULL}[sys.argv[1] if len(sys.argv) > 1 else "quick"]
    wanted = tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else None
    out = run(size, SuiteEnv(), emit=lambda r: print(json.dumps(r), flush=True), names=wanted)
    print(json.dumps({"summary": out.get("summary")}), flush=True)
