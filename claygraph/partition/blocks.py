"""Row blocks: when the runtime runs a split program in cached blocks of rows (partition/fused.py),
and how it cuts them. Kept apart from fused.py (which builds the blocked program) so that the cost
model can cost a candidate the way it will run without importing emission."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from claygraph.ir.graph import Graph
from claygraph.partition.layout import LANES
from claygraph.partition.shardings import Partial, Sharded, Split

BLOCK_BYTES = 8 << 20  # data bytes in blocks at once per host: ~8 MiB stays in this machine's L3 (docs/inference.md)
MIN_BLOCKS = 4  # fewer blocks than this per shard: the plain program is as good
MIN_ROWS = 256  # rows per block at least (a block of wider rows than BLOCK_BYTES / MIN_ROWS outgrows the cache)


@dataclass(frozen=True, slots=True)
class Blocking:
    """How one shard's rows of `dim` are cut: `blocks` full blocks of `rows` rows, then `tail` rows."""

    dim: str
    rows: int
    blocks: int
    tail: int
    shards: int


def row_split_of(graph: Graph, candidates: list[Split]) -> Split | None:
    """Of the candidate splits, the dim split over the data dim holding the most bytes (where
    blocking saves the most reads)."""
    splits = [s for s in candidates if s.kind == "dim"]
    arrays = graph.meta.arrays

    def data_bytes(s: Split) -> int:
        return sum(int(np.prod(a.shape)) * np.dtype(a.dtype).itemsize for a in arrays.values()
                   if next(iter(s.dims)) in a.dims)

    return max(splits, key=lambda s: (data_bytes(s), s.name), default=None)


def separable(graph: Graph, prop, dim: str) -> bool:
    """The potential is a sum over `dim`'s entries: every value with `dim` stays sharded along it, the
    only collective is the final psum, nothing is masked, remapped or run in the user's layout, and no
    parameter or constant has `dim`."""
    if prop is None or prop.fallbacks or not isinstance(prop.shardings[graph.output], Partial) \
            or prop.shardings[graph.output] != Partial("sum"):
        return False
    if any(c.node is not None for c in prop.collectives):
        return False
    if any(d.masks or d.local_offset or d.user_layout for d in prop.decisions.values()):
        return False
    if any(dim in graph.value(v).dims for v in list(graph.inputs.params.values()) + list(graph.consts)):
        return False
    for vid, s in prop.shardings.items():
        v = graph.value(vid)
        if dim in v.dims and not (isinstance(s, Sharded) and s.dim == dim):
            return False
    return True


def row_dependent(graph: Graph, dim: str) -> set[int]:
    """The values computed from data arrays that have `dim` (they differ from one row block to the next)."""
    out = {vid for vid in graph.inputs.data.values() if dim in graph.value(vid).dims}
    for node in graph.nodes():
        if any(i in out for i in node.inputs):
            out.update(node.outputs)
    return out


def group_separable(graph: Graph, prop, dim: str) -> bool:
    """A group split whose potential is a sum over the co-partitioned rows `dim` of each shard: as
    `separable`, except that rows may be padded (masked) and gathers remap to local ids; every value
    computed from the rows either keeps `dim` or is a partial sum (nothing per group is built from
    rows, such as a scatter-add into groups, which a block would see only part of)."""
    split = prop.split if prop is not None else None
    if split is None or split.kind != "group" or dim not in {r for r, _ in split.copartition}:
        return False
    if prop.fallbacks or prop.shardings[graph.output] != Partial("sum"):
        return False
    if any(c.node is not None for c in prop.collectives) or any(d.user_layout for d in prop.decisions.values()):
        return False
    if any(dim in graph.value(v).dims for v in list(graph.inputs.params.values()) + list(graph.consts)):
        return False
    if any(isinstance(s, Partial) and s.op != "sum" for s in prop.shardings.values()):
        return False
    for vid in row_dependent(graph, dim):
        s, v = prop.shardings[vid], graph.value(vid)
        if s != (Sharded(dim) if dim in v.dims else Partial("sum")):
            return False
    return True


def once_per_shard(graph: Graph, prop, dim: str) -> frozenset[int]:
    """Nodes whose partial sum does not depend on the rows `dim` (a per-group prior's sum): run once per
    row block, their value must count in one block of each shard only."""
    rows = row_dependent(graph, dim)
    return frozenset(n.id for n in graph.nodes()
                     if not any(o in rows for o in n.outputs)
                     and any(isinstance(prop.shardings[o], Partial) for o in n.outputs))


def host_share(block_bytes: int, host_devices: int) -> int:
    """One device's block bytes where `host_devices` devices of one host run their blocks at once and
    share its last-level cache (docs/partition.md: W1 on two local devices ran 57-81 ms with 8 MiB
    blocks each, 44-47 ms with 4 MiB; on one device 8 MiB blocks are the fastest)."""
    return max(1, block_bytes // max(1, host_devices))


def held_param_bytes(graph: Graph, prop, shape) -> int:
    """Bytes of the parameters as one shard holds them (`shape(value, sharding)`: its local shape)."""
    return sum(int(np.prod(shape(graph.value(v), prop.shardings[v]))) * np.dtype(graph.value(v).dtype).itemsize
               for v in graph.inputs.params.values())


def blocking(graph: Graph, dim: str, local_rows: int, shards: int,
             block_bytes: int = BLOCK_BYTES, param_bytes: int = 0) -> Blocking | None:
    """How the runtime cuts a shard's `local_rows` rows into blocks of about `block_bytes` of data;
    None where fewer than MIN_BLOCKS fit, or where MIN_ROWS rows hold more than twice `block_bytes`
    (a block would not stay in cache; its slice would be one more pass over memory): the plain
    program is as good or better. None also where the parameters' gradient (`param_bytes`, as one shard
    holds them), which every block makes whole and adds to the running sum (about three passes over it:
    zeros, the scatter-add, the sum), would move more than half of what blocking saves (one of the two
    passes over the data): W7's 2,000,000 per-group parameters over 50 blocks of 8 MiB, 1.2 GB of gradient
    traffic to save one 400 MB read, ran at 300 ms per evaluation blocked and 171 ms unblocked."""
    arrays = graph.meta.arrays
    row_bytes = sum(int(np.prod(a.shape)) // max(1, a.shape[a.dims.index(dim)]) * np.dtype(a.dtype).itemsize
                    for a in arrays.values() if dim in a.dims)
    rows = max(MIN_ROWS, block_bytes // max(1, row_bytes)) // LANES * LANES  # whole vectors (layout.LANES)
    blocks = local_rows // rows
    if blocks < MIN_BLOCKS or rows * row_bytes > 2 * block_bytes:
        return None  # too few blocks, or rows too wide for a block to stay in cache: nothing to save
    if 3 * blocks * param_bytes > local_rows * row_bytes / 2:
        return None  # the blocks' gradient sums cost more than the read they save
    # equal blocks where a block count up to 1.5x the target divides the rows into whole vectors: no tail
    # to trace and compile
    even = next((b for b in range(blocks, blocks + blocks // 2 + 1)
                 if local_rows % b == 0 and (local_rows // b) % LANES == 0), None)
    if even is not None:
        return Blocking(dim, local_rows // even, even, 0, shards)
    return Blocking(dim, rows, blocks, local_rows - blocks * rows, shards)
