"""A readable, deterministic listing of a graph."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from claygraph.ir.graph import Graph, Value


def format_value(v: Value) -> str:
    axes = ", ".join(f"{d}={n}" if d else str(n) for d, n in zip(v.dims, v.shape))
    return f"%{v.id}:{v.dtype.name}[{axes}]"


def _param_str(k: str, val: object) -> str | None:
    if k in ("out_sharding", "sharding", "jaxpr", "call_jaxpr", "fill_value", "unique_indices",
             "indices_are_sorted", "accumulation_type", "algorithm") or val is None:
        return None
    return f"{k}={val}"


def format_node(graph: Graph, node) -> str:
    ins = []
    for i in node.inputs:
        v = graph.value(i)
        ins.append(repr(np.asarray(graph.consts[i]).item()) if i in graph.consts and v.ndim == 0 else format_value(v))
    params = [p for p in (_param_str(k, v) for k, v in sorted(node.params.items())) if p]
    outs = ", ".join(format_value(graph.value(o)) for o in node.outputs)
    p = f"[{', '.join(params)}]" if params else ""
    return f"{outs} = {node.primitive}{p}({', '.join(ins)})"


def format_graph(graph: Graph) -> str:
    inv = {vid: f"param {k}" for k, vid in graph.inputs.params.items()}
    inv.update({vid: f"data {k}" for k, vid in graph.inputs.data.items()})
    lines = ["inputs:"]
    for vid in sorted(inv):
        lines.append(f"  {format_value(graph.value(vid))}  # {inv[vid]}")
    lines.append("nodes:")
    lines += [f"  {format_node(graph, n)}" for n in graph.nodes()]
    lines.append(f"output: {format_value(graph.value(graph.output))}")
    return "\n".join(lines)
