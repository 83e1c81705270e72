"""The compiled artifact and the Program that runs it in one process.

The driver compiles Plan x Data once into an `Artifact`: the concrete layout (slot tables), the
propagation on it (shardings, collectives, masks) and the graph's fingerprint, frozen and
picklable. Every runtime runs that artifact: `Program` here on this process's devices, the Ray
workers on their shards. A worker lowers the model again (JAX primitives do not travel) and
refuses the artifact when its graph's fingerprint differs from the driver's; it never plans.
`SplitFunction` is the global-view potential every process builds from (graph, artifact, mesh).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from claygraph.errors import PartitionError
from claygraph.frontend.data import Data
from claygraph.ir.graph import Graph
from claygraph.partition.cache import COMPILED, key_for
from claygraph.partition.emit import AXIS, _Local, make_mesh, param_relayout, relayout, spec
from claygraph.partition.fused import fused_potential, host_arrays
from claygraph.partition.layout import DimLayout
from claygraph.partition.params import ParamLayout
from claygraph.partition.plan import Candidate, Plan, candidate_with_layout, layout_for
from claygraph.partition.storage import key as stored_key
from claygraph.partition.storage import stored_feature_major


class SplitFunction:
    """The split potentials of one mesh: `internal` `(params in the internal layout, sharded, internal data)
    -> scalar`, what inference runs, and `fn` the same taking params in the user's layout (laid out inside
    the program by a differentiable take: NUTS still runs it)."""

    def __init__(self, graph: Graph, candidate: Candidate, mesh: Mesh):
        self.graph, self.candidate, self.mesh = graph, candidate, mesh
        self.key = key_for(graph, candidate, mesh)  # what the programs built from this one depend on
        self.layout: Mapping[str, DimLayout] = candidate.layout
        prop = candidate.propagation
        g = graph
        consts = {vid: relayout(c, g.value(vid), self.layout, None)
                  if any(d in self.layout for d in g.value(vid).dims) else c for vid, c in g.consts.items()}
        local = _Local(graph, prop, self.layout, consts, stored=candidate.feature_major)
        self.param_specs = param_specs(graph, candidate)
        self.placed_specs = data_specs(graph, candidate)  # the arrays as laid out (row-major)
        self.data_specs = program_specs(graph, candidate)  # as the program reads them (after `place`)
        smap = jax.shard_map(local, mesh=mesh, in_specs=(self.param_specs, self.data_specs), out_specs=P())

        def potential(params, data_int):
            internal = {k: param_relayout(params[k], g.value(v), self.layout) for k, v in g.inputs.params.items()}
            return smap(internal, data_int)

        # a sum over row blocks gets a fused value-and-gradient pass (claygraph.partition.fused)
        fused = fused_potential(graph, candidate, mesh, self.param_specs, self.data_specs, candidate.feature_major)
        self.params = param_layout(graph, candidate)
        self.plain: Callable = potential
        self.fn: Callable = _user_params(graph, self.layout, fused) or potential
        # the potential of params in the internal layout, sharded as the plan splits them: what inference runs
        self.internal: Callable = _padding_stopped(self.params, mesh, fused or smap)
        self.jitted: dict = {}  # functions jitted from this one, shared by every program that reuses it
        self.potential = jax.jit(self.fn)

    def place(self, data: Mapping[str, jax.Array], shapes: Mapping[str, tuple[int, ...]]) -> dict:
        """The placed data as the program reads them: each array held feature-major (claygraph.partition.storage)
        transposed once, on its devices, from the row-major array (`shapes`: its global internal shape), which
        is released after; no host copy is made. Every process of a program calls this on the same arrays;
        the transposes are jitted once per split function (a refit compiles nothing)."""
        out = dict(data)
        for k in sorted(self.candidate.feature_major):
            if k in out:  # (a block laid out on the host arrives feature-major already: Compiled.shard)
                out[stored_key(k)] = self._transpose(k, tuple(shapes[k]))(out.pop(k))
        return out

    def _transpose(self, name: str, shape: tuple[int, ...]) -> Callable:
        key = ("feature-major", name, shape)
        if key not in self.jitted:
            sharding = NamedSharding(self.mesh, self.data_specs[stored_key(name)])
            self.jitted[key] = jax.jit(lambda x: _rows_of(x, shape).T, out_shardings=sharding)
        return self.jitted[key]


def _user_params(graph: Graph, layout: Mapping[str, DimLayout], fn: Callable | None) -> Callable | None:
    """`fn` (params in the internal layout) taking params in the user's layout; keeps its `fused` blocking."""
    if fn is None or not any(d in layout for v in graph.inputs.params.values() for d in graph.value(v).dims):
        return fn

    def potential(params, data_int):
        return fn({k: param_relayout(params[k], graph.value(v), layout) for k, v in graph.inputs.params.items()},
                  data_int)

    potential.fused = fn.fused
    return potential


