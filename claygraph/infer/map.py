"""MAP by L-BFGS (optax, zoom line search), run SPMD inside one jitted loop on every worker.

The loop returns to the driver every `chunk` iterations only, to checkpoint its state: a lost
worker costs at most one chunk. Stop rule, tested at the current point: max |gradient| <= tol x
scale, where scale is max(1, |objective at that point|) unless given (scikit-learn's `tol` is on the
mean-loss gradient: the GLMs pass scale = n). The objective at the start is no scale: a poor starting
point can make it orders of magnitude larger than at the mode. The loop also stops when neither the objective nor the
gradient improves for STALL iterations (float precision reached), or at max_iter; the result's
`stop` and `message` say which, and `converged` agrees with the rule that stopped it.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

from claygraph.errors import ModelError
from claygraph.infer.common import (
    Continue,
    Session,
    constrain,
    invalid_sites,
    kept,
    like_sites,
    new_fit,
    release,
    run_resumable,
    run_spmd,
    setup,
    valid_initial_points,
    zeros_like_params,
)
from claygraph.infer.progress import OptimProgress

DIVERGENCE_Z = 20.0  # |log| of a constrained value (a scale) beyond which it has run off to 0 or infinity
STALL = 10  # iterations in a row without progress in objective or gradient
RESTARTS = 3  # fresh L-BFGS memories after a stall
STALL_GRAD_RTOL = 1e-3  # a stall counts as converged when max|grad| <= this x max(1, |objective|)
FIRST_CHUNK = 10  # iterations of a fit's first chunk: a scale that runs off is named after at most these
PROBE = (-10.0, -20.0, -40.0)  # unconstrained values at which a bounded-below site is probed before a fit
BOUNDED_BELOW = frozenset({"Positive", "GreaterThan", "GreaterThanEq", "Interval", "OpenInterval", "UnitInterval"})

class LBFGSState(NamedTuple):
    params: Any
    opt: Any
    iteration: Any
    gmax: Any  # max|gradient| at params (the stop rule's test)
    stall: Any
    value: Any  # best objective so far
    gbest: Any  # best max|gradient| so far
    best: Any  # the params with the best objective (returned unless the stop rule held at params)
    best_gmax: Any
    current: Any  # the objective at params
    gtol: Any  # tol x scale at params (relative scale: max(1, |objective at params|))
    start: Any  # the objective at the starting point (+inf until evaluated)
    invalid: Any  # the objective at the starting point is not finite: nothing to optimise
    tol: Any  # the user's tol (a traced value: fits with another tol reuse the compiled loop)
    max_iter: Any


@dataclass(frozen=True)
class MAPResult:
    params: dict  # constrained, the user's layout and group order
    unconstrained: dict
    objective: float
    iterations: int
    converged: bool
    grad_max: float
    message: str
    plan: Any
    stop: str = "tol"  # what stopped it: "tol" (the gradient rule), "stall" (float precision), "max_iter"

    def __repr__(self) -> str:
        lines = [f"MAPResult(objective={self.objective:.6g}, iterations={self.iterations}, converged={self.converged},",
                 f"          split={self.plan.split or '()'}, {self.message})"]
        for k, v in sorted(self.params.items()):
            v = np.asarray(v)
            shown = np.array2string(v.ravel()[:4], precision=4) + (" ..." if v.size > 4 else "")
            lines.append(f"  {k:<12}{str(v.shape):<12}{shown}")
        return "\n".join(lines)


def _build(potential, memory_size: int, relative: bool, ftol: float):
    opt = optax.lbfgs(memory_size=memory_size)

    def run(state: LBFGSState, data, iterations) -> LBFGSState:
        f = lambda p: potential(p, data)
        vg = optax.value_and_grad_from_state(f)
        stop_at = jnp.minimum(state.iteration + iterations, state.max_iter)

        def cond(s):
            return (s.iteration < stop_at) & (s.gmax > s.gtol) & (s.stall < STALL) & ~s.invalid

        def body(s):
            value, grad = vg(s.params, state=s.opt)
            first = s.start == jnp.inf  # the first evaluation: the starting point
            start = jnp.where(first, value, s.start)
            gtol = s.tol * jnp.maximum(1.0, jnp.abs(value)) if relative else s.gtol
            g0 = _gmax(grad)
            # the starting point may already satisfy the rule (or have no finite objective): stop before moving
            done = first & ((g0 <= gtol) | ~jnp.isfinite(value))
            updates, o = opt.update(grad, s.opt, s.params, value=value, grad=grad, value_fn=f)
            params = optax.apply_updates(s.params, updates)
            new_v, new_g = otu.tree_get(o, "value"), otu.tree_get(o, "grad")
            gmax = _gmax(new_g)
            # at float precision the line search accepts steps by slope (approximate Wolfe), so the
            # objective alone can stall while the gradient still shrinks: stalled means neither improves
            flat = (new_v >= s.value - ftol * jnp.maximum(1.0, jnp.abs(s.value))) & (gmax >= 0.99 * s.gbest)
            better = new_v <= s.value
            best = jax.tree.map(lambda a, b: jnp.where(better, a, b), params, s.best)
            moved = LBFGSState(params, o, s.iteration + 1, gmax, jnp.where(flat, s.stall + 1, 0),
                               jnp.minimum(new_v, s.value), jnp.minimum(gmax, s.gbest), best,
                               jnp.where(better, gmax, s.best_gmax), new_v,
                               s.tol * jnp.maximum(1.0, jnp.abs(new_v)) if relative else s.gtol, start,
                               jnp.bool_(False), s.tol,
                               s.max_iter)
            stay = s._replace(gmax=g0, value=jnp.minimum(value, s.value), best_gmax=g0, current=value, gtol=gtol,
                              start=start, invalid=~jnp.isfinite(value))
            return jax.tree.map(lambda a, b: jnp.where(done, a, b), stay, moved)

        return jax.lax.while_loop(cond, body, state)

    return opt, run


def _gmax(grad):
    return jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in jax.tree.leaves(grad)]))


class Restart(NamedTuple):
    """Start L-BFGS afresh (empty memory) from `params`, keeping the count, the start's objective and gtol."""

    params: Any  # the user's layout (host arrays), or None: zeros
    iteration: Any
    start: Any  # +inf: not evaluated yet
    gtol: Any  # tol x scale (absolute scale); 0 until the first evaluation (relative scale)
    fit: str  # the fit's key for its state on the workers


