"""The cost model: memory per device and time per gradient evaluation of one candidate.

time = one program call's overhead + the slowest shard's kernels, forward and backward, + the
collectives (alpha-beta, ClusterSpec's formulas; the CPU runtime does not overlap them with compute).

Each node costs what a kernel of its family (the registry's `family`) takes on its local shapes,
read from the ClusterSpec's kernel curves (`claygraph calibrate` measures them per size; a preset
has data-sheet lines):
  matmul          a roofline: max(FLOPs on the GEMM curve, bytes moved on the matvec curve); a program run
                  in row blocks reads the products' in-loop curves, any other their one-call curves
  elementwise     fused by XLA into its neighbours: its elements on the fused-stream curve (2 bytes
                  of the measured 4-op chain's traffic per op and element); a data array it reads
                  from memory adds that array's bytes once
  transcendental  its elements times the function's calibrated weight on the transcendental curve
  gather/scatter  the bytes they really move (indices + values), on their own curves (in-loop curves in a
                  blocked program, one-call curves in any other, as for the products; reductions alike)
  reduce          the bytes it reads on the reduction curve
  move            free where it is a view (reshape, broadcast); a copy (transpose, pad,
                  concatenate) streams its output
plus a per-kernel overhead for every kernel that does not fuse (matmul, gather, scatter, reduce).
The backward pass is counted node by node where a value depends on the parameters: a dot costs one
more dot per differentiated operand, a gather a scatter-add (and the reverse), a reduction a
broadcast, an elementwise op twice its forward. A row-separable program that the runtime runs in
cached row blocks (claygraph.partition.fused) is costed block by block: the data are read from
memory once (each block copied out of the shard: the block_read curve) while the blocks' forward
kernels run (the host's calibrated block_overlap of the two hides: 1 a roofline, 0 a sum), then the
block's backward kernels run on it in cache. An elementwise value costs a residual (written forward,
read backward) only where the compiled program stores it (`materialized`). Where the gradient of
X @ w is the emitter's multiply-reduce, the backward pass's
elementwise work runs inside that loop over X: the pass costs the slower of the two, not their sum.
A parameter with a split dim lives sharded in the internal layout (claygraph.partition.params): the
program inference runs takes it and returns its gradient there, so it moves nothing and its gradient
stays on its shard; only replicated parameters' gradients are all-reduced. Padding to the largest
shard is part of the local shapes, so load imbalance is counted.
Memory-bound kernels run at the rate of the program's working set: the values it writes to memory
(`materialized_bytes`; a value inside a fused elementwise chain stays in registers). See docs/partition.md.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from claygraph.ir.graph import Graph, Node, Value
from claygraph.partition import blocks, families, gpu, kernels
from claygraph.partition.cluster import PRODUCT_COLS, PRODUCT_WIDE_COLS, ClusterSpec, KernelRates
from claygraph.partition.propagate import Propagation, propagate
from claygraph.partition.registry import entry, per_output
from claygraph.partition.shardings import REPLICATED, Sharded, Sharding, Split
from claygraph.partition.storage import stored_feature_major

FAMILIES = ("matmul", "elementwise", "transcendental", "gather", "scatter", "reduce", "move")  # registry families
# memory-bound curves slow to the rate of the program's working set once it outgrows the caches
# (families.STREAMING; a gather or scatter is a roofline of its lookups, at its own curve and size, and its
# streamed index and values, at the stream rate of the working set; transcendental functions are bound by
# arithmetic)
STREAMING = families.STREAMING
COPIES = frozenset({"transpose", "pad", "concatenate", "rev", "dynamic_update_slice"})  # moves that copy
STREAM_BYTES_PER_OP = 2.0  # the calibrated chain: 4 ops per element over 8 bytes read + written
# widths of X whose r @ X runs at the vecmat rate, not the forward's (2 cores, float32 X of 100-500 MB,
# forward / r @ X in GB/s: d = 500: 8.3 / 4.2, 1000: 14.7 / 6.1, 5000: 6.9 / 4.9, 10000: 16.3 / 11.7,
# 25000: 17.8 / 13.4; below 20 XLA's dot is fast, 20-160 the emitter's multiply-reduce is)
VECMAT_WIDTHS = range(kernels.FUSED_WIDTHS.stop, 8192)
BACKWARD_ELEMENTWISE = 2.0  # an elementwise op's derivative: about two ops of the same size
# a transcendental function whose derivative is another one, weighed on its own (lgamma's is digamma, which
# costs 11 times exp: measured in a loop, lgamma's value and gradient 2.8x its value alone)
DERIVATIVE = {"lgamma": "digamma", "erf": "exp", "erfc": "exp", "erf_inv": "exp",
              "sin": "cos", "cos": "sin", "sinh": "cosh", "cosh": "sinh"}
# functions whose derivative is arithmetic on their value or input (exp's is itself, log1p's 1 / (1 + x),
# logistic's s (1 - s)): their backward pass is an elementwise op's (measured in a loop over 80,656 float32,
# log1p(exp(-x)) value 44 us, value and gradient 46 us; logaddexp 110 and 127 us). A function in neither
# table costs its own weight again.
ARITHMETIC_DERIVATIVE = frozenset({"exp", "exp2", "log", "log1p", "expm1", "logistic", "tanh", "sqrt", "rsqrt",
                                   "cbrt", "tan", "atan", "atanh", "asin", "acos", "asinh", "acosh"})


@dataclass(frozen=True, slots=True)
class CostEstimate:
    """A candidate's figures, as `inspect` shows them."""

    split: tuple[str, ...]
    feasible: bool
    memory_per_device_bytes: int
    compute_s: float
    comm_bytes: int
    comm_s: float
    predicted_s: float
    reason: str | None = None
    flops: float = 0.0
    collectives: int = 0
    # the prediction term by term (name, seconds): on a GPU its roofline (flops, memory, launch), on a CPU its
    # kernels and call overhead; then the collectives
    terms: tuple[tuple[str, float], ...] = ()
    memory_terms: tuple[tuple[str, float], ...] = ()  # memory_per_device_bytes part by part (cost.memory_parts)

    def to_json(self) -> dict:
        return {"split": list(self.split), "feasible": self.feasible,
                "memory_per_device_bytes": int(self.memory_per_device_bytes), "compute_s": float(self.compute_s),
                "comm_bytes": int(self.comm_bytes), "comm_s": float(self.comm_s),
                "predicted_s": float(self.predicted_s), "reason": self.reason,
                "terms": {k: float(v) for k, v in self.terms},
                "memory_terms": {k: float(v) for k, v in self.memory_terms}}


