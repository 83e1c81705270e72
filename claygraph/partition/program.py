"""Program: the compiled, split potential of a model, with `potential` and `potential_and_grad`.

`SplitFunction` is what every process builds identically from (graph, split, layout, mesh): the
global-view potential over internal-layout data. `Program` places the data for one process that
sees every device; the Ray runtime places each worker's shard and builds the same function there.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from claygraph.errors import PartitionError
from claygraph.frontend.data import Data
from claygraph.ir.graph import Graph
from claygraph.partition.cache import COMPILED, key_for
from claygraph.partition.emit import _Local, make_mesh, param_relayout, relayout, spec
from claygraph.partition.fused import fused_potential, host_arrays
from claygraph.partition.plan import Candidate, Plan, candidate_with_layout, layout_for
from claygraph.runtime.layout import DimLayout


class SplitFunction:
    """The split potential `(params in user layout, internal data) -> scalar`, for one mesh."""

    def __init__(self, graph: Graph, candidate: Candidate, mesh: Mesh):
        self.graph, self.candidate, self.mesh = graph, candidate, mesh
        self.layout: Mapping[str, DimLayout] = candidate.layout
        prop = candidate.propagation
        sh = prop.shardings
        g = graph
        consts = {vid: relayout(c, g.value(vid), self.layout, None)
                  if any(d in self.layout for d in g.value(vid).dims) else c for vid, c in g.consts.items()}
        local = _Local(graph, prop, self.layout, consts)
        self.param_specs = {k: spec(g.value(v), sh[v]) for k, v in g.inputs.params.items()}
        self.data_specs = data_specs(graph, candidate)
        smap = jax.shard_map(local, mesh=mesh, in_specs=(self.param_specs, self.data_specs), out_specs=P())

        def potential(params, data_int):
            internal = {k: param_relayout(params[k], g.value(v), self.layout) for k, v in g.inputs.params.items()}
            return smap(internal, data_int)

        # a sum over row blocks gets a fused value-and-gradient pass (claygraph.partition.fused)
        self.plain: Callable = potential
        self.fn: Callable = fused_potential(graph, candidate.split, self.layout, mesh, self.param_specs,
                                            self.data_specs) or potential
        self.jitted: dict = {}  # functions jitted from this one, shared by every program that reuses it
        self.potential = jax.jit(self.fn)
        self.value_and_grad = jax.jit(jax.value_and_grad(self.fn))


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


def data_specs(graph: Graph, candidate: Candidate) -> dict[str, P]:
    sh = candidate.propagation.shardings
    return {k: spec(graph.value(v), sh[v]) for k, v in graph.inputs.data.items()}


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


class Program:
    """A split log density on this process's devices; params in and gradients out in the user's layout."""

    def __init__(self, plan: Plan, data: Data | None = None, devices=None):
        data = data if data is not None else plan.data
        if data is None or not data.has_values:
            raise PartitionError("the plan was made for abstract data; compile it with the real data: "
                                 "cg.compile(plan, data=cg.Data(...))")
        data = data.load()  # one process holds every shard: file-backed arrays are read whole
        self.plan = plan
        self.graph = plan.graph
        # the concrete layout decides padding, hence masks: propagate again on it
        layout = layout_for(plan.chosen.split, plan.graph, data, plan.devices)
        cand = candidate_with_layout(plan.graph, plan.chosen.split, layout, plan.cluster, plan.devices)
        mesh = make_mesh(plan.devices, devices)
        # a refit of the same graph, split, layout and devices reuses the split function and its jits
        self.fn = COMPILED.get(key_for(plan.graph, cand, mesh), lambda: SplitFunction(plan.graph, cand, mesh))
        self.layout = self.fn.layout
        internal = internal_data(plan.graph, cand, data)
        # the user's arrays are used in place where XLA can (claygraph.partition.fused.in_place): no copy
        host = host_arrays(self.fn.fn, plan.graph, internal, self.fn.mesh)
        self._data = {k: jax.device_put(x, NamedSharding(self.fn.mesh, self.fn.data_specs[k]))
                      for k, x in host.items()}
        self._context = None
        self._potential = self.fn.potential
        self._value_and_grad = self.fn.value_and_grad

    @property
    def split(self) -> tuple[str, ...]:
        return self.plan.split

    @property
    def data(self) -> dict[str, jax.Array]:
        return self._data

    def context(self):
        """The SPMD context inference code runs against (see claygraph.runtime.spmd)."""
        from claygraph.runtime.spmd import Context

        if self._context is None:
            self._context = Context(self.fn.fn, self._data, self.fn.mesh, multiprocess=False, cache=self.fn.jitted)
        return self._context

    def potential(self, params: Mapping[str, Any]) -> jax.Array:
        """NumPyro's potential energy at unconstrained `params` (a dict keyed by site)."""
        return self._potential(_as_jnp(check_params(self.graph, params)), self._data)

    def potential_and_grad(self, params: Mapping[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
        return self._value_and_grad(_as_jnp(check_params(self.graph, params)), self._data)

    def __repr__(self) -> str:
        return f"<Program split={self.split or '()'} devices={self.plan.devices}>"


def _as_jnp(params: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v) for k, v in params.items()}


def compile(plan: Plan, data: Data | None = None, runtime=None):  # noqa: A001 - the public name
    """Build the split program for `plan`: on `runtime` (Local or Ray), by default this process's devices."""
    if runtime is not None:
        return runtime.compile(plan, data)
    return Program(plan, data)
