"""Layout kernels: claygraph's numba `group_layout` and `lpt_owner` against NumPy/Python baselines.

`group_layout` assigns groups to shards (LPT) and routes every row to its group's shard. The
baseline does the row work the NumPy way, with a stable argsort of the row keys, and shares the
group assignment (so that the outputs must be identical, which the suite checks). `lpt_owner`
(numba) is compared with the same greedy written with Python's heapq.
"""
from __future__ import annotations

import heapq
import time

import numpy as np

from bench.machine import available_memory
from bench.sizes import Sizes
from bench.suites import SuiteEnv
from bench.timing import measure
from bench.workloads import zipf_index

ROWS_PER_GROUP = 100
BYTES_PER_ROW = 64  # peak working set per row of one comparison (int64 index, keys, positions, slots, sort)


def numpy_group_layout(idx: np.ndarray, groups: int, shards: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(owner per group, rows per shard, row slots) as group_layout computes them, with NumPy's argsort:
    rows by shard, and within a shard by their group's slot (the groups of a shard in id order)."""
    from claygraph.partition.layout import lanes, lpt_owner

    owner = lpt_owner(np.bincount(idx, minlength=groups), shards)
    keys = owner[idx]
    by_shard = np.argsort(owner, kind="stable")  # the groups of shard 0 in id order, then shard 1's, ...
    rank = np.empty(groups, dtype=np.int64)
    rank[by_shard] = np.arange(groups)
    order = np.argsort(rank[idx], kind="stable")
    rcount = np.bincount(keys, minlength=shards)
    local = lanes(max(1, int(rcount.max())))  # shards padded to whole vectors, as group_layout pads them
    slots = np.full(shards * local, -1, dtype=np.int64)
    start = np.concatenate([[0], np.cumsum(rcount)])
    for s in range(shards):
        slots[s * local: s * local + rcount[s]] = order[start[s]:start[s + 1]]
    return owner, rcount, slots


def heapq_lpt(counts: np.ndarray, shards: int) -> np.ndarray:
    """Longest-processing-time greedy in pure Python (ties to the lowest shard, like lpt_assign)."""
    heap = [(0, s) for s in range(shards)]
    owner = np.empty(len(counts), dtype=np.int64)
    for g in np.argsort(-counts, kind="stable").tolist():
        load, s = heapq.heappop(heap)
        owner[g] = s
        heapq.heappush(heap, (load + int(counts[g]), s))
    return owner


def compare_group_layout(rows: int, shards: int, repeats: int) -> dict:
    from claygraph.partition.layout import group_layout

    groups = max(1, rows // ROWS_PER_GROUP)
    t0 = time.perf_counter()
    idx = zipf_index(rows, groups)
    gen_s = time.perf_counter() - t0
    out: dict = {}

    def kernel():  # the layout and its whole row table (a row layout makes its table only when asked)
        glay, rlay = group_layout("group", "row", idx, groups, shards)
        out["numba"] = (rlay, rlay.slots)

    def baseline():
        out["numpy"] = numpy_group_layout(idx, groups, shards)

    t_numba = measure(kernel, repeats, warmup=1)
    t_numpy = measure(baseline, repeats, warmup=1)
    row_layout, table = out["numba"]
    _, rcount, slots = out["numpy"]
    same = bool(np.array_equal(row_layout.counts, rcount) and np.array_equal(table, slots))
    return {"kernel": "group_layout", "rows": rows, "groups": groups, "shards": shards, "data_s": gen_s,
            "numba": t_numba.to_json(), "baseline": t_numpy.to_json(), "baseline_name": "NumPy argsort",
            "speedup": t_numpy.median_s / t_numba.median_s, "identical": same}


def compare_lpt(groups: int, shards: int, repeats: int) -> dict:
    from bench.workloads import zipf_counts
    from claygraph.partition.layout import lpt_owner

    counts = zipf_counts(groups * ROWS_PER_GROUP, groups)
    out: dict = {}
    t_numba = measure(lambda: out.__setitem__("numba", lpt_owner(counts, shards)), repeats, warmup=1)
    t_py = measure(lambda: out.__setitem__("py", heapq_lpt(counts, shards)), max(1, repeats // 2), warmup=0)
    loads_numba = np.bincount(out["numba"], weights=counts, minlength=shards)
    loads_py = np.bincount(out["py"], weights=counts, minlength=shards)
    return {"kernel": "lpt_owner", "rows": int(counts.sum()), "groups": groups, "shards": shards,
            "numba": t_numba.to_json(), "baseline": t_py.to_json(), "baseline_name": "Python heapq",
            "speedup": t_py.median_s / t_numba.median_s,
            "identical": bool(np.array_equal(np.sort(loads_numba), np.sort(loads_py)))}


def run(sizes: Sizes, env: SuiteEnv) -> dict:
    cases, skipped = [], []
    repeats = max(3, sizes.repeats // 2)
    for rows in sizes.layout_rows:
        need = rows * BYTES_PER_ROW
        avail = available_memory()
        if avail is not None and need > 0.8 * avail:
            skipped.append(f"{rows:.0e} rows: needs about {need / 1e9:.1f} GB, {avail / 1e9:.1f} GB available")
            continue
        reps = repeats if rows <= 10_000_000 else 3
        for shards in sizes.layout_shards:
            env.log(f"  layout: group_layout, {rows:.0e} rows, {shards} shards")
            cases.append(compare_group_layout(rows, shards, reps))
        env.log(f"  layout: lpt_owner, {rows // ROWS_PER_GROUP:.0e} groups")
        cases.append(compare_lpt(rows // ROWS_PER_GROUP, max(sizes.layout_shards), reps))
    return {"status": "ok", "cases": cases, "skipped": skipped, "rows_per_group": ROWS_PER_GROUP,
            "group_counts": "Zipf, exponent 1.1"}
