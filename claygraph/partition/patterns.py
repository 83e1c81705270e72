"""Subgraphs the emitter computes with one kernel of claygraph.partition.kernels (rules as data).

    softplus:  add(max(s, 0), log1p(exp(neg(abs(s)))))  ->  kernels.softplus(s)

A match maps the root node (the `add`) to the value its kernel reads (`s`). The nodes inside the
match are still emitted; once the root reads the kernel instead, nothing uses them and XLA drops them.
Elementwise patterns only: the root's sharding is its input's, so the plan holds unchanged.
"""
from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np

from claygraph.ir.graph import Graph

# a constant through these stays the same constant
_CASTS = frozenset({"convert_element_type", "broadcast_in_dim"})


def _is_zero(graph: Graph, vid: int) -> bool:
    """The value is a constant zero (a literal, possibly cast or broadcast)."""
    if vid in graph.consts:
        return bool(np.all(np.asarray(graph.consts[vid]) == 0))
    node = graph.producer(vid)
    return node is not None and node.primitive in _CASTS and len(node.inputs) == 1 and _is_zero(graph, node.inputs[0])


def _chain(graph: Graph, vid: int, prims: tuple[str, ...]) -> int | None:
    """Follow unary producers `prims` (outermost first) from `vid`; the innermost input, or None."""
    for p in prims:
        node = graph.producer(vid)
        if node is None or node.primitive != p or len(node.inputs) != 1:
            return None
        vid = node.inputs[0]
    return vid


def _max_with_zero(graph: Graph, vid: int) -> int | None:
    node = graph.producer(vid)
    if node is None or node.primitive != "max":
        return None
    a, b = node.inputs
    return b if _is_zero(graph, a) else a if _is_zero(graph, b) else None


def _softplus(graph: Graph, node) -> int | None:
    if node.primitive != "add" or len(node.inputs) != 2:
        return None
    for lin, tail in (node.inputs, node.inputs[::-1]):
        s = _max_with_zero(graph, lin)
        if s is not None and _chain(graph, tail, ("log1p", "exp", "neg", "abs")) == s:
            out, src = graph.value(node.outputs[0]), graph.value(s)
            return s if (out.shape, out.dtype) == (src.shape, src.dtype) else None
    return None


def softplus_roots(graph: Graph) -> Mapping[int, int]:
    """{id of the root `add` node: id of s} for every softplus in the graph."""
    found = {n.id: s for n in graph.nodes() if (s := _softplus(graph, n)) is not None}
    return MappingProxyType(found)
