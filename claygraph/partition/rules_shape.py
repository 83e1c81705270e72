"""Shape families: broadcast, reshape, squeeze, expand_dims, transpose, concatenate, slicing, iota.

An op that moves axes keeps a sharded axis sharded when the axis survives whole; a partial
value stays partial (these ops are linear). Anything that cuts or merges a laid-out axis runs
in the user's layout (fallback).
"""
from __future__ import annotations

from claygraph.ir.dims import reshape_axis_map
from claygraph.partition.local_params import local_limits, local_new_sizes, local_out_shape, local_slice_sizes
from claygraph.partition.registry import Decision, Linearity, RuleCtx, fallback, rule
from claygraph.partition.shardings import REPLICATED, Partial, Sharded

# data movement commutes with sums and max
MOVE = dict(linearity=Linearity.JOINT, extremum=frozenset({"max", "min"}), family="move")


def _axis_moving(node, ins, shs, outs, ctx: RuleCtx, pairs: list[tuple[int, int]]) -> Decision:
    src, out, s = ins[0], outs[0], shs[0]
    kept_in = {i for i, _ in pairs}
    laid_in = {i for i, d in enumerate(src.dims) if ctx.laid_out(d)}
    laid_out_ = {j for j, d in enumerate(out.dims) if ctx.laid_out(d)}
    if not laid_in <= kept_in or len(laid_out_) != len(laid_in):
        return fallback(node, ins, outs, ctx, f"{node.primitive} reshapes a split axis")
    rest = tuple(REPLICATED for _ in ins[1:])
    return Decision((s, *rest), (s,))


@rule("reshape", carries_ids=True, local_params=local_new_sizes, **MOVE)
def reshape(node, ins, shs, outs, ctx):
    if node.params.get("dimensions") is not None:
        return fallback(node, ins, outs, ctx, "reshape with a dimension order")
    return _axis_moving(node, ins, shs, outs, ctx, reshape_axis_map(ins[0].shape, outs[0].shape))


@rule("squeeze", carries_ids=True, **MOVE)
def squeeze(node, ins, shs, outs, ctx):
    kept = [i for i in range(ins[0].ndim) if i not in set(node.params["dimensions"])]
    return _axis_moving(node, ins, shs, outs, ctx, [(i, j) for j, i in enumerate(kept)])


@rule("expand_dims", carries_ids=True, **MOVE)
def expand_dims(node, ins, shs, outs, ctx):
    return _axis_moving(node, ins, shs, outs, ctx, reshape_axis_map(ins[0].shape, outs[0].shape))


@rule("transpose", **MOVE)
def transpose(node, ins, shs, outs, ctx):
    return _axis_moving(node, ins, shs, outs, ctx, [(i, j) for j, i in enumerate(node.params["permutation"])])


@rule("broadcast_in_dim", carries_ids=True, local_params=local_out_shape, **MOVE)
def broadcast_in_dim(node, ins, shs, outs, ctx):
    src, out, s = ins[0], outs[0], shs[0]
    rest = tuple(REPLICATED for _ in ins[1:])  # dynamic shape operands, if any
    if isinstance(s, (Sharded, Partial)):
        return Decision((s, *rest), (s,))
    new = {d for j, d in enumerate(out.dims) if ctx.laid_out(d) and j not in node.params["broadcast_dimensions"]}
    laid = {d for d in out.dims if ctx.laid_out(d)}
    if len(laid) == 1 and len(new) == 1:  # broadcasting into a split axis: make it local right away
        (d,) = new
        return Decision((REPLICATED, *rest), (Sharded(d),))
    if len(laid) == 1 and d_of(src, ctx) in laid:
        (d,) = laid
        return Decision((Sharded(d), *rest), (Sharded(d),))
    return Decision((REPLICATED, *rest), (REPLICATED,))


def d_of(v, ctx):
    return next((d for d in v.dims if ctx.laid_out(d)), None)


@rule("concatenate", **MOVE)
def concatenate(node, ins, shs, outs, ctx):
    axis = node.params["dimension"]
    if ctx.laid_out(outs[0].dims[axis]) or any(ctx.laid_out(v.dims[axis]) for v in ins):
        return fallback(node, ins, outs, ctx, "concatenate along a split axis")
    if len(set(shs)) == 1:
        return Decision(tuple(shs), (shs[0],))
    dims = {s.dim for s in shs if isinstance(s, Sharded)}
    if len(dims) == 1:
        (d,) = dims
        return Decision(tuple(Sharded(d) for _ in ins), (Sharded(d),))
    return fallback(node, ins, outs, ctx, "concatenate of differently split values")


def _untouched(node, src, out) -> set[int]:
    """Axes of `src` that a slicing op keeps whole and in place."""
    p = node.primitive
    keep = {i for i in range(min(src.ndim, out.ndim)) if src.shape[i] == out.shape[i]}
    if p == "slice":
        strides = node.params.get("strides") or (1,) * src.ndim
        keep = {i for i in keep if node.params["start_indices"][i] == 0 and strides[i] == 1}
    elif p == "pad":
        keep = {i for i in keep if tuple(node.params["padding_config"][i]) == (0, 0, 0)}
    elif p == "rev":
        keep -= set(node.params["dimensions"])
    return keep


@rule("slice", local_params=local_limits, **MOVE)
@rule("dynamic_slice", local_params=local_slice_sizes, **MOVE)
@rule("pad", "rev", "dynamic_update_slice", **MOVE)
def slicing(node, ins, shs, outs, ctx):
    src, out, s = ins[0], outs[0], shs[0]
    laid = {i for i, d in enumerate(src.dims) if ctx.laid_out(d)}
    if laid <= _untouched(node, src, out) and not isinstance(s, Partial) and node.primitive != "dynamic_update_slice":
        return Decision((s, *(REPLICATED for _ in ins[1:])), (s,))
    return fallback(node, ins, outs, ctx, f"{node.primitive} cuts a split axis")


@rule("iota", local_params=local_out_shape)
def iota(node, ins, shs, outs, ctx):
    if ctx.touches_layout(outs[0]):
        return fallback(node, ins, outs, ctx, "iota along a split dim is computed in the user's layout")
    return Decision((), (REPLICATED,))