def node_flops(node: Node, ins: list[tuple[int, ...]], outs: list[tuple[int, ...]]) -> float:
    """The registry entry's FLOP count; one per output element for a primitive it does not know."""
    prim = entry(node.primitive)
    return (prim.flops if prim is not None else per_output(1.0))(node, ins, outs)


def family(node: Node) -> str:
    prim = entry(node.primitive)
    return prim.family if prim is not None else "elementwise"


LocalShape = Callable[[Value, Sharding], tuple[int, ...]]


def _size(shape: tuple[int, ...]) -> float:
    return float(np.prod(shape, dtype=np.float64))


def _nbytes(shape: tuple[int, ...], v: Value) -> float:
    return _size(shape) * v.dtype.itemsize


@dataclass(frozen=True, slots=True)
class NodeCost:
    """One node's seconds forward and backward, its FLOPs (both passes) and its kernel launches."""

    forward_s: float
    backward_s: float
    flops: float
    kernels: int


def node_cost(node: Node, ins: list[Value], outs: list[Value], in_shapes: list[tuple[int, ...]],
              out_shapes: list[tuple[int, ...]], grads: list[bool], rates: KernelRates,
              working_set: float = 0.0, feature_major: bool = False, loop: bool = True,
              stored: bool = True) -> NodeCost:
    """What `node` costs on its local shapes; `grads[i]`: input i depends on the parameters;
    `working_set`: bytes of the program's values (memory-bound kernels run at its rate);
    `feature_major`: the node is X @ w with X held feature-major (storage.py), its own kernels;
    `loop`: the node runs inside a loop over row blocks (fused.py), else once per call (the products'
    one-call curves); `stored`: the compiled program writes the node's output to memory (`materialized`),
    else it stays inside a fused chain and the backward pass recomputes it there."""
    fam, f = family(node), node_flops(node, in_shapes, out_shapes)

    def time(kind: str, work: float) -> float:
        kind = kind if loop or kind not in ONE_CALL else kind + "_call"
        return rates.time(kind, work, working_set if kind in STREAMING else 0.0)

    moved = sum(_nbytes(s, v) for s, v in zip(in_shapes + out_shapes, ins + outs))
    out_elems = sum(map(_size, out_shapes))
    need = any(grads)
    if fam == "matmul" and feature_major:  # kernels.matvec_t and its gradient, on their own curves
        one, w_grad = time("matvec_t", moved), time("vecmat_t", moved)
        return NodeCost(one, w_grad if grads[1] else 0.0, f * (1 + grads[1]), 1 + grads[1])
    if fam == "matmul":
        matvec = len(in_shapes) == 2 and kernels.is_matvec(node.params, len(in_shapes[0]), len(in_shapes[1]))

        def product(kind: str) -> float:  # an unblocked X @ w or r @ X: between its narrow and wide curves
            narrow = time(kind, moved)
            if loop or not matvec or in_shapes[0][1] <= PRODUCT_COLS[kind]:
                return narrow
            wide = rates.time(kind + "_wide_call", moved, working_set)
            return narrow + (wide - narrow) * _log_share(in_shapes[0][1], PRODUCT_COLS[kind], PRODUCT_WIDE_COLS)

        one = max(time("matmul", f), product("matvec"))
        back = sum(grads)
        return NodeCost(one, _dot_backward(node, in_shapes, grads, one, product("vecmat")), f * (1 + back),
                        1 + back)
    if fam == "transcendental":
        one = time("transcendental", out_elems * rates.weight(node.primitive))
        if node.primitive in ARITHMETIC_DERIVATIVE:
            back = BACKWARD_ELEMENTWISE * time("stream", STREAM_BYTES_PER_OP * out_elems)
        else:
            back = time("transcendental", out_elems * rates.weight(DERIVATIVE.get(node.primitive, node.primitive)))
        return NodeCost(one, back if need else 0.0, f * (2 if need else 1), 0)
    if fam in ("gather", "scatter"):
        index_bytes = _nbytes(in_shapes[1], ins[1])
        touched = index_bytes + (_nbytes(out_shapes[0], outs[0]) if fam == "gather" else
                                 sum(_nbytes(s, v) for s, v in zip(in_shapes[2:], ins[2:])))
        one = max(time(fam, touched), time("stream", touched))
        other = max(time("scatter" if fam == "gather" else "gather", touched), time("stream", touched))
        back = other if grads[0] or (fam == "scatter" and any(grads[2:])) else 0.0
        return NodeCost(one, back, f, 1 + (back > 0))
    if fam == "reduce":
        read = _nbytes(in_shapes[0], ins[0])
        back = time("stream", STREAM_BYTES_PER_OP * _size(in_shapes[0])) if need else 0.0
        return NodeCost(time("reduce", read), back, f, 1)
    if fam == "move" and node.primitive not in COPIES:
        return NodeCost(0.0, 0.0, 0.0, 0)
    one = time("stream", STREAM_BYTES_PER_OP * out_elems)
    # a value the backward pass needs is written once forward and read once backward (a residual)
    residual = time("stream", 2 * sum(_nbytes(s, v) for s, v in zip(out_shapes, outs))) if need and stored else 0.0
    return NodeCost(one, BACKWARD_ELEMENTWISE * one + residual if need else 0.0,
                    f * (1 + BACKWARD_ELEMENTWISE * need), 0)