class Chunk(NamedTuple):
    """What a chunk sends back to the driver: the loop's scalars and one point, never the optimiser's memory."""

    lost: bool  # the workers hold no state to continue from (rebuilt after a loss): send a Restart
    iteration: Any = 0
    gmax: Any = np.inf
    stall: Any = 0
    value: Any = np.inf
    best_gmax: Any = np.inf
    current: Any = np.inf
    gtol: Any = 0.0
    start: Any = np.inf
    invalid: Any = False
    point: Any = None  # internal layout: the params if the stop rule holds there, else the best params


def _start(opt, mesh, sites):
    """The loop's first state at `params` (internal layout), built on the devices (a function to jit). The
    optimiser's memory of a sharded site is sharded as the site is (common.like_sites)."""
    like_params = like_sites(mesh, sites)

    def start(params, iteration, gtol, value0, tol, max_iter):
        inf = jnp.float32(np.inf)
        # every leaf a buffer of its own (the chunk donates the state; a forwarded input would be donated twice)
        params = jax.tree.map(jnp.copy, params)
        memory = jax.tree.map(like_params, opt.init(params))
        return LBFGSState(params, memory, iteration, inf, jnp.int32(0), inf, inf, params, inf, inf, gtol,
                          value0, jnp.bool_(False), tol, max_iter)

    return start


def _lbfgs_chunk(ctx, command, settings, limits, iterations):
    """One chunk of at most `iterations` iterations of the L-BFGS loop on the workers (a value of the loop:
    chunks of any length run one program). The state (params, memory) stays on the devices, each holding its
    shards; only scalars and the point to checkpoint go back."""
    loop, first = ("lbfgs", settings), ("lbfgs-start", settings)

    def build():
        opt, run = _build(ctx.internal, *settings)
        # the state is donated: the chunk's result takes its buffers (it is ~25x the params: L-BFGS memory)
        return opt, kept(ctx, loop, run, donate_argnums=0)

    opt, run = ctx.cached(loop, build)
    key = ("lbfgs", command.fit)
    if isinstance(command, Restart):
        begin = ctx.cached(first, lambda: kept(ctx, first, _start(opt, ctx.mesh, ctx.params.sites)))
        state = begin(ctx.params_in(command.params), jnp.int32(command.iteration), jnp.float32(command.gtol),
                      jnp.float32(command.start), jnp.float32(limits[0]), jnp.int32(limits[1]))
    elif key in ctx.resident:
        state = ctx.resident[key]
    else:
        return Chunk(lost=True)
    state = ctx.resident[key] = run(state, ctx.data, jnp.int32(iterations))
    s = ctx.to_host(state._replace(params=None, opt=None, best=None))
    point = state.params if float(s.gmax) <= float(s.gtol) else state.best
    return Chunk(False, int(s.iteration), float(s.gmax), int(s.stall), float(s.value), float(s.best_gmax),
                 float(s.current), float(s.gtol), float(s.start), bool(s.invalid), ctx.to_host(point))


