"""The one registry of sharding rules: primitive name -> rule.

A rule sees the node, its input values and their current shardings, and returns a `Decision`:
the sharding each input must be in (the emitter inserts the collective that converts it), the
output shardings, which inputs to mask along a padded axis, and whether the op must run in the
user's layout (the general fallback: gather to every shard, compute, lay the result out again).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from claygraph.ir.graph import Node, Value
from claygraph.partition.shardings import REPLICATED, Sharded, Sharding, Split


@dataclass(frozen=True, slots=True)
class Mask:
    """Replace padding entries of input `input` along `axis` by `fill` before the op."""

    input: int
    axis: int
    dim: str
    fill: float


@dataclass(frozen=True, slots=True)
class Decision:
    ins: tuple[Sharding, ...]
    outs: tuple[Sharding, ...]
    masks: tuple[Mask, ...] = ()
    local_offset: bool = False  # gather: subtract this shard's offset from co-partitioned indices
    user_layout: bool = False
    note: str = ""


@dataclass(frozen=True, slots=True)
class RuleCtx:
    split: Split
    padded: frozenset[str]  # laid-out dims whose internal size exceeds the user's
    remapped: Mapping[int, str]  # value id -> split dim whose internal ids it holds (index columns)
    unsafe: frozenset[int] = frozenset()  # nodes that read laid-out ids as numbers: user layout

    def laid_out(self, dim: str | None) -> bool:
        return dim is not None and dim in self.split.dims

    def touches_layout(self, v: Value) -> bool:
        return any(self.laid_out(d) for d in v.dims)


Rule = Callable[[Node, list[Value], list[Sharding], list[Value], RuleCtx], Decision]
SHARDING_RULES: dict[str, Rule] = {}


def rule(*names: str) -> Callable[[Rule], Rule]:
    """Register one rule for a family of primitives; a primitive gets exactly one rule."""

    def register(fn: Rule) -> Rule:
        for n in names:
            if n in SHARDING_RULES:
                raise ValueError(f"a sharding rule for {n!r} is already registered")
            SHARDING_RULES[n] = fn
        return fn

    return register


def fallback(node: Node, ins: list[Value], outs: list[Value], ctx: RuleCtx, why: str) -> Decision:
    """Replicate every input and compute the op as if unsplit: always right, never fast."""
    user = any(ctx.touches_layout(v) for v in (*ins, *outs)) or any(v.id in ctx.remapped for v in ins)
    return Decision(tuple(REPLICATED for _ in ins), tuple(REPLICATED for _ in outs), user_layout=user, note=why)


def decide(node: Node, ins: list[Value], shardings: list[Sharding], outs: list[Value], ctx: RuleCtx) -> Decision:
    if node.id in ctx.unsafe:
        return fallback(node, ins, outs, ctx, f"{node.primitive} computes with index values: user layout")
    fn = SHARDING_RULES.get(node.primitive)
    if fn is None:
        if all(s == REPLICATED for s in shardings) and not any(map(ctx.touches_layout, (*ins, *outs))) \
                and not any(v.id in ctx.remapped for v in ins):
            return Decision(tuple(shardings), tuple(REPLICATED for _ in outs))
        return fallback(node, ins, outs, ctx, f"no sharding rule for {node.primitive}: inputs replicated")
    d = fn(node, ins, shardings, outs, ctx)
    assert len(d.ins) == len(ins) and len(d.outs) == len(outs), node.primitive
    if not all(map(_has_axis, (*ins, *outs), (*d.ins, *d.outs))):
        # e.g. a size-1 split dim that dim inference could not follow through a reshape
        return fallback(node, ins, outs, ctx, f"{node.primitive}: a split axis has no dim here: inputs replicated")
    return d


def _has_axis(v: Value, s: Sharding) -> bool:
    return not isinstance(s, Sharded) or v.axis_of(s.dim) is not None


def is_float(v: Value) -> bool:
    return bool(np.issubdtype(v.dtype, np.inexact))


def import_rules() -> None:
    """Fill the registry (the rule modules register themselves on import)."""
    from claygraph.partition import rules_elementwise, rules_indexing, rules_linalg, rules_reduce, rules_shape  # noqa: F401
