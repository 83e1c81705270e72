"""The GPU check: W1, W3 and W6 per gradient evaluation on one GPU against the cost model's GPU roofline,
the GPU model's own figures measured, and NCCL all-reduces where there are several GPUs
(bench/gpu_check.py). It measures a GPU only: `claygraph bench --suite gpu` without one stops with a
clear message (claygraph.cli.bench), and this suite records "no GPU present" if run anyway.
"""
from __future__ import annotations

from bench.sizes import Sizes, sizes_for
from bench.suites import SuiteEnv, not_available
from bench.timing import run_isolated

TIMEOUT_S = 1500


def run(sizes: Sizes, env: SuiteEnv) -> dict:
    from claygraph.cli.bench import gpu_problem

    problem = gpu_problem()
    if problem is not None:
        return not_available(f"the GPU check measures a GPU: {problem}")
    # the nominal sizes whatever the mode: one GPU holds them (bench.sizes.GPU)
    gpu_sizes = sizes_for("gpu") if sizes.mode != "smoke" else sizes
    result = run_isolated("gpu_check", {"sizes": gpu_sizes.to_json()}, devices=env.devices, timeout_s=TIMEOUT_S,
                          platform="gpu")
    return {"status": "ok", **result}
