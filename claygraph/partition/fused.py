"""Fused loss-and-gradient: each row block of the data is read once for the value and the gradient.

XLA evaluates `value_and_grad` of `sum_i f(x_i . w)` in two passes over X: X @ w forward, then
X^T r backward, each reading all of X from memory. When the potential is a sum over the rows of
one data dim (the row split needs no collective but the final psum, and no parameter has that
dim), the same program can run on blocks of rows that fit in cache: each block's value and
gradient are computed together (X_b read once), added up over blocks, then over shards.

`fused_potential` wraps that as a `jax.custom_jvp` function: value-only calls run the blocked value
pass, any derivative (reverse or forward mode, so also Hessians) uses the fused value-and-gradient,
whose tangent is <grad, dparams>. The block values are added with a compensated (two-sum)
accumulator, so that the float32 objective of a large sum is rounded once, not once per block.
"""
from __future__ import annotations

import ctypes
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from claygraph.ir.graph import Graph
from claygraph.partition.blocks import (  # noqa: F401 - Blocking, MIN_BLOCKS and separable are part of fused's API
    BLOCK_BYTES,
    MIN_BLOCKS,
    Blocking,
    blocking,
    group_separable,
    held_param_bytes,
    host_share,
    once_per_shard,
    row_split_of,
    separable,
)
from claygraph.partition.emit import AXIS, _Local
from claygraph.partition.layout import DimLayout
from claygraph.partition.shardings import Split
from claygraph.partition.storage import key as stored_key


def row_split(graph: Graph) -> Split | None:
    """The dim split over the data dim holding the most bytes (where blocking saves the most reads)."""
    from claygraph.partition.plan import enumerate_splits

    return row_split_of(graph, enumerate_splits(graph)[0])


def _block_layout(dim: str, rows: int, shards: int) -> dict[str, DimLayout]:
    """Equal blocks without padding: sizes only (no slot table; nothing here moves rows)."""
    return {dim: DimLayout(dim, rows * shards, shards, rows, np.full(shards, rows, dtype=np.int64))}


def _two_sum(hi, lo, x):
    """(hi, lo) + x with the rounding error of the addition kept in lo (Knuth's TwoSum)."""
    s = hi + x
    bb = s - hi
    err = (hi - (s - bb)) + (x - bb)
    return s, lo + err


class _BlockLocal(_Local):
    """The shard-local interpreter on one row block: partial sums that do not depend on the rows
    (`gated`, blocks.once_per_shard) count in the shard's first block only."""

    def __init__(self, graph: Graph, prop, layout, consts, index, gated: frozenset[int], first,
                 stored: frozenset[str] = frozenset()):
        super().__init__(graph, prop, layout, consts, index=index, stored=stored)
        self.gated, self.first = gated, first

    def run_node(self, node, args, d):
        outs = super().run_node(node, args, d)
        if node.id in self.gated:
            outs = [jnp.where(self.first, y, jnp.zeros_like(y)) for y in outs]
        return outs


