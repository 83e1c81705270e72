"""Elementwise families: same-shape operands (scalars broadcast), one output of that shape.

    S(d) op R        -> S(d)      (a replicated operand of full shape is sliced locally)
    P op P, P op R   -> P         for add/sub  (R becomes P by keeping it on shard 0 only)
    P * R, P / R     -> P         linear in the partial operand; the other operand made whole first
    where(R, P, R)   -> P         linear in the branches; a whole branch kept on shard 0 only
    f(P)             -> f(psum P) anything else non-linear makes the partial whole first
"""
from __future__ import annotations

from claygraph.ir.dims import ELEMENTWISE
from claygraph.partition.registry import (
    PRIMITIVES,
    Decision,
    Linearity,
    RuleCtx,
    fallback,
    is_float,
    per_output,
    register,
)
from claygraph.partition.shardings import PARTIAL_SUM, REPLICATED, Partial, Sharded

TRANSCENDENTAL = {"exp", "exp2", "log", "log1p", "expm1", "logistic", "tanh", "lgamma", "digamma", "erf", "erfc",
                  "erf_inv", "pow", "sqrt", "rsqrt", "sin", "cos", "tan", "atan2", "igamma", "igammac", "cbrt",
                  "asin", "acos", "atan", "sinh", "cosh", "asinh", "acosh", "atanh", "bessel_i0e", "bessel_i1e",
                  "polygamma", "zeta", "regularized_incomplete_beta", "random_gamma_grad"}
TRANSCENDENTAL_FLOPS = 10.0
# reduce_precision and narrowing casts round: sum_s(round(a_s)) != round(sum_s a_s), so they are NONE
LINEARITY = {"add": Linearity.JOINT, "sub": Linearity.JOINT, "add_any": Linearity.JOINT, "neg": Linearity.JOINT,
             "copy": Linearity.JOINT, "copy_p": Linearity.JOINT, "stop_gradient": Linearity.JOINT,
             "real": Linearity.JOINT, "mul": Linearity.EACH, "div": Linearity.FIRST,
             "select_n": Linearity.BRANCHES}
EXTREMUM = {"max": frozenset({"max"}), "min": frozenset({"min"}), "copy": frozenset({"max", "min"}),
            "copy_p": frozenset({"max", "min"}), "stop_gradient": frozenset({"max", "min"})}


def _cast_linearity(ins, outs) -> Linearity:
    """A float-to-float cast that loses nothing (float32 -> float64) is linear, exactly."""
    src, out = ins[0], outs[0]
    widening = is_float(src) and is_float(out) and out.dtype.itemsize >= src.dtype.itemsize
    return Linearity.JOINT if widening else Linearity.NONE


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
    """Partial(sum) operands pass where the op is linear in them (the registry's linearity); every
    other operand is made whole first, a Partial(max/min) one too: sum_s(a_s * max_t b_t), never
    sum_s(a_s * b_s)."""
    partial = [i for i, s in enumerate(shs) if s == PARTIAL_SUM]
    lin = PRIMITIVES[node.primitive].linearity_at(ins, outs)
    if all(map(is_float, outs)) and lin is not Linearity.NONE and lin.allows(partial):
        if lin is Linearity.JOINT:  # a whole operand joins the sum once, on shard 0
            return Decision(tuple(PARTIAL_SUM for _ in ins), (PARTIAL_SUM,))
        if lin is Linearity.BRANCHES:  # where(c, sum_s a_s, b) = sum_s where(c, a_s, b on shard 0 only)
            return Decision((REPLICATED, *(PARTIAL_SUM for _ in ins[1:])), (PARTIAL_SUM,))
        return Decision(tuple(PARTIAL_SUM if i in partial else REPLICATED for i in range(len(ins))), (PARTIAL_SUM,))
    return Decision(tuple(REPLICATED for _ in ins), tuple(REPLICATED for _ in outs))


def _max_rule(node, ins, shs, outs):
    # max over shards commutes with max against a replicated value
    if node.primitive == "max" and all(s in (REPLICATED, Partial("max")) for s in shs):
        return Decision(tuple(shs), (Partial("max"),))
    if node.primitive == "min" and all(s in (REPLICATED, Partial("min")) for s in shs):
        return Decision(tuple(shs), (Partial("min"),))
    return Decision(tuple(REPLICATED for _ in ins), tuple(REPLICATED for _ in outs))


def elementwise(node, ins, shs, outs, ctx: RuleCtx) -> Decision:
    dims = {s.dim for s in shs if isinstance(s, Sharded)}
    if dims:
        return _sharded_rule(node, ins, shs, outs, ctx, dims)
    if PARTIAL_SUM in shs:
        return _partial_rule(node, ins, shs, outs)
    if any(isinstance(s, Partial) for s in shs):
        return _max_rule(node, ins, shs, outs)
    return Decision(tuple(shs), tuple(REPLICATED for _ in outs))


for _name in (*ELEMENTWISE, "add_any"):
    register([_name], elementwise,
             linearity=_cast_linearity if _name == "convert_element_type" else LINEARITY.get(_name, Linearity.NONE),
             flops=per_output(TRANSCENDENTAL_FLOPS if _name in TRANSCENDENTAL else 1.0),
             carries_ids=_name in ("copy", "copy_p"), extremum=EXTREMUM.get(_name, frozenset()),
             family="transcendental" if _name in TRANSCENDENTAL else "elementwise")
