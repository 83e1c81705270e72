"""Calibration: measure this machine and save the profile that ClusterSpec.local reads (`claygraph calibrate`
parses its arguments and prints the summary; the measuring is here, beside the runtime it times).

What the cost model uses, per device kind (the host CPU here; XLA's CPU runtime, all its threads):
  - kernel throughput by family, each at several sizes (median of repeats, jitted, after a warm-up; the
    median of three passes over all of them; made non-decreasing in work):
    matmul (square float32 GEMM, FLOP/s), matvec (X @ w over a tall X, bytes/s) and vecmat (its
    gradient's r @ X, contracting the long axis, on an X as wide as XLA runs as a dot), fused elementwise
    chains (bytes/s), transcendental functions (elements/s), gather and scatter-add (bytes moved/s),
    reductions (bytes/s); the families a program runs fused or over cached row blocks (elementwise,
    transcendental, the four matrix-vector products, gathers, scatter-adds and reductions: IN_LOOP) are
    timed as many iterations inside one compiled loop; the products, gathers, scatter-adds and reductions
    also one call each (an unblocked program's), the products also over a wide X; GEMMs one call each;
  - per-call overhead: a claygraph program's `potential_and_grad` with almost no work, on one device and
    over the devices (`call_s`, `spmd_call_s`); a bare jitted call on one float, what every one-call
    timing carried and is stored less; per-kernel overhead (the intercept of the time-against-size lines
    of the one-call kernels, less that bare call);
  - collectives between `devices` local devices (`psum` in `shard_map` over forced host devices, in a
    fresh interpreter) by message size, fitted to the ring formula's latency and bandwidth;
  - message latency and bandwidth between two local processes (a loopback TCP echo: the transport
    gloo uses between Ray workers on one node), kept as `process_link`.
The whole run takes about two minutes (three passes over the kernels); `--quick` a few seconds. See
docs/cluster.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from claygraph.partition import families
from claygraph.partition.cluster import (
    PRODUCT_COLS,
    PRODUCT_WIDE_COLS,
    ClusterSpec,
    Curve,
    KernelRates,
    default_profile_path,
    local_spec,
    register_auto_calibration,
    total_memory,
    write_profile,
)

LARGE_MESSAGE_FLOATS = 1_000_000
_HEADER = struct.Struct("<qq")  # (message bytes, round trips); (0, 0) ends the echo process
_COLLECTIVE_MARK = "CALIBRATE-COLLECTIVES "


@dataclasses.dataclass(frozen=True, slots=True)
class Budget:
    """How much to measure: sizes (elements) per kernel family, repeats, messages."""

    elements: tuple[int, ...]  # streaming kernels (elementwise, transcendental, gather, scatter, reduce)
    matmul_n: tuple[int, ...]  # square GEMM sides
    matvec_rows: tuple[int, ...]  # rows of a (rows, 64) X in X @ w
    reps: int
    message_floats: tuple[int, ...]  # collective message sizes
    message_reps: int
    small_trips: int
    large_trips: int
    weight_elements: int  # elements of the transcendental functions' weighing
    block_rows: tuple[int, ...] = (1 << 16, 1 << 17, 1 << 18)  # rows of a (rows, 64) X streamed in row blocks
    passes: int = 1  # passes over every kernel and size; each point is the median of its passes


# streaming kernels up to 32 M float32 (128 MB): past the caches, into the memory-bound regime
FULL = Budget(elements=(1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22, 1 << 23, 1 << 25), matmul_n=(128, 256, 512, 1024),
              matvec_rows=(1 << 10, 1 << 12, 1 << 14, 1 << 15, 1 << 16, 1 << 17, 1 << 18, 1 << 19),
              reps=9, message_floats=(1, 1_000, 100_000, 1_000_000), message_reps=30, small_trips=200,
              large_trips=10, weight_elements=1 << 19, block_rows=(1 << 17, 1 << 18, 1 << 19), passes=3)
QUICK = Budget(elements=(1 << 14, 1 << 16, 1 << 18, 1 << 20), matmul_n=(128, 256, 512),
               matvec_rows=(1 << 10, 1 << 13, 1 << 16),
               reps=5, message_floats=(1, 1_000, 100_000), message_reps=8, small_trips=50, large_trips=3,
               weight_elements=1 << 16)
FEATURE_MAJOR_COLS = 8  # features of a feature-major X (storage.FEATURE_MAJOR_WIDTHS)
# widths of X in the product curves (cluster.py, where the cost model reads them too)
MATVEC_COLS, VECMAT_COLS, WIDE_COLS = PRODUCT_COLS["matvec"], PRODUCT_COLS["vecmat"], PRODUCT_WIDE_COLS
GATHER_MAX = 1 << 22  # elements: a larger fresh output is mapped (and faulted in) afresh on every call

# The other process of the message test: a stdlib-only echo loop started with `python -I -S -c`,
# so that it starts in tens of milliseconds. (A multiprocessing "spawn" child would re-import
# claygraph and JAX, seconds; "fork" after JAX has started its threads can deadlock.)
_ECHO = r"""
import socket, struct, sys
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def recv_into(view):
    while len(view):
        n = sock.recv_into(view)
        if n == 0:
            sys.exit(0)
        view = view[n:]
