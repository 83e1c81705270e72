"""Data layout per shard: which user index sits in which internal slot, for every split dim.

Shard s owns slots [s*local, (s+1)*local); its first counts[s] slots are real, the rest padding.
A row split cuts rows into equal blocks; a group split assigns groups to shards by row count
(longest-processing-time greedy) and routes every row to its group's shard, and pads each shard to
a whole number of LANES. The kernels are
numba loops, linear in rows (groups are sorted once by size).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numba
import numpy as np

from claygraph.errors import DataError

# A group split's shards are padded to a whole number of LANES entries: XLA's CPU loops run an
# elementwise fusion over a length that is not a multiple of the vector width several times slower
# (a Poisson log-likelihood's lgamma over 150,000 float32: 0.9 ms; over 150,007: 6.0 ms; 1,000,000:
# 5.2 ms, 1,000,003: 60 ms, on 2 cores). 16 float32 are one 512-bit vector.
LANES = 16


def lanes(n: int) -> int:
    """`n` rounded up to a whole number of LANES."""
    return -(-n // LANES) * LANES


@dataclass(frozen=True, slots=True, eq=False)
class Route:
    """How a group split places its rows: row i goes to the shard owning group index[i], at the group's
    slot order, rows of one group in their original order. `index` is the index column's values, or its
    `ParquetSource` (a worker reads the column itself; nobody holds a table of every row)."""

    gslot: np.ndarray  # (groups,) internal slot of every group
    glocal: int  # group slots per shard
    index: Any  # (rows,) integer array, or a ParquetSource of one integer column
    # the whole table, once some use in this process asked for it (a latent site on the rows relaid on every
    # gradient); never pickled: a worker makes its own where it needs one
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    def __reduce__(self):
        return (Route, (self.gslot, self.glocal, self.index))

    def values(self) -> np.ndarray:
        if isinstance(self.index, np.ndarray):
            return self.index
        from claygraph.frontend.parquet import read  # (the frontend sits below partition)

        return read(self.index)

    def shard_rows(self, shard: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows of shard `shard` in increasing order, int64; each one's position in the shard's block, int32):
        a pass over the index column that holds only this shard's rows. A column that no longer matches the
        counts its layout was made from (a file rewritten since) raises DataError, never a wrong layout."""
        try:
            if isinstance(self.index, np.ndarray):
                return _shard_rows(_ints(self.index), self.gslot, self.glocal, shard)
            from claygraph.frontend.parquet import stream_ints

            # two passes over the column's batches (a few MB each; the column itself is never held): count
            # this shard's rows per group slot, then place them
            counts = np.zeros(self.glocal, dtype=np.int64)
            for _, b in stream_ints(self.index):
                _count_local(_ints(b), self.gslot, self.glocal, shard, counts)
            return _place_local(((_ints(b), off) for off, b in stream_ints(self.index)), counts, self.gslot,
                                self.glocal, shard)
        except IndexError as exc:
            where = getattr(self.index, "name", "in memory")
            raise DataError(f"index column {where!r} does not match the layout made from it ({exc}): a file "
                            f"changed after it was counted? Make the Data again") from exc

    def table(self, shards: int, local: int) -> np.ndarray:
        """(shards*local,) row per slot, -1 for padding: every shard's rows (in-memory use only), in one
        counting sort of the rows by their group's slot; kept once made."""
        key = (shards, local)
        if key not in self.memo:
            idx = _ints(self.values())
            count, pos = bucket(_slot_keys(self.gslot, idx), shards * self.glocal)
            per_shard = count.reshape(shards, self.glocal).sum(axis=1)
            self.memo.clear()
            self.memo[key] = scatter_slots(pos, per_shard, local)
        return self.memo[key]


