"""What every inference method shares: plan + program set-up, constraining, recovery after a lost worker."""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from claygraph.errors import WorkerError
from claygraph.runtime.protocol import Runtime

log = logging.getLogger("claygraph.infer")


@dataclass
class Session:
    """A plan compiled on a runtime, rebuildable after a worker loss."""

    model: Callable
    data: Any
    plan: Any
    program: Any
    runtime: Any
    split: Any = None  # the split the user asked for (None: the cost model's choice)

    def rebuild(self) -> None:
        self.runtime.restart()
        self.program = self.runtime.compile(self.plan, self.data)


def setup(model: Callable, data, runtime: Runtime | None = None, cluster=None, split=None,
          jacobian: bool = True) -> Session:
    from claygraph.partition.cluster import ClusterSpec
    from claygraph.partition.plan import partition
    from claygraph.runtime.local import Local

    runtime = runtime if runtime is not None else Local(devices=1)
    devices = runtime.devices
    if cluster is None:
        cluster = ClusterSpec.local(devices=devices)
    elif cluster.devices != devices:
        raise ValueError(f"cluster has {cluster.devices} devices but the runtime has {devices}")
    plan = partition(model, data, cluster=cluster, split=split, jacobian=jacobian)
    return Session(model, data, plan, runtime.compile(plan, data), runtime, split)


def run_spmd(program, fn: Callable, *args) -> Any:
    """fn(context, *args) on every process of `program`, through its runtime; the result once."""
    return program.runtime.run(program, fn, *args)


def zeros_like_params(graph) -> dict[str, np.ndarray]:
    return {k: np.zeros(s, graph.value(graph.inputs.params[k]).dtype) for k, s in graph.param_shapes.items()}


def run_resumable(session: Session, step: Callable[[Any, Any], tuple[Any, bool]], state: Any,
                  max_restarts: int = 2) -> Any:
    """Call `step(program, state) -> (state, done)` until done; after a lost worker, rebuild the
    group and resume from the last state returned (the checkpoint)."""
    restarts = 0
    while True:
        try:
            state, done = step(session.program, state)
        except WorkerError as e:
            if restarts >= max_restarts:
                raise
            restarts += 1
            log.warning("lost a worker (%s); rebuilding the group and resuming from the checkpoint", e)
            session.rebuild()
            continue
        if done:
            return state


def constrain(model: Callable, data, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Unconstrained `params` -> the model's constrained sites."""
    from numpyro.infer.util import constrain_fn

    if data.has_sources:
        batch = {k: np.asarray(v)[None] for k, v in params.items()}
        return {k: v[0] for k, v in constrain_draws(model, data, batch).items()}
    return {k: np.asarray(v) for k, v in constrain_fn(model, (data,), {}, dict(params)).items()}


def constrain_draws(model: Callable, data, draws: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Constrain a batch of unconstrained draws (leading axis) with one jitted vmap.

    File-backed data go in as arguments, zero-stride stand-ins for the files' arrays: jit prunes
    arguments the constraints do not use, so the table is neither read nor copied to a device.
    """
    import jax
    from numpyro.infer.util import constrain_fn

    if data.has_sources:
        fn = jax.jit(jax.vmap(lambda z, d: constrain_fn(model, (d,), {}, z), in_axes=(0, None)))
        return {k: np.asarray(v) for k, v in fn(dict(draws), data.stand_in()).items()}
    fn = jax.jit(jax.vmap(lambda z: constrain_fn(model, (data,), {}, z)))
    return {k: np.asarray(v) for k, v in fn(dict(draws)).items()}


def to_inference_data(graph, samples: Mapping[str, np.ndarray], sample_stats: Mapping[str, np.ndarray] | None = None):
    """ArviZ InferenceData with the model's site names, dims and coordinates. samples: (chain, draw, ...)."""
    import arviz as az

    dims, coords = {}, {}
    shapes = {s.name: s for s in graph.meta.info.sites}
    for k, v in samples.items():
        site = shapes.get(k)
        pd = graph.param_dims.get(k)
        if site is not None and pd is not None and tuple(v.shape[2:]) == tuple(site.constrained_shape) \
                and len(pd) == v.ndim - 2 and all(d is not None for d in pd):
            dims[k] = list(pd)
            for d, n in zip(pd, v.shape[2:]):
                coords.setdefault(d, np.arange(n))
    return az.from_dict(posterior=dict(samples), sample_stats=dict(sample_stats or {}), dims=dims, coords=coords)