def _log_share(width: int, narrow: int, wide: int) -> float:
    """Where `width` lies between `narrow` and `wide` on a log scale (0 to 1)."""
    return min(math.log(width / narrow) / math.log(wide / narrow), 1.0)


def _dot_backward(node: Node, in_shapes: list[tuple[int, ...]], grads: list[bool], one: float,
                  vecmat: float) -> float:
    """A dot's backward pass: one more dot per differentiated operand. The gradient of w in X @ w is
    r @ X, a product contracting X's long axis: for widths in VECMAT_WIDTHS at its own rate (the
    vecmat curve); narrower X is a multiply-reduce (claygraph.partition.kernels) or a dot as fast as
    the forward one, and much wider X streams like the forward dot too."""
    if not (len(in_shapes) == 2 and kernels.is_matvec(node.params, len(in_shapes[0]), len(in_shapes[1]))):
        return sum(grads) * one
    w_grad = max(one, vecmat) if in_shapes[0][1] in VECMAT_WIDTHS else one
    return (one if grads[0] else 0.0) + (w_grad if grads[1] else 0.0)


def differentiated(graph: Graph) -> set[int]:
    """The values that depend on a parameter (the backward pass runs through their nodes)."""
    out = set(graph.inputs.params.values())
    for node in graph.nodes():
        if any(i in out for i in node.inputs):
            out.update(node.outputs)
    return out


