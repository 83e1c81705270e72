"""MAP by L-BFGS (optax, zoom line search), run SPMD inside one jitted loop on every worker.

The loop returns to the driver every `chunk` iterations only, to checkpoint its state: a lost
worker costs at most one chunk. Convergence: max |gradient| <= tol, or the objective stops
decreasing at float precision (reported as such in `message`).
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
from claygraph.infer.common import Session, constrain, run_resumable, run_spmd, setup, zeros_like_params

DIVERGENCE_Z = 20.0  # |log| of a constrained value (a scale) beyond which it has run off to 0 or infinity
STALL = 10  # iterations in a row without progress in objective or gradient
RESTARTS = 3  # fresh L-BFGS memories after a stall
STALL_GRAD_RTOL = 1e-3  # a stall counts as converged when max|grad| <= this x max(1, |objective|)


class LBFGSState(NamedTuple):
    params: Any
    opt: Any
    iteration: Any
    gmax: Any
    stall: Any
    value: Any  # best objective so far
    gbest: Any  # best max|gradient| so far
    best: Any  # the params with the best objective (returned: float32 steps near the optimum can go up)
    best_gmax: Any


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

    def __repr__(self) -> str:
        lines = [f"MAPResult(objective={self.objective:.6g}, iterations={self.iterations}, converged={self.converged},",
                 f"          split={self.plan.split or '()'}, {self.message})"]
        for k, v in sorted(self.params.items()):
            v = np.asarray(v)
            shown = np.array2string(v.ravel()[:4], precision=4) + (" ..." if v.size > 4 else "")
            lines.append(f"  {k:<12}{str(v.shape):<12}{shown}")
        return "\n".join(lines)


def _build(ctx, memory_size: int, chunk: int, max_iter: int, gtol: float, ftol: float):
    opt = optax.lbfgs(memory_size=memory_size)

    def run(state: LBFGSState, data) -> LBFGSState:
        f = lambda p: ctx.potential(p, data)
        vg = optax.value_and_grad_from_state(f)
        stop_at = jnp.minimum(state.iteration + chunk, max_iter)

        def cond(s):
            return (s.iteration < stop_at) & (s.gmax > gtol) & (s.stall < STALL)

        def body(s):
            value, grad = vg(s.params, state=s.opt)
            updates, o = opt.update(grad, s.opt, s.params, value=value, grad=grad, value_fn=f)
            params = optax.apply_updates(s.params, updates)
            new_v, new_g = otu.tree_get(o, "value"), otu.tree_get(o, "grad")
            gmax = jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in jax.tree.leaves(new_g)]))
            # at float precision the line search accepts steps by slope (approximate Wolfe), so the
            # objective alone can stall while the gradient still shrinks: stalled means neither improves
            flat = (new_v >= s.value - ftol * jnp.maximum(1.0, jnp.abs(s.value))) & (gmax >= 0.99 * s.gbest)
            better = new_v <= s.value
            best = jax.tree.map(lambda a, b: jnp.where(better, a, b), params, s.best)
            return LBFGSState(params, o, s.iteration + 1, gmax, jnp.where(flat, s.stall + 1, 0),
                              jnp.minimum(new_v, s.value), jnp.minimum(gmax, s.gbest), best,
                              jnp.where(better, gmax, s.best_gmax))

        return jax.lax.while_loop(cond, body, state)

    return opt, jax.jit(run)


class Restart(NamedTuple):
    """Start L-BFGS afresh (empty memory) from `params`, keeping the count and the best value."""

    params: Any
    iteration: Any
    value: Any


def _lbfgs_chunk(ctx, host_state, settings):
    opt, run = ctx.cached(("lbfgs", settings), lambda: _build(ctx, *settings))
    if isinstance(host_state, Restart):
        params = ctx.to_global(host_state.params)
        inf = jnp.float32(np.inf)
        state = LBFGSState(params, opt.init(params), jnp.int32(host_state.iteration), inf, jnp.int32(0),
                           jnp.float32(host_state.value), inf, params, inf)
    else:
        state = ctx.to_global(host_state)
    return ctx.to_host(run(state, ctx.data))


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


def map(model: Callable, data, runtime=None, cluster=None, split=None, tol: float = 1e-6, max_iter: int = 1000,
        jacobian: bool = True, init: dict | None = None, memory_size: int = 10, chunk: int = 50,
        ftol: float = 0.0, session: Session | None = None, on_chunk: Callable | None = None,
        ) -> MAPResult:  # noqa: A001 - cg.infer.map
    """The maximum a posteriori point of `model(data)` by L-BFGS on the split program.

    By default it minimises NumPyro's potential energy (unconstrained space, log-Jacobian
    included); jacobian=False gives the mode of the density in the constrained space.
    on_chunk(iteration, objective) is called after every checkpointed chunk (progress, test hooks).
    """
    s = session or setup(model, data, runtime, cluster, split, jacobian)
    graph = s.plan.graph
    start = dict(zeros_like_params(graph), **{k: np.asarray(v) for k, v in (init or {}).items()})
    settings = (memory_size, chunk, max_iter, float(tol), float(ftol))
    restarts = {"left": RESTARTS, "value": np.inf}

    def step(program, state):
        out = run_spmd(program, _lbfgs_chunk, state, settings)
        if on_chunk is not None:
            on_chunk(int(out.iteration), float(out.value))
        if int(out.iteration) >= max_iter or float(out.gmax) <= tol:
            return out, True
        if int(out.stall) >= STALL:
            # stalled: once more from the best point with a fresh memory, while that still helps
            if restarts["left"] == 0 or float(out.value) >= restarts["value"]:
                return out, True
            restarts["left"] -= 1
            restarts["value"] = float(out.value)
            return Restart(out.best, out.iteration, np.float32(np.inf)), False
        return out, False

    final = run_resumable(s, step, Restart(start, 0, np.float32(np.inf)))
    # a last iterate that met tol is certified by its gradient; the best objective seen is not, where
    # float32 rounding of the objective exceeds its differences near the optimum
    last_met = float(final.gmax) <= tol
    z = {k: np.asarray(v) for k, v in (final.params if last_met else final.best).items()}
    supports = {site.name: site.support for site in graph.meta.info.sites}
    bad = _diverged(z, supports) or (next(iter(z)) if not np.isfinite(final.value) else None)
    if bad is not None:
        raise ModelError(
            f"MAP diverged: site {bad!r} ran off to an unconstrained value of "
            f"{np.ravel(z[bad])[np.argmax(np.abs(np.ravel(z[bad])))]:.3g} with "
            f"objective {float(final.value):.6g}. The joint density has no mode: in a hierarchical model a group "
            f"scale with a HalfNormal, HalfCauchy or Exponential prior lets the density grow without bound as the "
            f"scale goes to 0. Give the scale a prior that vanishes at 0 (LogNormal, InverseGamma) or fix it.")
    gmax, stall = float(final.gmax if last_met else final.best_gmax), int(final.stall)
    met = gmax <= tol
    # float32 cannot reach a tight gradient tolerance on a large sum: a stall with a gradient small
    # relative to the objective counts as converged; a stall with a large one does not
    loose = STALL_GRAD_RTOL * max(1.0, abs(float(final.value)))
    converged = met or (stall >= STALL and gmax <= loose)
    msg = (f"max|grad| {gmax:.3g} <= tol {tol:g}" if met else
           f"objective stationary to float precision, max|grad| {gmax:.3g} <= {loose:.3g}" if converged else
           f"no progress at float precision with max|grad| {gmax:.3g} (ill-conditioned or no mode?)"
           if stall >= STALL else f"stopped at max_iter={max_iter} (max|grad| {gmax:.3g})")
    return MAPResult(constrain(model, data, z), z, float(final.value), int(final.iteration), converged, gmax, msg,
                     s.plan)
