"""The plan verifier: invariants every propagation must keep, checked after the rules have run.

    consistent   each node is handed what its producer made (or the whole value, once a
                 communicating conversion made it whole for an earlier consumer)
    conversions  only the conversions the emitter implements (no Sharded -> Partial, no
                 Sharded(a) -> Sharded(b))
    linearity    a Partial(sum) operand reaches an op unconverted only where the registry says the
                 op is linear in it; a Partial(max/min) one only where the op commutes with max/min
    padding      every reduction and contraction over a padded split axis masks the padding
    user layout  an op computed in the user's layout gets whole inputs; an op that makes an axis
                 along a split dim from inputs without one (a slice of a concatenation) is computed
                 there, so that its result is laid out

`Plan.verify()` runs it on the chosen candidate; with CLAYGRAPH_CHECKS=1 in the environment (the
test suite sets it) every candidate is verified as it is built.
"""
from __future__ import annotations

import os

from claygraph.errors import PartitionError
from claygraph.ir.graph import Graph, Node
from claygraph.partition.propagate import Propagation
from claygraph.partition.registry import CREATES_AXES, Decision, Linearity, entry
from claygraph.partition.shardings import PARTIAL_SUM, REPLICATED, Partial, Sharded, Sharding

REDUCING = {"reduce_sum", "reduce_max", "reduce_min"}


def checks_enabled() -> bool:
    return os.environ.get("CLAYGRAPH_CHECKS", "") not in ("", "0")


def verify(graph: Graph, prop: Propagation, padded: frozenset[str]) -> None:
    """Raise PartitionError listing every broken invariant of `prop`."""
    problems: list[str] = []
    for node in graph.nodes():
        d = prop.decisions[node.id]
        got = prop.received[node.id]
        found = (_consistency(node, got, prop) + _conversions(got, d) + _linearity(node, graph, got, d)
                 + _padding(node, graph, d, padded) + _user_layout(d) + _born_axes(node, graph, prop, d))
        problems += [f"{_where(node)}: {p}" for p in found]
    if problems:
        raise PartitionError(f"the plan for split {prop.split} breaks {len(problems)} invariant(s):\n  "
                             + "\n  ".join(problems))


def _where(node: Node) -> str:
    return f"node {node.id} {node.primitive}" + (f" at {node.source}" if node.source else "")


def _consistency(node: Node, got: tuple[Sharding, ...], prop: Propagation) -> list[str]:
    return [f"input {k} is handed {s} but was produced {prop.shardings[v]}"
            for k, (v, s) in enumerate(zip(node.inputs, got)) if s not in (prop.shardings[v], REPLICATED)]


def _conversions(got: tuple[Sharding, ...], d: Decision) -> list[str]:
    out = []
    for k, (have, want) in enumerate(zip(got, d.ins)):
        if isinstance(have, Sharded) and isinstance(want, Partial):
            out.append(f"input {k}: no conversion from {have} to {want}")
        if isinstance(have, Sharded) and isinstance(want, Sharded) and have != want:
            out.append(f"input {k}: no conversion from {have} to {want} (one mesh axis)")
    return out


def _linearity(node: Node, graph: Graph, got: tuple[Sharding, ...], d: Decision) -> list[str]:
    kept = [k for k, (have, want) in enumerate(zip(got, d.ins)) if isinstance(have, Partial) and have == want]
    if not kept:
        return []
    prim = entry(node.primitive)
    if prim is None:
        return [f"partial inputs {kept} reach a primitive without a registry entry"]
    out = []
    sums = [k for k in kept if got[k] == PARTIAL_SUM]
    ins = [graph.value(i) for i in node.inputs]
    outs = [graph.value(o) for o in node.outputs]
    lin = prim.linearity_at(ins, outs)
    if sums and (lin is Linearity.NONE or not lin.allows(sums)):
        out.append(f"Partial(sum) inputs {sums} reach an op that is not linear in them ({lin.value})")
    for k in kept:
        if got[k] != PARTIAL_SUM and got[k].op not in prim.extremum:
            out.append(f"input {k} is {got[k]}, which {node.primitive} does not commute with")
    if sums and lin not in (Linearity.JOINT,):
        others = [k for k in range(len(ins)) if k not in sums and d.ins[k] != REPLICATED
                  and not (lin is Linearity.BRANCHES and k > 0 and d.ins[k] == PARTIAL_SUM)]
        if others:
            out.append(f"inputs {others} must be whole next to the Partial(sum) inputs {sums} ({lin.value})")
    return out


def _reduced_axes(node: Node) -> tuple[int, ...]:
    if node.primitive in REDUCING:
        return tuple(node.params["axes"])
    if node.primitive == "dot_general":
        (lc, _), _ = node.params["dimension_numbers"]
        return tuple(lc)
    return ()


def _padding(node: Node, graph: Graph, d: Decision, padded: frozenset[str]) -> list[str]:
    if d.user_layout or not padded:
        return []
    src = graph.value(node.inputs[0]) if node.inputs else None
    masked = {(m.input, m.axis) for m in d.masks}
    return [f"reduces axis {i} ({src.dims[i]!r}, padded) without masking the padding"
            for i in _reduced_axes(node) if src.dims[i] in padded and (0, i) not in masked]


def _user_layout(d: Decision) -> list[str]:
    if not d.user_layout:
        return []
    return [f"input {k} is {s} in an op computed in the user's layout" for k, s in enumerate(d.ins) if s != REPLICATED]


def _born_axes(node: Node, graph: Graph, prop: Propagation, d: Decision) -> list[str]:
    if d.user_layout or node.primitive in CREATES_AXES:
        return []
    split = prop.split.dims
    have = {x for i in node.inputs for x in graph.value(i).dims if x in split}
    born = sorted({x for o in node.outputs for x in graph.value(o).dims if x in split} - have)
    return [f"makes an axis along split dim {x!r} from inputs without one, outside the user's layout" for x in born]
