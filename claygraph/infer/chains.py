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
    # the longest warm-up ("window", "window_low_rank"): while the last window's metric still moved
    # beyond its noise (`metric.settle_ratio`), warm-up goes on, one more window of the last one's length
    # and the final step-size buffer at a time, up to this many iterations in all (None: EXTEND_CAP x
    # warmup; `warmup` itself: never extended)
    max_warmup: int | None = None

    @property
    def warmup_cap(self) -> int:
        return self.warmup * EXTEND_CAP if self.max_warmup is None else max(self.max_warmup, self.warmup)


# a warm-up whose metric has not settled runs on up to this many times its length (Settings.max_warmup)
EXTEND_CAP = 4
# the final step-size buffer of every warm-up (Stan's and BlackJAX's default)
FINAL_BUFFER = 50


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


# what a chain's adapted parameters hold for its kernel (the rest: the warm-up's record)
KERNEL_PARAMS = ("step_size", "inverse_mass_matrix")


def _kernel(potential, settings: Settings, params: dict, data):
    ld = _logdensity(potential, data)
    params = {k: params[k] for k in KERNEL_PARAMS}
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


def _settling(state, info, adaptation_state):
    """What the extensible warm-ups read back: the last window's change record (a scalar each per step)."""
    core = adaptation_state.imm_state
    return core.change, core.window


EXTENSIBLE = ("window", "window_low_rank")  # the adaptations whose warm-up can extend itself


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


def _algorithm(settings: Settings) -> tuple[Any, dict]:
    """The BlackJAX algorithm and its fixed path parameters (NUTS's tree depth, HMC's steps)."""
    if settings.algorithm == "nuts":
        return blackjax.nuts, {"max_num_doublings": settings.max_tree_depth}
    return blackjax.hmc, {"num_integration_steps": settings.num_integration_steps}


def _warmup_fn(potential, settings: Settings):
    algo, extra = _algorithm(settings)

    @jax.jit
    def run(key, position, data):
        adapt = _adaptation(settings, algo, _logdensity(potential, data), extra, position)
        (state, params), info = adapt.run(key, position, num_steps=settings.warmup)
        if settings.adaptation == "low_rank":
            state = _keep_valid_centre(algo, _logdensity(potential, data), state, info)
        return state, _record(params, info, settings.warmup, settings)

    return run


def _record(params: dict, info, steps, settings: Settings) -> dict:
    """The adapted parameters plus the warm-up's record: iterations run, and (extensible warm-ups) the
    last window's change ratio and length."""
    out = {**params, "warmup_steps": jnp.asarray(steps, jnp.int32)}
    if settings.adaptation in EXTENSIBLE and info is not None:
        change, window = info
        out |= {"settle_ratio": change[-1], "window": window[-1]}
    return out


def _windows(settings: Settings):
    """Stan's windows, the metric from the first window's draws early."""
    return partial(build_schedule, initial_buffer_size=settings.window_start[0],
                   first_window_size=settings.window_start[1])


def extension_length(settings: Settings) -> int:
    """Iterations one extension of the warm-up runs: a window as long as the schedule's last, then the
    final step-size buffer."""
    return metric.longest_window(_windows(settings)(settings.warmup)) + FINAL_BUFFER


def _extension_schedule(length: int) -> jax.Array:
    window = length - FINAL_BUFFER
    return jnp.asarray([(1, False)] * (window - 1) + [(1, True)] + [(0, False)] * FINAL_BUFFER)


def _extend_fn(potential, settings: Settings):
    """One more window of warm-up from a chain's state and adapted parameters (`extension_length`)."""
    algo, extra = _algorithm(settings)
    length = extension_length(settings)

    @jax.jit
    def run(key, state, params, data):
        imm = params["inverse_mass_matrix"]
        if settings.adaptation == "window_low_rank":
            rows = metric.buffer_size(length - FINAL_BUFFER, imm.sigma.shape[0])
            core, start = metric.low_rank_core(rows), metric.low_rank_state(imm, rows, params["window"])
        else:
            core, start = metric.diagonal_core(), metric.diagonal_state(imm, params["window"])
        adapt = blackjax.staged_adaptation(
            algo, _logdensity(potential, data), core, schedule_fn=lambda n: _extension_schedule(length),
            initial_step_size=params["step_size"], initial_metric_state=start,
            target_acceptance_rate=settings.target_accept, adaptation_info_fn=_settling, **extra)
        (state, new), info = adapt.run(key, state.position, num_steps=length)
        return state, _record(new, info, params["warmup_steps"] + length, settings)

    return run


def unsettled(params: dict) -> bool:
    """Whether a chain's warm-up ended with its metric still moving (`metric.settle_ratio` over 1)."""
    return "settle_ratio" in params and float(np.asarray(params["settle_ratio"])) > 1.0


def _adaptation(settings: Settings, algo, logdensity, extra: dict, position):
    extensible = settings.adaptation in EXTENSIBLE
    common = {"target_acceptance_rate": settings.target_accept,
              "adaptation_info_fn": _settling if extensible else _no_info, **extra}
    schedule = _windows(settings)
    if settings.adaptation == "window":
        return blackjax.staged_adaptation(algo, logdensity, metric.diagonal_core(), schedule_fn=schedule, **common)
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
    """Window adaptation for one chain, extended while its metric has not settled (`Settings.max_warmup`);
    returns (state, adapted params) on the host."""
    run = ctx.cached(("warmup", settings), lambda: _warmup_fn(ctx.potential, settings))
    state, params = ctx.to_host(run(ctx.to_global(key), ctx.to_global(position), ctx.data))
    states, params = _extend(ctx, [key], [state], [params], settings)
    return states[0], params[0]


def _vmapped_extension(potential, settings: Settings):
    return jax.jit(jax.vmap(_extend_fn(potential, settings).__wrapped__, in_axes=(0, 0, 0, None)))


def _extension_key(key, steps) -> np.ndarray:
    return np.asarray(jax.random.fold_in(jnp.asarray(key), int(np.asarray(steps))))


def _extend(ctx, keys: list, states: list, params: list, settings: Settings) -> tuple[list, list]:
    """Extensions of the chains' warm-up (all chains together, as they were warmed up) while any chain's
    metric is still moving and the cap allows another (`Settings.max_warmup`)."""
    length = extension_length(settings)
    while any(unsettled(p) for p in params) and int(np.asarray(params[0]["warmup_steps"])) + length <= \
            settings.warmup_cap:
        ks = [_extension_key(k, p["warmup_steps"]) for k, p in zip(keys, params)]
        if len(keys) == 1:
            run = ctx.cached(("extend", settings), lambda: _extend_fn(ctx.potential, settings))
            out = ctx.to_host(run(ctx.to_global(ks[0]), ctx.to_global(states[0]), ctx.to_global(params[0]), ctx.data))
            states, params = [out[0]], [out[1]]
            continue
        run = ctx.cached(("extend-vmap", settings), partial(_vmapped_extension, ctx.potential, settings))
        st, pa = ctx.to_host(run(*(ctx.to_global(_stack(x)) for x in (ks, states, params)), ctx.data))
        states, params = _unstack(st, len(keys)), _unstack(pa, len(keys))
    return states, params


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
    return _extend(ctx, keys, _unstack(ctx.to_host(state), len(keys)), _unstack(ctx.to_host(params), len(keys)),
                   settings)


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
