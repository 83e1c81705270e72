"""Mass-matrix adaptation on every posteriordb reference: effective samples per gradient evaluation.

Each posterior runs with each of claygraph's adaptations (`Settings.adaptation`: Stan's window
adaptation, nutpie's diagonal from draw and gradient variances in Stan's windows, and nutpie's
low-rank + diagonal metric), same seed, chains, warm-up and draws. Reported per posterior
and adaptation: whether the draws pass the reference check (`posteriordb.check_mcmc`), the minimum
bulk ESS, the gradient evaluations of the sampling phase (leapfrog steps summed over chains), their
ratio, and the median over posteriors of each adaptation's ESS per gradient over window adaptation's.

Run alone: `python -m bench.suites.adaptation [quick|full]` (writes JSON lines to stdout).
"""
from __future__ import annotations

import json
import sys
import time

from bench.sizes import Sizes
from bench.suites import SuiteEnv, not_available

ADAPTATIONS = ("window", "fisher", "low_rank")
STEPS = {"smoke": (200, 200), "quick": (500, 500), "full": (1000, 1000), "gpu": (1000, 1000)}
CHAINS = 2
SLOW = ("diamonds-diamonds",)  # tree depth 10 under every adaptation: minutes each


def one(name: str, adaptation: str, warmup: int, draws: int, seed: int = 0) -> dict:
    import warnings

    import numpy as np

    from claygraph.infer.chains import Settings
    from claygraph.infer.nuts import mcmc
    from support import posteriordb as pdb

    ref = pdb.load(name)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = mcmc(ref.model, ref.data, chains=CHAINS, warmup=warmup, draws=draws, seed=seed,
                   settings=Settings(warmup=warmup, adaptation=adaptation), progress=False)
    grads = int(sum(np.sum(s["n_steps"]) for c in res.chains for s in c.stats))
    ess = float(res.summary()["ess_bulk"].min())
    return {"name": name, "adaptation": adaptation, "passed": pdb.check_mcmc(ref, res.posterior).ok,
            "min_ess_bulk": ess, "gradients": grads, "ess_per_gradient": ess / max(grads, 1),
            "divergences": int(res.inference_data.sample_stats["diverging"].values.sum()),
            "wall_s": time.perf_counter() - t}


def medians(rows: list[dict]) -> dict:
    """Per adaptation: the median over posteriors of ESS/gradient divided by window adaptation's."""
    import numpy as np

    base = {r["name"]: r["ess_per_gradient"] for r in rows if r.get("adaptation") == "window" and "error" not in r}
    out = {}
    for a in ADAPTATIONS:
        ratios = [r["ess_per_gradient"] / base[r["name"]] for r in rows
                  if r.get("adaptation") == a and "error" not in r and base.get(r["name"])]
        passed = sum(bool(r.get("passed")) for r in rows if r.get("adaptation") == a)
        out[a] = {"median_ratio": float(np.median(ratios)) if ratios else None, "passed": passed}
    return out


def run(sizes: Sizes, env: SuiteEnv, emit=None) -> dict:
    from support import posteriordb as pdb

    if not pdb.default_root().is_dir():
        return not_available(f"posteriordb references not found at {pdb.default_root()}")
    warmup, draws = STEPS[sizes.mode]
    rows = []
    names = sorted(pdb.POSTERIORS, key=lambda n: (n in SLOW, n))  # the slowest last
    for name in names:
        for a in ADAPTATIONS:
            env.log(f"  adaptation: {name} {a}")
            try:
                rows.append(one(name, a, warmup, draws))
            except Exception as e:
                rows.append({"name": name, "adaptation": a, "error": f"{type(e).__name__}: {e}"[:300]})
            if emit is not None:
                emit(rows[-1])
    return {"status": "ok", "chains": CHAINS, "warmup": warmup, "draws": draws, "runs": rows,
            "summary": medians(rows)}


if __name__ == "__main__":
    from bench.sizes import FULL, QUICK

    size = {"quick": QUICK, "full": FULL}[sys.argv[1] if len(sys.argv) > 1 else "quick"]
    out = run(size, SuiteEnv(), emit=lambda r: print(json.dumps(r), flush=True))
    print(json.dumps({"summary": out.get("summary")}), flush=True)
