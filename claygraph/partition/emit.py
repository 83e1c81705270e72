"""Emission: a Plan becomes one shard-local JAX function, wrapped in shard_map over a 1-D mesh.

Inside, every value lives in the *internal layout*: each split dim is permuted and padded so
that shard s owns slots [s*local, (s+1)*local). Parameters enter and leave in the user's layout
(the relayout is differentiable, so gradients come back in the user's layout too); data are laid
out once, when the program is built.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from claygraph.errors import PartitionError
from claygraph.ir.graph import Graph, Node, Value
from claygraph.partition import kernels
from claygraph.partition.layout import DimLayout
from claygraph.partition.patterns import softplus_roots
from claygraph.partition.plan import shape_fn
from claygraph.partition.propagate import sticky
from claygraph.partition.registry import Decision, Mask, entry
from claygraph.partition.shardings import REPLICATED, Partial, Sharded, Sharding
from claygraph.partition.storage import key as stored_key

AXIS = "shards"


def spec(v: Value, s: Sharding) -> P:
    if isinstance(s, Sharded):
        return P(*[AXIS if i == v.axis_of(s.dim) else None for i in range(v.ndim)])
    return P()


@dataclass(frozen=True, slots=True)
class Tables:
    """Per split dim: constant arrays the program reads (masks, slot maps)."""

    layout: Mapping[str, DimLayout]

    def local_mask(self, d: str, index) -> jax.Array:
        lay = self.layout[d]
        return jnp.arange(lay.local) < jnp.asarray(lay.counts)[index]

    def full_mask(self, d: str) -> np.ndarray:
        return self.layout[d].pad_mask()


class _Local:
    """The shard-local interpreter: runs each node as its Decision says."""

    def __init__(self, graph: Graph, prop, layout: Mapping[str, DimLayout], consts: Mapping[int, Any],
                 index=None, stored: frozenset[str] = frozenset()):
        self.g: Graph = graph
        # data arrays held feature-major (their `X @ w` reads X.T) and the softplus subgraphs computed
        # by one kernel (claygraph.partition.storage, .patterns)
        self.stored = stored
        self.softplus = softplus_roots(graph)
        # index(dim): the shard's position along split dim `dim` (None: the position that decides which
        # shard adds a replicated term once): the mesh axis index, or a row block's number when one
        # shard's rows are run block by block (claygraph.partition.fused)
        self.index = index if index is not None else (lambda dim=None: lax.axis_index(AXIS))
        self.prop = prop
        self.layout = layout
        self.shape = shape_fn(layout)
        self.consts = consts
        self.tables = Tables(layout)

    # conversions between shardings ---------------------------------------------------------
    def whole(self, x, v: Value, have: Sharding):
        """A Partial or Sharded value made Replicated (the collectives propagate() counted)."""
        if have == Partial("sum"):
            return lax.psum(x, AXIS)
        if isinstance(have, Partial):  # pmax has no derivative: gather the partials, reduce locally
            stack = lax.all_gather(x, AXIS, axis=0, to="invarying")
            return jnp.max(stack, axis=0) if have.op == "max" else jnp.min(stack, axis=0)
        if isinstance(have, Sharded):
            return lax.all_gather(x, AXIS, axis=v.axis_of(have.dim), tiled=True, to="invarying")
        return x

    def convert(self, x, v: Value, have: Sharding, want: Sharding):
        if have == want:
            return x
        if isinstance(have, (Partial, Sharded)):
            x, have = self.whole(x, v, have), REPLICATED
        if have == want:
            return x
        if isinstance(want, Sharded):
            local = self.layout[want.dim].local
            return lax.dynamic_slice_in_dim(x, self.index(want.dim) * local, local, axis=v.axis_of(want.dim))
        if isinstance(want, Partial):  # a replicated term joins a partial sum once, on shard 0
            return jnp.where(self.index(None) == 0, x, jnp.zeros_like(x))
        return x

    def mask(self, x, v: Value, have: Sharding, m: Mask):
        split_here = isinstance(have, Sharded) and v.axis_of(have.dim) == m.axis
        on = self.tables.local_mask(m.dim, self.index(m.dim)) if split_here else self.tables.full_mask(m.dim)
        shape = [1] * x.ndim
        shape[m.axis] = -1
        return jnp.where(jnp.reshape(on, shape), x, jnp.asarray(m.fill, x.dtype))

    # user-layout fallback ------------------------------------------------------------------
    def to_user(self, x, v: Value):
        for i, d in enumerate(v.dims):
            if d in self.layout:
                x = jnp.take(x, jnp.asarray(self.layout[d].inverse()), axis=i)
        d = self.prop.remapped.get(v.id)
        if d is not None:
            x = jnp.asarray(self.layout[d].fill_slots(), x.dtype)[x]
        return x

    def from_user(self, y, v: Value):
        for i, d in enumerate(v.dims):
            if d in self.layout:
                y = jnp.take(y, jnp.asarray(self.layout[d].fill_slots()), axis=i)
        d = self.prop.remapped.get(v.id)
        if d is not None:
            y = jnp.asarray(self.layout[d].inverse(), y.dtype)[y]
        return y

    # one node --------------------------------------------------------------------------------
    def params(self, node: Node, ins: list[Value], d: Decision) -> dict:
        """The node's params for shard-local shapes: the registry entry's rewrite, if it has one."""
        prim = entry(node.primitive)  # fills the registry in a process that never propagated (a worker)
        if prim is None or prim.local_params is None:
            return dict(node.params)
        local_ins = [self.shape(v, s) for v, s in zip(ins, d.ins)]
        local_outs = [self.shape(self.g.value(o), s) for o, s in zip(node.outputs, d.outs)]
        return prim.local_params(dict(node.params), ins, local_ins, local_outs)

    def kernel(self, node: Node, d: Decision, env: Mapping[int, Any], sh: Mapping[int, Sharding],
               held: Mapping[int, Any]) -> list | None:
        """The node's outputs from one of claygraph.partition.kernels where a faster one applies, else None.
        Only where the node's inputs need no conversion or mask (elementwise roots, X @ w on a data X)."""
        if d.masks or d.local_offset or d.user_layout:
            return None
        s = self.softplus.get(node.id)
        if s is not None and sh[s] == d.outs[0]:
            return [kernels.softplus(env[s])]
        if node.primitive == "dot_general" and node.inputs[0] in held:
            x, w = node.inputs
            if (sh[x], sh[w]) == tuple(d.ins):
                return [kernels.matvec_t(*_match_vma([held[x], env[w]]))]
        return None

    def run_node(self, node: Node, args: list, d: Decision) -> list:
        ins = [self.g.value(i) for i in node.inputs]
        for m in d.masks:
            args[m.input] = self.mask(args[m.input], ins[m.input], d.ins[m.input], m)
        if d.local_offset:
            operand = ins[0]
            k = node.params["dimension_numbers"].start_index_map[0]
            dim = operand.dims[k]
            args[1] = args[1] - (self.index(dim) * self.layout[dim].local).astype(args[1].dtype)
        if d.user_layout:
            args = _match_vma([self.to_user(a, v) for a, v in zip(args, ins)])
            outs = node.bind(*args)
            return [self.from_user(y, self.g.value(o)) for y, o in zip(outs, node.outputs)]
        return kernels.bind(node.prim, _match_vma(args), self.params(node, ins, d))

    def __call__(self, params: Mapping[str, Any], data: Mapping[str, Any]):
        out, have = self.run(params, data)
        return self.convert(out, self.g.value(self.g.output), have, REPLICATED)

    def run(self, params: Mapping[str, Any], data: Mapping[str, Any]):
        """The output as this shard holds it, and its sharding (a partial sum before the final psum)."""
        g = self.g
        sh = dict(self.prop.initial)  # the current sharding of every value, as propagate() walked it
        env: dict[int, Any] = dict(self.consts)
        env.update((vid, params[k]) for k, vid in g.inputs.params.items())
        held = {g.inputs.data[k]: data[stored_key(k)] for k in self.stored}
        env.update((vid, data[k]) for k, vid in g.inputs.data.items() if vid not in held)
        # X itself, for a use the kernel does not take (dead code, which XLA removes, where it takes all)
        env.update((vid, jnp.transpose(xt)) for vid, xt in held.items())
        for node in g.nodes():
            d = self.prop.decisions[node.id]
            fast = self.kernel(node, d, env, sh, held)
            if fast is not None:
                env.update(zip(node.outputs, fast))
                sh.update(zip(node.outputs, d.outs))
                continue
            args = []
            for i, want in zip(node.inputs, d.ins):
                if sticky(sh[i], want):  # made whole once; later consumers reuse it
                    env[i], sh[i] = self.whole(env[i], g.value(i), sh[i]), REPLICATED
                args.append(self.convert(env[i], g.value(i), sh[i], want))
            env.update(zip(node.outputs, self.run_node(node, args, d)))
            sh.update(zip(node.outputs, d.outs))
        return env[g.output], sh[g.output]


