"""Mass-matrix adaptation on every posteriordb reference: effective samples per gradient evaluation.

Each posterior runs with each of the rows of ROWS, same seed, chains, warm-up and draws: the
baseline "stan_window" (Stan's window adaptation as it was before the cheaper first windows: 75
iterations of step size alone, then windows from 25 draws), then claygraph's adaptations
(`Settings.adaptation`) with their own first windows. Reported per posterior and row: whether the
draws pass the reference check (`posteriordb.check_mcmc`), the minimum bulk ESS, the gradient
evaluations of the sampling phase (leapfrog steps summed over chains), their ratio, and the median
over posteriors of each row's ESS per gradient over the baseline's (a failed check counts as 0).

Run alone: `python -m bench.suites.adaptation [quick|full] [row,row,...]` (JSON lines to stdout).
"""
from __future__ import annotations

import json
import sys
import time

from bench.sizes import Sizes
from bench.suites import SuiteEnv, not_available

BASELINE = "stan_window"
# row name -> Settings fields (the adaptation and, where it differs from the default, its first windows)
ROWS = {
    BASELINE: {"adaptation": "window", "window_start": (75, 25)},
    "window": {"adaptation": "window"},
    "fisher": {"adaptation": "fisher"},
    "low_rank": {"adaptation": "low_rank"},
    "window_low_rank": {"adaptation": "window_low_rank"},
}
# what `claygraph bench --suite adaptation` runs: the baseline, the old default and today's default ("fisher" and
# "low_rank" from the command line: python -m bench.suites.adaptation full stan_window,low_rank)
SUITE_ROWS = (BASELINE, "window", "window_low_rank")
STEPS = {"smoke": (200, 200), "quick": (500, 500), "full": (1000, 1000), "gpu": (1000, 1000)}
CHAINS = 2
SLOW = ("diamonds-diamonds",)  # tree depth 10 under every adaptation: minutes each


def one(name: str, row: str, warmup: int, draws: int, seed: int = 0) -> dict:
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
                   settings=Settings(warmup=warmup, **ROWS[row]), progress=False)
    grads = int(sum(np.sum(s["n_steps"]) for c in res.chains for s in c.stats))
    ess = float(res.summary()["ess_bulk"].min())
    return {"name": name, "adaptation": row, "passed": pdb.check_mcmc(ref, res.posterior).ok,
            "min_ess_bulk": ess, "gradients": grads, "ess_per_gradient": ess / max(grads, 1),
            "divergences": int(res.inference_data.sample_stats["diverging"].values.sum()),
            "wall_s": time.perf_counter() - t}


def medians(rows: list[dict]) -> dict:
    """Per row: the median over posteriors of ESS/gradient divided by the baseline's (a posterior
    whose draws failed the check, or that raised, counts as 0)."""
    import numpy as np

    base = {r["name"]: r["ess_per_gradient"] for r in rows if r.get("adaptation") == BASELINE and "error" not in r}
    out = {}
    for a in dict.fromkeys(r.get("adaptation") for r in rows):
        ratios = [(r["ess_per_gradient"] / base[r["name"]] if r.get("passed") else 0.0) for r in rows
                  if r.get("adaptation") == a and base.get(r["name"])]
        passed = sum(bool(r.get("passed")) for r in rows if r.get("adaptation") == a)
        out[a] = {"median_ratio": float(np.median(ratios)) if ratios else None, "passed": passed}
    return out


def run(sizes: Sizes, env: SuiteEnv, emit=None, rows_wanted: tuple[str, ...] = SUITE_ROWS) -> dict:
    from support import posteriordb as pdb

    if not pdb.default_root().is_dir():
        return not_available(f"posteriordb references not found at {pdb.default_root()}")
    warmup, draws = STEPS[sizes.mode]
    rows = []
    names = sorted(pdb.POSTERIORS, key=lambda n: (n in SLOW, n))  # the slowest last
    for name in names:
        for a in rows_wanted:
            env.log(f"  adaptation: {name} {a}")
            try:
                rows.append(one(name, a, warmup, draws))
            except Exception as e:
                rows.append({"name": name, "adaptation": a, "error": f"{type(e).__name__}: {e}"[:300]})
            if emit is not None:
                emit(rows[-1])
    return {"status": "ok", "chains": CHAINS, "warmup": warmup, "draws": draws, "baseline": BASELINE, "runs": rows,
            "summary": medians(rows)}


if __name__ == "__main__":
    from bench.sizes import FULL, QUICK

    size = {"quick": QUICK, "full": FULL}[sys.argv[1] if len(sys.argv) > 1 else "quick"]
    wanted = tuple(sys.argv[2].split(",")) if len(sys.argv) > 2 else tuple(ROWS)
    out = run(size, SuiteEnv(), emit=lambda r: print(json.dumps(r), flush=True), rows_wanted=wanted)
    print(json.dumps({"summary": out.get("summary")}), flush=True)
