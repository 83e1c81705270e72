"""Propagate shardings through a graph for one split: a pure function Graph x Split -> Propagation."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from claygraph.errors import PartitionError
from claygraph.ir.dims import POINTEE_KEEPING
from claygraph.ir.graph import Graph, Value
from claygraph.partition.registry import Decision, RuleCtx, decide, import_rules
from claygraph.partition.shardings import REPLICATED, Partial, Replicated, Sharded, Sharding, Split


@dataclass(frozen=True, slots=True)
class Collective:
    """A collective the emitted program runs: where, on what, how many bytes per shard."""

    kind: str  # psum, pmax, pmin, all_gather
    value: int
    node: int | None  # consuming node, None for the final output
    nbytes: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Propagation:
    split: Split
    shardings: Mapping[int, Sharding]  # value id -> sharding where it is produced
    decisions: Mapping[int, Decision]  # node id -> decision
    collectives: tuple[Collective, ...]
    remapped: Mapping[int, str]
    fallbacks: tuple[str, ...]


def input_sharding(v: Value, split: Split, what: str) -> Sharding:
    dims = [d for d in v.dims if d is not None and d in split.dims]
    if len(dims) > 1:
        raise PartitionError(f"{what} has axes {dims} that are all in split {split}; it cannot be split twice "
                             f"over one mesh axis")
    return Sharded(dims[0]) if dims else REPLICATED


def remapped_values(graph: Graph, split: Split) -> Mapping[int, str]:
    """Values holding laid-out ids (value -> the split dim they index): index columns into a
    split dim, and the integer values that carry them on (x + 0, where(c, i, j), reshapes)."""
    out = {vid: graph.meta.arrays[name].into for name, vid in graph.inputs.data.items()
           if graph.meta.arrays[name].into in split.dims}
    for node in graph.nodes():
        if node.primitive in POINTEE_KEEPING or node.primitive in ("broadcast_in_dim", "reshape", "squeeze"):
            dims = {out[i] for i in node.inputs if i in out}
            if len(dims) == 1:
                out.update((o, next(iter(dims))) for o in node.outputs
                           if np.issubdtype(graph.value(o).dtype, np.integer))
    return MappingProxyType(out)


def _conversion(have: Sharding, want: Sharding) -> str | None:
    if have == want or isinstance(want, Partial) and have == REPLICATED:
        return None  # no communication: a replicated value is kept on shard 0 only
    if isinstance(have, Partial):
        return {"sum": "psum", "max": "pmax", "min": "pmin"}[have.op]
    if isinstance(have, Sharded) and not isinstance(want, Sharded | Replicated):
        raise AssertionError((have, want))
    if isinstance(have, Sharded):
        return "all_gather"
    return None  # replicated -> sharded is a local slice


def propagate(graph: Graph, split: Split, padded: frozenset[str], local_bytes) -> Propagation:
    """Walk nodes in order; each rule decides; conversions become collectives."""
    import_rules()
    remapped = remapped_values(graph, split)
    ctx = RuleCtx(split, padded, remapped)
    sh: dict[int, Sharding] = {vid: REPLICATED for vid in graph.consts}
    for name, vid in graph.inputs.params.items():
        sh[vid] = input_sharding(graph.value(vid), split, f"parameter {name!r}")
    for name, vid in graph.inputs.data.items():
        sh[vid] = input_sharding(graph.value(vid), split, f"data {name!r}")
    decisions, colls, falls = {}, [], []
    for node in graph.nodes():
        ins = [graph.value(i) for i in node.inputs]
        outs = [graph.value(o) for o in node.outputs]
        d = decide(node, ins, [sh[i] for i in node.inputs], outs, ctx)
        decisions[node.id] = d
        if d.note:
            falls.append(f"node {node.id} {node.primitive}: {d.note}")
        for v, want in zip(ins, d.ins):
            kind = _conversion(sh[v.id], want)
            if kind:
                colls.append(Collective(kind, v.id, node.id, local_bytes(v, sh[v.id]), d.note))
        sh.update(zip(node.outputs, d.outs))
    out = graph.output
    if isinstance(sh[out], Partial):
        colls.append(Collective(_conversion(sh[out], REPLICATED), out, None, graph.value(out).nbytes))
    elif isinstance(sh[out], Sharded):
        colls.append(Collective("all_gather", out, None, local_bytes(graph.value(out), sh[out])))
    return Propagation(split, MappingProxyType(sh), MappingProxyType(decisions), tuple(colls), remapped, tuple(falls))