def _value_at(ctx, params):
    f = ctx.cached(("potential",), lambda: jax.jit(ctx.potential))
    return ctx.to_host(f(ctx.to_global(params), ctx.data))


def _diverged(z: dict, supports: dict) -> str | None:
    """A site that left the finite numbers, or a constrained one (a scale) that ran off to 0 or infinity."""
    for k, v in z.items():
        v = np.asarray(v)
        if not v.size:
            continue
        if not np.all(np.isfinite(v)):
            return k
        if supports.get(k, "Real") != "Real" and np.max(np.abs(v)) > DIVERGENCE_Z:
            return k
    return None


def _falls_without_bound(s: Session, graph, supports: dict) -> tuple[str, list[float]] | None:
    """A site bounded below (a scale) along which the objective falls without bound as it goes to its bound,
    every other site at 0 (unconstrained): the centred hierarchy whose group scale has a prior that does not
    vanish at 0, where the group values collapse onto their mean with the scale. Three evaluations per such
    site, before any iteration; (site, objectives at PROBE) or None. The fall must not slow down: with a prior
    that vanishes at the bound (LogNormal) the objective falls less and less and turns up again: a mode
    exists (far out where the groups are many, as in a centred hierarchy with 200 groups: a LogNormal(-1, 0.5)
    scale's is near e^-50). A density that is bounded along these rays may still be unbounded elsewhere:
    the chunks' check (_diverged) remains."""
    zeros = zeros_like_params(graph)
    for k in sorted(k for k, sup in supports.items() if sup in BOUNDED_BELOW and k in zeros):
        values = [float(run_spmd(s.program, _value_at, {**zeros, k: np.full_like(zeros[k], t)})) for t in PROBE]
        if all(np.isfinite(values)) and values[0] > values[1] > values[2] and values[1] - values[2] > 1.0:
            # falling at least linearly in the unconstrained value (a prior that does not vanish at the bound);
            # a prior that does (LogNormal) makes the fall slow down: a mode, however far out, exists
            near, far = (values[0] - values[1]) / (PROBE[0] - PROBE[1]), (values[1] - values[2]) / (PROBE[1] - PROBE[2])
            if far >= 0.9 * near:
                return k, values
    return None


def _no_mode(site: str, values: list[float]) -> ModelError:
    probes = ", ".join(f"{v:.6g} at {t:g}" for t, v in zip(PROBE, values))
    return ModelError(
        f"MAP has no mode to find: the objective falls without slowing down as site {site!r} goes to its lower "
        f"bound with the other sites at 0 (unconstrained {probes}). In a hierarchical model the density grows as "
        f"a group scale goes to 0 and the group values collapse onto their mean. Under a HalfNormal, HalfCauchy "
        f"or Exponential scale prior it grows without bound. Under a prior that vanishes at 0 (LogNormal, "
        f"InverseGamma) it peaks far out, past e^-40, once there are many groups (about a thousand for "
        f"LogNormal(-1, 0.5)): a collapse, not an estimate. Write the groups non-centred (value = mean + scale * "
        f"z), or fix the scale.")


def _invalid_start(model, data, z: dict, value: float) -> ModelError:
    sites = invalid_sites(model, data, z)
    where = (f" The log density is not finite at: {', '.join(sites)}." if sites else "")
    return ModelError(
        f"MAP cannot start: the objective (potential energy) is {value} at the initial point.{where} Observations "
        f"outside the likelihood's support (a negative or non-integer count, a 0/1 outcome outside [0, 1], "
        f"log of a non-positive value) make the density zero everywhere; otherwise pass `init=` with a valid point.")