@dataclass(frozen=True, slots=True)
class Compute:
    """A gradient evaluation's kernels on the slowest shard."""

    seconds: float  # kernels, reads of data arrays and kernel overheads
    flops: float
    kernels: int
    read_s: float = 0.0  # of which reading data arrays from memory
    forward_s: float = 0.0  # of which the forward pass's kernels


def compute(graph: Graph, prop: Propagation, shape: LocalShape, rates: KernelRates,
            dram: LocalShape | None = None, transposed: frozenset[int] = frozenset()) -> Compute:
    """Seconds, FLOPs and kernels of one forward and backward pass on the local shapes `shape`.

    With `dram` (a row block's shapes in `shape`, the shard's whole shapes in `dram`), the data
    are read once from memory at the whole shard's size and then found in cache (a fused block).
    `transposed`: the data values held feature-major (their X @ w runs kernels.matvec_t).
    Without `dram`, a matmul's roofline already counts the data it reads; other consumers of a data
    array read it from memory once."""
    grads = differentiated(graph)
    data = set(graph.inputs.data.values())
    kept = materialized(graph)
    working_set = materialized_bytes(graph, prop, shape, kept)
    flops = read_s = 0.0
    kernels = 0
    read: set[int] = set()
    dots, fused, other = [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]  # (forward, backward) seconds of each kind
    hides = False  # the backward elementwise work runs inside a multiply-reduce gradient
    for node in graph.nodes():
        d = prop.decisions[node.id]
        ins = [graph.value(i) for i in node.inputs]
        outs = [graph.value(o) for o in node.outputs]
        in_shapes = [shape(v, s) for v, s in zip(ins, d.ins)]
        need = [i in grads for i in node.inputs]
        major = family(node) == "matmul" and node.inputs[0] in transposed
        c = node_cost(node, ins, outs, in_shapes, [shape(v, s) for v, s in zip(outs, d.outs)], need, rates,
                      working_set, major, loop=dram is not None, stored=bool(kept.intersection(node.outputs)))
        kind = dots if family(node) == "matmul" else fused if family(node) in FUSED else other
        kind[0] += c.forward_s
        kind[1] += c.backward_s
        hides = hides or (not major and _multiply_reduce_gradient(node, in_shapes, need))
        flops += c.flops
        kernels += c.kernels
        if dram is None and family(node) == "matmul":
            continue
        for i, v, s in zip(node.inputs, ins, d.ins):
            if i in data and i not in read:  # a data array comes from memory once per pass
                read.add(i)
                # (in row blocks, at the rate of a blocked pass over the shard: calibrate's block_read)
                read_s += rates.time("matvec" if dram is None else "block_read", _nbytes((dram or shape)(v, s), v))
    # unblocked, the data reads of other consumers are part of the forward pass's memory traffic
    forward_s = dots[0] + fused[0] + other[0] + (read_s if dram is None else 0.0)
    backward_s = (max(dots[1], fused[1]) if hides else dots[1] + fused[1]) + other[1]
    seconds = forward_s + backward_s + (read_s if dram is not None else 0.0)
    return Compute(seconds + kernels * rates.kernel_s, flops, kernels, read_s, forward_s)


