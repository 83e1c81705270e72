"""Elementwise families: same-shape operands (scalars broadcast), one output of that shape.

    S(d) op R        -> S(d)      (a replicated operand of full shape is sliced locally)
    P op P, P op R   -> P         for add/sub  (R becomes P by keeping it on shard 0 only)
    P * R, P / R     -> P         linear in the partial operand
    f(P)             -> f(psum P) anything else non-linear makes the partial whole first
"""
from __future__ import annotations

from claygraph.ir.dims import ELEMENTWISE
from claygraph.partition.registry import Decision, RuleCtx, fallback, is_float, rule
from claygraph.partition.shardings import PARTIAL_SUM, REPLICATED, Partial, Sharded

LINEAR_SUM = {"add", "sub", "add_any"}
LINEAR_UNARY = {"neg", "convert_element_type", "copy", "copy_p", "reduce_precision", "stop_gradient", "real"}


def _sharded_rule(node, ins, shs, outs, ctx, dims):
    if len(dims) > 1:
        return fallback(node, ins, outs, ctx, f"{node.primitive} combines values split along {sorted(dims)}")
    (d,) = dims
    if any(o.axis_of(d) is None for o in outs):
        return fallback(node, ins, outs, ctx, f"{node.primitive}: the output has no axis named {d!r}")
    # size-1 axes broadcast: only operands that have the split axis are split
    req = tuple(Sharded(d) if v.axis_of(d) is not None else REPLICATED for v in ins)
    return Decision(req, (Sharded(d),) * len(outs))


def _partial_rule(node, ins, shs, outs):
    p = node.primitive
    partial = [i for i, s in enumerate(shs) if s == PARTIAL_SUM]
    if all(map(is_float, outs)):
        if p in LINEAR_SUM or (p == "select_n" and 0 not in partial):
            req = tuple(REPLICATED if p == "select_n" and i == 0 else PARTIAL_SUM for i in range(len(ins)))
            return Decision(req, (PARTIAL_SUM,))
        if p in LINEAR_UNARY:
            return Decision((PARTIAL_SUM,), (PARTIAL_SUM,))
        if p == "mul" and len(partial) == 1:
            return Decision(tuple(shs), (PARTIAL_SUM,))
        if p == "div" and partial == [0]:
            return Decision(tuple(shs), (PARTIAL_SUM,))
    return Decision(tuple(REPLICATED for _ in ins), tuple(REPLICATED for _ in outs))


def _max_rule(node, ins, shs, outs):
    # max over shards commutes with max against a replicated value
    if node.primitive == "max" and all(s in (REPLICATED, Partial("max")) for s in shs):
        return Decision(tuple(shs), (Partial("max"),))
    if node.primitive == "min" and all(s in (REPLICATED, Partial("min")) for s in shs):
        return Decision(tuple(shs), (Partial("min"),))
    return Decision(tuple(REPLICATED for _ in ins), tuple(REPLICATED for _ in outs))


@rule(*ELEMENTWISE, "add_any")
def elementwise(node, ins, shs, outs, ctx: RuleCtx) -> Decision:
    dims = {s.dim for s in shs if isinstance(s, Sharded)}
    if dims:
        return _sharded_rule(node, ins, shs, outs, ctx, dims)
    if PARTIAL_SUM in shs:
        return _partial_rule(node, ins, shs, outs)
    if any(isinstance(s, Partial) for s in shs):
        return _max_rule(node, ins, shs, outs)
    return Decision(tuple(shs), tuple(REPLICATED for _ in outs))