def _unbounded(z: dict, bad: str, value: float) -> ModelError:
    worst = np.ravel(z[bad])[np.argmax(np.abs(np.ravel(z[bad])))]
    return ModelError(
        f"MAP diverged: site {bad!r} ran off to an unconstrained value of {worst:.3g} with objective {value:.6g}. "
        f"The joint density is unbounded (it has no mode): in a hierarchical model a group scale with a HalfNormal, "
        f"HalfCauchy or Exponential prior lets the density grow without bound as the scale goes to 0. Give the "
        f"scale a prior that vanishes at 0 (LogNormal, InverseGamma) or fix it.")


def _outcome(final: Chunk, max_iter: int) -> tuple[str, bool, str, Any, float, float]:
    """(stop, converged, message, params, objective, max|grad|), agreeing with the rule that stopped the loop;
    params in the internal layout (the chunk's point: the current params where the rule held, else the best)."""
    gtol, gmax, stall = float(final.gtol), float(final.gmax), int(final.stall)
    if gmax <= gtol:  # the stop rule held at the current point: that point is the answer
        return ("tol", True, f"converged: max|grad| {gmax:.3g} <= tol x scale = {gtol:.3g}", final.point,
                float(final.current), gmax)
    best_g, value = float(final.best_gmax), float(final.value)
    if stall >= STALL:
        # float32 cannot resolve a tight tolerance on a large sum: a stall with a gradient small relative
        # to the objective is accepted as converged at float precision; a stall with a large one is not
        loose = STALL_GRAD_RTOL * max(1.0, abs(value))
        if best_g <= loose:
            return ("stall", True, f"converged at float precision: no progress for {STALL} iterations with max|grad| "
                    f"{best_g:.3g} > tol x scale = {gtol:.3g} but <= {STALL_GRAD_RTOL:g} x |objective| = "
                    f"{loose:.3g}", final.point, value, best_g)
        return ("stall", False, f"not converged: no progress for {STALL} iterations with max|grad| {best_g:.3g} > "
                f"{loose:.3g} (ill-conditioned, or no mode?)", final.point, value, best_g)
    return ("max_iter", False, f"not converged: stopped at max_iter={max_iter} with max|grad| {best_g:.3g} > tol x "
            f"scale = {gtol:.3g}", final.point, value, best_g)