@numba.njit(cache=True)
def _slot_keys(gslot: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = np.empty(idx.shape[0], dtype=np.int64)
    for i in range(idx.shape[0]):
        out[i] = gslot[idx[i]]
    return out


def _ints(v: np.ndarray) -> np.ndarray:
    """An index column as numba's kernels take it (int32 or int64, contiguous)."""
    v = np.ascontiguousarray(v)
    return v if v.dtype in (np.int32, np.int64) else v.astype(np.int64)


@numba.njit(cache=True)
def _local_slot(g, gslot: np.ndarray, lo: int, glocal: int) -> int:
    """Group `g`'s slot within the shard whose slots start at `lo`, or -1 where another shard owns it."""
    if g < 0 or g >= gslot.shape[0]:
        raise IndexError("an index column's value lies outside its target dim")
    k = gslot[g] - lo
    return k if 0 <= k < glocal else -1


@numba.njit(cache=True)
def _count_local(idx: np.ndarray, gslot: np.ndarray, glocal: int, shard: int, counts: np.ndarray) -> None:
    for i in range(idx.shape[0]):
        k = _local_slot(idx[i], gslot, shard * glocal, glocal)
        if k >= 0:
            counts[k] += 1


@numba.njit(cache=True)
def _place(idx: np.ndarray, offset: int, gslot: np.ndarray, glocal: int, shard: int, fill: np.ndarray,
           slots_end: np.ndarray, rows: np.ndarray, slots: np.ndarray, n: int) -> int:
    for i in range(idx.shape[0]):
        k = _local_slot(idx[i], gslot, shard * glocal, glocal)
        if k >= 0:
            if n >= rows.shape[0] or fill[k] >= slots_end[k]:
                raise IndexError("an index column holds more rows of a shard than were counted")
            rows[n] = offset + i
            slots[n] = fill[k]
            fill[k] += 1
            n += 1
    return n


def _starts(counts: np.ndarray) -> np.ndarray:
    fill = np.zeros(counts.shape[0], dtype=np.int64)
    np.cumsum(counts[:-1], out=fill[1:])
    return fill


def _place_local(parts, counts: np.ndarray, gslot: np.ndarray, glocal: int, shard: int):
    n = int(counts.sum())
    rows, slots, fill, k = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int32), _starts(counts), 0
    ends = fill + counts
    for b, off in parts:
        k = _place(b, off, gslot, glocal, shard, fill, ends, rows, slots, k)
    if k != n:
        raise IndexError("an index column holds fewer rows of a shard than were counted")
    return rows, slots


def _shard_rows(idx: np.ndarray, gslot: np.ndarray, glocal: int, shard: int):
    counts = np.zeros(glocal, dtype=np.int64)
    _count_local(idx, gslot, glocal, shard, counts)
    return _place_local([(idx, 0)], counts, gslot, glocal, shard)


