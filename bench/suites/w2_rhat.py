"""W2 with claygraph alone, one adaptation and seed per run: where its largest R-hat comes from.

The W2 suite's claygraph run (4 chains x 500 warm-up + 500 draws by default, compile included),
reporting what the suite reports (wall, minimum bulk ESS over mu, sigma, w, z, max R-hat) and
what explains the R-hat: ArviZ's rank-normalised R-hat (the larger of two parts) split into a bulk
part (split R-hat of the draws, ArviZ's "split") and a tail part (the same of the folded draws
|x - median|, ArviZ's "folded"), the parameter where each is largest, sigma's ESS, z's bulk and
folded ESS, the gradients of the sampling phase, and each chain's mean seconds of warm-up (compile
included) and of sampling (the chains run at once, so these overlap).

Run alone: `python -m bench.suites.w2_rhat [adaptation] [seed] [rows groups [target_accept]]` (one JSON line).
"""
from __future__ import annotations

import json
import sys
import time


def _worst(rhat) -> tuple[float, str]:
    import numpy as np

    best = (0.0, "")
    for k in rhat.data_vars:
        v = np.asarray(rhat[k].values)
        i = int(np.nanargmax(v))
        if float(v.flat[i]) > best[0]:
            best = (float(v.flat[i]), f"{k}[{i}]" if v.ndim else k)
    return best


def run(adaptation: str = "window", seed: int = 0, n: int = 100_000, groups: int = 1_000, d: int = 10,
        chains: int = 4, warmup: int = 500, draws: int = 500, **nuts_kwargs) -> dict:
    import warnings

    import arviz as az
    import numpy as np

    import claygraph as cg
    from bench.workloads import w2_data, w2_model

    data = w2_data(n, groups, d)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = cg.infer.nuts(w2_model, data, chains=chains, warmup=warmup, draws=draws, seed=seed,
                            adaptation=adaptation, progress=False, **nuts_kwargs)
    wall = time.perf_counter() - t0
    post = res.posterior[[k for k in ("mu", "sigma", "w", "z") if k in res.posterior]]
    ess, ess_tail = az.ess(post, method="bulk"), az.ess(post, method="tail")
    folded = np.asarray(az.ess(post[["z"]], method="folded")["z"].values) if "z" in post else np.zeros(1)
    z_bulk = np.asarray(ess["z"].values) if "z" in ess else np.zeros(1)
    min_ess = min(float(np.min(ess[k].values)) for k in ess.data_vars)
    rank, bulk, tail = (_worst(az.rhat(post, method=m)) for m in ("rank", "split", "folded"))
    grads = int(sum(np.sum(s["n_steps"]) for c in res.chains for s in c.stats))
    return {"adaptation": adaptation, "seed": seed, "n": n, "groups": groups, "wall_s": round(wall, 1),
            "min_ess_bulk": round(min_ess, 1), "ess_per_s": round(min_ess / wall, 2),
            "max_rhat": round(rank[0], 4), "max_rhat_at": rank[1],
            "max_rhat_bulk": round(bulk[0], 4), "bulk_at": bulk[1],
            "max_rhat_tail": round(tail[0], 4), "tail_at": tail[1],
            "sigma_ess_bulk": round(float(ess["sigma"].values), 1),
            "sigma_ess_tail": round(float(ess_tail["sigma"].values), 1),
            "z_ess_bulk_median": round(float(np.median(z_bulk)), 1),
            "z_ess_folded_min": round(float(folded.min()), 1),
            "z_ess_folded_median": round(float(np.median(folded)), 1),
            "min_ess_tail": round(min(float(np.min(ess_tail[k].values)) for k in ess_tail.data_vars), 1),
            "warmup_s": round(float(np.mean([c.seconds - sum(c.segment_s) for c in res.chains])), 1),
            "sampling_s": round(float(np.mean([sum(c.segment_s) for c in res.chains])), 1),
            "gradients": grads, "step_sizes": [round(float(np.asarray(c.params["step_size"])), 4) for c in res.chains],
            "divergences": int(res.inference_data.sample_stats["diverging"].values.sum()),
            "restarted": res.restarted, "ran": res.ran}


if __name__ == "__main__":
    a = sys.argv[1:]
    kw = {"adaptation": a[0] if a else "window", "seed": int(a[1]) if len(a) > 1 else 0}
    if len(a) > 3:
        kw |= {"n": int(a[2]), "groups": int(a[3])}
    if len(a) > 4:
        kw |= {"target_accept": float(a[4])}
    print(json.dumps(run(**kw)), flush=True)