class FusedPotential:
    """The blocked value pass and the fused value-and-gradient pass of one split program, as shard_maps.

    `layouts`: the layout a full block runs under and the tail block's (None without a tail): the
    blocked dim's layout counts every block of every shard as one shard of its own (block i of shard
    s is number s*(blocks+1)+i), so that masks and the add-once rule see a block's real rows; other
    split dims (a group split's groups) keep the shard's layout. Parameters sharded along those dims
    stay sharded; the gradients of replicated ones are all-reduced once."""

    def __init__(self, graph: Graph, prop, blk: Blocking, mesh: Mesh, param_specs, data_specs,
                 layouts: tuple, gated: frozenset[int] = frozenset(), stored: frozenset[str] = frozenset()):
        self.g, self.prop, self.blk, self.gated, self.stored = graph, prop, blk, gated, stored
        self.axes = {k: _axis_of(graph, v, blk.dim) for k, v in graph.inputs.data.items()}
        # an array held feature-major (claygraph.partition.storage) has its rows on its last axis
        self.transposed = {stored_key(k): k for k in stored}
        self.full, self.tail = layouts
        self.replicated = frozenset(k for k, s in param_specs.items() if s == P())
        self.value = jax.shard_map(self._local_value, mesh=mesh, in_specs=(param_specs, data_specs), out_specs=P())
        self.value_and_grad = jax.shard_map(self._local_vg, mesh=mesh, in_specs=(param_specs, data_specs),
                                            out_specs=(P(), dict(param_specs)))

    def _block(self, data: Mapping[str, Any], start, rows: int) -> dict[str, Any]:
        return {k: self._rows(k, x, start, rows) for k, x in data.items()}

    def _rows(self, name: str, x, start, rows: int):
        if name in self.transposed:
            axis = self.axes[self.transposed[name]]
            return x if axis is None else lax.dynamic_slice_in_dim(x, start, rows, axis=x.ndim - 1 - axis)
        axis, shape = self.axes[name], self.g.value(self.g.inputs.data[name]).shape
        if axis is None:
            return x
        # in place on the host (see in_place, one device): flat, the array starting `off` elements in. A
        # shard's block of a split array is shorter than the whole; an in-place one is longer (or flat)
        flat = x.ndim != len(shape) or x.shape[0] > shape[0]
        if not flat:
            return lax.dynamic_slice_in_dim(x, start, rows, axis=axis)
        off, row = x.shape[0] - int(np.prod(shape)), int(np.prod(shape[1:]))
        return lax.dynamic_slice_in_dim(x, off + start * row, rows * row).reshape((rows, *shape[1:]))

    def _partial(self, layout, params, data, index):
        dim, per_shard = self.blk.dim, self.blk.blocks + 1

        def position(d=None):  # the block's number along the blocked dim; the shard's along the others
            return index if d is None or d == dim else lax.axis_index(AXIS)

        local = _BlockLocal(self.g, self.prop, layout, self.g.consts, position, self.gated, index % per_shard == 0,
                            self.stored)
        out, _ = local.run(params, data)
        return out

    def _blocks(self, params, data, one: Callable, zero):
        """Sum of one(layout, params, block data, block index) over this shard's blocks, compensated."""
        b = self.blk
        first = lax.axis_index(AXIS) * (b.blocks + 1)

        def body(i, carry):
            acc, lo = carry
            out = one(self.full, params, self._block(data, i * b.rows, b.rows), first + i)
            v, rest = out if isinstance(out, tuple) else (out, None)
            hi, lo = _two_sum(acc[0], lo, v)
            return (hi, rest if rest is None else jax.tree.map(jnp.add, acc[1], rest)), lo

        (acc, lo) = lax.fori_loop(0, b.blocks, body, (zero, jnp.zeros_like(zero[0])))
        if self.tail is not None:
            out = one(self.tail, params, self._block(data, b.blocks * b.rows, b.tail), first + b.blocks)
            v, rest = out if isinstance(out, tuple) else (out, None)
            hi, lo = _two_sum(acc[0], lo, v)
            acc = (hi, rest if rest is None else jax.tree.map(jnp.add, acc[1], rest))
        return acc[0] + lo, acc[1]

    def _varying(self, params):
        """Replicated parameters as per-shard copies: their per-block gradients stay local until the one psum."""
        return {k: lax.pcast(x, AXIS, to="varying") if k in self.replicated else x for k, x in params.items()}

    def _local_value(self, params, data):
        params = self._varying(params)
        zero = (_varying(jnp.zeros((), self.g.value(self.g.output).dtype)), None)
        v, _ = self._blocks(params, data, lambda lay, p, d, i: self._partial(lay, p, d, i), zero)
        return lax.psum(v, AXIS)

    def _local_vg(self, params, data):
        params = self._varying(params)
        zero = (_varying(jnp.zeros((), self.g.value(self.g.output).dtype)), jax.tree.map(jnp.zeros_like, params))

        def one(lay, p, d, i):
            return jax.value_and_grad(lambda q: self._partial(lay, q, d, i))(p)

        v, g = self._blocks(params, data, one, zero)
        return lax.psum(v, AXIS), {k: lax.psum(x, AXIS) if k in self.replicated else x for k, x in g.items()}


def _varying(x):
    return lax.pcast(x, AXIS, to="varying")


def _axis_of(graph: Graph, vid: int, dim: str) -> int | None:
    v = graph.value(vid)
    return v.axis_of(dim) if dim in v.dims else None


