"""Laplace approximation: a Gaussian at the mode whose precision is the Hessian of the potential.

The dense Hessian is computed on the split program (every worker runs the same jitted Hessian) and
suits models with up to a few thousand parameters; Newton steps on it take L-BFGS's optimum to the
mode. Many per-group parameters use the block Hessian (claygraph.infer.laplace_block).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from claygraph.errors import ModelError
from claygraph.infer.common import constrain_draws, hvp, run_spmd, setup, to_inference_data
from claygraph.infer.map import MAPResult, _value_at
from claygraph.infer.map import map as map_

MAX_DENSE = 20_000
# After L-BFGS, Newton steps on the dense Hessian until the step is under POLISH_SD posterior sd (at most
# POLISH_STEPS); a mode still over WARN_SD sd away is reported (docs/inference.md, "Laplace").
POLISH_SD, POLISH_STEPS, WARN_SD = 0.01, 8, 0.05


class LaplaceWarning(UserWarning):
    """The Laplace approximation's centre is not the mode to within WARN_SD posterior sd."""


def _hessian(ctx, z: dict):
    potential = ctx.potential  # the cached function must not hold the context (its data)

    def build():
        def h(z, data):
            flat, unravel = ravel_pytree(z)
            # reverse over reverse (see common.hvp): the kernels' gradients are custom_vjp
            return jax.jacrev(jax.grad(lambda x: potential(unravel(x), data)))(flat)

        return jax.jit(h)

    return ctx.to_host(ctx.cached("hessian", build)(ctx.to_global(z), ctx.data))


def _diag(ctx, z: dict, settings):
    exact, probes, seed = settings
    potential = ctx.potential

    def build():
        def d(z, data):
            flat, unravel = ravel_pytree(z)
            grad = jax.grad(lambda x: potential(unravel(x), data))

            if exact:  # e_i . H e_i for every i, one Hessian-vector product each
                return jax.lax.map(lambda i: hvp(grad, flat, jax.nn.one_hot(i, flat.size, dtype=flat.dtype))[i],
                                   jnp.arange(flat.size))
            # Hutchinson: E[v * Hv] = diag H for Rademacher v
            vs = jax.random.rademacher(jax.random.PRNGKey(seed), (probes, flat.size), dtype=flat.dtype)
            return jnp.mean(jax.lax.map(lambda v: v * hvp(grad, flat, v), vs), axis=0)

        return jax.jit(d)

    return ctx.to_host(ctx.cached(("hessian_diag", exact, probes, seed), build)(ctx.to_global(z), ctx.data))


def _value_and_grad(ctx, z: dict):
    potential = ctx.potential
    f = ctx.cached(("value_and_grad",), lambda: jax.jit(jax.value_and_grad(potential)))
    return ctx.to_host(f(ctx.to_global(z), ctx.data))


def _dense_curvature(program, z: dict):
    """The dense Hessian at z and H^-1 g for a flat g (LinAlgError where H is not positive definite)."""
    H = hessian_matrix(program, z)
    H = 0.5 * (H + H.T)

    def solve(g: np.ndarray) -> np.ndarray:
        L = np.linalg.cholesky(H)
        return np.linalg.solve(L.T, np.linalg.solve(L, g))

    return H, solve


def polish_mode(program, z: dict, curvature=_dense_curvature) -> tuple[dict, object, int, float]:
    """Newton's method from an L-BFGS optimum: (mode, the Hessian there as `curvature` gives it, Newton
    steps taken, the last step's length in posterior sd; NaN where the Hessian is not positive definite).

    L-BFGS stops on the size of the gradient, which says little about the distance to the mode when the
    posterior is badly scaled (a regression on raw heights and earnings: a gradient of 0.003 was 6 posterior
    sd from the mode). Laplace needs the mode itself: the Newton decrement sqrt(g' H^-1 g) measures the
    distance in the posterior's own sd, and Newton converges in a step or two from near the mode (in one on
    a Gaussian). A step that does not lower the potential is halved (a backtracking line search).
    curvature(program, z) -> (hessian, solve) with solve(flat g) = H^-1 g over ravel_pytree's order."""
    flat, unravel = ravel_pytree({k: np.asarray(v, np.float64) for k, v in z.items()})
    dtypes = {k: np.asarray(v).dtype for k, v in z.items()}

    def point(x):
        return {k: np.asarray(v, dtypes[k]) for k, v in unravel(x).items()}

    def newton(z):
        H, solve = curvature(program, z)
        value, grad = run_spmd(program, _value_and_grad, z)
        g = np.asarray(ravel_pytree({k: np.asarray(v, np.float64) for k, v in grad.items()})[0])
        try:
            step = -solve(g)
        except np.linalg.LinAlgError:
            return H, None, np.nan, float(value)
        return H, step, float(np.sqrt(max(-g @ step, 0.0))), float(value)

    H, step, size, value = newton(z)
    taken = 0
    while taken < POLISH_STEPS and np.isfinite(size) and size > POLISH_SD:
        t, moved = 1.0, False
        for _ in range(20):
            trial = point(flat + t * step)
            new_value = float(run_spmd(program, _value_at, trial))
            if np.isfinite(new_value) and new_value <= value:
                flat, z, moved = flat + t * step, trial, True
                break
            t *= 0.5
        if not moved:
            break
        taken += 1
        H, step, size, value = newton(z)
    return z, H, taken, size


