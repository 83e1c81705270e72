"""Lowering: trace a model's potential energy with abstract data and convert the jaxpr to a Graph."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import jax

from claygraph.errors import ModelError
from claygraph.frontend.data import Array, Data
from claygraph.frontend.trace import ModelInfo, model_info, potential_fn, user_line
from claygraph.ir.graph import Graph, Inputs, Node
from claygraph.ir.jaxpr import Builder


@dataclass(frozen=True, slots=True)
class Lowered:
    """Frontend facts carried by a lowered graph."""

    model: Callable
    info: ModelInfo
    arrays: MappingProxyType  # name -> Array (metadata; values are abstract)
    dim_sizes: MappingProxyType
    jacobian: bool = True


def _dead_code_eliminated(nodes: list[Node], output: int) -> list[Node]:
    live = {output}
    kept = []
    for n in reversed(nodes):
        if any(o in live for o in n.outputs):
            kept.append(n)
            live.update(n.inputs)
    return [replace(n, id=i) for i, n in enumerate(reversed(kept))]


def trace_jaxpr(model: Callable, data: Data, info: ModelInfo, jacobian: bool = True) -> Any:
    params = {s.name: jax.ShapeDtypeStruct(s.shape, s.dtype) for s in info.sites}
    values = {k: jax.ShapeDtypeStruct(a.shape, a.dtype) for k, a in data.arrays.items()}
    try:
        return jax.make_jaxpr(potential_fn(model, data, jacobian))(params, values)
    except Exception as e:
        raise ModelError(f"tracing the potential of model {getattr(model, '__name__', 'model')!r} failed at "
                         f"{user_line(model, e)}\n  {type(e).__name__}: {e}") from e


def lower(model: Callable, data: Data, jacobian: bool = True) -> Graph:
    """Lower `model(data)`'s potential energy to the IR, with dims inferred. Never reads data values.

    jacobian=False lowers the potential without the transforms' log-Jacobian (constrained-space mode).
    """
    from claygraph.ir.dims import infer_dims

    if not isinstance(data, Data):
        raise ModelError(f"lower() takes a claygraph.Data, got {type(data).__name__}; build one with "
                         f"cg.Data(X=cg.array(X, 'row', 'feature'), ...)")
    info = model_info(model, data)
    closed = trace_jaxpr(model, data, info, jacobian)
    b = Builder()
    param_names = sorted(s.name for s in info.sites)  # the pytree order of a dict
    args = [b.new_value(v.aval) for v in closed.jaxpr.invars]
    inputs = Inputs(MappingProxyType(dict(zip(param_names, args))),
                    MappingProxyType(dict(zip(sorted(data.arrays), args[len(param_names):]))))
    (output,) = b.add_jaxpr(closed.jaxpr, list(closed.consts), args)
    nodes = _dead_code_eliminated(b.nodes, output)
    meta = Lowered(model, info, MappingProxyType(data.abstract().arrays),
                   MappingProxyType({**data.dims, **dict(info.plates)}), jacobian)
    live = {output, *args} | {v for n in nodes for v in (*n.inputs, *n.outputs)}
    values = {k: v for k, v in b.values.items() if k in live}
    consts = {k: c for k, c in b.consts.items() if k in live}
    graph = Graph(nodes, values, inputs, output, consts, meta)
    return infer_dims(graph)


def data_arrays(graph: Graph) -> dict[str, Array]:
    return dict(graph.meta.arrays)
