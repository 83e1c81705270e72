"""The one registry of primitives: name -> `Primitive`, every fact the partitioner uses about it.

An entry holds the sharding rule, how partial sums pass through the op (its linearity), its FLOP
count for the cost model, the rewrite of its parameters to shard-local shapes for emission, and
whether it carries laid-out index ids unchanged. Its dim rule is IR's (`claygraph.ir.dims`, which
may not import the partitioner) and is reached through `Primitive.dims`; a test checks that every
entry has one. Adding a primitive is one `rule(...)` call in a `rules_*.py` module, and the rule
harness (tests/partition/test_rule_harness.py) refuses an entry it cannot build.

A sharding rule sees the node, its input values and their current shardings, and returns a
`Decision`: the sharding each input must be in (the emitter inserts the collective that converts
it), the output shardings, which inputs to mask along a padded axis, and whether the op must run
in the user's layout (the general fallback: gather to every shard, compute, lay the result out
again).
"""
from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

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


class Linearity(enum.Enum):
    """How a Partial(sum) operand may pass through the op without being made whole first.

        NONE      f(sum_s a_s) != sum_s f(a_s)                     exp, max, lt, ...
        JOINT     f(sum_s a_s, sum_s b_s) = sum_s f(a_s, b_s)       add, sub, neg, reduce_sum, moves
        EACH      linear in any one operand, the others whole       mul, dot_general
        FIRST     linear in operand 0, the others whole             div
        BRANCHES  linear in the branches, the predicate whole       select_n
    """

    NONE = "none"
    JOINT = "joint"
    EACH = "each"
    FIRST = "first"
    BRANCHES = "branches"

    def allows(self, partial: list[int]) -> bool:
        """May the operands at positions `partial` (and only they) stay Partial(sum)?"""
        if not partial or self is Linearity.JOINT:
            return True
        if self is Linearity.EACH:
            return len(partial) == 1
        if self is Linearity.FIRST:
            return partial == [0]
        if self is Linearity.BRANCHES:
            return 0 not in partial
        return False


Rule = Callable[[Node, list[Value], list[Sharding], list[Value], RuleCtx], Decision]
Shapes = list[tuple[int, ...]]
FlopCount = Callable[[Node, Shapes, Shapes], float]
LocalParams = Callable[[dict[str, Any], list[Value], Shapes, Shapes], dict[str, Any]]


def per_output(flops_per_element: float) -> FlopCount:
    """FLOPs proportional to the output's size (elementwise ops, data movement)."""

    def count(node: Node, ins: Shapes, outs: Shapes) -> float:
        return flops_per_element * float(sum(np.prod(s, dtype=np.float64) for s in outs))

    return count


def per_input(node: Node, ins: Shapes, outs: Shapes) -> float:
    """One FLOP per input element (reductions, scans)."""
    return float(np.prod(ins[0], dtype=np.float64))


@dataclass(frozen=True, slots=True)
class Primitive:
    """Everything the partitioner knows about one primitive."""

    name: str
    sharding: Rule
    linearity: Linearity | Callable[[list[Value], list[Value]], Linearity] = Linearity.NONE
    flops: FlopCount = per_output(1.0)
    local_params: LocalParams | None = None  # params rewritten for shard-local shapes (emission)
    carries_ids: bool = False  # laid-out index ids pass through unchanged (reshapes, copies)
    extremum: frozenset[str] = frozenset()  # Partial(max)/Partial(min) operands that may pass through
    family: str = "elementwise"  # its kernel family in the cost model (cost.py FAMILIES)

    def linearity_at(self, ins: list[Value], outs: list[Value]) -> Linearity:
        """The linearity of this application (a cast is linear only when it does not round)."""
        lin = self.linearity
        return lin if isinstance(lin, Linearity) else lin(ins, outs)

    @property
    def dims(self):
        """IR's dim-inference rule for this primitive (None: the op's dims stay unknown)."""
        from claygraph.ir.dims import DIM_RULES

        return DIM_RULES.get(self.name)


PRIMITIVES: dict[str, Primitive] = {}


