"""Lowering: trace a model's potential energy with abstract data and convert the jaxpr to a Graph."""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import jax
import numpy as np
from jax._src import source_info_util
from jax.extend.core import Literal

from claygraph.errors import ModelError
from claygraph.frontend.data import Array, Data
from claygraph.frontend.trace import ModelInfo, model_info, potential_fn, user_line
from claygraph.ir.graph import Graph, Inputs, Node, Value

# Call-like primitives whose body is inlined, and the param that holds the body.
INLINE = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
          "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
          "checkpoint": "jaxpr", "remat": "jaxpr"}

_LIBRARY_DIRS = tuple(os.path.dirname(m.__file__) + os.sep for m in (jax, __import__("numpyro")))
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


@dataclass(frozen=True, slots=True)
class Lowered:
    """Frontend facts carried by a lowered graph."""

    model: Callable
    info: ModelInfo
    arrays: MappingProxyType  # name -> Array (metadata; values are abstract)
    dim_sizes: MappingProxyType
    jacobian: bool = True


def _source(info: Any) -> str:
    """The innermost frame outside JAX, NumPyro and claygraph: the user's line, where there is one."""
    frames = list(source_info_util.user_frames(info.traceback)) if info.traceback else []
    for f in frames:
        if not f.file_name.startswith(_LIBRARY_DIRS + (_OWN_DIR,)):
            return f"{f.file_name}:{f.start_line} ({f.function_name})"
    if frames:
        f = frames[0]
        return f"{os.path.basename(f.file_name)}:{f.start_line} ({f.function_name})"
    return ""


class _Builder:
    def __init__(self, first_id: int = 0):
        self.first_id = first_id  # value ids start here (a body's values must not clash with the graph's)
        self.values: dict[int, Value] = {}
        self.consts: dict[int, Any] = {}
        self.nodes: list[Node] = []

    def new_value(self, aval: Any) -> int:
        vid = self.first_id + len(self.values)
        shape = tuple(int(s) for s in aval.shape)
        self.values[vid] = Value(vid, shape, np.dtype(aval.dtype), (None,) * len(shape))
        return vid

    def const(self, val: Any, aval: Any) -> int:
        vid = self.new_value(aval)
        self.consts[vid] = val
        return vid

    def read(self, env: dict, atom: Any) -> int:
        if isinstance(atom, Literal):
            return self.const(atom.val, atom.aval)
        return env[atom]

    def add_jaxpr(self, jaxpr: Any, consts: list, args: list[int]) -> list[int]:
        env: dict[Any, int] = {}
        for var, c in zip(jaxpr.constvars, consts):
            env[var] = self.const(c, var.aval)
        env.update(zip(jaxpr.invars, args))
        for eqn in jaxpr.eqns:
            ins = [self.read(env, a) for a in eqn.invars]
            body = INLINE.get(eqn.primitive.name)
            if body is not None and body in eqn.params:
                outs = self.inline(eqn.params[body], ins, eqn.params.get("num_consts", 0))
            else:
                outs = [self.new_value(v.aval) for v in eqn.outvars]
                self.nodes.append(Node(len(self.nodes), eqn.primitive, tuple(ins), tuple(outs),
                                       MappingProxyType(dict(eqn.params)), _source(eqn.source_info)))
            env.update(zip(eqn.outvars, outs))
        return [self.read(env, a) for a in jaxpr.outvars]

    def inline(self, body: Any, ins: list[int], num_consts: int) -> list[int]:
        # custom_jvp_call passes its consts as leading operands; the body takes all of them as invars
        del num_consts
        if hasattr(body, "jaxpr"):  # ClosedJaxpr
            return self.add_jaxpr(body.jaxpr, list(body.consts), ins)
        return self.add_jaxpr(body, [], ins)


@dataclass(frozen=True, slots=True)
class Body:
    """A nested jaxpr (a scan's body) as IR nodes and values, for passes that look inside it."""

    nodes: tuple[Node, ...]
    values: Mapping[int, Value]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


def lower_body(closed: Any, first_id: int) -> Body:
    """The body of a control-flow primitive, its value ids from `first_id` on (calls inlined)."""
    b = _Builder(first_id)
    ins = [b.new_value(v.aval) for v in closed.jaxpr.invars]
    outs = b.add_jaxpr(closed.jaxpr, list(closed.consts), ins)
    return Body(tuple(b.nodes), MappingProxyType(b.values), tuple(ins), tuple(outs))


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
    b = _Builder()
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