@dataclass(frozen=True, slots=True, eq=False)
class DimLayout:
    dim: str
    size: int
    shards: int
    local: int
    counts: np.ndarray  # (shards,) real entries per shard
    table: np.ndarray | None = None  # (shards*local,) user index per slot, -1 for padding (group splits)
    # a group split's rows without a table: they follow their groups' slots (Route), and each shard's rows
    # are found from the index column when they are needed (a Parquet worker reads the column itself)
    route: Route | None = None
    # equal blocks in order: slot i holds entry i, padding at the end. No table is stored (one would
    # take 8 bytes per row); `slots` computes it where it is needed
    blocked: bool = False

    @property
    def internal(self) -> int:
        return self.shards * self.local

    @property
    def slots(self) -> np.ndarray | None:
        """(shards*local,) user index per slot, -1 for padding; None for sizes only (abstract data)."""
        if self.route is not None:
            return self.route.table(self.shards, self.local)
        if self.table is not None or not self.blocked:
            return self.table
        slots = np.arange(self.internal, dtype=np.int64)
        slots[self.size:] = -1
        return slots

    @property
    def identity(self) -> bool:
        """Every entry stays where it is (equal blocks in order, no padding): relayout moves nothing."""
        if self.blocked:
            return self.internal == self.size
        if self.internal != self.size:
            return False
        s = self.slots
        return s is not None and bool(np.all(s[1:] > s[:-1])) \
            and (self.size == 0 or (s[0] == 0 and s[-1] == self.size - 1))

    @property
    def padded(self) -> bool:
        return bool(np.any(self.counts < self.local))

    def pad_mask(self) -> np.ndarray:
        """(internal,) True where a slot is real."""
        return (np.arange(self.internal) % self.local) < np.repeat(self.counts, self.local)

    def fill_slots(self) -> np.ndarray:
        """Slots with padding pointing at the last real entry of the same shard (entry 0 for a shard with
        none): pads hold finite copies, and a shard's rows sorted by group stay sorted through its padding."""
        blocks = self.slots.reshape(self.shards, self.local)
        last = np.maximum(blocks[np.arange(self.shards), np.maximum(self.counts - 1, 0)], 0)[:, None]
        return np.where(blocks < 0, last, blocks).ravel()

    def shard_fill_slots(self, shard: int) -> np.ndarray:
        """`fill_slots()` of shard `shard` alone (its `local` slots), without making the whole table."""
        lo = shard * self.local
        if self.blocked:
            b = np.arange(lo, lo + self.local, dtype=np.int64)
            b[b >= self.size] = -1
        elif self.route is not None:
            rows, slots = self.route.shard_rows(shard)
            b = np.full(self.local, -1, dtype=np.int64)
            b[slots] = rows
        else:
            b = self.table[lo:lo + self.local]
        last = max(int(b[max(int(self.counts[shard]) - 1, 0)]), 0)
        return np.where(b < 0, last, b)

    def inverse(self) -> np.ndarray:
        """(size,) internal slot of each user index."""
        if self.blocked:
            return np.arange(self.size, dtype=np.int64)
        slots = self.slots
        inv = np.empty(self.size, dtype=np.int64)
        real = slots >= 0
        inv[slots[real]] = np.flatnonzero(real)
        return inv