def _padding_stopped(params: ParamLayout, mesh: Mesh, fn: Callable) -> Callable:
    """`fn` whose padding slots carry no gradient: a padding slot holds a copy of a real entry and every
    use of it is masked, so its gradient is zero already; this makes it so whatever the model does."""
    padded = {k for k, s in params.sites.items() if any(d in params.layout and params.layout[d].padded for d in s.dims)}
    if not padded:
        return fn
    specs = {k: s.spec for k, s in params.sites.items()}

    def local(p):
        out = dict(p)
        for k in padded:
            s = params.sites[k]
            x = p[k]
            for i, d in enumerate(s.dims):
                lay = params.layout.get(d)
                if lay is None or not lay.padded:
                    continue
                if i >= len(s.spec) or s.spec[i] is None:  # whole on every device
                    on = jnp.asarray(lay.pad_mask())
                else:
                    on = jnp.arange(lay.local) < jnp.asarray(lay.counts)[lax.axis_index(AXIS)]
                shape = [1] * x.ndim
                shape[i] = -1
                x = jnp.where(jnp.reshape(on, shape), x, lax.stop_gradient(x))
            out[k] = x
        return out

    stop = jax.shard_map(local, mesh=mesh, in_specs=(specs,), out_specs=specs)

    def potential(p, data_int):
        return fn(stop(p), data_int)

    if hasattr(fn, "fused"):
        potential.fused = fn.fused
    return potential