def register(names, sharding: Rule, **facts: Any) -> None:
    """Register one entry per name; a primitive is registered exactly once."""
    for n in names:
        if n in PRIMITIVES:
            raise ValueError(f"primitive {n!r} is already registered")
        PRIMITIVES[n] = Primitive(n, sharding, **facts)


def rule(*names: str, **facts: Any) -> Callable[[Rule], Rule]:
    """Decorator: `fn` is the sharding rule of `names`, which share `facts`."""

    def wrap(fn: Rule) -> Rule:
        register(names, fn, **facts)
        return fn

    return wrap


def entry(name: str) -> Primitive | None:
    import_rules()
    return PRIMITIVES.get(name)


def fallback(node: Node, ins: list[Value], outs: list[Value], ctx: RuleCtx, why: str) -> Decision:
    """Replicate every input and compute the op as if unsplit: always right, never fast."""
    user = any(ctx.touches_layout(v) for v in (*ins, *outs)) or any(v.id in ctx.remapped for v in ins)
    return Decision(tuple(REPLICATED for _ in ins), tuple(REPLICATED for _ in outs), user_layout=user, note=why)


def decide(node: Node, ins: list[Value], shardings: list[Sharding], outs: list[Value], ctx: RuleCtx) -> Decision:
    if node.id in ctx.unsafe:
        return fallback(node, ins, outs, ctx, f"{node.primitive} computes with index values: user layout")
    twice = next((d for v in (*ins, *outs) for d in _repeated_split_dims(v, ctx)), None)
    if twice is not None:  # a kernel K[i, j] over (row, row): one mesh axis cannot cut both axes
        return fallback(node, ins, outs, ctx, f"{node.primitive}: a value has two axes along split dim {twice!r} "
                                              f"(a kernel or pairwise term): computed whole on every shard")
    prim = PRIMITIVES.get(node.primitive)
    if prim is None:
        if all(s == REPLICATED for s in shardings) and not any(map(ctx.touches_layout, (*ins, *outs))) \
                and not any(v.id in ctx.remapped for v in ins):
            return Decision(tuple(shardings), tuple(REPLICATED for _ in outs))
        return fallback(node, ins, outs, ctx, f"no sharding rule for {node.primitive}: inputs replicated")
    d = prim.sharding(node, ins, shardings, outs, ctx)
    assert len(d.ins) == len(ins) and len(d.outs) == len(outs), node.primitive
    born = _born_split_dims(ins, outs, ctx)
    if born and not d.user_layout and node.primitive not in CREATES_AXES:
        # e.g. x[:n] of a concatenation: the result is along `row` but its values come in the
        # user's order, not the internal layout: compute it there and lay the result out
        return fallback(node, ins, outs, ctx, f"{node.primitive} makes an axis along split dim {born[0]!r} "
                                              f"from values that have none: computed in the user's layout")
    if not all(map(_has_axis, (*ins, *outs), (*d.ins, *d.outs))):
        # e.g. a size-1 split dim that dim inference could not follow through a reshape
        return fallback(node, ins, outs, ctx, f"{node.primitive}: a split axis has no dim here: inputs replicated")
    return d


# ops whose rule builds a new split axis itself (a broadcast is constant along it)
CREATES_AXES = frozenset({"broadcast_in_dim", "iota"})


def _born_split_dims(ins: list[Value], outs: list[Value], ctx: RuleCtx) -> list[str]:
    have = {d for v in ins for d in v.dims if ctx.laid_out(d)}
    return sorted({d for v in outs for d in v.dims if ctx.laid_out(d)} - have)


def _repeated_split_dims(v: Value, ctx: RuleCtx) -> list[str]:
    laid = [d for d in v.dims if ctx.laid_out(d)]
    return sorted({d for d in laid if laid.count(d) > 1})


def _has_axis(v: Value, s: Sharding) -> bool:
    return not isinstance(s, Sharded) or v.axis_of(s.dim) is not None


def is_float(v: Value) -> bool:
    return bool(np.issubdtype(v.dtype, np.inexact))


def import_rules() -> None:
    """Fill the registry (the rule modules register themselves on import)."""
    from claygraph.partition import (  # noqa: F401
        rules_control,
        rules_elementwise,
        rules_indexing,
        rules_linalg,
        rules_reduce,
        rules_shape,
    )
