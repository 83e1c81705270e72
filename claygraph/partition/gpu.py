"""How one gradient evaluation runs on a GPU: a roofline per kernel, plus kernel launches.

A GPU is priced from its data sheet alone (docs/cluster.md, "GPU devices"): each kernel takes
max(FLOPs / FLOP rate, bytes it moves through HBM / bandwidth), and every kernel launched adds a
fixed latency. What makes a CPU program fast (row blocks sized to the L3 cache, per-block overheads,
calibrated curves) does not apply: a GPU program is never blocked (claygraph.partition.fused emits
blocks for CPU devices only) and its shards are priced whole.

Which values reach HBM follows XLA's GPU fusion: elementwise, transcendental and shape ops fuse into
one loop kernel with the gathers that feed them and the reductions they feed (input fusion), so a
value inside such a chain stays in registers. A value is written to HBM (`stored`) when a kernel
that does not fuse makes it (a dot, a scatter-add, a reduction) or reads it (a dot's operands, a
scatter's target), or when it is the program's result. Data arrays and parameters are read from HBM
once per pass that uses them. A gather moves its values at GATHER_EFFICIENCY of the bandwidth (the
lookups of a table land in 32-byte sectors; group-sorted rows keep them close), a scatter-add at
SCATTER_EFFICIENCY (atomic adds into the groups).

The backward pass mirrors the CPU model's (cost.py): a dot costs one more dot per differentiated
operand, a gather a scatter-add and the reverse, a reduction a broadcast fused into its consumer,
an elementwise op twice its forward arithmetic, and a value written to HBM forward has a cotangent
written backward.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from claygraph.ir.graph import Graph
from claygraph.partition.propagate import Propagation

# Fixed costs of running kernels, stated as allowances, not vendor figures (docs/cluster.md): a CUDA
# kernel launch costs a few microseconds of latency when kernels run back to back (XLA launches them
# from one stream, some as CUDA graphs); a call of a jitted program adds its dispatch from the host.
LAUNCH_S = 4e-6  # per kernel
CALL_S = 50e-6  # per program call (one device)
SPMD_CALL_S = 100e-6  # per program call over several devices, which start together
GATHER_EFFICIENCY = 0.5
SCATTER_EFFICIENCY = 0.25
OWN_KERNEL = frozenset({"matmul", "scatter", "reduce"})  # families that never fuse into a loop kernel
READS_STORED = frozenset({"matmul"})  # families whose operands must be in HBM (cuBLAS reads them there)
BACKWARD_ELEMENTWISE = 2.0


@dataclass(frozen=True, slots=True)
class Roofline:
    """One gradient evaluation on the slowest device, term by term (seconds)."""

    flop_s: float  # kernels bound by arithmetic
    memory_s: float  # kernels bound by HBM traffic
    launch_s: float  # kernel launches and the program call
    flops: float
    bytes: float
    kernels: int

    @property
    def seconds(self) -> float:
        return self.flop_s + self.memory_s + self.launch_s


def stored(graph: Graph, family) -> set[int]:
    """The values a GPU program writes to HBM (see the module docstring)."""
    out: set[int] = set()
    for n in graph.nodes():
        for o in n.outputs:
            users = graph.consumers(o)
            if family(n) in OWN_KERNEL or not users or o == graph.output \
                    or any(family(u) in READS_STORED or (family(u) == "scatter" and u.inputs[0] == o) for u in users):
                out.add(o)
    return out


def _reads(inputs: list[int], sizes: list[float], seen: set[int], program: set[int], held: set[int],
           skip: int | None = None) -> float:
    """Bytes of a kernel's inputs that come from HBM: the program's inputs at their first use in the pass
    (`seen` records it), values other kernels stored at every use; input number `skip` not counted."""
    total = 0.0
    for k, (i, b) in enumerate(zip(inputs, sizes)):
        if k == skip:
            continue
        if i in program and i not in seen:
            seen.add(i)
            total += b
        elif i in held and i not in program:
            total += b
    return total


@dataclass
class _Tally:
    flops_rate: float
    bandwidth: float
    flop_s: float = 0.0
    memory_s: float = 0.0
    flops: float = 0.0
    bytes: float = 0.0
    kernels: int = 0

    def run(self, flops: float, moved: float, efficiency: float = 1.0, kernels: int = 0) -> None:
        """One kernel's (or a fused op's share of one) roofline: the slower of arithmetic and traffic."""
        a, b = flops / self.flops_rate, moved / (self.bandwidth * efficiency)
        self.flops += flops
        self.bytes += moved
        self.kernels += kernels
        if a >= b:
            self.flop_s += a
        else:
            self.memory_s += b


def roofline(graph: Graph, prop: Propagation, shape, flops_rate: float, bandwidth: float, devices: int,
             family, node_flops, differentiated) -> Roofline:
    """The roofline of one forward and backward pass on local shapes `shape` (cost.LocalShape);
    `family`, `node_flops` and `differentiated` are the cost model's (passed in: cost.py imports this)."""
    grads = differentiated(graph)
    held = stored(graph, family)
    program = set(graph.inputs.data.values()) | set(graph.inputs.params.values()) | set(graph.consts)
    forward: set[int] = set()  # program inputs read in each pass so far
    backward: set[int] = set()
    t = _Tally(flops_rate, bandwidth)

    def nbytes(vid: int, s) -> float:
        v = graph.value(vid)
        return math.prod(shape(v, s)) * float(v.dtype.itemsize)

    for node in graph.nodes():
        d = prop.decisions[node.id]
        fam = family(node)
        in_b = [nbytes(i, s) for i, s in zip(node.inputs, d.ins)]
        out_b = [nbytes(o, s) for o, s in zip(node.outputs, d.outs)]
        f = node_flops(node, [shape(graph.value(i), s) for i, s in zip(node.inputs, d.ins)],
                       [shape(graph.value(o), s) for o, s in zip(node.outputs, d.outs)])
        need = [i in grads for i in node.inputs]
        written = sum(b for o, b in zip(node.outputs, out_b) if o in held)
        if fam == "matmul":  # operands and result through HBM; one more dot per differentiated operand
            forward.update(i for i in node.inputs if i in program)
            for _ in range(1 + sum(need)):
                t.run(f, sum(in_b) + sum(out_b), kernels=1)
        elif fam == "gather":  # the table is not read whole: its looked-up values are what moves
            t.run(f, _reads(node.inputs, in_b, forward, program, held, skip=0) + out_b[0] + written,
                  GATHER_EFFICIENCY, kernels=int(written > 0))
            if need[0]:  # its gradient: the table's cotangent zeroed (a plain write), then a scatter-add into it
                t.run(0.0, in_b[0], kernels=1)
                t.run(f, out_b[0] + in_b[1], SCATTER_EFFICIENCY, kernels=1)
        elif fam == "scatter":
            t.run(f, _reads(node.inputs, in_b, forward, program, held) + written, SCATTER_EFFICIENCY, kernels=1)
            if any(need[2:]):  # its gradient: a gather of the cotangent, fused into its consumer
                t.run(f, sum(in_b[1:]), GATHER_EFFICIENCY)
        elif fam == "reduce":
            t.run(f, _reads(node.inputs, in_b, forward, program, held) + written, kernels=1)
            if any(need):  # a broadcast, fused into the backward kernel that reads it
                t.run(f, 0.0)
        else:  # fused into a loop kernel: one launch per value it stores
            stores = sum(o in held for o in node.outputs)
            t.run(f, _reads(node.inputs, in_b, forward, program, held) + written, kernels=stores)
            if any(need):  # twice the arithmetic; a stored value's cotangent is stored too
                t.run(BACKWARD_ELEMENTWISE * f, _reads(node.inputs, in_b, backward, program, held) + 2 * written,
                      kernels=stores)
    launch = t.kernels * LAUNCH_S + (SPMD_CALL_S if devices > 1 else CALL_S)
    return Roofline(t.flop_s, t.memory_s, launch, t.flops, t.bytes, t.kernels)
