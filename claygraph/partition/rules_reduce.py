"""Reductions and scans.

    reduce_sum over S(d)'s axis -> P(sum)    padding masked to 0
    reduce_max over S(d)'s axis -> P(max)    padding masked to -inf (min: +inf)
    reduce over other axes      -> same sharding
    reduce_sum(P)               -> P         (linear)
    cumsum/sort/argmax along a split axis -> user layout (order matters there)
"""
from __future__ import annotations

import numpy as np

from claygraph.partition.registry import Decision, Linearity, Mask, fallback, per_input, rule
from claygraph.partition.shardings import PARTIAL_SUM, REPLICATED, Partial, Sharded

IDENTITY = {"reduce_sum": 0.0, "reduce_max": -np.inf, "reduce_min": np.inf}
PARTIAL_OF = {"reduce_sum": PARTIAL_SUM, "reduce_max": Partial("max"), "reduce_min": Partial("min")}


def _masks(src, axes, ctx, fill):
    return tuple(Mask(0, i, src.dims[i], fill) for i in axes if src.dims[i] in ctx.padded)


@rule("reduce_sum", linearity=Linearity.JOINT, flops=per_input, family="reduce")
@rule("reduce_max", extremum=frozenset({"max"}), flops=per_input, family="reduce")
@rule("reduce_min", extremum=frozenset({"min"}), flops=per_input, family="reduce")
def reduce(node, ins, shs, outs, ctx):
    src, s, p = ins[0], shs[0], node.primitive
    axes = tuple(node.params["axes"])
    if not np.issubdtype(src.dtype, np.inexact) and p != "reduce_sum":
        fill = np.iinfo(src.dtype).min if p == "reduce_max" else np.iinfo(src.dtype).max
    else:
        fill = IDENTITY[p]
    masks = _masks(src, axes, ctx, fill)
    if isinstance(s, Partial):
        if s == PARTIAL_OF[p]:
            return Decision((s,), (s,), masks)
        return Decision((REPLICATED,), (REPLICATED,), masks)
    if isinstance(s, Sharded) and src.axis_of(s.dim) in axes:
        return Decision((s,), (PARTIAL_OF[p],), masks)
    return Decision((s,), (s,), masks)


@rule("reduce_prod", "reduce_and", "reduce_or", "argmax", "argmin", "reduce_xor", flops=per_input, family="reduce")
def reduce_ordered(node, ins, shs, outs, ctx):
    src, s = ins[0], shs[0]
    axes = set(node.params["axes"])
    if any(ctx.laid_out(src.dims[i]) for i in axes) or isinstance(s, Partial):
        return fallback(node, ins, outs, ctx, f"{node.primitive} over a split axis")
    return Decision((s,), (s,))


@rule("cumsum", linearity=Linearity.JOINT, flops=per_input, family="reduce")
@rule("cumprod", "cummax", "cummin", "cumlogsumexp", "sort", flops=per_input, family="reduce")
def scan_like(node, ins, shs, outs, ctx):
    src = ins[0]
    axis = node.params.get("axis", node.params.get("dimension"))
    if ctx.laid_out(src.dims[axis]) or any(isinstance(s, Partial) for s in shs) or len(set(shs)) != 1:
        return fallback(node, ins, outs, ctx, f"{node.primitive} along a split axis")
    return Decision(tuple(shs), tuple(shs[0] for _ in outs))
