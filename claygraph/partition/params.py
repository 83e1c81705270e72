"""Parameters in the internal layout: where each site lives on the devices, and its conversions.

A parameter with a split dim lives sharded in the internal layout (claygraph.partition.layout) from
initialisation to result: shard s holds slots [s*local, (s+1)*local) of that dim, its padding slots
included. Values change layout only when they enter or leave the workers: `to_internal` (the user's
layout -> the internal one, padding filled with copies of a real entry of the same shard, as the data
are) and `to_user` (back: each user index read from its slot), both in NumPy on the host.

A process of a multi-process program holds only its own shards; `Pieces` carry them to the driver,
which puts them together (`assemble`). Nothing here knows about Ray.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from jax.sharding import PartitionSpec as P

from claygraph.ir.graph import Graph
from claygraph.partition.layout import DimLayout


@dataclass(frozen=True, slots=True)
class ParamSite:
    name: str
    dims: tuple[str | None, ...]
    shape: tuple[int, ...]  # the user's
    internal_shape: tuple[int, ...]  # each split dim at its internal size (shards x local)
    dtype: np.dtype
    spec: P  # how the devices hold the internal array

    @property
    def sharded(self) -> bool:
        return any(a is not None for a in self.spec)


@dataclass(frozen=True, eq=False)
class ParamLayout:
    """Every latent site's place in the internal layout (picklable: the driver and every worker hold one)."""

    sites: Mapping[str, ParamSite]
    layout: Mapping[str, DimLayout]

    @staticmethod
    def of(graph: Graph, layout: Mapping[str, DimLayout], specs: Mapping[str, P]) -> ParamLayout:
        sites = {}
        for k, vid in sorted(graph.inputs.params.items()):
            v = graph.value(vid)
            internal = tuple(layout[d].internal if d in layout else n for d, n in zip(v.dims, v.shape))
            sites[k] = ParamSite(k, tuple(v.dims), tuple(v.shape), internal, np.dtype(v.dtype), specs[k])
        return ParamLayout(sites, {d: lay for d, lay in layout.items()
                                   if any(d in s.dims for s in sites.values())})

    def to_internal(self, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The user's layout -> the internal one (padding slots hold a real entry of their shard)."""
        out = {}
        for k, s in self.sites.items():
            x = np.asarray(params[k], dtype=s.dtype)
            if x.shape != s.shape:
                from claygraph.errors import PartitionError

                raise PartitionError(f"param {k!r} has shape {x.shape}; the model's site has {s.shape}")
            for i, d in enumerate(s.dims):
                if d in self.layout and not self.layout[d].identity:
                    x = np.take(x, self.layout[d].fill_slots(), axis=i)
            out[k] = x
        return out

    def to_user(self, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        """The internal layout -> the user's (padding dropped)."""
        out = {}
        for k, s in self.sites.items():
            x = np.asarray(params[k])
            for i, d in enumerate(s.dims):
                if d in self.layout and not self.layout[d].identity:
                    x = np.take(x, self.layout[d].inverse(), axis=i)
            out[k] = x
        return out

    def real(self) -> dict[str, np.ndarray]:
        """Per site, True where an internal slot holds a real entry (False on padding)."""
        out = {}
        for k, s in self.sites.items():
            m = np.ones(s.internal_shape, bool)
            for i, d in enumerate(s.dims):
                if d in self.layout:
                    shape = [1] * len(s.internal_shape)
                    shape[i] = -1
                    m = m & self.layout[d].pad_mask().reshape(shape)
            out[k] = m
        return out

    def zeros(self) -> dict[str, np.ndarray]:
        """Zeros in the internal layout (padding included)."""
        return {k: np.zeros(s.internal_shape, s.dtype) for k, s in self.sites.items()}


@dataclass(frozen=True, slots=True)
class Pieces:
    """What one process holds of a global array: (index, block) per shard it holds, and the global shape."""

    shape: tuple[int, ...]
    dtype: np.dtype
    blocks: tuple[tuple[tuple[slice, ...], np.ndarray], ...]


def pieces_of(x) -> Pieces:
    """This process's shards of global array `x` (each replica once)."""
    blocks = tuple((tuple(s.index), np.asarray(s.data)) for s in x.addressable_shards if s.replica_id == 0)
    return Pieces(tuple(x.shape), np.dtype(x.dtype), blocks)


def assemble(parts: Sequence[Pieces]) -> np.ndarray:
    """The whole array from every process's pieces."""
    first = parts[0]
    out = np.empty(first.shape, first.dtype)
    for p in parts:
        for index, block in p.blocks:
            out[index] = block
    return out


def merge(results: Sequence[Any]) -> Any:
    """One result from every process's: pieces of a global array put together, anything else worker 0's."""
    import jax

    def one(*xs):
        return assemble(xs) if isinstance(xs[0], Pieces) else xs[0]

    leaf = lambda x: isinstance(x, Pieces)  # noqa: E731
    if not any(leaf(x) for x in jax.tree.leaves(results[0], is_leaf=leaf)):
        return results[0]
    return jax.tree.map(one, *results, is_leaf=leaf)