FUSED = frozenset({"elementwise", "transcendental", "move"})  # the families XLA fuses into loops
# timed both in a loop and one call each: a blocked program runs them in its loop, an unblocked one once per call
ONE_CALL = families.ONE_CALL


def materialized(graph: Graph) -> set[int]:
    """The values the compiled program writes to memory: the outputs of kernels that do not fuse, and
    of fused chains where a kernel that does not fuse (or the program's result) reads them. A value
    inside a fused chain stays in registers (the compiled HLO: W3's model at 250,000 rows per shard has
    10 row-sized buffers where the graph has 60 row-sized values), and the backward pass's fusions
    recompute it from the stored values they read."""
    out: set[int] = set()
    for n in graph.nodes():
        kept = family(n) not in FUSED
        for o in n.outputs:
            users = graph.consumers(o)
            if kept or not users or any(family(u) not in FUSED for u in users):
                out.add(o)
    return out


def materialized_bytes(graph: Graph, prop: Propagation, shape: LocalShape, kept: set[int] | None = None) -> float:
    """Bytes of the values the compiled program writes to memory (`materialized`, or `kept` made already)."""
    kept = materialized(graph) if kept is None else kept
    return sum(_nbytes(shape(graph.value(o), s), graph.value(o)) for n in graph.nodes()
               for o, s in zip(n.outputs, prop.decisions[n.id].outs) if o in kept)


def _multiply_reduce_gradient(node: Node, in_shapes: list[tuple[int, ...]], grads: list[bool]) -> bool:
    """`X @ w` whose gradient of w the emitter writes as sum(X * r[:, None], axis=0) (kernels.py): XLA
    fuses the elementwise chain that computes r into that loop over X, so the backward pass's
    elementwise and transcendental work runs while X streams in (a roofline, not a sum)."""
    return (family(node) == "matmul" and len(in_shapes) == 2 and grads[1]
            and kernels.is_matvec(node.params, len(in_shapes[0]), len(in_shapes[1]))
            and in_shapes[0][1] in kernels.FUSED_WIDTHS)


def memory_parts(graph: Graph, prop: Propagation, shape: LocalShape, state_copies: float,
                 kept: set[int] | None = None) -> tuple[tuple[str, float], ...]:
    """Bytes per device, part by part: the data shard, the parameters, the optimiser's or sampler's state
    (`state_copies` parameter-sized buffers), the intermediates kept for the backward pass (every value, or
    with `kept`, the values a GPU program writes to memory, and their cotangents)."""
    sh = prop.shardings
    data = sum(_nbytes(shape(graph.value(v), sh[v]), graph.value(v)) for v in graph.inputs.data.values())
    params = sum(_nbytes(shape(graph.value(v), sh[v]), graph.value(v)) for v in graph.inputs.params.values())
    inter = sum(_nbytes(shape(graph.value(o), sh[o]), graph.value(o)) for n in graph.nodes() for o in n.outputs
                if kept is None or o in kept) * (1 if kept is None else 2)
    return (("data", data), ("parameters", params), ("state", params * state_copies), ("intermediates", inter))


