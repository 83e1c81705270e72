"""The split choice (W3, W6): every candidate's measured time per gradient evaluation next to its prediction.

For each workload one subprocess with `env.devices` forced host devices lowers the model, asks
the cost model for every candidate (with the profile the split_choice suite calibrated, where there is
one of this version, else calibrated first into the same file, so that both suites predict W3 and W6
alike), compiles each feasible one on Local(devices=N) and times `potential_and_grad` in turns (median
of `repeats` after one warm-up call that compiles). A second
subprocess with one device times the unsplit program, for the time-vs-devices plot. The suite
says whether the predicted best split is the measured best, and checks that every split gives
the same potential and gradient (to float32 rounding).
"""
from __future__ import annotations

from bench.sizes import Sizes
from bench.suites import SuiteEnv
from bench.timing import run_isolated

TIMEOUT_S = 1800


def workload_sizes(sizes: Sizes) -> dict[str, dict]:
    return {"W3": {"n": sizes.w3_n, "groups": sizes.w3_groups, "d": sizes.w3_d},
            "W6": {"n": sizes.w6_n, "d": sizes.w6_d}}


def overlaps(chosen: dict, best: dict) -> bool:
    """The chosen split's measured spread (first to third quartile of its repeats; the range where a
    run has no quartiles) reaches the fastest one's: no fixed tie allowance."""
    return chosen.get("q1_s", chosen["min_s"]) <= best.get("q3_s", best["max_s"])


def verdict(summary: dict) -> str:
    """'yes', 'tie' (the chosen split's measured spread overlaps the fastest's) or 'no'."""
    if summary["agree"]:
        return "yes"
    return "tie" if summary.get("spreads_overlap") else "no"


def summarize(result: dict) -> dict:
    """Predicted best, measured best, and measured/predicted per candidate."""
    measured = [c for c in result["candidates"] if c.get("measured")]
    for c in measured:
        c["measured_over_predicted"] = c["measured"]["median_s"] / c["predicted_s"]
    best = min(measured, key=lambda c: c["measured"]["median_s"]) if measured else None
    chosen = next((c for c in measured if c["split"] == result["chosen"]), None)
    out = {"predicted_best": result["chosen"], "measured_best": best["split"] if best else None,
           "agree": bool(best and best["split"] == result["chosen"])}
    if best and chosen:
        out["chosen_over_best"] = chosen["measured"]["median_s"] / best["measured"]["median_s"]
        out["spreads_overlap"] = overlaps(chosen["measured"], best["measured"])
    out["verdict"] = verdict(out)
    out["max_grad_rel_diff"] = max((c.get("grad_rel_diff", 0.0) for c in measured), default=0.0)
    return out


def profile_env(env: SuiteEnv, sizes: Sizes) -> dict[str, str]:
    """Predict with the profile the split_choice suite calibrated on this machine, so that both suites give
    W3 and W6 the same predictions; where there is none of this claygraph's version, calibrate it first
    (the built-in figures would predict differently from the split_choice table)."""
    import json

    from bench.suites.split_choice import calibrate, profile_path
    from claygraph.partition.cluster import PROFILE_VERSION

    path = profile_path(env)
    try:
        current = json.loads(path.read_text()).get("version") == PROFILE_VERSION
    except (OSError, ValueError):
        current = False
    if not current:
        calibrate(env, quick=sizes.mode in ("smoke", "quick"))
    return {"CLAYGRAPH_PROFILE": str(path)}


def measure_workload(name: str, s: dict, sizes: Sizes, env: SuiteEnv, profile: dict[str, str]) -> dict:
    env.log(f"  partition: {name} {s} on {env.devices} devices, every candidate")
    multi = run_isolated("candidates", {"workload": name, "sizes": s, "devices": env.devices, "together": True,
                                        "repeats": sizes.repeats}, env.devices, TIMEOUT_S, env.platform,
                         extra_env=profile)
    env.log(f"  partition: {name} on 1 device, unsplit")
    single = run_isolated("candidates", {"workload": name, "sizes": s, "devices": 1, "splits": [[]],
                                         "repeats": sizes.repeats}, 1, TIMEOUT_S, env.platform,
                          extra_env=profile)
    return {"sizes": s, "multi": multi, "single": single, "summary": summarize(multi)}


def run(sizes: Sizes, env: SuiteEnv) -> dict:
    profile = profile_env(env, sizes)
    return {"status": "ok", "devices": env.devices,
            "workloads": {name: measure_workload(name, s, sizes, env, profile)
                          for name, s in workload_sizes(sizes).items()}}
