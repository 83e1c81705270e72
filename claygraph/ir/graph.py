"""The IR: small immutable values and nodes, stored in a networkx graph behind one facade."""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

import networkx as nx
import numpy as np


@dataclass(frozen=True, slots=True)
class Value:
    """One array in the graph: shape, dtype, and a dim name (or None) per axis."""

    id: int
    shape: tuple[int, ...]
    dtype: np.dtype
    dims: tuple[str | None, ...] = ()

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def axis_of(self, dim: str) -> int | None:
        return self.dims.index(dim) if dim in self.dims else None


@dataclass(frozen=True, slots=True)
class Node:
    """One primitive application. `prim` is the JAX primitive that evaluates it."""

    id: int
    prim: Any = field(compare=False, repr=False)
    inputs: tuple[int, ...] = ()
    outputs: tuple[int, ...] = ()
    params: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}), compare=False)
    source: str = ""

    @property
    def primitive(self) -> str:
        return self.prim.name

    def bind(self, *args: Any, **params: Any) -> list[Any]:
        out = self.prim.bind(*args, **(params or self.params))
        return list(out) if self.prim.multiple_results else [out]


@dataclass(frozen=True, slots=True)
class Inputs:
    """Which values are the model's parameters (by site) and data arrays (by name)."""

    params: Mapping[str, int]
    data: Mapping[str, int]


class Graph:
    """A lowered model. Read it through these methods; networkx is a storage detail."""

    def __init__(self, nodes: Iterable[Node], values: Mapping[int, Value], inputs: Inputs, output: int,
                 consts: Mapping[int, Any], meta: Any = None):
        self._g = nx.DiGraph()
        self._values = dict(values)
        self._producer: dict[int, int] = {}
        self._consumers: dict[int, list[int]] = {v: [] for v in self._values}
        for n in nodes:
            self._g.add_node(n.id, node=n)
            for o in n.outputs:
                self._producer[o] = n.id
        for n in nodes:
            for i in n.inputs:
                self._consumers[i].append(n.id)
                if i in self._producer:
                    self._g.add_edge(self._producer[i], n.id)
        self._order = [self._g.nodes[i]["node"] for i in nx.lexicographical_topological_sort(self._g)]
        self.inputs = inputs
        self.output = output
        self.consts = MappingProxyType(dict(consts))
        self.meta = meta  # frontend facts (ModelInfo, data layout) that passes carry along

    # -- structure --------------------------------------------------------------------------
    def nodes(self) -> list[Node]:
        """Nodes in a fixed topological order (ties broken by id)."""
        return list(self._order)

    def node(self, nid: int) -> Node:
        return self._g.nodes[nid]["node"]

    def value(self, vid: int) -> Value:
        return self._values[vid]

    def values(self) -> list[Value]:
        return [self._values[k] for k in sorted(self._values)]

    def producer(self, vid: int) -> Node | None:
        nid = self._producer.get(vid)
        return None if nid is None else self.node(nid)

    def consumers(self, vid: int) -> list[Node]:
        return [self.node(n) for n in self._consumers.get(vid, [])]

    def __len__(self) -> int:
        return len(self._order)

    def primitive_counts(self) -> dict[str, int]:
        return dict(sorted(Counter(n.primitive for n in self._order).items()))

    def replace_values(self, values: Mapping[int, Value]) -> Graph:
        """The same graph with some values replaced (a pass that refines dims returns this)."""
        merged = {**self._values, **values}
        return Graph(self._order, merged, self.inputs, self.output, self.consts, self.meta)

    # -- dims -------------------------------------------------------------------------------
    @property
    def dims(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self._values.values():
            for d, n in zip(v.dims, v.shape):
                if d is not None:
                    out.setdefault(d, n)
        for name, size in getattr(self.meta, "dim_sizes", {}).items():
            out.setdefault(name, size)
        return dict(sorted(out.items()))

    @property
    def param_dims(self) -> dict[str, tuple[str | None, ...]]:
        return {k: self._values[v].dims for k, v in self.inputs.params.items()}

    @property
    def data_dims(self) -> dict[str, tuple[str | None, ...]]:
        return {k: self._values[v].dims for k, v in self.inputs.data.items()}

    @property
    def param_shapes(self) -> dict[str, tuple[int, ...]]:
        return {k: self._values[v].shape for k, v in self.inputs.params.items()}

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, params: Mapping[str, Any], data: Any) -> Any:
        """The potential energy at unconstrained `params` for `data` (a Data or a dict of arrays)."""
        values = _data_values(data)
        env: dict[int, Any] = dict(self.consts)
        for k, vid in self.inputs.params.items():
            env[vid] = params[k]
        for k, vid in self.inputs.data.items():
            env[vid] = values[k]
        return interpret(self._order, env, lambda node, args: node.bind(*args))[self.output]

    def fingerprint(self) -> str:
        """sha256 (hex) of a deterministic printing of the graph: the listing, every node's parameters
        and the constants' bytes (the listing shows scalar constants only)."""

        h = hashlib.sha256(str(self).encode())
        for n in self._order:
            h.update(repr(sorted((k, str(v)) for k, v in n.params.items())).encode())
        for vid in sorted(self.consts):
            c = np.ascontiguousarray(self.consts[vid])
            h.update(f"{vid}:{c.dtype}{c.shape}".encode())
            h.update(c.tobytes())
        return h.hexdigest()

    def __str__(self) -> str:
        from claygraph.ir.printing import format_graph

        return format_graph(self)

    def __repr__(self) -> str:
        return f"<Graph: {len(self)} nodes, dims {self.dims}>"


def interpret(nodes: Iterable[Node], env: dict[int, Any], apply: Callable[[Node, list[Any]], list[Any]]) -> dict:
    """The evaluator: run `apply` on each node in order, reading and writing `env`."""
    for node in nodes:
        outs = apply(node, [env[i] for i in node.inputs])
        env.update(zip(node.outputs, outs))
    return env


def _data_values(data: Any) -> Mapping[str, Any]:
    from claygraph.frontend.data import Data

    if isinstance(data, Data):
        return {k: a.values for k, a in data.arrays.items()}
    return data


def with_dims(v: Value, dims: tuple[str | None, ...]) -> Value:
    return replace(v, dims=dims)
