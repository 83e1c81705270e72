"""The kernel families of the CPU cost model: one entry per family, holding every fact about it.

A family is what `KernelRates` holds one `Curve` for (seconds against work, cluster.py), what the cost
model reads for a node (cost.py), and what `claygraph calibrate` measures (claygraph.runtime.calibration,
which times the `series` named here). Adding a family is one entry below, its reader in cost.py and its
measurement in the calibration's pass; the curve's field, its nominal line, its unit, whether it streams
and how it is timed all come from this table.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Family:
    name: str  # the curve's name in KernelRates, profiles and the cost model
    series: str  # the calibration series it is read from
    unit: str  # the throughput's unit: work per second
    streaming: bool  # memory-bound: slows to the rate of the program's working set once it outgrows the caches
    in_loop: bool  # timed as many iterations inside one compiled loop (else one call each, less the call overhead)
    nominal: tuple[str, float]  # the data-sheet line: ("flops" | "bandwidth", fraction of it)
    what: str


def _product(name: str, what: str, in_loop: bool) -> Family:
    return Family(name, name, "bytes/s", True, in_loop, ("bandwidth", 1.0), what)


FAMILIES = (
    Family("matmul", "matmul", "FLOP/s", False, False, ("flops", 1.0), "FLOPs of a compute-bound square GEMM"),
    _product("matvec", "bytes of X read by X @ w over a tall X (64 columns)", True),
    _product("vecmat", "bytes of X read by r @ X, contracting its long axis (512 columns)", True),
    _product("matvec_t", "bytes of X read by X @ w with X held feature-major (storage.py)", True),
    _product("vecmat_t", "bytes of X read by r @ X with X held feature-major", True),
    _product("matvec_call", "matvec, one call each (an unblocked program's)", False),
    _product("vecmat_call", "vecmat, one call each", False),
    _product("matvec_t_call", "matvec_t, one call each", False),
    _product("vecmat_t_call", "vecmat_t, one call each", False),
    _product("matvec_wide_call", "X @ w over a wide X (8,192 columns), one call each", False),
    _product("vecmat_wide_call", "r @ X over a wide X, one call each", False),
    # a blocked program's data read (fused.py): a tall X streamed through a loop over cache-sized row blocks,
    # each sliced out of X and summed in cache (2 cores, Xeon: 2.4x the time of one pass over the whole X)
    Family("block_read", "block_read", "bytes/s", False, True, ("bandwidth", 1.0),
           "bytes of X streamed block by block: each row block sliced out of X, then read in cache"),
    Family("stream", "elementwise", "bytes/s", True, True, ("bandwidth", 1.0),
           "bytes read + written by a fused elementwise chain"),
    Family("transcendental", "transcendental", "elements/s", False, True, ("flops", 0.1),
           "elements through one exp, log, log1p, ... in a fused pass"),
    Family("gather", "gather", "bytes/s", False, True, ("bandwidth", 0.5),
           "bytes moved by a gather (indices read, values written), in a loop"),
    Family("scatter", "scatter_add", "bytes/s", False, True, ("bandwidth", 0.25),
           "bytes moved by a scatter-add (indices and updates read), in a loop"),
    Family("reduce", "reduce", "bytes/s", True, True, ("bandwidth", 1.0), "bytes read by a reduction, in a loop"),
    Family("gather_call", "gather_call", "bytes/s", False, False, ("bandwidth", 0.5), "gather, one call each"),
    Family("scatter_call", "scatter_add_call", "bytes/s", False, False, ("bandwidth", 0.25),
           "scatter-add, one call each"),
    Family("reduce_call", "reduce_call", "bytes/s", True, False, ("bandwidth", 1.0), "reduction, one call each"),
)
BY_NAME = {f.name: f for f in FAMILIES}
NAMES = tuple(f.name for f in FAMILIES)
STREAMING = frozenset(f.name for f in FAMILIES if f.streaming)
# families also timed one call each: a blocked program runs them in its loop, an unblocked one once per call
ONE_CALL = frozenset(f.name for f in FAMILIES if f.name + "_call" in BY_NAME)
