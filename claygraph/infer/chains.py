"""One chain's work, as every worker runs it: BlackJAX kernels with window adaptation, warm-up and
sampling segments against an SPMD context, and the chain's record on the driver."""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

import blackjax
import blackjax.base
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.low_rank_adaptation import build_growing_window_schedule
from blackjax.adaptation.staged_adaptation import build_schedule

from claygraph.infer import metric

# NUTS's default mass-matrix adaptation (docs/inference.md: chosen by posteriordb's ESS per gradient
# and W2's ESS per second)
DEFAULT_ADAPTATION = "window_low_rank"


@dataclass(frozen=True)
class Settings:
    algorithm: str = "nuts"
    target_accept: float = 0.8
    max_tree_depth: int = 10
    num_integration_steps: int = 16
    warmup: int = 500
    adaptation: str = DEFAULT_ADAPTATION  # one of ADAPTATIONS
    # the windows' start ("window", "window_low_rank"): iterations that adapt the step size alone,
    # then the first window whose draws give the mass matrix (Stan's are 75 and 25;
    # docs/inference.md measures why 10 and 10)
    window_start: tuple[int, int] = (10, 10)
    # static HMC: each draw's step size is the adapted one times a uniform factor in [1 - j, 1 + j]
    # (Stan's stepsize_jitter); 0 keeps it fixed
    step_size_jitter: float = 0.0


# How the mass matrix is learnt in warm-up (docs/inference.md has the measurements):
# "window": Stan's windows, the diagonal from the draws' variances (BlackJAX window_adaptation);
# "fisher": the diagonal sqrt(var(draws) / var(gradients)) (nutpie's rule), Stan's windows;
# "low_rank": nutpie's low-rank + diagonal metric from draws and gradients, nutpie's growing windows;
# "window_low_rank": a low-rank + diagonal metric from draws and gradients learnt in Stan's windows
# (claygraph.infer.metric: regularised for short windows).
ADAPTATIONS = ("window", "fisher", "low_rank", "window_low_rank")


def _logdensity(potential, data):
    """The log density over `data`, passed in (a jitted function may not close over global arrays
    that span other processes' devices)."""
    return lambda z: -potential(z, data)


def _kernel(potential, settings: Settings, params: dict, data):
    ld = _logdensity(potential, data)
    if settings.algorithm == "nuts":
        return blackjax.nuts(ld, **{**params, "max_num_doublings": settings.max_tree_depth})
    if settings.step_size_jitter:
        return _jittered_hmc(ld, params, settings.num_integration_steps, settings.step_size_jitter)
    return blackjax.hmc(ld, **{**params, "num_integration_steps": settings.num_integration_steps})


def _jittered_hmc(ld, params: dict, steps: int, jitter: float):
    """Static HMC whose path length varies from draw to draw: a fixed path can resonate with a period of
    the posterior (a coordinate that returns near where it started, draw after draw) and mix very slowly."""
    kernel = blackjax.hmc.build_kernel()

    def step(key, state):
        k_eps, k_step = jax.random.split(key)
        eps = params["step_size"] * jax.random.uniform(k_eps, minval=1.0 - jitter, maxval=1.0 + jitter)
        return kernel(k_step, state, ld, eps, params["inverse_mass_matrix"], steps)

    return blackjax.base.SamplingAlgorithm(lambda position: blackjax.hmc.init(position, ld), step)


def _no_info(state, info, adaptation_state):
    return None


class _Centre(NamedTuple):
    mu_star: Any
    position: Any  # the chain's own position at each warm-up step


def _adaptation_state(state, info, adaptation_state):
    """Only what the low-rank warm-up reads back (its last centre) and the chain's position, not
    every step's buffers."""
    return blackjax.adaptation.base.AdaptationInfo(None, None, _Centre(adaptation_state.mu_star, state.position))


def _finite_state(state) -> jax.Array:
    return jnp.isfinite(state.logdensity) & jnp.all(
        jnp.asarray([jnp.all(jnp.isfinite(g)) for g in jax.tree.leaves(state.logdensity_grad)]))


def _keep_valid_centre(algo, logdensity, state, info):
    """The low-rank warm-up moves the chain to its estimated centre; where that lies outside the
    density's support (a bounded parameter whose centre estimate crosses the bound), the chain
    stays where warm-up left it instead."""
    last = jax.tree.map(lambda x: x[-1], info.adaptation_state.position)
    fallback = algo.init(last, logdensity)
    ok = _finite_state(state)
    return jax.tree.map(lambda a, b: jnp.where(ok, a, b), state, fallback)


