"""Data layout per shard: which user index sits in which internal slot, for every split dim.

Shard s owns slots [s*local, (s+1)*local); its first counts[s] slots are real, the rest padding.
A row split cuts rows into equal blocks; a group split assigns groups to shards by row count
(longest-processing-time greedy) and routes every row to its group's shard, and pads each shard to
a whole number of LANES. The kernels are
numba loops, linear in rows (groups are sorted once by size).
"""
from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np

# A group split's shards are padded to a whole number of LANES entries: XLA's CPU loops run an
# elementwise fusion over a length that is not a multiple of the vector width several times slower
# (a Poisson log-likelihood's lgamma over 150,000 float32: 0.9 ms; over 150,007: 6.0 ms; 1,000,000:
# 5.2 ms, 1,000,003: 60 ms, on 2 cores). 16 float32 are one 512-bit vector.
LANES = 16


def lanes(n: int) -> int:
    """`n` rounded up to a whole number of LANES."""
    return -(-n // LANES) * LANES


@dataclass(frozen=True, slots=True, eq=False)
class DimLayout:
    dim: str
    size: int
    shards: int
    local: int
    counts: np.ndarray  # (shards,) real entries per shard
    table: np.ndarray | None = None  # (shards*local,) user index per slot, -1 for padding (group splits)
    # equal blocks in order: slot i holds entry i, padding at the end. No table is stored (one would
    # take 8 bytes per row); `slots` computes it where it is needed
    blocked: bool = False

    @property
    def internal(self) -> int:
        return self.shards * self.local

    @property
    def slots(self) -> np.ndarray | None:
        """(shards*local,) user index per slot, -1 for padding; None for sizes only (abstract data)."""
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
        s = self.table
        return self.internal == self.size and s is not None and bool(np.all(s[1:] > s[:-1])) \
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


@numba.njit(cache=True)
def _gather_keys(owner: np.ndarray, idx: np.ndarray) -> np.ndarray:
    out = np.empty(idx.shape[0], dtype=np.int64)
    for i in range(idx.shape[0]):
        out[i] = owner[idx[i]]
    return out


def lpt_owner(counts: np.ndarray, shards: int) -> np.ndarray:
    order = np.argsort(-counts, kind="stable").astype(np.int64)
    return lpt_assign(counts.astype(np.int64), order, shards)


def group_layout(group: str, row: str, idx: np.ndarray, groups: int, shards: int) -> tuple[DimLayout, DimLayout]:
    """Groups to shards by row count (LPT); rows follow their group, and within a shard they are sorted by
    their group's slot (in their original order within a group), so that a gather `a[g]` on a shard reads
    `a` in order and its transpose adds contiguous runs. Returns (group, row) layouts."""
    idx = np.asarray(idx, dtype=np.int64)
    owner = lpt_owner(np.bincount(idx, minlength=groups), shards)
    gcount, gpos = bucket(owner, shards)
    glocal = lanes(max(1, int(gcount.max())))
    gslots = scatter_slots(gpos, gcount, glocal)
    gslot = np.empty(groups, dtype=np.int64)  # the internal slot of every group
    real = gslots >= 0
    gslot[gslots[real]] = np.flatnonzero(real)
    # a counting sort of the rows by their group's slot: the shards' slots are in shard order, so the
    # rows come out by shard, and by group within a shard
    _, rpos = bucket(_gather_keys(gslot, idx), shards * glocal)
    rcount = np.bincount(_gather_keys(owner, idx), minlength=shards).astype(np.int64)
    rlocal = lanes(max(1, int(rcount.max())))
    return (DimLayout(group, groups, shards, glocal, gcount, gslots),
            DimLayout(row, idx.shape[0], shards, rlocal, rcount, scatter_slots(rpos, rcount, rlocal)))


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