header = bytearray(16)
while True:
    recv_into(memoryview(header))
    size, trips = struct.unpack("<qq", header)
    if size == 0:
        break
    buf = memoryview(bytearray(size))
    for _ in range(trips):
        recv_into(buf)
        sock.sendall(buf)
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Series:
    """One kernel family measured at several sizes: `work` units (bytes, FLOPs or elements) in `seconds`."""

    family: str
    unit: str
    work: tuple[float, ...]
    seconds: tuple[float, ...]

    def rate(self) -> float:
        """Throughput at the largest size, where the per-kernel overhead matters least."""
        return self.work[-1] / self.seconds[-1]

    def intercept(self) -> float:
        """Seconds at zero work of the least-squares line through (work, seconds), floored at 0."""
        slope, icpt = np.polyfit(np.asarray(self.work), np.asarray(self.seconds), 1)
        return max(float(icpt), 0.0) if slope > 0 else 0.0

    def to_json(self) -> dict:
        return {"unit": self.unit, "work": list(self.work), "seconds": list(self.seconds), "rate": self.rate()}


def calibrate(out: str | None = None, quick: bool = False, devices: int = 2) -> tuple[ClusterSpec, dict, Path]:
    """Measure this machine and save the profile JSON (default: $CLAYGRAPH_PROFILE or
    ~/.cache/claygraph/profile.json); returns (the host's spec, the profile, where it was saved)."""
    budget = QUICK if quick else FULL
    t0 = time.perf_counter()
    call_s = measure_call_overhead(budget.reps * 20)  # a jitted call on one float: what each timed call carried
    program_call_s = measure_program_call(1, budget.reps * 4)
    series = measure_kernels(budget)
    kernel_s = max(statistics.median(s.intercept() for k, s in series.items() if k not in IN_LOOP) - call_s, 0.0)
    coll = measure_collectives(devices, budget.message_floats, budget.message_reps)
    small, large = measure_round_trips(budget.small_trips, budget.large_trips)
    p_latency, p_bandwidth = fit_link(small, large, 4 * LARGE_MESSAGE_FLOATS)
    weights = measure_weights(budget.weight_elements, budget.reps)
    overlap = measure_block_overlap(budget.block_rows[-1], budget.reps)
    rates = dataclasses.replace(kernel_rates(series, call_s, kernel_s), call_s=program_call_s,
                                spmd_call_s=coll["program_call_s"], weights=tuple(sorted(weights.items())),
                                block_overlap=overlap["overlap"])
    spec = local_spec(flops=rates.matmul.rate(), mem_bandwidth=rates.matvec.rate(), mem_capacity=total_memory(),
                      latency=coll["latency"], bandwidth=coll["bandwidth"], devices=1, kernels=rates,
                      name="local-calibrated")
    profile = spec.to_profile() | {
        "device_kind": _device_kind(),
        "quick": quick,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "load_average": list(os.getloadavg()),
        "calibrate_s": time.perf_counter() - t0,
        "kernels_measured": {k: s.to_json() for k, s in series.items()},
        "collectives": coll,
        "block_overlap_measured": overlap,
        "process_link": {"latency": p_latency, "bandwidth": p_bandwidth,
                         "round_trip_1_float_s": small, "round_trip_1e6_floats_s": large},
    }
    path = write_profile(out if out is not None else default_profile_path(), profile)
    return spec, profile, path


