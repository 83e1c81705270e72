"""Jaxprs as IR: nodes and values built from a jaxpr's equations, call-like primitives inlined,
each node with the user's source line. Lowering builds a model's graph with it; dim inference
builds control-flow bodies (a scan's) with it."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jax
import numpy as np
from jax._src import source_info_util
from jax.extend.core import Literal

from claygraph.ir.graph import Node, Value

# Call-like primitives whose body is inlined, and the param that holds the body.
INLINE = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
          "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr", "custom_vjp_call_jaxpr": "fun_jaxpr",
          "checkpoint": "jaxpr", "remat": "jaxpr"}

_LIBRARY_DIRS = tuple(os.path.dirname(m.__file__) + os.sep for m in (jax, __import__("numpyro")))
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


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


class Builder:
    """IR nodes and values from jaxpr equations, value ids from `first_id` on."""

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
    b = Builder(first_id)
    ins = [b.new_value(v.aval) for v in closed.jaxpr.invars]
    outs = b.add_jaxpr(closed.jaxpr, list(closed.consts), ins)
    return Body(tuple(b.nodes), MappingProxyType(b.values), tuple(ins), tuple(outs))
