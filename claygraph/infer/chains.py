"""One chain's work, as every worker runs it: BlackJAX kernels with window adaptation, warm-up and
sampling segments against an SPMD context, and the chain's record on the driver."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import blackjax
import jax
import jax.numpy as jnp
import numpy as np


@dataclass(frozen=True)
class Settings:
    algorithm: str = "nuts"
    target_accept: float = 0.8
    max_tree_depth: int = 10
    num_integration_steps: int = 16
    warmup: int = 500


def _logdensity(potential, data):
    """The log density over `data`, passed in (a jitted function may not close over global arrays
    that span other processes' devices)."""
    return lambda z: -potential(z, data)


def _kernel(potential, settings: Settings, params: dict, data):
    ld = _logdensity(potential, data)
    if settings.algorithm == "nuts":
        return blackjax.nuts(ld, **{**params, "max_num_doublings": settings.max_tree_depth})
    return blackjax.hmc(ld, **{**params, "num_integration_steps": settings.num_integration_steps})


def _no_info(state, info, adaptation_state):
    return None


def _warmup_fn(potential, settings: Settings):
    algo = blackjax.nuts if settings.algorithm == "nuts" else blackjax.hmc
    extra = ({"max_num_doublings": settings.max_tree_depth} if settings.algorithm == "nuts"
             else {"num_integration_steps": settings.num_integration_steps})

    @jax.jit
    def run(key, position, data):
        adapt = blackjax.window_adaptation(algo, _logdensity(potential, data),
                                           target_acceptance_rate=settings.target_accept,
                                           adaptation_info_fn=_no_info, **extra)
        (state, params), _ = adapt.run(key, position, num_steps=settings.warmup)
        return state, params

    return run


def _sample_fn(potential, settings: Settings, n: int):
    @jax.jit
    def run(key, state, params, data):
        kernel = _kernel(potential, settings, params, data)

        def one(s, k):
            s, info = kernel.step(k, s)
            stats = {"diverging": info.is_divergent, "acceptance_rate": info.acceptance_rate,
                     "energy": info.energy,
                     "tree_depth": getattr(info, "num_trajectory_expansions", jnp.int32(0)),
                     "n_steps": getattr(info, "num_integration_steps", jnp.int32(0))}
            return s, (s.position, stats)

        return jax.lax.scan(one, state, jax.random.split(key, n))

    return run


def warmup_chain(ctx, key, position, settings: Settings):
    """Window adaptation for one chain; returns (state, adapted params) on the host."""
    run = ctx.cached(("warmup", settings), lambda: _warmup_fn(ctx.potential, settings))
    state, params = run(ctx.to_global(key), ctx.to_global(position), ctx.data)
    return ctx.to_host(state), ctx.to_host(params)


def sample_segment(ctx, key, state, params, n: int, settings: Settings):
    """n draws of one chain from `state`; returns (new state, draws, stats) on the host."""
    run = ctx.cached(("sample", settings, n), lambda: _sample_fn(ctx.potential, settings, n))
    s, (draws, stats) = run(ctx.to_global(key), ctx.to_global(state), ctx.to_global(params), ctx.data)
    return ctx.to_host(s), ctx.to_host(draws), ctx.to_host(stats)


@dataclass
class Chain:
    id: int
    key: np.ndarray
    state: Any = None
    params: Any = None
    draws: list = field(default_factory=list)
    stats: list = field(default_factory=list)
    seconds: float = 0.0
    worker: int | None = None
    segment_s: list = field(default_factory=list)  # wall seconds of each sampling segment
    init: dict | None = None  # a starting point with a finite potential and gradient

    @property
    def n(self) -> int:
        return sum(len(jax.tree.leaves(d)[0]) for d in self.draws) if self.draws else 0


def initial_position(graph, key, radius: float = 2.0) -> dict:
    out = {}
    names = sorted(graph.param_shapes)
    for k, sub in zip(names, jax.random.split(key, len(names))):
        shape = graph.param_shapes[k]
        dtype = graph.value(graph.inputs.params[k]).dtype
        out[k] = np.asarray(jax.random.uniform(sub, shape, minval=-radius, maxval=radius), dtype)
    return out
