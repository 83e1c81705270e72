"""Program: the compiled, split potential of a model, with `potential` and `potential_and_grad`."""
from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from claygraph.errors import PartitionError
from claygraph.frontend.data import Data
from claygraph.partition.emit import _Local, make_mesh, param_relayout, relayout, spec
from claygraph.partition.plan import Plan, evaluate_candidate


class Program:
    """A global-view log density over the plan's mesh; params in and gradients out in the user's layout."""

    def __init__(self, plan: Plan, data: Data | None = None, devices=None):
        data = data if data is not None else plan.data
        if data is None or any(a.is_abstract for a in data.arrays.values()):
            raise PartitionError("the plan was made for abstract data; compile it with the real data: "
                                 "cg.compile(plan, data=cg.Data(...))")
        self.plan = plan
        self.graph = g = plan.graph
        # the concrete layout decides padding, hence masks: propagate again on it
        cand = evaluate_candidate(g, plan.chosen.split, data, plan.cluster, plan.devices)
        self.candidate, self.layout, prop = cand, cand.layout, cand.propagation
        self.mesh = make_mesh(plan.devices, devices)
        sh = prop.shardings
        consts = {vid: relayout(c, g.value(vid), self.layout, None) if any(d in self.layout for d in g.value(vid).dims)
                  else c for vid, c in g.consts.items()}
        plan_view = _PlanView(plan, cand)
        local = _Local(plan_view, self.layout, consts)
        self._param_specs = {k: spec(g.value(v), sh[v]) for k, v in g.inputs.params.items()}
        data_specs = {k: spec(g.value(v), sh[v]) for k, v in g.inputs.data.items()}
        self._data = {k: jax.device_put(relayout(data.arrays[k].values, g.value(v), self.layout,
                                                 prop.remapped.get(v)),
                                        NamedSharding(self.mesh, data_specs[k]))
                      for k, v in g.inputs.data.items()}
        smap = jax.shard_map(local, mesh=self.mesh, in_specs=(self._param_specs, data_specs), out_specs=P())

        def potential(params, data_int):
            internal = {k: param_relayout(params[k], g.value(v), self.layout) for k, v in g.inputs.params.items()}
            return smap(internal, data_int)

        self._potential = jax.jit(potential)
        self._value_and_grad = jax.jit(jax.value_and_grad(potential))
        self._fn = potential

    @property
    def split(self) -> tuple[str, ...]:
        return self.plan.split

    def _params(self, params: Mapping[str, Any]) -> dict[str, jax.Array]:
        want = self.graph.param_shapes
        missing = sorted(set(want) - set(params))
        if missing:
            raise PartitionError(f"params lack sites {missing}; the program takes {sorted(want)}")
        out = {}
        for k, shape in want.items():
            x = jnp.asarray(params[k], dtype=self.graph.value(self.graph.inputs.params[k]).dtype)
            if x.shape != shape:
                raise PartitionError(f"param {k!r} has shape {x.shape}; the model's site has {shape}")
            out[k] = x
        return out

    def potential(self, params: Mapping[str, Any]) -> jax.Array:
        """NumPyro's potential energy at unconstrained `params` (a dict keyed by site)."""
        return self._potential(self._params(params), self._data)

    def potential_and_grad(self, params: Mapping[str, Any]) -> tuple[jax.Array, dict[str, jax.Array]]:
        return self._value_and_grad(self._params(params), self._data)

    def potential_fn(self):
        """(params, data) -> potential, for use inside a caller's own jit (with `self.data`)."""
        return self._fn

    @property
    def data(self) -> dict[str, jax.Array]:
        return self._data

    def __repr__(self) -> str:
        return f"<Program split={self.split or '()'} devices={self.plan.devices}>"


class _PlanView:
    """The plan as the emitter needs it, with the propagation made on the concrete layout."""

    def __init__(self, plan: Plan, cand):
        self.graph = plan.graph
        self.chosen = cand


def compile(plan: Plan, data: Data | None = None, runtime=None) -> Program:  # noqa: A001 - public name
    """Build the split program for `plan` (on `runtime`, by default this process's devices)."""
    if runtime is not None and hasattr(runtime, "compile"):
        return runtime.compile(plan, data)
    return Program(plan, data)