def memory_bytes(graph: Graph, prop: Propagation, shape: LocalShape, state_copies: float,
                 kept: set[int] | None = None) -> float:
    """Data shard + parameters (with optimiser/sampler state) + intermediates kept for the backward pass."""
    return sum(b for _, b in memory_parts(graph, prop, shape, state_copies, kept))


def comm(graph: Graph, prop: Propagation, cluster: ClusterSpec, devices: int) -> tuple[float, float, int]:
    """(bytes, seconds, count) of the collectives in one gradient evaluation.

    Forward psums cost an all-reduce each; an all-gather costs itself and its transpose (a
    reduce-scatter) in the backward pass; the gradients of replicated parameters are all-reduced once,
    combined into one message (with the value's psum: the compiled HLO has one tuple all-reduce). A
    sharded parameter's gradient stays on its shard (the program takes and returns it in the internal
    layout), so nothing here grows with the number of groups of a group split. This prices the program
    MAP, ADVI (mean-field, low-rank) and the estimators run; NUTS, Laplace and full-rank ADVI still run
    the user-layout program (`SplitFunction.fn`), whose laid-out parameters' gradients are all-reduced
    whole (docs/partition.md): they pay more than this says until they move onto the sharded state.
    """
    if devices <= 1 or not prop.split.name:
        return 0.0, 0.0, 0
    nbytes = seconds = 0.0
    count = 0
    for c in prop.collectives:
        if c.kind == "all_gather":
            nbytes += 2 * c.nbytes * devices
            seconds += 2 * cluster.allgather_time(c.nbytes * devices, devices)
            count += 2
        else:
            nbytes += c.nbytes
            seconds += cluster.allreduce_time(c.nbytes, devices)
            count += 1
    grads = sum(graph.value(v).nbytes for v in graph.inputs.params.values() if prop.shardings[v] == REPLICATED)
    if grads:
        nbytes += grads
        seconds += cluster.allreduce_time(grads, devices)
        count += 1
    return nbytes, seconds, count