def block_layout(dim: str, size: int, shards: int) -> DimLayout:
    """Equal blocks in order (a row split): shard k holds entries [k*local, (k+1)*local), the last ones padded."""
    local = max(1, -(-size // shards))
    counts = np.clip(size - np.arange(shards) * local, 0, local).astype(np.int64)
    return DimLayout(dim, size, shards, local, counts, blocked=True)


def block_sizes(dim: str, size: int, shards: int) -> DimLayout:
    """Sizes only (abstract data): no slot table, so planning 10^9 rows costs nothing."""
    local = max(1, -(-size // shards))
    return DimLayout(dim, size, shards, local, np.clip(size - np.arange(shards) * local, 0, local).astype(np.int64))


@numba.njit(cache=True)
def _before(load: np.ndarray, held: np.ndarray, a: int, b: int) -> bool:
    """Shard a takes the next group before shard b: less load, then fewer groups, then the lower number."""
    if load[a] != load[b]:
        return load[a] < load[b]
    if held[a] != held[b]:
        return held[a] < held[b]
    return a < b


@numba.njit(cache=True)
def lpt_assign(counts: np.ndarray, order: np.ndarray, shards: int) -> np.ndarray:
    """Longest-processing-time greedy: each group (largest first) goes to the least-loaded shard;
    ties go to the shard with fewest groups, so that groups without rows spread out too, then to the
    lowest-numbered. The shards sit in a binary heap: O(groups log shards), so that planning tens of
    millions of groups over hundreds of devices takes a second, not minutes."""
    load = np.zeros(shards, dtype=np.int64)
    held = np.zeros(shards, dtype=np.int64)
    heap = np.arange(shards)  # all loads 0, all held 0: in shard order, a valid heap
    owner = np.empty(counts.shape[0], dtype=np.int64)
    for g in order:
        best = heap[0]
        owner[g] = best
        load[best] += counts[g]
        held[best] += 1
        i = 0  # sift the grown root down
        while True:
            left, right, low = 2 * i + 1, 2 * i + 2, i
            if left < shards and _before(load, held, heap[left], heap[low]):
                low = left
            if right < shards and _before(load, held, heap[right], heap[low]):
                low = right
            if low == i:
                break
            heap[i], heap[low] = heap[low], heap[i]
            i = low
    return owner


@numba.njit(cache=True)
def bucket(keys: np.ndarray, shards: int) -> tuple[np.ndarray, np.ndarray]:
    """Counting sort of positions by key: (count per key, positions grouped by key, in order)."""
    count = np.zeros(shards, dtype=np.int64)
    for k in keys:
        count[k] += 1
    start = np.zeros(shards + 1, dtype=np.int64)
    for s in range(shards):
        start[s + 1] = start[s] + count[s]
    pos = np.empty(keys.shape[0], dtype=np.int64)
    fill = start[:-1].copy()
    for i in range(keys.shape[0]):
        pos[fill[keys[i]]] = i
        fill[keys[i]] += 1
    return count, pos


@numba.njit(cache=True)
def scatter_slots(pos: np.ndarray, count: np.ndarray, local: int) -> np.ndarray:
    shards = count.shape[0]
    slots = np.full(shards * local, -1, dtype=np.int64)
    k = 0
    for s in range(shards):
        for j in range(count[s]):
            slots[s * local + j] = pos[k]
            k += 1
    return slots


def lpt_owner(counts: np.ndarray, shards: int) -> np.ndarray:
    order = np.argsort(-counts, kind="stable").astype(np.int64)
    return lpt_assign(counts.astype(np.int64), order, shards)


def group_slots(group: str, counts: np.ndarray, shards: int) -> tuple[DimLayout, np.ndarray, np.ndarray]:
    """Groups to shards by row count (LPT): (the group layout, every group's internal slot, its shard)."""
    groups = counts.shape[0]
    owner = lpt_owner(counts, shards)
    gcount, gpos = bucket(owner, shards)
    glocal = lanes(max(1, int(gcount.max())))
    gslots = scatter_slots(gpos, gcount, glocal)
    gslot = np.empty(groups, dtype=np.int64)
    real = gslots >= 0
    gslot[gslots[real]] = np.flatnonzero(real)
    return DimLayout(group, groups, shards, glocal, gcount, gslots), gslot, owner


def routed_layout(group: str, row: str, counts: np.ndarray, index: Any, shards: int) -> tuple[DimLayout, DimLayout]:
    """Groups to shards by row count (LPT); rows follow their group, and within a shard they are sorted by
    their group's slot (in their original order within a group), so that a gather `a[g]` on a shard reads
    `a` in order and its transpose adds contiguous runs. `counts`: rows per group; `index`: the index
    column (values, or their ParquetSource), read only where a shard's rows are wanted. Returns (group, row)
    layouts; the row layout has no table (`Route`)."""
    counts = np.asarray(counts, dtype=np.int64)
    glay, gslot, owner = group_slots(group, counts, shards)
    rcount = np.bincount(owner, weights=counts, minlength=shards).astype(np.int64)
    rlocal = lanes(max(1, int(rcount.max())))
    route = Route(gslot, glay.local, index)
    return glay, DimLayout(row, int(counts.sum()), shards, rlocal, rcount, route=route)


def group_layout(group: str, row: str, idx: np.ndarray, groups: int, shards: int) -> tuple[DimLayout, DimLayout]:
    """`routed_layout` of an index column in memory (its rows per group counted here)."""
    idx = np.asarray(idx)
    return routed_layout(group, row, np.bincount(_ints(idx.ravel()), minlength=groups), idx, shards)


def group_sizes(group: str, row: str, counts: np.ndarray | None, groups: int, rows: int,
                shards: int) -> tuple[DimLayout, DimLayout]:
    """Sizes only (abstract data): LPT on given row counts per group, else uniform groups."""
    if counts is None:
        counts = np.full(groups, rows // max(groups, 1), dtype=np.int64)
        counts[: rows - counts.sum()] += 1
    owner = lpt_owner(np.asarray(counts, dtype=np.int64), shards)
    gcount = np.bincount(owner, minlength=shards)
    rcount = np.bincount(owner, weights=counts, minlength=shards).astype(np.int64)
    return (DimLayout(group, groups, shards, lanes(max(1, int(gcount.max()))), gcount),
            DimLayout(row, rows, shards, lanes(max(1, int(rcount.max()))), rcount))
