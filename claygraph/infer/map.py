"""MAP by L-BFGS (optax, zoom line search), run SPMD inside one jitted loop on every worker.

The loop returns to the driver every `chunk` iterations only, to checkpoint its state: a lost
worker costs at most one chunk. Convergence: max |gradient| <= tol, or the objective stops
decreasing at float precision (reported as such in `message`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import optax.tree_utils as otu

from claygraph.errors import ModelError
from claygraph.infer.common import Session, constrain, run_resumable, setup, zeros_like_params
from claygraph.runtime.spmd import run_spmd

DIVERGENCE_Z = 30.0  # |unconstrained value| beyond which a scale has run off to 0 or infinity


class LBFGSState(NamedTuple):
    params: Any
    opt: Any
    iteration: Any
    gmax: Any
    stall: Any
    value: Any


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
            return (s.iteration < stop_at) & (s.gmax > gtol) & (s.stall < 3)

        def body(s):
            value, grad = vg(s.params, state=s.opt)
            updates, o = opt.update(grad, s.opt, s.params, value=value, grad=grad, value_fn=f)
            params = optax.apply_updates(s.params, updates)
            new_v, new_g = otu.tree_get(o, "value"), otu.tree_get(o, "grad")
            gmax = jnp.max(jnp.stack([jnp.max(jnp.abs(x)) for x in jax.tree.leaves(new_g)]))
            flat = new_v >= s.value - ftol * jnp.maximum(1.0, jnp.abs(s.value))
            return LBFGSState(params, o, s.iteration + 1, gmax, jnp.where(flat, s.stall + 1, 0), new_v)

        return jax.lax.while_loop(cond, body, state)

    return opt, jax.jit(run)


def _lbfgs_chunk(ctx, host_state, settings):
    opt, run = ctx.cached(("lbfgs", settings), lambda: _build(ctx, *settings))
    if host_state is None:
        raise AssertionError("state must be initialised")
    if isinstance(host_state, dict):  # fresh start: only params given
        params = ctx.to_global(host_state)
        state = LBFGSState(params, opt.init(params), jnp.int32(0), jnp.float32(np.inf), jnp.int32(0),
                           jnp.float32(np.inf))
    else:
        state = ctx.to_global(host_state)
    return ctx.to_host(run(state, ctx.data))


def _diverged(z: dict) -> str | None:
    for k, v in z.items():
        v = np.asarray(v)
        if v.size and (not np.all(np.isfinite(v)) or np.max(np.abs(v)) > DIVERGENCE_Z):
            return k
    return None


def map(model: Callable, data, runtime=None, cluster=None, split=None, tol: float = 1e-6, max_iter: int = 1000,
        jacobian: bool = True, init: dict | None = None, memory_size: int = 10, chunk: int = 50,
        ftol: float = 1e-7, session: Session | None = None, on_chunk: Callable | None = None,
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

    def step(program, state):
        out = run_spmd(program, _lbfgs_chunk, state, settings)
        done = int(out.iteration) >= max_iter or float(out.gmax) <= tol or int(out.stall) >= 3
        if on_chunk is not None:
            on_chunk(int(out.iteration), float(out.value))
        return out, done

    final = run_resumable(s, step, start)
    z = {k: np.asarray(v) for k, v in final.params.items()}
    bad = _diverged(z) if not np.isfinite(final.value) or _diverged(z) else None
    if bad is not None:
        raise ModelError(
            f"MAP diverged: site {bad!r} ran off to an unconstrained value of {np.max(np.abs(z[bad])):.3g} with "
            f"objective {float(final.value):.6g}. The joint density has no mode: in a hierarchical model a group "
            f"scale with a HalfNormal, HalfCauchy or Exponential prior lets the density grow without bound as the "
            f"scale goes to 0. Give the scale a prior that vanishes at 0 (LogNormal, InverseGamma) or fix it.")
    gmax, stall = float(final.gmax), int(final.stall)
    converged = gmax <= tol or stall >= 3
    msg = (f"max|grad| {gmax:.3g} <= tol {tol:g}" if gmax <= tol else
           f"objective stationary to float precision (max|grad| {gmax:.3g})" if stall >= 3 else
           f"stopped at max_iter={max_iter} (max|grad| {gmax:.3g})")
    return MAPResult(constrain(model, data, z), z, float(final.value), int(final.iteration), converged, gmax, msg,
                     s.plan)
