"""The SPMD context: what one process of a program hands to inference code.

Inference code is written once against a `Context` (the global-view potential, the data, and
conversions between host NumPy trees and global arrays). A runtime's `run(program, fn, *args)`
calls `fn(context, *args)` in this process for a local Program, or on every Ray worker that holds
the program (every worker runs the same jitted code; the driver takes worker 0's replicated result,
with the workers' `Pieces` of a sharded one put together).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from claygraph.partition.params import ParamLayout, pieces_of


@dataclass
class Context:
    potential: Callable  # (params in user layout, data) -> scalar, global view, not jitted
    data: Mapping[str, Any]
    mesh: Mesh
    multiprocess: bool
    cache: dict = field(default_factory=dict)
    # (params in the internal layout, sharded as `params` says, data) -> scalar: what optimisers run on
    internal: Callable | None = None
    params: ParamLayout | None = None
    # state an inference loop keeps on the devices between its steps (L-BFGS's memory, ...): it never
    # travels to the driver; a rebuilt program starts without it
    resident: dict = field(default_factory=dict)
    key: Any = None  # the split function's CacheKey: what programs kept across processes are keyed by

    @staticmethod
    def of(fn, data: Mapping[str, Any], multiprocess: bool) -> Context:
        """The context of split function `fn` (claygraph.partition.program.SplitFunction) over `data`."""
        return Context(fn.fn, data, fn.mesh, multiprocess, fn.jitted, fn.internal, fn.params, key=fn.key)

    def params_in(self, params: Mapping[str, Any] | None = None) -> dict[str, jax.Array]:
        """Params (the user's layout, host arrays; None: zeros) as global arrays in the internal layout,
        each device holding only its shards. Every process passes the same values."""
        return self.internal_in(self.params.zeros() if params is None else self.params.to_internal(params))

    def internal_in(self, host: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """Per-site host arrays already in the internal layout (each site's shape, optionally with trailing
        axes) as global arrays sharded as the sites are."""
        out = {}
        for k, s in self.params.sites.items():
            x = np.asarray(host[k])
            sharding = NamedSharding(self.mesh, P(*s.spec, *([None] * (x.ndim - len(s.internal_shape)))))
            out[k] = (jax.make_array_from_callback(x.shape, sharding, lambda i, x=x: x[i]) if self.multiprocess
                      else jax.device_put(x, sharding))
        return out

    def evaluation(self, params: Mapping[str, Any] | None = None) -> Callable[[], Any]:
        """One evaluation of the internal program's value and gradient at `params` (the user's layout; None:
        zeros) placed once: what a step of an inference loop evaluates, for timing it."""
        internal = self.internal
        f = self.cached(("internal", "value_and_grad"), lambda: jax.jit(jax.value_and_grad(internal)))
        placed, data = self.params_in(params), self.data
        return lambda: f(placed, data)

    def to_global(self, tree):
        """Host arrays -> replicated global arrays (every process passes the same values)."""
        if not self.multiprocess:
            return jax.tree.map(jnp.asarray, tree)
        rep = NamedSharding(self.mesh, P())
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(rep, np.asarray(x)), tree)

    def value_and_grad(self, params: Mapping[str, Any] | None = None):
        """The potential and its gradient at `params` (the user's layout, host arrays; None: zeros) on the
        internal program: (value, gradient in the internal layout as `to_host` gives it)."""
        v, g = self.evaluation(params)()
        return self.to_host(v), self.to_host(g)

    def to_host(self, tree):
        """Global arrays -> host arrays: whole where this process holds all of one (one process, or
        replicated); else this process's `Pieces`, which the runtime puts together on the driver."""
        def get(x):
            if not isinstance(x, jax.Array):
                return np.asarray(x)
            if x.is_fully_addressable:
                return np.asarray(x)
            if x.is_fully_replicated:
                return np.asarray(x.addressable_data(0))
            return pieces_of(x)

        return jax.tree.map(get, tree)

    def cached(self, key: Any, build: Callable[[], Any]) -> Any:
        """A jitted function built once per split function and settings (the cache is shared by every
        program built from the same split function: refits trace and compile nothing). `build` must not
        hold on to the context: what it returns outlives this program, and the context holds its data."""
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]
