"""The SPMD context: what one process of a program hands to inference code.

Inference code is written once against a `Context` (the global-view potential, the data, and
conversions between host NumPy trees and global arrays). A runtime's `run(program, fn, *args)`
calls `fn(context, *args)` in this process for a local Program, or on every Ray worker that holds
the program (every worker runs the same jitted code; the driver takes worker 0's replicated result).
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


@dataclass
class Context:
    potential: Callable  # (params in user layout, data) -> scalar, global view, not jitted
    data: Mapping[str, Any]
    mesh: Mesh
    multiprocess: bool
    cache: dict = field(default_factory=dict)

    def to_global(self, tree):
        """Host arrays -> replicated global arrays (every process passes the same values)."""
        if not self.multiprocess:
            return jax.tree.map(jnp.asarray, tree)
        rep = NamedSharding(self.mesh, P())
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(rep, np.asarray(x)), tree)

    def to_host(self, tree):
        def get(x):
            return np.asarray(x.addressable_data(0)) if isinstance(x, jax.Array) else np.asarray(x)

        return jax.tree.map(get, tree)

    def cached(self, key: Any, build: Callable[[], Any]) -> Any:
        """A jitted function built once per split function and settings (the cache is shared by every
        program built from the same split function: refits trace and compile nothing). `build` must not
        hold on to the context: what it returns outlives this program, and the context holds its data."""
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]
