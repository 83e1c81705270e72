"""The split choice on many models and sizes: does the cost model pick the fastest split, and how close
is its predicted time to the measured one?

The suite first runs `claygraph calibrate` (the full budget, about two minutes) into
bench/results/profile-<device>.json and predicts with that profile (CLAYGRAPH_PROFILE), so that
predictions and measurements come from the same machine at the same time. Then, per case, a fresh
interpreter with `env.devices` forced host devices lowers the model, asks the cost model for every
candidate, compiles every feasible one on Local(devices=N), then times `potential_and_grad` of all of
them in turns (bench.timing.measure_together: each round times every candidate once, in orders
balanced so that each follows every other equally often, and load that comes and goes falls on all
alike; median and quartiles of the rounds after one warm-up call that compiles). Each timed call
follows an untimed call of the same candidate: the time per evaluation of a solver's loop, which
calls one program over and over, not of a call that finds the caches filled by another candidate.

A pick is right when the chosen split is the measured fastest, or when their measured spreads
(first to third quartile of the repeats) overlap: no fixed tie allowance. A case counts toward
the pick accuracy when its candidates differ: the slowest measured at least DIFFER x the fastest.
"""
from __future__ import annotations

import os
import subprocess
import sys

from bench import REPO
from bench.machine import wait_for_idle
from bench.sizes import Sizes
from bench.suites import SuiteEnv
from bench.timing import run_isolated

TIMEOUT_S = 900
DIFFER = 1.5  # candidates that differ by less leave nothing to choose
WITHIN = 1.5  # a prediction within this factor of the measurement (either way) holds
BUILT_IN_WITHIN = 2.0  # the built-in figures (no calibration): their chosen split's prediction within this factor

# (name, workload of bench.measure, sizes): logistic regression tall to wide, the hierarchical
# logistic regression (W3's model) with few to many groups, a Poisson model with two crossed groupings.
CASES = (
    ("W1", "W1", {"n": 2_000_000, "d": 100}),
    ("W3", "W3", {"n": 2_000_000, "groups": 20_000, "d": 10}),
    ("W6", "W6", {"n": 20_000, "d": 10_000}),
    ("tall GLM", "W1", {"n": 1_000_000, "d": 50}),
    ("GLM 200k x 20", "W1", {"n": 200_000, "d": 20}),
    ("GLM 100k x 1000", "W1", {"n": 100_000, "d": 1_000}),
    ("wide GLM 5k x 50k", "W6", {"n": 5_000, "d": 50_000}),
    ("GLM 20k x 200", "W1", {"n": 20_000, "d": 200}),
    ("hier 1M, 100 groups", "W3", {"n": 1_000_000, "groups": 100, "d": 20}),
    ("hier 500k, 100k groups", "W3", {"n": 500_000, "groups": 100_000, "d": 5}),
    ("hier 200k, 50k groups", "W3", {"n": 200_000, "groups": 50_000, "d": 3}),
    ("poisson 1M, 10k x 100", "poisson", {"n": 1_000_000, "products": 10_000, "stores": 100, "d": 5}),
    ("poisson 300k, 100k x 50", "poisson", {"n": 300_000, "products": 100_000, "stores": 50, "d": 3}),
)
SMOKE_CASES = (("GLM 2k x 10", "W1", {"n": 2_000, "d": 10}), ("hier 2k", "W3", {"n": 2_000, "groups": 50, "d": 3}))


def profile_path(env: SuiteEnv):
    return REPO / "bench" / "results" / f"profile-{env.device}.json"


def quick_profile_path(env: SuiteEnv):
    return REPO / "bench" / "results" / f"profile-{env.device}-quick.json"


