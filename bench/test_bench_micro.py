"""pytest-benchmark micro-benchmarks of the functions the suites time, for profiling one at a time:

    .venv/bin/python -m pytest bench/test_bench_micro.py --benchmark-only

Not part of `make test` (tests/ is the test suite; this folder measures). Sizes are small enough
for a laptop; `claygraph bench` is the side-by-side run with peers and the report.
"""
from __future__ import annotations

import numpy as np
import pytest

from bench.suites.layout import numpy_group_layout
from bench.suites.w1 import numpy_loss_grad
from bench.workloads import w1_arrays, w1_data, zipf_index

ROWS = 1_000_000
GROUPS = 10_000


@pytest.fixture(scope="module")
def idx() -> np.ndarray:
    return zipf_index(ROWS, GROUPS)


@pytest.fixture(scope="module")
def w1_small() -> tuple[np.ndarray, np.ndarray]:
    X, y = w1_arrays(100_000, 100)
    return X, y.astype(np.float64)


def test_group_layout_numba(benchmark, idx):
    from claygraph.partition.layout import group_layout

    group_layout("g", "row", idx, GROUPS, 2)  # compile outside the timing
    benchmark(group_layout, "g", "row", idx, GROUPS, 2)


def test_group_layout_numpy_argsort(benchmark, idx):
    benchmark(numpy_group_layout, idx, GROUPS, 2)


def test_w1_loss_grad_numpy(benchmark, w1_small):
    f = numpy_loss_grad(*w1_small)
    benchmark(f, np.zeros(w1_small[0].shape[1]))


def test_w1_potential_and_grad_claygraph(benchmark):
    import jax

    import claygraph as cg
    from bench.workloads import logistic_model

    data = w1_data(100_000, 100)
    plan = cg.partition(logistic_model, data, cluster=cg.ClusterSpec.local(devices=1))
    prog = cg.compile(plan, runtime=cg.runtime.Local(devices=1))
    params = {k: np.zeros(s, np.float32) for k, s in plan.graph.param_shapes.items()}
    jax.block_until_ready(prog.potential_and_grad(params))  # compile outside the timing
    benchmark(lambda: jax.block_until_ready(prog.potential_and_grad(params)))