def _varies(x) -> bool:
    mat = getattr(jax.typeof(x), "manual_axis_type", None)
    return mat is not None and AXIS in mat.varying


def _match_vma(args: list) -> list:
    """Binding a primitive directly skips JAX's automatic casts: mark invariant operands varying
    when another operand varies over the mesh axis."""
    varying = [_varies(a) for a in args]
    if any(varying) and not all(varying):
        return [a if v else lax.pcast(a, AXIS, to="varying") for a, v in zip(args, varying)]
    return args


def relayout(x: np.ndarray, v: Value, layout: Mapping[str, DimLayout], remapped_dim: str | None) -> np.ndarray:
    """User layout -> internal layout, in NumPy (data and constants, once)."""
    x = np.asarray(x)
    for i, d in enumerate(v.dims):
        if d in layout and not layout[d].identity:
            x = np.take(x, layout[d].fill_slots(), axis=i)
    if remapped_dim is not None:
        x = layout[remapped_dim].inverse().astype(x.dtype)[x]
    return x


def param_relayout(x, v: Value, layout: Mapping[str, DimLayout]):
    """User layout -> internal layout for a parameter, differentiably; padding carries no gradient."""
    for i, d in enumerate(v.dims):
        if d in layout:
            lay = layout[d]
            x = jnp.take(x, jnp.asarray(lay.fill_slots()), axis=i)
            shape = [1] * x.ndim
            shape[i] = -1
            real = jnp.reshape(jnp.asarray(lay.pad_mask()), shape)
            x = jnp.where(real, x, lax.stop_gradient(x))
    return x


def make_mesh(devices: int, device_list=None) -> Mesh:
    avail = list(device_list if device_list is not None else jax.devices())
    if len(avail) < devices:
        raise PartitionError(
            f"the plan needs {devices} devices but JAX sees {len(avail)}; on CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={devices} before importing jax, "
            f"or plan for ClusterSpec.local(devices={len(avail)})")
    return Mesh(np.array(avail[:devices]), (AXIS,))
