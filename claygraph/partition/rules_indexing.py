"""Indexing: gather (`a[g]`) and scatter.

    a: S(group), g: S(row), rows co-partitioned with groups -> S(row)   indices made local
    a: R,        g: S(row)                                  -> S(row)   (row split: a replicated)
    a: S(d) on a sliced (not indexed) axis, g: R            -> S(d)     (feature split: W[g])
    a: R,        g: R                                       -> R
Anything else gathers `a` to every shard first.
"""
from __future__ import annotations

from claygraph.ir.dims import gather_axes
from claygraph.partition.local_params import local_slice_sizes
from claygraph.partition.registry import Decision, Linearity, fallback, rule
from claygraph.partition.shardings import REPLICATED, Partial, Sharded


def _simple(node, operand, indices) -> int | None:
    """The indexed operand axis for the one-index-per-row pattern, else None."""
    dn = node.params["dimension_numbers"]
    if len(dn.start_index_map) != 1 or indices.shape[-1] != 1 or getattr(dn, "operand_batching_dims", ()):
        return None
    k = dn.start_index_map[0]
    return k if k in dn.collapsed_slice_dims else None


@rule("gather", linearity=Linearity.FIRST, local_params=local_slice_sizes, family="gather")
def gather(node, ins, shs, outs, ctx):
    operand, indices = ins
    so, si = shs
    k = _simple(node, operand, indices)
    if k is None or isinstance(so, Partial) or isinstance(si, Partial):
        return fallback(node, ins, outs, ctx, "gather outside the one-index-per-row pattern")
    laid_k = ctx.laid_out(operand.dims[k])
    if laid_k != (indices.id in ctx.remapped):  # ids and operand must be in the same layout
        return fallback(node, ins, outs, ctx, "gather with computed indices into a split axis")
    batch, offset, _ = gather_axes(node, operand, indices, outs[0])
    if isinstance(so, Sharded) and operand.axis_of(so.dim) == k:
        if isinstance(si, Sharded) and ctx.split.copartitioned(si.dim, so.dim):
            return Decision((so, si), (si,), local_offset=True)
        return Decision((REPLICATED, si), (si,) if isinstance(si, Sharded) else (REPLICATED,),
                        note="operand gathered: indices not co-partitioned")
    if isinstance(so, Sharded):
        if isinstance(si, Sharded):
            return Decision((REPLICATED, si), (si,), note="operand gathered: indices split differently")
        return Decision((so, REPLICATED), (so,))
    return Decision((REPLICATED, si), (si,) if isinstance(si, Sharded) else (REPLICATED,))


@rule("scatter-add", "scatter_add", "scatter", "scatter-mul", "scatter_mul", family="scatter")
def scatter(node, ins, shs, outs, ctx):
    return fallback(node, ins, outs, ctx, f"{node.primitive} runs replicated")