def fused_blocks(graph: Graph, prop: Propagation, rows: Split | None, devices: int,
                 shape: LocalShape | None = None, host_devices: int = 1) -> tuple[str, int, float] | None:
    """(dim, rows per block, blocks: the tail block counted by its share of a full one) when the
    runtime runs this candidate in cached row blocks (`rows`: the graph's row split,
    blocks.row_split_of; the same test fused.fused_potential makes; `shape`: the candidate's local
    shapes, which give a group split's rows per shard; `host_devices`: devices of one node, sharing its
    cache, as the runtime's blocks do: blocks.host_share)."""
    budget = blocks.host_share(blocks.BLOCK_BYTES, host_devices)
    if prop.split.kind == "group":
        dim = next(r for r, _ in prop.split.copartition)
        local = _local_rows(graph, dim, shape)
        if local is None or not blocks.group_separable(graph, prop, dim):
            return None
        blk = blocks.blocking(graph, dim, local, devices, budget, blocks.held_param_bytes(graph, prop, shape))
        return None if blk is None else (dim, blk.rows, blk.blocks + blk.tail / blk.rows)
    if rows is None or (prop.split.dims and prop.split.dims != rows.dims) or (not prop.split.dims and devices != 1):
        return None
    dim = next(iter(rows.dims))
    size = graph.dims[dim]
    if not prop.split.dims:  # one device, unsplit: the runtime runs the row split's program in blocks
        prop = propagate(graph, rows, frozenset(), lambda v, s: 0)  # (fused.fused_potential tests the same)
    if size % devices or not blocks.separable(graph, prop, dim):
        return None
    whole = lambda v, s: v.shape  # noqa: E731 - no parameter has the row dim: each shard holds them whole
    blk = blocks.blocking(graph, dim, size // devices, devices, budget, blocks.held_param_bytes(graph, prop, whole))
    return None if blk is None else (dim, blk.rows, blk.blocks + blk.tail / blk.rows)


def _local_rows(graph: Graph, dim: str, shape: LocalShape | None) -> int | None:
    """Rows of `dim` per shard (padded to the largest), read from a data array split along it."""
    for vid in graph.inputs.data.values():
        v = graph.value(vid)
        if shape is not None and dim in v.dims:
            return shape(v, Sharded(dim))[v.axis_of(dim)]
    return None


def block_shape(shape: LocalShape, dim: str, rows: int) -> LocalShape:
    """Local shapes with `dim` cut to one block of `rows`."""

    def local(v: Value, s: Sharding) -> tuple[int, ...]:
        return tuple(rows if d == dim else n for d, n in zip(v.dims, shape(v, s)))

    return local


def gradient_compute(graph: Graph, prop: Propagation, shape: LocalShape, rates: KernelRates,
                     devices: int, row_split: Split | None = None, host_devices: int = 1) -> Compute:
    """The slowest shard's kernels of one gradient evaluation, block by block where the runtime fuses;
    the data arrays that compile_artifact holds feature-major (storage.py) on their own kernels."""
    transposed = frozenset(graph.inputs.data[k] for k in stored_feature_major(graph, prop.shardings))
    blocked = fused_blocks(graph, prop, row_split, devices, shape, host_devices)
    if blocked is None:
        return compute(graph, prop, shape, rates, transposed=transposed)
    dim, rows, count = blocked
    one = compute(graph, prop, block_shape(shape, dim, rows), rates, dram=shape, transposed=transposed)
    # the data reads were charged at the whole shard's size in `one`: once in all. Each block's rows come
    # from memory into the cache while the forward pass's kernels run on them: the share of the read that
    # hides under those kernels is the host's (rates.block_overlap, calibrated: 0.68 on a 2-core EPYC, where
    # the hardware prefetched ahead of the arithmetic; 0 on a 2-core Xeon, where slicing a block out and
    # its kernels add up); the backward kernels then run on the block in cache.
    ahead = one.forward_s * count
    forward = one.read_s + ahead - rates.block_overlap * min(one.read_s, ahead)
    rest = one.seconds - one.read_s - one.forward_s
    return Compute(forward + rest * count, one.flops * count, one.kernels * math.ceil(count), one.read_s,
                   one.forward_s * count)


def host_devices(cluster: ClusterSpec, devices: int) -> int:
    """Devices of one node among `devices`: they run their row blocks at once in its shared cache."""
    return max(1, min(devices, cluster.devices_per_node))


def estimate(graph: Graph, prop: Propagation, shape: LocalShape, cluster: ClusterSpec, devices: int,
             state_copies: float, row_split: Split | None = None) -> CostEstimate:
    cbytes, cs, count = comm(graph, prop, cluster, devices)
    if cluster.device == "gpu":
        roof = gpu.roofline(graph, prop, shape, cluster.flops, cluster.mem_bandwidth, devices, family, node_flops,
                            differentiated)
        compute_s, flops = roof.seconds, roof.flops
        parts = memory_parts(graph, prop, shape, state_copies, gpu.stored(graph, family))
        terms = (("flops", roof.flop_s), ("memory", roof.memory_s), ("launch", roof.launch_s))
    else:
        rates = cluster.rates
        c = gradient_compute(graph, prop, shape, rates, devices, row_split, host_devices(cluster, devices))
        parts = memory_parts(graph, prop, shape, state_copies)
        compute_s, flops = rates.call(devices) + c.seconds, c.flops
        terms = (("kernels", c.seconds), ("call", rates.call(devices)))
    mem = sum(b for _, b in parts)
    feasible = mem <= cluster.mem_capacity
    reason = None if feasible else (f"needs {mem / 1e9:.3g} GB per device, more than the "
                                    f"{cluster.mem_capacity / 1e9:.3g} GB it has")
    return CostEstimate(prop.split.name, feasible, int(mem), compute_s, int(cbytes), cs, compute_s + cs, reason,
                        flops, count, terms + (("collectives", cs),), parts)
