"""dot_general, written as einsum-style cases on the dim `d` that is split:

    (.., d) x (d, ..)  contracting -> P(sum)   padding masked to 0 on the lhs
    (d, ..) x (..)     free        -> S(d)
    (d, ..) x (d, ..)  batch       -> S(d)
    P x R / R x P                  -> P        (bilinear: linear in each operand)
"""
from __future__ import annotations

import numpy as np

from claygraph.partition.registry import Decision, Linearity, Mask, fallback, rule
from claygraph.partition.shardings import PARTIAL_SUM, REPLICATED, Partial, Sharded


def _padding_masks(lhs, contract, ctx):
    return tuple(Mask(0, i, lhs.dims[i], 0.0) for i in contract if lhs.dims[i] in ctx.padded)


def dot_flops(node, ins, outs) -> float:
    """2 x output size x contracted size."""
    (lc, _), _ = node.params["dimension_numbers"]
    contract = np.prod([ins[0][i] for i in lc], dtype=np.float64)
    return 2.0 * float(np.prod(outs[0], dtype=np.float64)) * contract


@rule("dot_general", linearity=Linearity.EACH, flops=dot_flops, family="matmul")
def dot_general(node, ins, shs, outs, ctx):
    lhs, rhs = ins
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    masks = _padding_masks(lhs, lc, ctx)
    if any(isinstance(s, Partial) for s in shs):
        if PARTIAL_SUM in shs and REPLICATED in shs:
            return Decision(tuple(shs), (PARTIAL_SUM,), masks)
        return Decision((REPLICATED, REPLICATED), (REPLICATED,), masks)
    dims = {s.dim for s in shs if isinstance(s, Sharded)}
    if not dims:
        return Decision((REPLICATED, REPLICATED), (REPLICATED,), masks)
    if len(dims) > 1:
        return fallback(node, ins, outs, ctx, f"dot_general of values split along {sorted(dims)}")
    (d,) = dims
    il, ir = lhs.axis_of(d), rhs.axis_of(d)
    req = (Sharded(d) if il is not None else REPLICATED, Sharded(d) if ir is not None else REPLICATED)
    if il is not None and ir is not None and il in lc and rc[list(lc).index(il)] == ir:
        return Decision(req, (PARTIAL_SUM,), masks)
    if (il is None or il not in lc) and (ir is None or ir not in rc):
        return Decision(req, (Sharded(d),), masks)
    return fallback(node, ins, outs, ctx, "dot_general contracts a split axis against an unsplit one")
