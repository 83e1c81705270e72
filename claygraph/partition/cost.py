"""The cost model: memory per device and time per gradient evaluation of one candidate.

time = slowest shard's roofline (sum over nodes of max(flops / rate, bytes / bandwidth)) times
GRAD_FACTOR (a gradient evaluation is a forward and a backward pass, about 3 forward passes),
plus the collectives (alpha-beta, ClusterSpec's formulas). Padding to the largest shard is part
of the local shapes, so load imbalance is counted. See docs/partition.md.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from claygraph.ir.graph import Graph, Node, Value
from claygraph.partition.cluster import ClusterSpec
from claygraph.partition.propagate import Propagation
from claygraph.partition.registry import entry, per_output
from claygraph.partition.shardings import REPLICATED, Sharding

GRAD_FACTOR = 3.0


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

    def to_json(self) -> dict:
        return {"split": list(self.split), "feasible": self.feasible,
                "memory_per_device_bytes": int(self.memory_per_device_bytes), "compute_s": float(self.compute_s),
                "comm_bytes": int(self.comm_bytes), "comm_s": float(self.comm_s),
                "predicted_s": float(self.predicted_s), "reason": self.reason}


def node_flops(node: Node, ins: list[tuple[int, ...]], outs: list[tuple[int, ...]]) -> float:
    """The registry entry's FLOP count; one per output element for a primitive it does not know."""
    prim = entry(node.primitive)
    return (prim.flops if prim is not None else per_output(1.0))(node, ins, outs)


LocalShape = Callable[[Value, Sharding], tuple[int, ...]]


def _nbytes(shape: tuple[int, ...], v: Value) -> float:
    return float(np.prod(shape, dtype=np.float64)) * v.dtype.itemsize


def compute_time(graph: Graph, prop: Propagation, shape: LocalShape, cluster: ClusterSpec) -> tuple[float, float]:
    """(seconds, flops) of one forward pass on the slowest shard: a roofline per node."""
    total_s = total_f = 0.0
    for node in graph.nodes():
        d = prop.decisions[node.id]
        ins = [graph.value(i) for i in node.inputs]
        outs = [graph.value(o) for o in node.outputs]
        in_shapes = [shape(v, s) for v, s in zip(ins, d.ins)]
        out_shapes = [shape(v, s) for v, s in zip(outs, d.outs)]
        f = node_flops(node, in_shapes, out_shapes)
        b = sum(_nbytes(s, v) for s, v in zip(in_shapes + out_shapes, ins + outs))
        total_s += max(f / cluster.flops, b / cluster.mem_bandwidth)
        total_f += f
    return total_s, total_f


def memory_bytes(graph: Graph, prop: Propagation, shape: LocalShape, state_copies: float) -> float:
    """Data shard + parameters (with optimiser/sampler state) + intermediates kept for the backward pass."""
    sh = prop.shardings
    data = sum(_nbytes(shape(graph.value(v), sh[v]), graph.value(v)) for v in graph.inputs.data.values())
    params = sum(_nbytes(shape(graph.value(v), sh[v]), graph.value(v)) for v in graph.inputs.params.values())
    inter = sum(_nbytes(shape(graph.value(o), sh[o]), graph.value(o)) for n in graph.nodes() for o in n.outputs)
    return data + params * (1.0 + state_copies) + inter


def comm(graph: Graph, prop: Propagation, cluster: ClusterSpec, devices: int) -> tuple[float, float, int]:
    """(bytes, seconds, count) of the collectives in one gradient evaluation.

    Forward psums cost an all-reduce each; an all-gather costs itself and its transpose (a
    reduce-scatter) in the backward pass; the gradients of replicated parameters that meet
    split values are all-reduced once, combined into one message.
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


def estimate(graph: Graph, prop: Propagation, shape: LocalShape, cluster: ClusterSpec, devices: int,
             state_copies: float) -> CostEstimate:
    fwd_s, flops = compute_time(graph, prop, shape, cluster)
    mem = memory_bytes(graph, prop, shape, state_copies)
    cbytes, cs, count = comm(graph, prop, cluster, devices)
    compute_s = GRAD_FACTOR * fwd_s
    feasible = mem <= cluster.mem_capacity
    reason = None if feasible else (f"needs {mem / 1e9:.3g} GB per device, more than the "
                                    f"{cluster.mem_capacity / 1e9:.3g} GB it has")
    return CostEstimate(prop.split.name, feasible, int(mem), compute_s, int(cbytes), cs, compute_s + cs, reason,
                        GRAD_FACTOR * flops, count)
