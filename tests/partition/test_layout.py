"""Data layout per shard (claygraph/partition/layout.py): slot tables, the group split's LPT assignment,
and the sizes-only layouts used for abstract data."""
from __future__ import annotations

import itertools
import math
import tracemalloc

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from models_for_tests import GROUP_KINDS, group_column

from claygraph.partition.layout import block_layout, block_sizes, group_layout, group_sizes, lanes, lpt_owner


@st.composite
def grouped_rows(draw, max_rows=200, max_groups=30, max_shards=8):
    """(row -> group ids, groups, shards), uniform or skewed or with groups that have no rows."""
    groups = draw(st.integers(1, max_groups), label="groups")
    rows = draw(st.integers(1, max_rows), label="rows")
    kind = draw(st.sampled_from(GROUP_KINDS), label="kind")
    seed = draw(st.integers(0, 2**16), label="seed")
    shards = draw(st.integers(1, max_shards), label="shards")
    return group_column(np.random.default_rng(seed), rows, groups, kind).astype(np.int64), groups, shards


def blocks(lay):
    return lay.slots.reshape(lay.shards, lay.local)


def check_slot_table(lay):
    """Shard s owns slots [s*local, (s+1)*local): its first counts[s] are real, then padding (-1)."""
    b = blocks(lay)
    most = max(1, int(lay.counts.max()))
    assert lay.local == (most if lay.blocked else lanes(most))  # a group split's: whole vectors (layout.LANES)
    assert np.array_equal((b >= 0).sum(axis=1), lay.counts)
    for s in range(lay.shards):
        assert np.all(b[s, : lay.counts[s]] >= 0) and np.all(b[s, lay.counts[s]:] == -1)
    real = lay.slots[lay.slots >= 0]
    assert np.array_equal(np.sort(real), np.arange(lay.size))  # every entry in exactly one slot
    assert np.array_equal(lay.pad_mask(), lay.slots >= 0)
    assert lay.padded == bool(np.any(lay.counts < lay.local))
    inv = lay.inverse()
    assert np.array_equal(lay.slots[inv], np.arange(lay.size))  # inverse() undoes the slot table
    fill = lay.fill_slots()
    assert np.array_equal(fill[lay.slots >= 0], real)  # real slots keep their entry
    fb = fill.reshape(lay.shards, lay.local)
    for s in range(lay.shards):  # padding copies a real entry of its own shard (entry 0 if it has none)
        pads = fb[s, lay.counts[s]:]
        if lay.counts[s]:
            assert np.all(np.isin(pads, b[s, : lay.counts[s]]))
        else:
            assert np.all((0 <= pads) & (pads < max(lay.size, 1)))


@settings(max_examples=200)
@given(grouped_rows())
def test_group_layout_routes_every_row_to_its_groups_shard(case):
    idx, groups, shards = case
    glay, rlay = group_layout("group", "row", idx, groups, shards)
    assert (glay.shards, rlay.shards, glay.size, rlay.size) == (shards, shards, groups, idx.size)
    check_slot_table(glay)
    check_slot_table(rlay)
    owner = np.empty(groups, np.int64)
    owner[glay.slots[glay.slots >= 0]] = np.flatnonzero(glay.slots >= 0) // glay.local
    row_shard = rlay.inverse() // rlay.local
    assert np.array_equal(row_shard, owner[idx])  # rows follow their group: no group is split
    loads = np.bincount(owner, weights=np.bincount(idx, minlength=groups), minlength=shards)
    assert np.array_equal(loads, rlay.counts)
    # within a shard the rows are sorted by their group's slot, padding included (it copies the last
    # real row), and a group's rows keep their original order
    gslot = glay.inverse()
    fill = rlay.fill_slots().reshape(shards, rlay.local)
    for s in range(shards):
        if rlay.counts[s]:
            assert np.all(np.diff(gslot[idx[fill[s]]]) >= 0)
            real = fill[s, : rlay.counts[s]]
            keys = gslot[idx[real]]
            assert all(np.all(np.diff(real[keys == k]) > 0) for k in np.unique(keys))
        assert np.array_equal(rlay.shard_fill_slots(s), fill[s])


