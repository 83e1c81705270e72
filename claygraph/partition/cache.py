"""In-process compile cache: a refit of the same model on data of the same shapes reuses the split function
and everything jitted from it (the potential, its gradient, the MAP loop), so JAX neither traces nor
compiles again.

The key is what the emitted program depends on: the lowered graph's fingerprint (which covers shapes,
dtypes, dims and constants), the split, the data layout (slot tables of group splits), and the devices.
Data values are arguments of the jitted functions, never part of them, so a second data set of the same
shapes hits the cache. The cache holds at most MAX_ENTRIES split functions (least recently used first
out); `COMPILED.clear()` empties it. Across processes, JAX's persistent compilation cache
(claygraph.runtime.jax_cache) keeps the compiled programs.
"""
from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_ENTRIES = 8


@dataclass(frozen=True, slots=True)
class CacheKey:
    graph: str  # Graph.fingerprint()
    split: tuple[str, ...]
    layout: str  # layout_fingerprint()
    devices: tuple[str, ...]  # platform:id of every device of the mesh, in mesh order
    feature_major: tuple[str, ...] = ()  # data arrays also held feature-major (the emitted dots differ)


def layout_fingerprint(layout: Mapping[str, Any]) -> str:
    """sha256 of every split dim's sizes, counts and slot table or route (the slots decide the program's masks and
    maps)."""
    h = hashlib.sha256()
    for d in sorted(layout):
        lay = layout[d]
        h.update(f"{d}:{lay.size}:{lay.shards}:{lay.local}".encode())
        h.update(np.ascontiguousarray(lay.counts, dtype=np.int64).tobytes())
        if lay.table is not None:
            h.update(memoryview(np.ascontiguousarray(lay.table, dtype=np.int64)))  # hashed in place: no copy
        if lay.route is not None:  # rows that follow their groups: the groups' slots and the index column
            h.update(memoryview(np.ascontiguousarray(lay.route.gslot)))
            index = lay.route.index
            if isinstance(index, np.ndarray):
                h.update(f"{index.dtype}".encode())
                h.update(memoryview(np.ascontiguousarray(index)))
            else:  # a column in files: where it is (its values decided the groups' row counts, hashed above)
                h.update(repr((index.columns, index.fragments)).encode())
        h.update(b"blocked" if lay.blocked else b"")
    return h.hexdigest()


def key_for(graph, candidate, mesh) -> CacheKey:
    devices = tuple(f"{d.platform}:{d.id}" for d in np.ravel(mesh.devices))
    return CacheKey(graph.fingerprint(), tuple(candidate.split.name), layout_fingerprint(candidate.layout), devices,
                    tuple(sorted(candidate.feature_major)))


class CompileCache:
    """Least-recently-used map CacheKey -> built value, with hit and miss counts."""

    def __init__(self, max_entries: int = MAX_ENTRIES):
        self.max_entries = max_entries
        self._entries: OrderedDict[CacheKey, Any] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def get(self, key: CacheKey, build: Callable[[], Any]) -> Any:
        if key in self._entries:
            self.hits += 1
            self._entries.move_to_end(key)
            return self._entries[key]
        self.misses += 1
        value = self._entries[key] = build()
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        return value

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


COMPILED = CompileCache()  # the process's cache of split functions (a registry of built programs)