def fused_potential(graph: Graph, candidate, mesh: Mesh, param_specs, data_specs,
                    stored: frozenset[str] = frozenset()) -> Callable | None:
    """The potential `(params in the internal layout, internal data) -> scalar` with fused derivatives,
    or None where the model is not a sum over row blocks (then the plain program is used). Row blocks
    are sized to a CPU's cache: a program on GPUs runs whole (claygraph.partition.gpu)."""
    if np.ravel(mesh.devices)[0].platform != "cpu":
        return None
    if candidate.split.kind == "group":
        return _group_fused(graph, candidate, mesh, param_specs, data_specs, stored)
    from claygraph.partition.cluster import ClusterSpec
    from claygraph.partition.plan import candidate_with_layout

    split, layout = candidate.split, candidate.layout
    shards = int(mesh.devices.size)
    rows = row_split(graph)
    if rows is None or (split.dims and split.dims != rows.dims) or (not split.dims and shards != 1):
        return None
    dim = next(iter(rows.dims))
    size = graph.dims[dim]
    if size % shards:
        return None  # padded shards: the plain program masks them
    if split.dims:
        lay = layout[dim]
        if lay.internal != lay.size:
            return None
    # (the candidate's propagation is what this needs, not its cost: no profile is read for it)
    cand = candidate_with_layout(graph, rows, _block_layout(dim, size // shards, shards),
                                 ClusterSpec.built_in(shards), shards)
    if not separable(graph, cand.propagation, dim):
        return None
    # this module's BLOCK_BYTES (tests patch it), shared by the node's devices
    whole = lambda v, s: v.shape  # noqa: E731 - no parameter has the row dim: each shard holds them whole
    blk = blocking(graph, dim, size // shards, shards, host_share(BLOCK_BYTES, candidate.host_devices),
                   held_param_bytes(graph, cand.propagation, whole))
    if blk is None:
        return None
    every = shards * (blk.blocks + 1)
    layouts = (_block_layout(dim, blk.rows, every), _block_layout(dim, blk.tail, every) if blk.tail else None)
    return _with_fused_derivative(FusedPotential(graph, cand.propagation, blk, mesh, param_specs, data_specs,
                                                 layouts, stored=stored))


def _group_fused(graph: Graph, candidate, mesh: Mesh, param_specs, data_specs,
                 stored: frozenset[str]) -> Callable | None:
    """A group split's shards run in row blocks: each block's rows gather from the shard's groups."""
    rows = next((r for r, _ in candidate.split.copartition), None)
    prop, shards = candidate.propagation, int(mesh.devices.size)
    if rows is None or not group_separable(graph, prop, rows):
        return None
    lay = candidate.layout[rows]
    from claygraph.partition.plan import shape_fn

    blk = blocking(graph, rows, lay.local, shards, host_share(BLOCK_BYTES, candidate.host_devices),
                   held_param_bytes(graph, prop, shape_fn(candidate.layout)))
    if blk is None:
        return None
    layouts = (dict(candidate.layout, **{rows: _blocks_of(lay, blk, blk.rows)}),
               dict(candidate.layout, **{rows: _blocks_of(lay, blk, blk.tail)})
               if blk.tail else None)
    return _with_fused_derivative(FusedPotential(graph, prop, blk, mesh, param_specs, data_specs, layouts,
                                                 once_per_shard(graph, prop, rows), stored))


def _blocks_of(lay: DimLayout, blk: Blocking, rows: int) -> DimLayout:
    """`lay`'s shards cut in blocks of `rows` (the full blocks' or the tail's), each block one shard of
    the result, sizes only: block i of shard s is number s*(blocks+1)+i and starts at row i*blk.rows of
    the shard; its real rows are what is left of the shard's there (padding sits at a shard's end)."""
    per = blk.blocks + 1
    real = np.repeat(lay.counts, per) - np.arange(lay.shards * per) % per * blk.rows
    return DimLayout(lay.dim, lay.size, lay.shards * per, rows, np.clip(real, 0, rows).astype(np.int64))


def _with_fused_derivative(fp: FusedPotential) -> Callable:
    @jax.custom_jvp
    def potential(params, data):
        return fp.value(params, data)

    @potential.defjvp
    def _jvp(primals, tangents):
        params, data = primals
        dparams = tangents[0]
        value, grad = fp.value_and_grad(params, data)
        dot = sum((jnp.vdot(grad[k], dparams[k]) for k in grad), jnp.zeros((), value.dtype))
        return value, dot.astype(value.dtype)

    potential.fused = fp.blk
    return potential



# Smaller arrays are copied to the device. The offset of an in-place view is part of its shape, so each of
# the (at most 64 / itemsize) offsets compiles once: arrays made afresh at every fit (the estimators' y)
# would recompile, while copying them costs little.
IN_PLACE_BYTES = 16 << 20


def in_place(x: np.ndarray) -> np.ndarray:
    """`x`, or a view XLA's CPU client can use in place instead of copying.

    XLA uses host memory without a copy only at 64-byte alignment; NumPy allocates at 16. The view is
    flat and starts at the 64-byte boundary just before `x` (in the same memory page; XLA never writes
    it), so that its first `off` elements precede x: the fused blocks read rows from `off` on.
    """
    ptr = x.ctypes.data
    off = ptr % 64
    if off == 0 or off % x.itemsize:
        return x
    raw = (ctypes.c_byte * (x.nbytes + off)).from_address(ptr - off)
    # the memory's owner hangs on `raw`, the buffer at the end of every view's chain of bases: JAX keeps some
    # array derived from the one returned (not that one itself) while its device array lives, and x must
    # outlive that array (else XLA reads freed memory)
    raw._owner = x
    return np.frombuffer(raw, dtype=x.dtype)


def host_arrays(fn: Callable, graph: Graph, internal: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, Any]:
    """What to hand to device_put: large row-major arrays of a fused one-device CPU program in place."""
    blk = getattr(fn, "fused", None)
    if blk is None or mesh.devices.size != 1 or np.ravel(mesh.devices)[0].platform != "cpu":
        return dict(internal)
    out = {}
    for k, x in internal.items():
        v = graph.value(graph.inputs.data[k])
        ok = v.dims[:1] == (blk.dim,) and x.flags.c_contiguous and x.nbytes >= IN_PLACE_BYTES
        out[k] = in_place(x) if ok else x
    return out