def hessian_matrix(program, z: dict) -> np.ndarray:
    """The dense Hessian of the potential at `z` over the flattened parameters, on the split program."""
    return np.asarray(run_spmd(program, _hessian, z), dtype=np.float64)


def hessian_diag(program, z: dict, exact: bool = True, probes: int = 32, seed: int = 0) -> np.ndarray:
    """The diagonal of the potential's Hessian at `z` (flattened, sorted site order), on the split
    program: exact (one Hessian-vector product per parameter) or Hutchinson's estimate."""
    return np.asarray(run_spmd(program, _diag, z, (bool(exact), int(probes), int(seed))), np.float64)


@dataclass(frozen=True)
class LaplaceResult:
    mean: dict  # unconstrained MAP
    cov: np.ndarray | None  # dense: over the flattened unconstrained parameters (sorted site order)
    inference_data: Any
    map: MAPResult
    sd: dict | None = None  # marginal sd per site, unconstrained
    block: Any = None  # the BlockHessian, for hessian="block"
    newton_steps: int = 0  # Newton steps from the MAP to the mode
    mode_error_sd: float | None = None  # the last Newton step's length in posterior sd

    @property
    def posterior(self):
        return self.inference_data.posterior

    def __repr__(self) -> str:
        n = sum(int(np.size(v)) for v in self.mean.values())
        kind = "dense" if self.block is None else f"block over {self.block.dim!r} ({self.block.groups} groups)"
        return f"LaplaceResult({n} parameters, {kind} Hessian, MAP objective {self.map.objective:.6g})"


def _warn_off_mode(steps: int, off: float) -> None:
    if np.isfinite(off) and off > WARN_SD:
        warnings.warn(f"Laplace: the centre is {off:.3g} posterior sd from the mode after {steps} Newton steps "
                      f"from the MAP (L-BFGS's optimum); the approximation's means may be off by that much",
                      LaplaceWarning, stacklevel=3)


def laplace(model: Callable, data, runtime=None, cluster=None, split=None, draws: int = 1000, seed: int = 0,
            map_result: MAPResult | None = None, hessian: str = "auto", **map_kwargs) -> LaplaceResult:
    """Gaussian N(z_map, H^-1) in the unconstrained space; draws constrained, as ArviZ InferenceData.

    hessian: "dense" (the full matrix, up to MAX_DENSE parameters), "block" (per-group blocks, the
    globals and their cross terms: linear in the groups, see claygraph.infer.laplace_block), or
    "auto": block when some dim carries per-group sites and the model has over 2,000 parameters.
    """
    from claygraph.infer import laplace_block

    if hessian not in ("auto", "dense", "block"):
        raise ValueError(f"hessian must be 'auto', 'dense' or 'block', not {hessian!r}")
    s = setup(model, data, runtime, cluster, split)
    m = map_result or map_(model, data, session=s, **map_kwargs)
    z = {k: np.asarray(v) for k, v in m.unconstrained.items()}
    flat, unravel = ravel_pytree(z)
    dim = laplace_block.group_dim(s.plan.graph)
    if hessian == "block" and dim is None:
        raise ModelError("hessian='block' needs sites with a per-group leading dim (a plate over a dim of the "
                         "data); this model has none")
    if hessian == "block" or (hessian == "auto" and dim is not None and flat.size > 2000):
        z, bh, steps, off = polish_mode(s.program, z, laplace_block.curvature(s.plan.graph, dim, seed))
        _warn_off_mode(steps, off)
        x, sd = laplace_block.sample(bh, z, draws, seed)
        batch = {k: v.astype(np.float32) for k, v in x.items()}
        post = {k: v[None] for k, v in constrain_draws(model, data, batch).items()}
        return LaplaceResult(z, None, to_inference_data(s.plan.graph, post), m, sd, bh, steps, off)
    if flat.size > MAX_DENSE:
        raise ModelError(f"the model has {flat.size} parameters; a dense Laplace Hessian beyond {MAX_DENSE} is not "
                         f"supported" + (f"; hessian='block' works over {dim!r}" if dim else ""))
    z, H, steps, off = polish_mode(s.program, z)
    flat, unravel = ravel_pytree(z)
    _warn_off_mode(steps, off)
    try:
        L = np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        raise ModelError("the Hessian at the MAP is not positive definite: the mode is flat or a saddle in some "
                         "direction (an unidentified parameter?); Laplace cannot be used here") from None
    cov = np.linalg.inv(H)
    eps = np.random.default_rng(seed).standard_normal((draws, flat.size))
    # x = mean + L^-T eps has covariance (L L^T)^-1 = H^-1
    x = np.asarray(flat, np.float64) + np.linalg.solve(L.T, eps.T).T
    batch = jax.vmap(unravel)(x.astype(np.float32))
    constrained = constrain_draws(model, data, batch)
    post = {k: v[None] for k, v in constrained.items()}
    sd = {k: np.asarray(v) for k, v in unravel(np.sqrt(np.diag(cov)).astype(np.float32)).items()}
    return LaplaceResult(z, cov, to_inference_data(s.plan.graph, post), m, sd, newton_steps=steps,
                         mode_error_sd=off)