def calibrate(env: SuiteEnv, quick: bool, path=None) -> dict:
    """Run `claygraph calibrate` into the results folder (a fresh interpreter: it measures collectives
    in one of its own)."""
    path = path or profile_path(env)
    cmd = [sys.executable, "-m", "claygraph.cli.calibrate", "--out", str(path), "--devices", str(env.devices)]
    proc = subprocess.run(cmd + (["--quick"] if quick else []), cwd=REPO, capture_output=True, text=True,
                          timeout=300, check=False, env=dict(os.environ, PYTHONPATH=str(REPO)))
    if proc.returncode:
        raise RuntimeError(f"claygraph calibrate failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    env.log(proc.stdout.strip())
    import json

    return json.loads(path.read_text())


def _judge_other(result: dict, measured: list[dict], key: str, out: dict) -> None:
    """The split another set of figures (`result[key]`: built-in, or a quick calibration's) picks, its
    prediction against its measurement, judged within BUILT_IN_WITHIN."""
    other = result.get(key)
    if other is None:
        return
    mine = next((c for c in measured if c["split"] == other["chosen"]), None)
    predicted = next((p for s, p in other["predicted"] if s == other["chosen"]), None)
    if mine is not None and predicted:
        out[f"{key}_chosen"] = other["chosen"]
        out[f"{key}_measured_over_predicted"] = mine["measured"]["median_s"] / predicted
        out[f"{key}_within"] = 1 / BUILT_IN_WITHIN <= out[f"{key}_measured_over_predicted"] <= BUILT_IN_WITHIN


def judge(result: dict) -> dict:
    """Pick, spread and prediction figures of one case's measured candidates."""
    measured = [c for c in result["candidates"] if c.get("measured")]
    if not measured:
        return {"measured": 0}
    med = {tuple(c["split"]): c["measured"]["median_s"] for c in measured}
    best = min(measured, key=lambda c: c["measured"]["median_s"])
    chosen = next((c for c in measured if c["split"] == result["chosen"]), None)
    out = {"measured": len(measured), "chosen": result["chosen"], "measured_best": best["split"],
           "differ": max(med.values()) / min(med.values())}
    if chosen is not None:
        cm, bm = chosen["measured"], best["measured"]
        out["pick_ok"] = chosen is best or cm["q1_s"] <= bm["q3_s"]
        out["chosen_over_best"] = cm["median_s"] / bm["median_s"]
        out["chosen_measured_over_predicted"] = cm["median_s"] / chosen["predicted_s"]
        out["chosen_within"] = 1 / WITHIN <= out["chosen_measured_over_predicted"] <= WITHIN
    out["all_within"] = all(1 / WITHIN <= c["measured"]["median_s"] / c["predicted_s"] <= WITHIN for c in measured)
    for key in ("built_in", "quick"):  # the built-in figures (never calibrated), a first-use quick calibration
        _judge_other(result, measured, key, out)
    return out


def totals(cases: list[dict]) -> dict:
    """Pick accuracy over the cases whose candidates differ; prediction accuracy over every case."""
    scored = [c for c in cases if c.get("judge", {}).get("measured")]
    differ = [c for c in scored if c["judge"]["differ"] >= DIFFER]
    picks = [c for c in differ if "pick_ok" in c["judge"]]
    within = [c for c in scored if "chosen_within" in c["judge"]]
    return {"cases": len(cases), "measured": len(scored), "differ": len(differ),
            "picks_ok": sum(c["judge"]["pick_ok"] for c in picks), "picks": len(picks),
            "chosen_within": sum(c["judge"]["chosen_within"] for c in within), "predictions": len(within),
            "every_candidate_within": sum(c["judge"]["all_within"] for c in scored),
            "built_in_within": sum(c["judge"].get("built_in_within", False) for c in scored),
            "built_in_predictions": sum("built_in_within" in c["judge"] for c in scored),
            "quick_within": sum(c["judge"].get("quick_within", False) for c in scored),
            "quick_predictions": sum("quick_within" in c["judge"] for c in scored)}


def run_case(name: str, workload: str, s: dict, repeats: int, env: SuiteEnv) -> dict:
    env.log(f"  split_choice: {name} {s} on {env.devices} devices, every candidate")
    try:
        res = run_isolated("candidates", {"workload": workload, "sizes": s, "devices": env.devices,
                                          "repeats": repeats, "together": True,
                                          "quick_profile": str(quick_profile_path(env))},
                           env.devices, TIMEOUT_S, env.platform,
                           extra_env={"CLAYGRAPH_PROFILE": str(profile_path(env))})
    except Exception as exc:  # one failed case is reported, the others still run
        return {"name": name, "workload": workload, "sizes": s, "status": "error", "note": str(exc)[-600:]}
    return {"name": name, "workload": workload, "sizes": s, "status": "ok", "result": res, "judge": judge(res)}


def run(sizes: Sizes, env: SuiteEnv) -> dict:
    smoke = sizes.mode == "smoke"
    idle = None
    if not smoke:  # the curves measured at load come out slower: calibrate on an idle host where it becomes one
        load, waited = wait_for_idle()
        idle = {"load": load, "waited_s": waited}
        env.log(f"  split_choice: calibrating at load {load:.2f} (waited {waited:.0f} s for the host to idle)")
    profile = calibrate(env, quick=smoke or sizes.mode == "quick")
    # what a machine's first multi-device plan measures where it has no profile (ClusterSpec.local)
    calibrate(env, quick=True, path=quick_profile_path(env))
    cases = SMOKE_CASES if smoke else CASES
    repeats = max(sizes.repeats, 3 if smoke else 11)
    load_before = list(os.getloadavg())
    out = [run_case(name, wl, s, repeats, env) for name, wl, s in cases]
    return {"status": "ok", "devices": env.devices, "repeats": repeats, "differ": DIFFER, "within": WITHIN,
            "built_in_within": BUILT_IN_WITHIN,
            "profile": {k: profile.get(k) for k in ("measured_at", "load_average", "calibrate_s", "device_kind")},
            "idle_before_calibration": idle,
            "load_average_cases": {"before": load_before, "after": list(os.getloadavg())},
            "cases": out, "totals": totals(out)}
