"""Control flow: `scan` (lax.scan, numpyro's contrib scan, fori_loop with a fixed trip count).

    scan(R, ..., R)                            -> R          runs as written on every shard
    scan with any split or partial operand     -> user layout: operands made whole, the scan runs
                                                  whole on every shard, results laid out again

A scan's steps run one after another, so the scanned axis is never cut; its body is not split
either (a body that sums over a split axis would need collectives inside the loop). Both cases
are the fallback, and the plan's note says which one it is.
"""
from __future__ import annotations

import numpy as np

from claygraph.partition.registry import Decision, fallback, rule
from claygraph.partition.shardings import REPLICATED


def body_flops(jaxpr) -> float:
    """One FLOP per element each equation of a body makes, nested scans times their length."""
    total = 0.0
    for eqn in jaxpr.eqns:
        inner = eqn.params.get("jaxpr")
        if eqn.primitive.name == "scan":
            total += eqn.params["length"] * body_flops(inner.jaxpr)
        elif inner is not None and hasattr(inner, "jaxpr"):  # an inlined call (pjit)
            total += body_flops(inner.jaxpr)
        else:
            total += sum(float(np.prod(v.aval.shape, dtype=np.float64)) for v in eqn.outvars)
    return total


def scan_flops(node, ins, outs) -> float:
    return node.params["length"] * body_flops(node.params["jaxpr"].jaxpr)


def _scanned_split_dim(node, ins, outs, ctx) -> str | None:
    """The split dim along the scanned axis (axis 0 of the scanned inputs and stacked outputs)."""
    first = node.params["num_consts"] + node.params["num_carry"]
    stacked = [*ins[first:], *outs[node.params["num_carry"]:]]
    return next((v.dims[0] for v in stacked if v.ndim and ctx.laid_out(v.dims[0])), None)


@rule("scan", flops=scan_flops)
def scan(node, ins, shs, outs, ctx):
    if all(s == REPLICATED for s in shs) and not any(map(ctx.touches_layout, (*ins, *outs))) \
            and not any(v.id in ctx.remapped for v in ins):
        return Decision(tuple(shs), tuple(REPLICATED for _ in outs))
    d = _scanned_split_dim(node, ins, outs, ctx)
    if d is not None:
        return fallback(node, ins, outs, ctx, f"scan runs its steps in order along split dim {d!r}: computed "
                                              f"whole on every shard, in the user's layout")
    return fallback(node, ins, outs, ctx, "scan's body is not split: its operands are made whole and it runs on "
                                          "every shard")
