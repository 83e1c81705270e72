"""Dim inference: unify (value, axis) pairs across every equation, seeded by data dims and plates.

Each value also has a *pointee*: the dim that its integer contents index into (an index column
points into `group`; `a[g]` then says `a`'s axis is `group`). Pointees unify like axes.
"""
from __future__ import annotations

from collections.abc import Callable, Hashable

import numpy as np

from claygraph.errors import DimError
from claygraph.ir.graph import Graph, Node, Value, with_dims
from claygraph.ir.jaxpr import lower_body

Key = Hashable  # (vid, axis) for an axis, (vid, "ptr") for a pointee


class Unifier:
    """Union-find over axis keys; a class may carry one dim name."""

    def __init__(self):
        self.parent: dict[Key, Key] = {}
        self.name: dict[Key, str] = {}
        self.origin: dict[Key, str] = {}
        self.next_id = 0  # the first value id free for the values of a control-flow body

    def find(self, k: Key) -> Key:
        self.parent.setdefault(k, k)
        while self.parent[k] != k:
            self.parent[k] = self.parent[self.parent[k]]
            k = self.parent[k]
        return k

    def name_of(self, k: Key) -> str | None:
        return self.name.get(self.find(k))

    def seed(self, k: Key, dim: str, origin: str) -> None:
        self._merge_names(self.find(k), dim, origin, where=origin)

    def union(self, a: Key, b: Key, where: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        self.parent[rb] = ra
        if rb in self.name:
            self._merge_names(ra, self.name.pop(rb), self.origin.pop(rb), where)

    def _merge_names(self, root: Key, dim: str, origin: str, where: str) -> None:
        have = self.name.get(root)
        if have is not None and have != dim:
            raise DimError(f"dim conflict at {where}: one axis is {have!r} (from {self.origin[root]}) and "
                           f"{dim!r} (from {origin}); values along different dims are combined here")
        self.name[root] = dim
        self.origin.setdefault(root, origin)


DimRule = Callable[[Node, list[Value], list[Value], "Ctx"], None]
DIM_RULES: dict[str, DimRule] = {}


def dim_rule(*names: str):
    def register(fn: DimRule) -> DimRule:
        for n in names:
            if n in DIM_RULES:
                raise ValueError(f"duplicate dim rule for {n}")
            DIM_RULES[n] = fn
        return fn
    return register


class Ctx:
    """What a rule may do: unify two axes (only when their sizes agree) or two pointees."""

    def __init__(self, u: Unifier, where: str):
        self.u, self.where = u, where

    def axes(self, a: Value, i: int, b: Value, j: int, exact: bool = False) -> None:
        """Unify two axes of equal size. Size-1 axes only where the rule knows they are the same
        axis (`exact`), not where one may be a broadcast."""
        if a.shape[i] == b.shape[j] and (a.shape[i] != 1 or exact):
            self.u.union((a.id, i), (b.id, j), self.where)

    def same_shape(self, a: Value, b: Value) -> None:
        if a.ndim == b.ndim:  # equal ranks; a size-1 axis is a broadcast unless the shapes agree
            for i in range(a.ndim):
                self.axes(a, i, b, i, exact=a.shape == b.shape)

    def pointee(self, a: Value, b: Value) -> None:
        if np.issubdtype(a.dtype, np.integer) and np.issubdtype(b.dtype, np.integer):
            self.u.union((a.id, "ptr"), (b.id, "ptr"), self.where)

    def pointee_axis(self, idx: Value, operand: Value, axis: int) -> None:
        self.u.union((idx.id, "ptr"), (operand.id, axis), self.where)

    def column_pointee(self, piece: Value, stacked: Value, column: int) -> None:
        """Column `column` of a stacked multi-column index holds `piece`'s ids."""
        if np.issubdtype(piece.dtype, np.integer):
            self.u.union((piece.id, "ptr"), (stacked.id, ("col", column)), self.where)

    def column_pointee_axis(self, idx: Value, column: int, operand: Value, axis: int) -> None:
        self.u.union((idx.id, ("col", column)), (operand.id, axis), self.where)

    def whole(self, a: Value, b: Value) -> None:
        """`a` and `b` are the same array (a scan's carry in and out, a body's argument): every axis
        and the pointee."""
        for i in range(min(a.ndim, b.ndim)):
            self.axes(a, i, b, i, exact=True)
        self.pointee(a, b)

    def body(self, closed, args: list[Value | None]):
        """Lower a control-flow body (scan's jaxpr) for this unifier and link its arguments to `args`
        (outer values; None for a scanned slice, which the caller links). Returns the body's
        argument values and the body; `run_body` then infers through it, so that a conflict is
        reported at the body's own line. Body values get ids no graph value has."""
        body = lower_body(closed, self.u.next_id)
        self.u.next_id += len(body.values)
        inner = [body.values[v] for v in body.inputs]
        for outer, b in zip(args, inner):
            if outer is not None:
                self.whole(outer, b)
        return inner, body

    def run_body(self, body) -> list[Value]:
        """Every rule of the body's nodes; returns the body's result values."""
        apply_rules(body.nodes, body.values.__getitem__, self.u,
                    lambda n: f"{self.where}, in its body: `{n.primitive}` ({n.source or 'unknown source'})")
        return [body.values[v] for v in body.outputs]


# -- rules, by family -------------------------------------------------------------------------

ELEMENTWISE = (
    "add sub mul div rem pow max min neg sign floor ceil round is_finite exp exp2 log log1p expm1 tanh logistic "
    "sin cos tan asin acos atan atan2 sinh cosh asinh acosh atanh sqrt rsqrt cbrt abs integer_pow erf erfc "
    "erf_inv lgamma digamma igamma igammac random_gamma_grad bessel_i0e bessel_i1e polygamma zeta nextafter "
    "eq ne lt le gt ge and or not xor select_n clamp convert_element_type stop_gradient copy copy_p "
    "reduce_precision real imag conj square shift_left shift_right_logical shift_right_arithmetic "
    "population_count clz regularized_incomplete_beta"
).split()
# integer ops that carry an index's pointee from input to output (x + 0, where(c, i, j), ...)
POINTEE_KEEPING = {"add", "sub", "select_n", "clamp", "convert_element_type", "max", "min", "copy", "copy_p",
                   "stop_gradient"}


@dim_rule(*ELEMENTWISE, "add_any")
def _elementwise(node, ins, outs, c):
    out = outs[0]
    for v in ins:
        c.same_shape(v, out)
        if node.primitive in POINTEE_KEEPING and not (node.primitive == "select_n" and v is ins[0]):
            c.pointee(v, out)


@dim_rule("broadcast_in_dim")
def _broadcast(node, ins, outs, c):
    for i, j in enumerate(node.params["broadcast_dimensions"]):
        c.axes(ins[0], i, outs[0], j, exact=True)  # equal sizes: kept, not broadcast
    c.pointee(ins[0], outs[0])


def reshape_axis_map(src: tuple[int, ...], dst: tuple[int, ...]) -> list[tuple[int, int]]:
    """Pairs (i, j) where reshape keeps axis i of `src` whole as axis j of `dst` (size-1 axes skipped)."""
    pairs, i, j = [], 0, 0
    while i < len(src) and j < len(dst):
        if src[i] == 1:
            i += 1
        elif dst[j] == 1:
            j += 1
        elif src[i] == dst[j]:
            pairs.append((i, j))
            i, j = i + 1, j + 1
        else:  # a merge or split: skip the group whose products agree
            p, q = src[i], dst[j]
            i, j = i + 1, j + 1
            while p != q and (i < len(src) or j < len(dst)):
                if p < q and i < len(src):
                    p, i = p * src[i], i + 1
                elif j < len(dst):
                    q, j = q * dst[j], j + 1
                else:
                    break
    return pairs


@dim_rule("reshape")
def _reshape(node, ins, outs, c):
    if node.params.get("dimensions") is None:
        for i, j in reshape_axis_map(ins[0].shape, outs[0].shape):
            c.axes(ins[0], i, outs[0], j)
    c.pointee(ins[0], outs[0])


@dim_rule("squeeze")
def _squeeze(node, ins, outs, c):
    kept = [i for i in range(ins[0].ndim) if i not in set(node.params["dimensions"])]
    for j, i in enumerate(kept):
        c.axes(ins[0], i, outs[0], j)
    c.pointee(ins[0], outs[0])


@dim_rule("expand_dims")
def _expand_dims(node, ins, outs, c):
    for i, j in reshape_axis_map(ins[0].shape, outs[0].shape):
        c.axes(ins[0], i, outs[0], j)


@dim_rule("transpose")
def _transpose(node, ins, outs, c):
    for j, i in enumerate(node.params["permutation"]):
        c.axes(ins[0], i, outs[0], j, exact=True)


@dim_rule("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or", "reduce_xor", "argmax",
          "argmin")
def _reduce(node, ins, outs, c):
    axes = set(node.params["axes"])
    kept = [i for i in range(ins[0].ndim) if i not in axes]
    for j, i in enumerate(kept):
        c.axes(ins[0], i, outs[0], j, exact=True)


@dim_rule("cumsum", "cumprod", "cummax", "cummin", "cumlogsumexp", "sort")
def _same_shape(node, ins, outs, c):
    for v in ins:
        for o in outs:
            c.same_shape(v, o)


@dim_rule("dot_general")
def _dot_general(node, ins, outs, c):
    lhs, rhs = ins
    (lc, rc), (lb, rb) = node.params["dimension_numbers"]
    for i, j in zip(lc, rc):
        c.axes(lhs, i, rhs, j, exact=True)
    for k, (i, j) in enumerate(zip(lb, rb)):
        c.axes(lhs, i, rhs, j, exact=True)
        c.axes(lhs, i, outs[0], k, exact=True)
    free_l = [i for i in range(lhs.ndim) if i not in lc and i not in lb]
    free_r = [j for j in range(rhs.ndim) if j not in rc and j not in rb]
    for k, i in enumerate(free_l, start=len(lb)):
        c.axes(lhs, i, outs[0], k, exact=True)
    for k, j in enumerate(free_r, start=len(lb) + len(free_l)):
        c.axes(rhs, j, outs[0], k, exact=True)


def gather_axes(node: Node, operand: Value, indices: Value, out: Value):
    """(batch pairs (indices axis, out axis), offset pairs (operand axis, out axis), indexed operand axes)."""
    dn = node.params["dimension_numbers"]
    offset = list(dn.offset_dims)
    batch_out = [k for k in range(out.ndim) if k not in offset]
    batch_idx = list(range(indices.ndim - 1))
    skipped = set(dn.collapsed_slice_dims) | set(getattr(dn, "operand_batching_dims", ()))
    kept = [i for i in range(operand.ndim) if i not in skipped]
    return list(zip(batch_idx, batch_out)), list(zip(kept, offset)), tuple(dn.start_index_map)


@dim_rule("gather")
def _gather(node, ins, outs, c):
    operand, indices = ins[0], ins[1]
    batch, offset, indexed = gather_axes(node, operand, indices, outs[0])
    for i, k in batch:
        c.axes(indices, i, outs[0], k, exact=True)
    for i, k in offset:
        if node.params["slice_sizes"][i] == operand.shape[i]:
            c.axes(operand, i, outs[0], k)
    if len(indexed) == 1 and indices.shape[-1] == 1:
        c.pointee_axis(indices, operand, indexed[0])
    elif indices.shape[-1] == len(indexed):  # rate[age, space, time]: column j indexes axis indexed[j]
        for j, axis in enumerate(indexed):
            c.column_pointee_axis(indices, j, operand, axis)
    c.pointee(operand, outs[0])


@dim_rule("scatter-add", "scatter_add", "scatter", "scatter-mul", "scatter_mul")
def _scatter(node, ins, outs, c):
    operand, indices = ins[0], ins[1]
    c.same_shape(operand, outs[0])
    idx = node.params["dimension_numbers"].scatter_dims_to_operand_dims
    if len(idx) == 1 and indices.shape[-1] == 1:
        c.pointee_axis(indices, operand, idx[0])


@dim_rule("concatenate")
def _concatenate(node, ins, outs, c):
    axis = node.params["dimension"]
    for v in ins:
        for i in range(v.ndim):
            if i != axis:
                c.axes(v, i, outs[0], i)
    if axis == outs[0].ndim - 1 and all(v.shape[axis] == 1 for v in ins) and len(ins) > 1:
        # index columns stacked for a multi-axis gather (`a[i, j]`): each column keeps its own
        # pointee instead of forcing one dim on all of them
        for j, v in enumerate(ins):
            c.column_pointee(v, outs[0], j)
        return
    for v in ins:
        c.pointee(v, outs[0])


@dim_rule("slice", "dynamic_slice", "pad", "dynamic_update_slice", "rev")
def _slicing(node, ins, outs, c):
    src = ins[0]
    for i in range(min(src.ndim, outs[0].ndim)):
        c.axes(src, i, outs[0], i)  # only axes whose size is unchanged unify


@dim_rule("scan")
def _scan(node, ins, outs, c):
    """One op whose dims come from its body: a const or carry is the body's argument, a scanned
    input's axis j+1 is axis j of the body's slice (and alike for stacked outputs), and axis 0 of
    every scanned input and stacked output is the one scanned axis."""
    nc, nk = node.params["num_consts"], node.params["num_carry"]
    xs, ys = ins[nc + nk:], outs[nk:]
    args, body = c.body(node.params["jaxpr"], [*ins[:nc + nk], *(None for _ in xs)])
    for v, b in zip(xs, args[nc + nk:]):
        _stacked(c, v, b)
    results = c.run_body(body)
    for v, b, o in zip(ins[nc:nc + nk], results[:nk], outs[:nk]):
        c.whole(v, b)
        c.whole(o, b)
    for v, b in zip(ys, results[nk:]):
        _stacked(c, v, b)
    for v in (*xs, *ys)[1:]:
        c.axes((*xs, *ys)[0], 0, v, 0, exact=True)


def _stacked(c: Ctx, v: Value, piece: Value) -> None:
    """`v` stacks one `piece` per step along its axis 0."""
    for j in range(piece.ndim):
        c.axes(v, j + 1, piece, j, exact=True)
    c.pointee(v, piece)


# -- the pass ---------------------------------------------------------------------------------

def seed(graph: Graph, u: Unifier) -> None:
    meta = graph.meta
    for name, vid in graph.inputs.data.items():
        arr = meta.arrays[name]
        for axis, d in enumerate(arr.dims):
            u.seed((vid, axis), d, f"data {name!r}")
        if arr.into:
            u.seed((vid, "ptr"), arr.into, f"index {name!r}")
    for name, vid in graph.inputs.params.items():
        for axis, d in enumerate(meta.info.site(name).plate_dims):
            if d is not None:
                u.seed((vid, axis), d, f"plate {d!r} of site {name!r}")


def apply_rules(nodes, value: Callable[[int], Value], u: Unifier, where: Callable[[Node], str]) -> None:
    """Each node's dim rule, in order (a graph's nodes, or a control-flow body's)."""
    for node in nodes:
        rule = DIM_RULES.get(node.primitive)
        if rule is not None:
            rule(node, [value(i) for i in node.inputs], [value(o) for o in node.outputs], Ctx(u, where(node)))


def unify(graph: Graph) -> Unifier:
    u = Unifier()
    u.next_id = max((v.id for v in graph.values()), default=-1) + 1
    seed(graph, u)
    apply_rules(graph.nodes(), graph.value, u,
                lambda n: f"`{n.primitive}` (node {n.id}, {n.source or 'unknown source'})")
    return u


def _origin(graph: Graph, vid: int) -> str:
    """The model input a value comes from (through data movement), for error messages."""
    names = {v: f"site {k!r}" for k, v in graph.inputs.params.items()}
    names.update({v: f"data {k!r}" for k, v in graph.inputs.data.items()})
    while vid not in names:
        node = graph.producer(vid)
        if node is None or not node.inputs:
            return f"a value of shape {graph.value(vid).shape}"
        vid = max(node.inputs, key=lambda i: graph.value(i).size)
    return names[vid]


def check_indexed_sizes(graph: Graph, u: Unifier) -> None:
    """An index column into dim d may only index an axis of d's size: a 5-long parameter indexed by
    group ids into a 10-sized dim would read out of bounds (JAX clamps; NumPy raises later)."""
    sizes = graph.meta.dim_sizes if graph.meta is not None else {}
    for node in graph.nodes():
        if node.primitive != "gather":
            continue
        operand, indices = graph.value(node.inputs[0]), graph.value(node.inputs[1])
        _, _, indexed = gather_axes(node, operand, indices, graph.value(node.outputs[0]))
        if len(indexed) != 1 or indices.shape[-1] != 1:
            continue
        d = u.name_of((indices.id, "ptr"))
        if d is not None and d in sizes and operand.shape[indexed[0]] != sizes[d]:
            raise DimError(f"{_origin(graph, operand.id)} is indexed along axis {indexed[0]} (size "
                           f"{operand.shape[indexed[0]]}) by {_origin(graph, indices.id)}, whose values point "
                           f"into dim {d!r} of size {sizes[d]}, at {node.source or 'unknown source'}; give the "
                           f"parameter {sizes[d]} entries along that axis (a plate over {d!r}, or "
                           f".expand([data.size({d!r})]))")


def infer_dims(graph: Graph) -> Graph:
    """Graph -> Graph with a dim name (or None) on every axis of every value."""
    u = unify(graph)
    check_indexed_sizes(graph, u)
    return graph.replace_values({v.id: with_dims(v, tuple(u.name_of((v.id, i)) for i in range(v.ndim)))
                                 for v in graph.values()})


def pointees(graph: Graph) -> dict[int, str]:
    """Value id -> the dim its integer contents index into, for every index-carrying value."""
    u = unify(graph)
    found = ((v.id, u.name_of((v.id, "ptr"))) for v in graph.values() if (v.id, "ptr") in u.parent)
    return {vid: name for vid, name in found if name is not None}