def kernel_rates(series: dict[str, Series], call_s: float, kernel_s: float) -> KernelRates:
    """The host's curves (all its cores) from the measured series, each less the call overhead that
    every timed call carried (a series timed in a loop, IN_LOOP, is already net of it)."""
    def curve(name: str) -> Curve:
        s = series[name]
        seconds = s.seconds if name in IN_LOOP else tuple(max(t - call_s, 0.05 * t) for t in s.seconds)
        return Curve(s.work, monotone(seconds))

    return KernelRates.of(**{family: curve(name) for family, name in FAMILY_SERIES.items()},
                          call_s=max(call_s, 1e-9), kernel_s=max(kernel_s, 1e-9))


def monotone(seconds: tuple[float, ...]) -> tuple[float, ...]:
    """The closest non-decreasing sequence (least squares: adjacent violators pooled into their mean).
    A kernel with more work never takes less time; a measured point below a smaller one is noise (the
    reduction over 262 K elements at 134 us, over 1 M at 27 us, in one run)."""
    blocks: list[list[float]] = []  # [sum, count] of each pooled run
    for t in seconds:
        blocks.append([t, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return tuple(total / count for total, count in blocks for _ in range(int(count)))


# cost-model family -> the measured series it is read from (claygraph.partition.families)
FAMILY_SERIES = {f.name: f.series for f in families.FAMILIES}


# -- kernels ---------------------------------------------------------------------------------------------

def measure_call_overhead(calls: int) -> float:
    """Median seconds of one jitted call on one float, result waited for: dispatch and return."""
    import jax
    import jax.numpy as jnp

    f = jax.jit(lambda x: x + 1.0)
    x = jnp.ones((1,), jnp.float32)
    return _median_time(lambda: f(x).block_until_ready(), calls)


def measure_kernels(budget: Budget) -> dict[str, Series]:
    """Every family at every size of the budget, in `budget.passes` passes over all of them: each point is
    the median of its passes. On a shared host, load comes and goes over seconds to minutes, longer than one
    point's repeats (2 cores, three passes a minute apart: a point's slowest pass 1.1-2x its fastest, the
    median point 1.4x); a pass that met it is outvoted."""
    passes = [_measure_pass(budget) for _ in range(max(budget.passes, 1))]
    out = {}
    for k in passes[0]:
        work = passes[0][k].work
        seconds = tuple(statistics.median(p[k].seconds[i] for p in passes) for i in range(len(work)))
        out[k] = Series(k, KERNELS[k], work, seconds)
    return out


def _measure_pass(budget: Budget) -> dict[str, Series]:
    """One pass: every family at every size of the budget."""
    import jax
    import jax.numpy as jnp

    from claygraph.partition import kernels

    rng = np.random.default_rng(0)
    out: dict[str, list[tuple[float, float]]] = {k: [] for k in KERNELS}
    for n in budget.matmul_n:
        a = jnp.asarray(rng.standard_normal((n, n), dtype=np.float32))
        out["matmul"].append((2.0 * n**3, _kernel_time(jax.jit(jnp.matmul), (a, a), budget.reps)))
    for rows in budget.matvec_rows:
        x = jnp.asarray(rng.standard_normal((rows, MATVEC_COLS), dtype=np.float32))
        w = jnp.ones((MATVEC_COLS,), jnp.float32)
        work = 4.0 * rows * MATVEC_COLS
        out["matvec"].append((work, _loop_time(lambda v, m: v + 1e-9 * jnp.sum(m @ v), w, work, budget.reps, x)))
        out["matvec_call"].append((work, _kernel_time(jax.jit(lambda m, v: m @ v), (x, w), budget.reps)))
        wide = rows * MATVEC_COLS // VECMAT_COLS
        x = jnp.asarray(rng.standard_normal((wide, VECMAT_COLS), dtype=np.float32))
        r = jnp.ones((wide,), jnp.float32)
        work = 4.0 * wide * VECMAT_COLS
        out["vecmat"].append((work, _loop_time(lambda v, m: v + 1e-9 * jnp.sum(v @ m), r, work, budget.reps, x)))
        out["vecmat_call"].append((work, _kernel_time(jax.jit(lambda v, m: v @ m), (r, x), budget.reps)))
        # both products one call each over a wide X of the same bytes (XLA's dot streams long rows faster)
        x = jnp.asarray(rng.standard_normal((max(rows * MATVEC_COLS // WIDE_COLS, 1), WIDE_COLS), dtype=np.float32))
        w, r = jnp.ones((WIDE_COLS,), jnp.float32), jnp.ones((x.shape[0],), jnp.float32)
        work = 4.0 * x.size
        out["matvec_wide_call"].append((work, _kernel_time(jax.jit(lambda m, v: m @ v), (x, w), budget.reps)))
        out["vecmat_wide_call"].append((work, _kernel_time(jax.jit(lambda v, m: v @ m), (r, x), budget.reps)))
        # X held feature-major (storage.py): X.T of FEATURE_MAJOR_COLS rows, its X @ w and r @ X as emitted
        tall = rows * MATVEC_COLS // FEATURE_MAJOR_COLS
        xt = jnp.asarray(rng.standard_normal((FEATURE_MAJOR_COLS, tall), dtype=np.float32))
        w, r = jnp.ones((FEATURE_MAJOR_COLS,), jnp.float32), jnp.ones((tall,), jnp.float32)
        work = 4.0 * tall * FEATURE_MAJOR_COLS
        out["matvec_t"].append((work, _loop_time(lambda v, m: v + 1e-9 * jnp.sum(kernels.matvec_t(m, v)), w, work,
                                                 budget.reps, xt)))
        out["vecmat_t"].append((work, _loop_time(lambda v, m: v + 1e-9 * jnp.sum(kernels.matvec_t_transpose(m, v)), r,
                                                 work, budget.reps, xt)))
        out["matvec_t_call"].append((work, _kernel_time(jax.jit(kernels.matvec_t), (xt, w), budget.reps)))
        out["vecmat_t_call"].append((work, _kernel_time(jax.jit(kernels.matvec_t_transpose), (xt, r), budget.reps)))
    for rows in budget.block_rows:
        x = jnp.asarray(rng.standard_normal((rows, MATVEC_COLS), dtype=np.float32))
        out["block_read"].append((4.0 * x.size, _loop_time(_blocked_sum(rows), jnp.zeros((MATVEC_COLS,), jnp.float32),
                                                           4.0 * x.size, budget.reps, x)))
    for n in budget.elements:
        x = jnp.asarray(rng.random(n, dtype=np.float32))
        idx = jnp.asarray(rng.integers(0, max(n // 16, 1), n, dtype=np.int32))
        table = jnp.asarray(rng.random(max(n // 16, 1), dtype=np.float32))
        for family, (fn, args, work) in _streaming(x, idx, table).items():
            if family in ALSO_ONE_CALL and not (family == "gather" and n > GATHER_MAX):
                # (a larger fresh gather output would time page faults, not gathering: see _loop_time)
                out[family + "_call"].append((work, _kernel_time(jax.jit(fn), args, budget.reps)))
            if family in IN_LOOP:
                step, carry, consts = _loop_step(family, fn, args)
                out[family].append((work, _loop_time(step, carry, work, budget.reps, *consts)))
    return {k: Series(k, KERNELS[k], tuple(w for w, _ in v), tuple(t for _, t in v)) for k, v in out.items()}


# measured series -> unit of its throughput
KERNELS = {f.series: f.unit for f in families.FAMILIES}


# Families timed as a program runs them: many iterations of the kernel inside one compiled loop
# (_loop_time), not one call each. Elementwise and transcendental ops are fused by XLA into the
# kernels around them, so a standalone call's dispatch and thread start-up (tens of microseconds,
# more than the kernel itself below a megabyte) is not theirs to pay; the matrix-vector products
# of a fused row block (fused.py) run on a block in cache, many times over, in one loop (and all
# four are timed alike, so that the model compares like with like when it weighs a feature-major X
# against a row-major one). Each loop step also sums the product into the carried vector: a pass
# over the output, 1/64 of X's bytes for matvec, 1/8 for the feature-major pair (8 features).
# Gathers, scatter-adds and reductions run inside a blocked program's loop too, and once per call in
# an unblocked one: they are timed both ways (2 cores, 161,312 elements from a 10,016-entry table: a
# gather 67 us in a loop, 161 us one call; a scatter-add 128 and 265 us; a sum 30 and 116 us). GEMMs
# are timed one call each.
IN_LOOP = frozenset(f.series for f in families.FAMILIES if f.in_loop)
# the streaming series (_streaming) also timed one call each, as `<series>_call`
ALSO_ONE_CALL = frozenset(s for s in ("elementwise", "transcendental", "gather", "scatter_add", "reduce")
                          if s + "_call" in KERNELS)
LOOP_BYTES = 1 << 26  # iterations per timed loop: enough for about this much work (at least 2, at most 64)


def _blocked_sum(rows: int) -> Callable:
    """A step that streams a (rows, 64) X as a blocked program does (fused.py): a loop over row blocks of
    blocks.BLOCK_BYTES, each sliced out of X and summed in cache. Where XLA runs the pass over a whole
    array on all cores and a block's small kernels on one, this is slower than one pass over X (2 cores,
    Xeon, 200 MB: 23.9 ms against 9.6 ms), and the blocked program pays it for its single read."""
    import jax.numpy as jnp
    from jax import lax

    from claygraph.partition.blocks import BLOCK_BYTES

    block = max(BLOCK_BYTES // (4 * MATVEC_COLS), 1)
    count = max(rows // block, 1)

    def step(c, x):
        def one(i, acc):
            return acc + jnp.sum(lax.dynamic_slice_in_dim(x, i * block, min(block, rows)), axis=0)
        return c + 1e-9 * lax.fori_loop(0, count, one, jnp.zeros_like(c))

    return step


def measure_block_overlap(rows: int, reps: int) -> dict[str, float]:
    """How much of a blocked program's read hides under its blocks' forward kernels, on a (rows, 64) X in
    row blocks of blocks.BLOCK_BYTES: the blocked read alone (`_blocked_sum`), X @ w on one block kept in
    cache times the blocks, and the two together over the distinct blocks;
    overlap = (read + kernels - both) / min(read, kernels), within [0, 1]."""
    import jax.numpy as jnp
    from jax import lax

    from claygraph.partition.blocks import BLOCK_BYTES

    block = max(BLOCK_BYTES // (4 * MATVEC_COLS), 1)
    rows = max(rows, 4 * block)
    count = rows // block
    x = jnp.asarray(np.random.default_rng(2).standard_normal((rows, MATVEC_COLS), dtype=np.float32))
    w = jnp.full((MATVEC_COLS,), 1.0 / MATVEC_COLS, jnp.float32)
    work = 4.0 * x.size
    read = _loop_time(_blocked_sum(rows), jnp.zeros((MATVEC_COLS,), jnp.float32), work, reps, x)
    first = x[:block]
    kernels = count * _loop_time(lambda v, m: v + 1e-9 * jnp.sum(m @ v), w, 4.0 * first.size, reps, first)

    def both_step(v, m):
        def one(i, acc):
            return acc + jnp.sum(lax.dynamic_slice_in_dim(m, i * block, block) @ v)
        return v + 1e-9 * lax.fori_loop(0, count, one, jnp.zeros((), v.dtype))

    both = _loop_time(both_step, w, work, reps, x)
    overlap = (read + kernels - both) / max(min(read, kernels), 1e-12)
    return {"read_s": read, "kernels_s": kernels, "both_s": both, "bytes": work, "overlap": min(max(overlap, 0.0), 1.0)}


def _streaming(x, idx, table) -> dict[str, tuple[Callable, tuple, float]]:
    """(function, arguments, work) of each streaming family over the n elements of `x`."""
    import jax.numpy as jnp

    n = x.shape[0]
    return {
        # a fused chain of 4 simple ops: one read, one write (bounded: x in [0, 1) stays there)
        "elementwise": (lambda v: (v * 0.5 + 0.25) * v + 0.125, (x,), 8.0 * n),
        # two transcendental functions per element (exp, log1p): what a log-likelihood evaluates
        "transcendental": (lambda v: jnp.log1p(jnp.exp(-v)), (x,), 2.0 * n),
        # index read, gathered value written; the table stays in cache
        "gather": (lambda t, i: t[i], (table, idx), 8.0 * n),
        # index and update read; the target stays in cache
        "scatter_add": (lambda t, i, v: jnp.zeros_like(t).at[i].add(v), (table, idx, x), 8.0 * n),
        "reduce": (jnp.sum, (x,), 4.0 * n),
    }


# Transcendental functions cost very different amounts (2 cores, 500,000 float32 in a loop: exp 57 us,
# log 126, log1p 402, lgamma 5,200, digamma 5,700): each is weighed against the transcendental curve's own
# chain, log1p(exp(-x)) (2 elements of work per element), in the same loop at one size. exp and log1p are that
# chain and weigh 1 each: timed alone they do not add up to it (57 + 402 us against 1,043 us).
WEIGHED = ("log", "expm1", "logistic", "tanh", "lgamma", "digamma", "erf", "sqrt", "rsqrt", "sin", "cos")


def _loop_step(family: str, fn: Callable, args: tuple) -> tuple[Callable, object, tuple]:
    """(step, carried value, constants) that run one `family` kernel per loop iteration, each depending on
    the last (a loop-invariant kernel would be hoisted out of the loop) and moving the kernel's own bytes:
    a gather writes its n values into the carried output from the carried table, which the next step shifts
    by one gathered value (the output is not read, so XLA writes it in place: reading it, as `(t + c[0])[i]`
    would, costs a copy of the whole output per step in the compiled loop), a scatter-add reads its n
    updates (scaled by the carried table, a multiply it fuses) into a fresh table, a reduction reads x
    (scaled in the same way)."""
    import jax.numpy as jnp

    if family == "gather":
        table, idx = args

        def gather(c, i):
            g = c[1][i]
            return g, c[1] + 1e-9 * g[0]

        return gather, (jnp.zeros(idx.shape, table.dtype), table), (idx,)
    if family == "scatter_add":
        table, idx, v = args
        return (lambda c, i, u: c + 1e-9 * jnp.zeros_like(c).at[i].add(u * c[0])), table, (idx, v)
    if family == "reduce":
        (x,) = args
        return (lambda c, v: c + 1e-9 * jnp.sum(v * c[0])), jnp.ones((1,), x.dtype), (x,)
    return fn, args[0], ()


def measure_weights(n: int, reps: int) -> dict[str, float]:
    """Each WEIGHED function's weight: its loop time per element (less a loop without it) over half the chain's."""
    import jax.numpy as jnp
    from jax import lax

    x = jnp.asarray(np.random.default_rng(1).random(n, dtype=np.float32) * 5.0 + 0.5)  # every function's domain

    def net(f: Callable) -> float:
        return _loop_time(lambda v: v + 1e-7 * f(v), x, 4.0 * n, reps) - base

    base = _loop_time(lambda v: v + 1e-7 * v, x, 4.0 * n, reps)
    chain = max(net(lambda v: jnp.log1p(jnp.exp(-v))), 1e-9)
    return {name: max(net(getattr(lax, name)) / (chain / 2), 0.01) for name in WEIGHED}


def _loop_time(step: Callable, x, work: float, reps: int, *consts) -> float:
    """Median seconds of one `x = step(x, *consts)` inside a compiled fori_loop, less the call's overhead.

    The carried value makes each iteration depend on the last (nothing is hoisted out of the loop)
    and reuses its buffers as a program does: a kernel timed with a fresh output of 32 MB or more
    would time the operating system faulting in new pages (glibc maps such blocks afresh every
    call), several times the kernel itself."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    iters = int(min(max(LOOP_BYTES // max(work, 1.0), 2), 64))
    run = jax.jit(lambda v, *k: lax.fori_loop(0, iters, lambda i, c: step(c, *k), v))
    jax.block_until_ready(run(x, *consts))  # compile and warm up outside the timing
    # the call's overhead, on one float: the same empty loop over x would copy x into its output, and
    # subtracting that copy took a pass over memory off every large kernel (33M-element streams at 2 TB/s)
    base = jax.jit(lambda v: lax.fori_loop(0, 1, lambda i, c: c, v))
    one = jnp.zeros((1,), jax.tree.leaves(x)[0].dtype)
    jax.block_until_ready(base(one))
    call = _median_time(lambda: jax.block_until_ready(base(one)), reps)
    return max(_median_time(lambda: jax.block_until_ready(run(x, *consts)), reps) - call, 1e-9) / iters


def _kernel_time(fn: Callable, args: tuple, reps: int) -> float:
    import jax

    jax.block_until_ready(fn(*args))  # compile and warm up outside the timing
    return _median_time(lambda: jax.block_until_ready(fn(*args)), reps)


# -- collectives between local devices ----------------------------------------------------------------

def measure_collectives(devices: int, floats: tuple[int, ...], reps: int) -> dict:
    """psum over `devices` forced host devices by message size, in a fresh interpreter (XLA reads the
    device count once, when it starts); fitted to 2(S-1) latency + 2(S-1)/S bytes / bandwidth."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join([*flags, f"--xla_force_host_platform_device_count={devices}"])
    env["JAX_PLATFORMS"] = "cpu"
    root = str(Path(__file__).resolve().parents[2])  # the checkout holding claygraph/
    env["PYTHONPATH"] = os.pathsep.join([root, *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    cmd = [sys.executable, "-m", "claygraph.runtime.calibration", json.dumps({"floats": list(floats), "reps": reps})]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=False)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith(_COLLECTIVE_MARK)), None)
    if line is None:
        raise RuntimeError(f"the collectives measurement failed:\n{(proc.stdout + proc.stderr)[-2000:]}")
    raw = json.loads(line[len(_COLLECTIVE_MARK):])
    latency, bandwidth = fit_ring(raw["bytes"], raw["seconds"], devices)
    return {"devices": devices, "bytes": raw["bytes"], "seconds": raw["seconds"], "latency": latency,
            "bandwidth": bandwidth, "call_s": raw["call_s"], "program_call_s": raw["program_call_s"]}


def collectives_worker(spec: dict) -> dict:
    """In the worker interpreter: median seconds of a psum of each size, less a call without it."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(jax.devices()), ("d",))
    s = len(jax.devices())
    nbytes, seconds, calls = [], [], []
    for n in spec["floats"]:
        x = jax.device_put(jnp.ones((s * n,), jnp.float32), NamedSharding(mesh, P("d")))
        summed = jax.jit(jax.shard_map(lambda v: jax.lax.psum(v * 2.0, "d"), mesh=mesh, in_specs=P("d"),
                                       out_specs=P()))
        local = jax.jit(jax.shard_map(lambda v: v * 2.0, mesh=mesh, in_specs=P("d"), out_specs=P("d")))
        with_psum = _kernel_time(summed, (x,), spec["reps"])
        without = _kernel_time(local, (x,), spec["reps"])
        nbytes.append(4 * n)
        seconds.append(max(with_psum - without, 1e-9))
        calls.append(without)
    # a call of the program without the psum on one float per device: the fixed cost of an SPMD call
    return {"bytes": nbytes, "seconds": seconds, "call_s": calls[0],
            "program_call_s": measure_program_call(s, spec["reps"] * 4)}


def measure_program_call(devices: int, calls: int) -> float:
    """Median seconds of one `potential_and_grad` of a claygraph program over `devices` local devices with
    almost no work (a logistic regression of 64 x `devices` rows and 4 features, unsplit: every device holds
    them all, no collective): what every call of a program pays on top of its kernels and collectives (the
    params' transfer and checks, the dispatch over the devices, the gradient dict returned; 2 cores, load
    about 1: 0.06 ms on one device, 0.19-0.24 ms on two, where a jitted call on one float takes 5-9 us).
    Planned with the built-in figures: the profile being replaced is not read (it may be unreadable)."""
    import jax

    from claygraph import examples
    from claygraph.frontend.data import Data, array
    from claygraph.partition.plan import partition
    from claygraph.runtime.local import Local, compile  # noqa: A004

    rng = np.random.default_rng(2)
    rows = 64 * devices
    data = Data(X=array(rng.standard_normal((rows, 4)).astype(np.float32), "row", "feature"),
                y=array((rng.random(rows) < 0.5).astype(np.float32), "row"))
    plan = partition(examples.logistic_model, data, cluster=ClusterSpec.built_in(devices), split=())
    program = compile(plan, runtime=Local(devices=devices))
    params = {k: np.zeros(shape, np.float32) for k, shape in program.graph.param_shapes.items()}
    return _kernel_time(lambda: jax.block_until_ready(program.potential_and_grad(params)), (), calls)


def fit_ring(nbytes: list[float], seconds: list[float], devices: int) -> tuple[float, float]:
    """(latency, bandwidth) of the ring all-reduce formula fitted to measured times (least squares,
    both figures positive)."""
    steps = 2 * (devices - 1)
    a = np.column_stack([np.full(len(nbytes), float(steps)), steps / devices * np.asarray(nbytes, np.float64)])
    (latency, inv_bw), *_ = np.linalg.lstsq(a, np.asarray(seconds, np.float64), rcond=None)
    latency = max(float(latency), min(seconds) / steps * 0.5, 1e-9)
    if inv_bw <= 0:  # flat times: bandwidth from the largest message alone
        inv_bw = max(seconds[-1] - steps * latency, 1e-9) / (steps / devices * nbytes[-1])
    return latency, 1.0 / float(inv_bw)


# -- the link between two processes ---------------------------------------------------------------------

def measure_round_trips(small_trips: int, large_trips: int) -> tuple[float, float]:
    """Median round-trip seconds of a 1-float and a 1,000,000-float buffer to a local echo process."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(30)
        port = server.getsockname()[1]
        echo = subprocess.Popen([sys.executable, "-I", "-S", "-c", _ECHO, str(port)])
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(30)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                small = _round_trip(conn, np.ones(1, np.float32), small_trips)
                large = _round_trip(conn, np.ones(LARGE_MESSAGE_FLOATS, np.float32), large_trips)
                conn.sendall(_HEADER.pack(0, 0))
            echo.wait(timeout=10)
        finally:
            if echo.poll() is None:
                echo.kill()
                echo.wait()
    return small, large


def fit_link(small: float, large: float, nbytes: int) -> tuple[float, float]:
    """(latency, bandwidth) of one message from two round-trip times (alpha-beta model).

    A round trip is two messages, so one message of n bytes takes latency + n / bandwidth =
    round_trip / 2; the 1-float trip gives the latency, the large one the bandwidth.
    """
    latency = small / 2
    transfer = max(large / 2 - latency, 1e-9)  # guards against a noisy large trip
    return latency, nbytes / transfer


def _device_kind() -> str:
    import jax

    d = jax.devices()[0]
    return f"{d.platform}: {getattr(d, 'device_kind', d.platform)}"


def _round_trip(conn: socket.socket, payload: np.ndarray, trips: int) -> float:
    send = memoryview(payload).cast("B")
    back = memoryview(np.empty_like(payload)).cast("B")
    conn.sendall(_HEADER.pack(send.nbytes, trips))
    times = []
    for _ in range(trips):
        start = time.perf_counter()
        conn.sendall(send)
        _recv_into(conn, back)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _recv_into(conn: socket.socket, view: memoryview) -> None:
    while len(view):
        n = conn.recv_into(view)
        if n == 0:
            raise ConnectionError("the echo process closed its socket during calibration")
        view = view[n:]


def _median_time(run: Callable[[], object], reps: int) -> float:
    """Median of `reps` runs: robust to the other load on a shared machine."""
    times = []
    for _ in range(max(reps, 1)):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _auto(path: Path) -> None:
    """ClusterSpec.local's calibration of a machine without a profile: the quick budget, saved to `path`."""
    calibrate(out=str(path), quick=True, devices=2)


register_auto_calibration(_auto)


def _collectives_main(argv: list[str]) -> int:
    """The collectives worker's entry: `python -m claygraph.runtime.calibration 'JSON spec'`."""
    print(_COLLECTIVE_MARK + json.dumps(collectives_worker(json.loads(argv[0]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(_collectives_main(sys.argv[1:]))