def map(model: Callable, data, runtime=None, cluster=None, split=None, tol: float = 1e-6, max_iter: int = 1000,
        jacobian: bool = True, init: dict | None = None, memory_size: int = 10, chunk: int = 50,
        ftol: float = 0.0, session: Session | None = None, on_chunk: Callable | None = None,
        scale: float | None = None, progress: bool | None = None) -> MAPResult:  # noqa: A001 - cg.infer.map
    """The maximum a posteriori point of `model(data)` by L-BFGS on the split program.

    By default it minimises NumPyro's potential energy (unconstrained space, log-Jacobian
    included); jacobian=False gives the mode of the density in the constrained space. It stops
    when max|gradient| <= tol x scale; scale defaults to max(1, |objective|) at the point tested, so
    that `tol` is relative to the problem (pass scale=1.0 for an absolute tolerance).
    on_chunk(iteration, objective) is called after every checkpointed chunk (progress, test hooks).
    progress: show iteration, objective and max|gradient| (None: when stderr is a terminal or a notebook).
    """
    if max_iter < 0 or not tol >= 0:
        raise ValueError(f"max_iter must be >= 0 and tol >= 0, got max_iter={max_iter}, tol={tol}")
    s = session or setup(model, data, runtime, cluster, split, jacobian)
    graph = s.plan.graph
    # zeros are made on the workers, in the internal layout; a user's init goes there in the user's
    start = None if not init else dict(zeros_like_params(graph), **{k: np.asarray(v) for k, v in init.items()})
    if max_iter == 0:
        return _not_run(model, data, s, start if start is not None else zeros_like_params(graph))
    settings = (memory_size, scale is None, float(ftol))
    supports = {site.name: site.support for site in graph.meta.info.sites}
    runs_off = _falls_without_bound(s, graph, supports)
    if runs_off is not None:  # no mode to look for: say so before the first iteration
        raise _no_mode(*runs_off)
    limits = (float(tol), int(max_iter))
    gtol0 = 0.0 if scale is None else float(tol) * float(scale)
    restarts = {"left": RESTARTS, "value": np.inf}
    bar = OptimProgress("MAP (L-BFGS)", show=progress)
    fit = new_fit()
    first = Restart(start, 0, np.float32(np.inf), np.float32(gtol0), fit)
    # the latest chunk's point in the user's layout: the checkpoint a rebuilt group restarts from
    last: list[Restart] = []

    def step(program, command):
        # a short first chunk: a scale running off to 0 or infinity is named after FIRST_CHUNK iterations
        out = run_spmd(program, _lbfgs_chunk, command, settings, limits, chunk if last else min(chunk, FIRST_CHUNK))
        if out.lost:  # the workers were rebuilt: resume from the checkpoint with a fresh memory
            return (last[-1] if last else first), False
        last[:] = [Restart(program.params.to_user(out.point), out.iteration, out.start, out.gtol, fit)]
        bar.update(out.iteration, out.value, out.gmax)
        if on_chunk is not None:
            on_chunk(out.iteration, out.value)
        bad = None if out.invalid else _diverged(last[-1].params, supports)
        if bad is not None:  # no mode to converge to: say so now, not after max_iter
            raise _unbounded(last[-1].params, bad, float(out.value))
        if out.invalid or out.iteration >= max_iter or out.gmax <= out.gtol:
            return out, True
        if out.stall >= STALL:
            # stalled: once more from the best point with a fresh memory, while that still helps
            if restarts["left"] == 0 or out.value >= restarts["value"]:
                return out, True
            restarts["left"] -= 1
            restarts["value"] = out.value
            return last[-1], False
        return Continue(fit), False

    try:
        final = run_resumable(s, step, first)
        if final.invalid and init is None:
            # zeros may lie outside the density's support (Uniform(0, hi) below an observation): retry
            # from random points, as NumPyro's initialisation does, before naming the cause
            start = _valid_start(s, graph)
            if start is not None:
                first = Restart(start, 0, np.float32(np.inf), np.float32(gtol0), fit)
                last.clear()
                final = run_resumable(s, step, first)
    finally:
        bar.close()
        release(s, ("lbfgs", fit))
    if final.invalid:
        raise _invalid_start(model, data, start if start is not None else zeros_like_params(graph), final.current)
    stop, converged, msg, point, objective, gmax = _outcome(final, max_iter)
    z = s.program.params.to_user(point)
    bad = _diverged(z, supports) or (next(iter(z)) if not np.isfinite(objective) else None)
    if bad is not None:
        raise _unbounded(z, bad, objective)
    return MAPResult(_constrained(s, model, data, z), z, objective, final.iteration, converged, gmax, msg,
                     s.plan, stop)


def _constrained(s: Session, model, data, z: dict) -> dict:
    """`constrain`, jitted once per compiled program: the data go in as arguments that the constraints do
    not use, so jit prunes them (the model is not run on the data, nothing is copied) and refits reuse it."""
    jitted = getattr(s.program, "jitted", None)
    if jitted is None or data.has_sources:
        return constrain(model, data, z)
    if "constrain" not in jitted:
        from numpyro.infer.util import constrain_fn

        # the same graph has the same sites and transforms, so a later fit's model gives the same result
        jitted["constrain"] = jax.jit(lambda z, d: constrain_fn(model, (d,), {}, z))
    return {k: np.asarray(v) for k, v in jitted["constrain"](z, data).items()}


def _valid_start(s: Session, graph) -> dict | None:
    """A random point in (-2, 2) (unconstrained) with a finite potential and gradient, or None."""
    from claygraph.infer.chains import initial_position

    try:
        (point,) = valid_initial_points(s, lambda k: initial_position(graph, k), [jax.random.PRNGKey(0)])
    except ModelError:
        return None
    return point


def _not_run(model, data, s: Session, start: dict) -> MAPResult:
    """max_iter=0: the initial point, its objective and gradient, nothing optimised."""
    value = float(run_spmd(s.program, _value_at, start))
    if not np.isfinite(value):
        raise _invalid_start(model, data, start, value)
    z = {k: np.asarray(v) for k, v in start.items()}
    return MAPResult(_constrained(s, model, data, z), z, value, 0, False, float("nan"),
                     "not run: max_iter=0, the initial point is returned", s.plan, "max_iter")