@settings(max_examples=200)
@given(grouped_rows())
def test_lpt_max_load_is_within_one_group_of_the_mean(case):
    idx, groups, shards = case
    _, rlay = group_layout("group", "row", idx, groups, shards)
    counts = np.bincount(idx, minlength=groups)
    assert rlay.counts.max() <= idx.size / shards + counts.max()


@settings(max_examples=150)
@given(counts=st.lists(st.integers(0, 50), min_size=1, max_size=7), shards=st.integers(1, 3))
def test_lpt_is_within_four_thirds_of_the_best_assignment(counts, shards):
    counts = np.asarray(counts, np.int64)
    owner = lpt_owner(counts, shards)
    assert owner.min() >= 0 and owner.max() < shards
    lpt = np.bincount(owner, weights=counts, minlength=shards).max()
    best = min(np.bincount(a, weights=counts, minlength=shards).max()
               for a in map(np.array, itertools.product(range(shards), repeat=len(counts))))
    assert lpt <= (4 / 3 - 1 / (3 * shards)) * best + 1e-9


@settings(max_examples=100)
@given(grouped_rows())
def test_sizes_only_layout_matches_the_concrete_one(case):
    """Planning on abstract data with the true row counts sees the shapes the program will have."""
    idx, groups, shards = case
    glay, rlay = group_layout("group", "row", idx, groups, shards)
    gsz, rsz = group_sizes("group", "row", np.bincount(idx, minlength=groups), groups, idx.size, shards)
    assert (gsz.local, rsz.local) == (glay.local, rlay.local)
    assert np.array_equal(gsz.counts, glay.counts) and np.array_equal(rsz.counts, rlay.counts)


@settings(max_examples=100)
@given(groups=st.integers(1, 1000), rows=st.integers(0, 10_000), shards=st.integers(1, 16))
def test_uniform_group_sizes_spread_rows_evenly(groups, rows, shards):
    gsz, rsz = group_sizes("group", "row", None, groups, rows, shards)
    assert rsz.counts.sum() == rows and gsz.counts.sum() == groups
    per_group = math.ceil(rows / groups)
    assert rsz.counts.max() <= rows / shards + per_group


@settings(max_examples=200)
@given(size=st.integers(1, 500), shards=st.integers(1, 16))
def test_block_layout(size, shards):
    lay = block_layout("row", size, shards)
    check_slot_table(lay)
    assert lay.local == math.ceil(size / shards)
    real = lay.slots[lay.slots >= 0]
    assert np.array_equal(real, np.arange(size))  # blocks keep the user's order
    sizes = block_sizes("row", size, shards)
    assert sizes.local == lay.local and np.array_equal(sizes.counts, lay.counts) and sizes.slots is None


def test_skewed_groups_example():
    """Hand-checked: 700/100/100/50/50 rows over 4 shards -> loads 700, 100, 100, 100."""
    idx = np.repeat(np.arange(5), [700, 100, 100, 50, 50])
    glay, rlay = group_layout("group", "row", idx, 5, 4)
    assert sorted(rlay.counts.tolist()) == [100, 100, 100, 700]
    assert rlay.local == 704 and rlay.internal == 2816  # 700 rows padded to whole vectors of 16
    assert glay.counts.tolist() == [1, 1, 1, 2]


def test_block_sizes_does_not_materialise_a_slot_table():
    tracemalloc.start()
    try:
        lay = block_sizes("row", 20_000_000, 8)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lay.local == 2_500_000
    assert peak < 1_000_000, f"{peak / 1e6:.0f} MB allocated to size a row split"


def test_groups_without_rows_are_spread_over_shards():
    groups, shards = 1000, 4
    idx = np.repeat(np.arange(100), 10)  # 100 groups with 10 rows each, 900 groups with none
    glay, rlay = group_layout("group", "row", idx, groups, shards)
    assert rlay.counts.tolist() == [250, 250, 250, 250]
    assert glay.counts.max() <= math.ceil(groups / shards) + 1, glay.counts.tolist()
