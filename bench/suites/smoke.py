"""Smoke: every moving part of the harness at tiny sizes, in this process, well under a minute.

One partition choice (W3's model, planned for two local devices), one compile and the time of a
gradient evaluation on Local(devices=1) (W1's model), and the layout kernel at 1e5 rows against
its NumPy baseline. Its sizes are always the smoke sizes, whatever the mode.
"""
from __future__ import annotations

import time

import numpy as np

from bench.sizes import SMOKE, Sizes
from bench.suites import SuiteEnv
from bench.suites.layout import compare_group_layout
from bench.timing import measure


def run(sizes: Sizes, env: SuiteEnv) -> dict:
    import jax

    import claygraph as cg
    from bench import workloads as w

    s = SMOKE
    env.log("  smoke: partition W3 for 2 devices")
    data = w.w3_data(s.w3_n, s.w3_groups, s.w3_d)
    t0 = time.perf_counter()
    plan = cg.partition(w.hier_logistic_model, data, cluster=cg.ClusterSpec.local(devices=2))
    partition_s = time.perf_counter() - t0
    env.log("  smoke: compile W1 on Local(devices=1) and time its gradient")
    data1 = w.w1_data(s.w1_n, s.w1_d)
    plan1 = cg.partition(w.logistic_model, data1, cluster=cg.ClusterSpec.local(devices=1))
    t0 = time.perf_counter()
    prog = cg.compile(plan1, runtime=cg.runtime.Local(devices=1))
    place_s = time.perf_counter() - t0
    params = {k: np.zeros(shape, np.float32) for k, shape in plan1.graph.param_shapes.items()}
    grad = measure(lambda: jax.block_until_ready(prog.potential_and_grad(params)), s.repeats, warmup=1)
    env.log("  smoke: layout kernel at 1e5 rows")
    layout = compare_group_layout(s.layout_rows[0], s.layout_shards[0], s.repeats)
    return {
        "status": "ok",
        "sizes": {"w3": [s.w3_n, s.w3_groups, s.w3_d], "w1": [s.w1_n, s.w1_d], "layout_rows": s.layout_rows[0]},
        "partition": {"workload": "W3", "devices": 2, "chosen": list(plan.split), "partition_s": partition_s,
                      "candidates": [c.to_json() for c in plan.candidates]},
        "gradient": {"workload": "W1", "devices": 1, "split": list(plan1.split), "place_s": place_s,
                     "compile_s": grad.first_s, "timing": grad.to_json()},
        "layout": layout,
    }