def _warmup_fn(potential, settings: Settings):
    algo = blackjax.nuts if settings.algorithm == "nuts" else blackjax.hmc
    extra = ({"max_num_doublings": settings.max_tree_depth} if settings.algorithm == "nuts"
             else {"num_integration_steps": settings.num_integration_steps})

    @jax.jit
    def run(key, position, data):
        adapt = _adaptation(settings, algo, _logdensity(potential, data), extra, position)
        (state, params), info = adapt.run(key, position, num_steps=settings.warmup)
        if settings.adaptation == "low_rank":
            state = _keep_valid_centre(algo, _logdensity(potential, data), state, info)
        return state, params

    return run


def _adaptation(settings: Settings, algo, logdensity, extra: dict, position):
    common = {"target_acceptance_rate": settings.target_accept, "adaptation_info_fn": _no_info, **extra}
    # Stan's windows, the metric from the first window's draws early
    schedule = partial(build_schedule, initial_buffer_size=settings.window_start[0],
                       first_window_size=settings.window_start[1])
    if settings.adaptation == "window":
        return blackjax.staged_adaptation(algo, logdensity, "welford_diag", schedule_fn=schedule, **common)
    if settings.adaptation == "window_low_rank":
        d = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(position))
        with jax.ensure_compile_time_eval():  # the schedule is static (warm-up runs inside a jit)
            rows = metric.buffer_size(metric.longest_window(schedule(settings.warmup)), d)
        return blackjax.staged_adaptation(algo, logdensity, metric.low_rank_core(rows), schedule_fn=schedule,
                                          **common)
    if settings.adaptation == "fisher":
        return blackjax.staged_adaptation(algo, logdensity, metric="fisher_diag", **common)
    if settings.adaptation == "low_rank":
        # it re-centres the chain at the end of warm-up, from the adaptation states it records
        return blackjax.window_adaptation_low_rank(algo, logdensity, gradient_based_init=True,
                                                   schedule_fn=build_growing_window_schedule,
                                                   **{**common, "adaptation_info_fn": _adaptation_state})
    raise ValueError(f"adaptation must be one of {ADAPTATIONS}, not {settings.adaptation!r}")


def _sample_fn(potential, settings: Settings, n: int):
    @jax.jit
    def run(key, state, params, data):
        kernel = _kernel(potential, settings, params, data)

        def one(s, k):
            s, info = kernel.step(k, s)
            stats = {"diverging": info.is_divergent, "acceptance_rate": info.acceptance_rate,
                     "energy": info.energy,
                     "tree_depth": getattr(info, "num_trajectory_expansions", jnp.int32(0)),
                     "n_steps": getattr(info, "num_integration_steps", jnp.int32(0)),
                     "lp": s.logdensity}
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


def _stack(trees: list) -> Any:
    return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def _unstack(tree, n: int) -> list:
    return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(n)]


def warmup_chains(ctx, keys, positions, settings: Settings):
    """Warm-up of several chains at once, vectorised (`jax.vmap`) into one program: per-chain
    adaptation, chains in lockstep, every gradient evaluation batched over chains. One chain runs
    the plain (not vectorised) program."""
    if len(keys) == 1:
        state, params = warmup_chain(ctx, keys[0], positions[0], settings)
        return [state], [params]
    potential = ctx.potential
    run = ctx.cached(("warmup-vmap", settings),
                     lambda: jax.jit(jax.vmap(_warmup_fn(potential, settings).__wrapped__, in_axes=(0, 0, None))))
    state, params = run(ctx.to_global(_stack(keys)), ctx.to_global(_stack(positions)), ctx.data)
    return _unstack(ctx.to_host(state), len(keys)), _unstack(ctx.to_host(params), len(keys))


def sample_chains(ctx, keys, states, params, n: int, settings: Settings):
    """n draws of several chains at once (vectorised, as `warmup_chains`; one chain: not vectorised)."""
    if len(keys) == 1:
        return tuple([x] for x in sample_segment(ctx, keys[0], states[0], params[0], n, settings))
    potential = ctx.potential
    run = ctx.cached(("sample-vmap", settings, n),
                     lambda: jax.jit(jax.vmap(_sample_fn(potential, settings, n).__wrapped__, in_axes=(0, 0, 0, None))))
    s, (draws, stats) = run(*(ctx.to_global(_stack(x)) for x in (keys, states, params)), ctx.data)
    m = len(keys)
    return _unstack(ctx.to_host(s), m), _unstack(ctx.to_host(draws), m), _unstack(ctx.to_host(stats), m)
