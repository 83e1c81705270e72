"""Propagate shardings through a graph for one split: a pure function Graph x Split -> Propagation."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from claygraph.errors import PartitionError
from claygraph.ir.graph import Graph, Value
from claygraph.partition.registry import Decision, RuleCtx, decide, entry, import_rules
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
    initial: Mapping[int, Sharding]  # inputs and constants
    decisions: Mapping[int, Decision]  # node id -> decision
    received: Mapping[int, tuple[Sharding, ...]]  # node id -> its inputs' shardings as handed to its rule
    collectives: tuple[Collective, ...]
    remapped: Mapping[int, str]
    fallbacks: tuple[str, ...]


def input_sharding(v: Value, split: Split, what: str) -> Sharding:
    dims = [d for d in v.dims if d is not None and d in split.dims]
    if len(dims) > 1:
        raise PartitionError(f"{what} has axes {dims} that are all in split {split}; it cannot be split twice "
                             f"over one mesh axis")
    return Sharded(dims[0]) if dims else REPLICATED


def _carries_ids(primitive: str) -> bool:
    prim = entry(primitive)
    return prim is not None and prim.carries_ids


def _is_int(graph: Graph, vid: int) -> bool:
    return bool(np.issubdtype(graph.value(vid).dtype, np.integer))


def _scalar_const(graph: Graph, vid: int, value=None) -> bool:
    if vid not in graph.consts or graph.value(vid).ndim:
        return False
    return value is None or float(np.asarray(graph.consts[vid])) == value


def _normalised(graph: Graph, node, ids: Mapping[int, str]) -> int | None:
    """`where(x < 0, x + n, x)`, jnp's negative-index wrap, on laid-out ids x: the ids are never
    negative in either layout, so the result is x. Returns x's value id when the node is that."""
    if node.primitive != "select_n" or len(node.inputs) != 3:
        return None
    pred, on_false, on_true = (graph.producer(i) for i in node.inputs)
    x = node.inputs[1]
    if x not in ids or pred is None or on_true is None or pred.primitive != "lt" or on_true.primitive != "add":
        return None
    if pred.inputs[0] != x or not _scalar_const(graph, pred.inputs[1], 0.0):
        return None
    if on_true.inputs[0] != x or not _scalar_const(graph, on_true.inputs[1]):
        return None
    return x


def remapped_values(graph: Graph, split: Split) -> tuple[Mapping[int, str], frozenset[int]]:
    """Values holding laid-out ids (value -> the split dim they index), and the nodes that must
    run in the user's layout because they read such ids as numbers.

    Laid-out ids only travel through data movement (reshapes, int casts), jnp's negative-index
    wrap, and into a gather as indices. Anything that computes with them (`g + 1`, `g == 3`,
    `clip(g, ...)`, a cast to float) sees the user's ids: it runs in the user's layout.
    """
    ids = {vid: graph.meta.arrays[name].into for name, vid in graph.inputs.data.items()
           if graph.meta.arrays[name].into in split.dims}
    wrap_parts: set[int] = set()
    for node in graph.nodes():
        x = _normalised(graph, node, ids)
        if x is not None:
            ids[node.outputs[0]] = ids[x]
            wrap_parts.update(graph.producer(i).id for i in node.inputs[::2])
            continue
        carried = {ids[i] for i in node.inputs if i in ids}
        moves = _carries_ids(node.primitive) or (node.primitive == "convert_element_type"
                                            and _is_int(graph, node.outputs[0]))
        if len(carried) == 1 and moves:
            ids[node.outputs[0]] = carried.pop()
    unsafe = set()
    for node in graph.nodes():
        if node.id in wrap_parts or _carries_ids(node.primitive) or node.primitive == "convert_element_type" \
                and _is_int(graph, node.outputs[0]) or node.outputs[0] in ids:
            continue
        reads = [k for k, i in enumerate(node.inputs) if i in ids]
        if node.primitive == "gather" and reads == [1]:
            continue
        if reads:
            unsafe.add(node.id)
    # the wrap's `add` is safe only when the wrap is its sole consumer
    for nid in list(wrap_parts):
        n = graph.node(nid)
        if n.primitive == "add" and any(c.primitive != "select_n" or c.outputs[0] not in ids
                                        for c in graph.consumers(n.outputs[0])):
            unsafe.add(nid)
    return MappingProxyType(ids), frozenset(unsafe)


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


def sticky(have: Sharding, want: Sharding) -> bool:
    """A conversion that communicates (psum, all-gather) happens once per value, not per consumer."""
    return have != want and isinstance(have, (Partial, Sharded)) and not (
        isinstance(have, Sharded) and isinstance(want, Sharded))


def propagate(graph: Graph, split: Split, padded: frozenset[str], local_bytes) -> Propagation:
    """Walk nodes in order; each rule decides; conversions become collectives."""
    import_rules()
    remapped, unsafe = remapped_values(graph, split)
    ctx = RuleCtx(split, padded, remapped, unsafe)
    sh: dict[int, Sharding] = {vid: REPLICATED for vid in graph.consts}
    for name, vid in graph.inputs.params.items():
        sh[vid] = input_sharding(graph.value(vid), split, f"parameter {name!r}")
    for name, vid in graph.inputs.data.items():
        sh[vid] = input_sharding(graph.value(vid), split, f"data {name!r}")
    initial = dict(sh)
    produced = dict(sh)
    decisions, received, colls, falls = {}, {}, [], []
    for node in graph.nodes():
        ins = [graph.value(i) for i in node.inputs]
        outs = [graph.value(o) for o in node.outputs]
        received[node.id] = tuple(sh[i] for i in node.inputs)
        d = decide(node, ins, list(received[node.id]), outs, ctx)
        decisions[node.id] = d
        if d.note:
            falls.append(f"node {node.id} {node.primitive}: {d.note}")
        for v, want in zip(ins, d.ins):
            kind = _conversion(sh[v.id], want)
            if kind:
                colls.append(Collective(kind, v.id, node.id, local_bytes(v, sh[v.id]), d.note))
            if sticky(sh[v.id], want):  # the emitter makes it whole once and reuses it
                sh[v.id] = REPLICATED
        sh.update(zip(node.outputs, d.outs))
        produced.update(zip(node.outputs, d.outs))
    out = graph.output
    if isinstance(sh[out], Partial):
        colls.append(Collective(_conversion(sh[out], REPLICATED), out, None, graph.value(out).nbytes))
    elif isinstance(sh[out], Sharded):
        colls.append(Collective("all_gather", out, None, local_bytes(graph.value(out), sh[out])))
    return Propagation(split, MappingProxyType(produced), MappingProxyType(initial), MappingProxyType(decisions),
                       MappingProxyType(received), tuple(colls), remapped, tuple(falls))