def check_params(graph: Graph, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Params as NumPy arrays of the sites' dtypes, with a clear error for a missing site or bad shape."""
    want = graph.param_shapes
    missing = sorted(set(want) - set(params))
    if missing:
        raise PartitionError(f"params lack sites {missing}; the program takes {sorted(want)}")
    out = {}
    for k, shape in want.items():
        x = np.asarray(params[k], dtype=graph.value(graph.inputs.params[k]).dtype)
        if x.shape != shape:
            raise PartitionError(f"param {k!r} has shape {x.shape}; the model's site has {shape}")
        out[k] = x
    return out


def param_specs(graph: Graph, candidate: Candidate) -> dict[str, P]:
    """The partition spec of every latent site in the internal layout."""
    sh = candidate.propagation.shardings
    return {k: spec(graph.value(v), sh[v]) for k, v in graph.inputs.params.items()}


def param_layout(graph: Graph, candidate: Candidate) -> ParamLayout:
    return ParamLayout.of(graph, candidate.layout, param_specs(graph, candidate))


def data_specs(graph: Graph, candidate: Candidate) -> dict[str, P]:
    """The partition spec of every internal data array, as laid out."""
    sh = candidate.propagation.shardings
    return {k: spec(graph.value(v), sh[v]) for k, v in graph.inputs.data.items()}


def program_specs(graph: Graph, candidate: Candidate) -> dict[str, P]:
    """The partition specs of the data the program reads: an array held feature-major (SplitFunction.place)
    under its own name, with its spec transposed."""
    out = data_specs(graph, candidate)
    for k in sorted(candidate.feature_major):
        rows, features = (tuple(out.pop(k)) + (None, None))[:2]
        out[stored_key(k)] = P(features, rows)
    return out


def _rows_of(x, shape: tuple[int, ...]):
    """`x` as an array of `shape`; an array used in place (claygraph.partition.fused.in_place) comes flat,
    starting `x.size - prod(shape)` elements in."""
    if x.shape == shape:
        return x
    size = int(np.prod(shape))
    return x[x.size - size:].reshape(shape)


def internal_data(graph: Graph, candidate: Candidate, data: Data) -> dict[str, np.ndarray]:
    """The whole data set in the internal layout (NumPy): permuted, padded, index columns remapped.
    File-backed arrays are left out (their readers build their blocks)."""
    remapped = candidate.propagation.remapped
    return {k: relayout(data.arrays[k].values, graph.value(v), candidate.layout, remapped.get(v))
            for k, v in graph.inputs.data.items() if data.arrays[k].source is None}


def shard_blocks(specs: Mapping[str, P], internal: Mapping[str, np.ndarray], shards: int,
                 shard: int) -> dict[str, np.ndarray]:
    """What one shard holds of each internal array: its block along the split axis, or all of it."""
    out = {}
    for k, x in internal.items():
        axis = next((i for i, a in enumerate(specs[k]) if a is not None), None)
        if axis is None:
            out[k] = x
        else:
            n = x.shape[axis] // shards
            block = [slice(None)] * x.ndim
            block[axis] = slice(shard * n, (shard + 1) * n)
            out[k] = np.ascontiguousarray(x[tuple(block)])  # a view along the first axis: no copy before ray.put
    return out


@dataclass(frozen=True, eq=False)
class Artifact:
    """Plan x Data, compiled once on the driver: what every process of a program runs.

    `candidate` holds the split, the concrete layout and the propagation on it; `shapes` the
    global internal shape of every data input; `fingerprint` the driver's graph's. The model and
    the abstract data let a process without the driver's graph lower it again and check it."""

    model: Callable
    abstract: Data
    jacobian: bool
    fingerprint: str
    candidate: Candidate
    devices: int
    shapes: Mapping[str, tuple[int, ...]]

    @property
    def split(self) -> tuple[str, ...]:
        return self.candidate.split.name

    def specs(self, graph: Graph) -> dict[str, P]:
        return data_specs(graph, self.candidate)

    def graph(self) -> Graph:
        """The model lowered here, refused unless it is the graph the driver compiled."""
        from claygraph.ir.lower import lower

        return self.verify(lower(self.model, self.abstract, self.jacobian))

    def verify(self, graph: Graph) -> Graph:
        got = graph.fingerprint()
        if got != self.fingerprint:
            raise PartitionError(f"this process lowered the model to graph {got[:12]}, but the program was compiled "
                                 f"for graph {self.fingerprint[:12]}: refusing to run it. The model code, the data's "
                                 f"shapes and dims, or the jax/numpyro versions differ from the driver's")
        return graph


@dataclass(frozen=True, slots=True)
class Compiled:
    """What `compile_artifact` returns: the artifact and the data it lays out, in the internal
    layout (in-memory arrays) or as file sources (read by whoever holds the rows)."""

    artifact: Artifact
    internal: Mapping[str, np.ndarray]
    files: Mapping[str, Any]
    data: Data | None = None  # the user's data, where `internal` was left empty (laid out shard by shard)

    def shard(self, graph: Graph, specs: Mapping[str, P], shards: int, shard: int) -> dict[str, np.ndarray]:
        """What shard `shard` holds of every in-memory array, in the internal layout: its block along the
        split axis, or all of it. Made from the user's arrays when the whole internal copy was not (a
        multi-process runtime: the driver then holds the user's data and one shard's block at a time).
        An array the program holds feature-major comes so, under its stored name (`stored_key`), made in
        one pass: the worker uses the block in place instead of transposing a copy of it."""
        if self.data is None:
            return shard_blocks(specs, self.internal, shards, shard)
        cand = self.artifact.candidate
        remapped = cand.propagation.remapped
        inverse = {d: cand.layout[d].inverse() for d in set(remapped.values())}
        out = {}
        for k, vid in graph.inputs.data.items():
            if k in self.files:
                continue
            axis = next((i for i, a in enumerate(specs[k]) if a is not None), None)
            d = remapped.get(vid)
            x, dims = self.data.arrays[k].values, graph.value(vid).dims
            inv = None if d is None else inverse[d]
            if k in cand.feature_major:
                out[stored_key(k)] = internal_block(np.asarray(x).T, dims[::-1], cand.layout, inv,
                                                    None if axis is None else 1 - axis, shard)
            else:
                out[k] = internal_block(x, dims, cand.layout, inv, axis, shard)
        return out


def internal_block(x: np.ndarray, dims: tuple[str, ...], layout: Mapping[str, DimLayout], inverse: np.ndarray | None,
                   axis: int | None, shard: int) -> np.ndarray:
    """`relayout` of one shard's block along `axis` (None: the whole array) of `x`, whose axes are `dims`:
    only that block is made. `inverse`: the internal slot of each user index, for an index column remapped
    into a split dim."""
    x = np.asarray(x)
    for i, d in enumerate(dims):
        lay = layout.get(d)
        if lay is None:
            continue
        if i == axis:
            x = np.take(x, lay.shard_fill_slots(shard), axis=i)
        elif not lay.identity:
            x = np.take(x, lay.fill_slots(), axis=i)
    if inverse is not None:
        x = inverse.astype(x.dtype)[x]
    return np.require(x, requirements="C")  # (np.ascontiguousarray makes a scalar 1-d)


def compile_artifact(plan: Plan, data: Data | None = None, materialize: bool = True) -> Compiled:
    """The driver's one compile: the concrete layout, the propagation on it (padding decides masks),
    the fingerprint, and the data in the internal layout (`materialize`), or the user's data to lay out
    shard by shard (`Compiled.shard`)."""
    data = data if data is not None else plan.data
    if data is None or not data.has_values:
        raise PartitionError("the plan was made for abstract data; compile it with the real data: "
                             "cg.compile(plan, data=cg.Data(...))")
    graph = plan.graph
    layout = layout_for(plan.chosen.split, graph, data, plan.devices)
    cand = candidate_with_layout(graph, plan.chosen.split, layout, plan.cluster, plan.devices)
    if cand.propagation is None:
        raise PartitionError(f"split {plan.split} cannot be made on this data: {cand.cost.reason}")
    files = {k: data.arrays[k].source for k in graph.inputs.data if data.arrays[k].source is not None}
    # (a file-backed array too: each Ray worker reads its block feature-major, parquet.read_block)
    cand = replace(cand, feature_major=stored_feature_major(graph, cand.propagation.shardings))
    internal = internal_data(graph, cand, data) if materialize else {}
    shapes = {k: _internal_shape(graph, k, cand.layout) for k in graph.inputs.data}
    art = Artifact(graph.meta.model, data.abstract(), graph.meta.jacobian, graph.fingerprint(), cand, plan.devices,
                   shapes)
    return Compiled(art, internal, files, None if materialize else data)


def _internal_shape(graph: Graph, name: str, layout: Mapping[str, DimLayout]) -> tuple[int, ...]:
    v = graph.value(graph.inputs.data[name])
    return tuple(layout[d].internal if d in layout else n for d, n in zip(v.dims, v.shape))


class Program:
    """A split log density on this process's devices; params in and gradients out in the user's layout.

    Built from a compiled artifact whose data are all in memory; `runtime` is the runtime that
    built it (inference code runs steps through it)."""

    def __init__(self, compiled: Compiled, devices=None, graph: Graph | None = None, runtime: Any = None):
        if compiled.files:
            raise PartitionError(f"arrays {sorted(compiled.files)} are still in files; one process holds every "
                                 f"shard, so compile `data.load()`")
        art = compiled.artifact
        self.artifact, self.runtime = art, runtime
        self.graph = art.verify(graph) if graph is not None else art.graph()
        mesh = make_mesh(art.devices, devices)
        # a refit of the same graph, split, layout and devices reuses the split function and its jits
        self.fn = COMPILED.get(key_for(self.graph, art.candidate, mesh),
                               lambda: SplitFunction(self.graph, art.candidate, mesh))
        self.layout = self.fn.layout
        # the user's arrays are used in place where XLA can (claygraph.partition.fused.in_place): no copy
        host = host_arrays(self.fn.fn, self.graph, compiled.internal, self.fn.mesh)
        # an array used in place comes flat: only where the program reads it whole (unsplit; a split
        # forced on one device reads it by its shards' spec, so it is handed over as it is)
        host = {k: x if x.ndim == compiled.internal[k].ndim or self.fn.placed_specs[k] == P()
                else compiled.internal[k] for k, x in host.items()}
        placed = {k: jax.device_put(x, NamedSharding(self.fn.mesh, self.fn.placed_specs[k])) for k, x in host.items()}
        self._data = self.fn.place(placed, art.shapes)
        self._context = None
        self._potential = self.fn.potential

    @property
    def split(self) -> tuple[str, ...]:
        return self.artifact.split

    @property
    def data(self) -> dict[str, jax.Array]:
        return self._data

    @property
    def params(self) -> ParamLayout:
        """Where each latent site lives in the internal layout (and its conversions to and from the user's)."""
        return self.fn.params

    @property
    def jitted(self) -> dict:
        """Driver-side functions jitted for this program's graph, shared with its refits (see Context.cached)."""
        return self.fn.jitted

    def context(self):
        """The SPMD context inference code runs against (see claygraph.partition.context)."""
        from claygraph.partition.context import Context

        if self._context is None:
            self._context = Context.of(self.fn, self._data, multiprocess=False)
        return self._context

    def potential(self, params: Mapping[str, Any]) -> jax.Array:
        """NumPyro's potential energy at unconstrained `params` (a dict keyed by site)."""
        # NumPy arrays go straight into the jitted call: its C++ path transfers them faster than one
        # jnp.asarray per site (about 0.15 ms of 0.9 per W2 gradient, docs/performance.md)
        return self._potential(check_params(self.graph, params), self._data)

    def potential_and_grad(self, params: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """The potential and its gradient at `params` (the user's layout), computed by the program inference
        runs: the params enter the internal layout, the gradient leaves it, each once, on the host."""
        value, grad = self.context().value_and_grad(check_params(self.graph, params))
        return value, self.params.to_user(grad)

    def __repr__(self) -> str:
        return f"<Program split={self.split or '()'} devices={self.artifact.devices}>"

