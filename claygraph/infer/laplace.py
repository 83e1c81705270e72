"""Laplace approximation: a Gaussian at the MAP whose precision is the Hessian of the potential.

The Hessian is dense, computed on the split program (every worker runs the same jitted
jax.hessian); it suits models with up to a few thousand parameters. Block-structured Hessians for
many per-group parameters are not built yet (see docs/inference.md).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from claygraph.errors import ModelError
from claygraph.infer.common import constrain_draws, setup, to_inference_data
from claygraph.infer.map import MAPResult
from claygraph.infer.map import map as map_
from claygraph.runtime.spmd import run_spmd

MAX_DENSE = 20_000


def _hessian(ctx, z: dict):
    def build():
        def h(z, data):
            flat, unravel = ravel_pytree(z)
            return jax.hessian(lambda x: ctx.potential(unravel(x), data))(flat)

        return jax.jit(h)

    return ctx.to_host(ctx.cached("hessian", build)(ctx.to_global(z), ctx.data))


def _diag(ctx, z: dict, settings):
    exact, probes, seed = settings

    def build():
        def d(z, data):
            flat, unravel = ravel_pytree(z)
            grad = jax.grad(lambda x: ctx.potential(unravel(x), data))

            def hvp(v):
                return jax.jvp(grad, (flat,), (v,))[1]

            if exact:  # e_i . H e_i for every i, one Hessian-vector product each
                return jax.lax.map(lambda i: hvp(jax.nn.one_hot(i, flat.size, dtype=flat.dtype))[i],
                                   jnp.arange(flat.size))
            # Hutchinson: E[v * Hv] = diag H for Rademacher v
            vs = jax.random.rademacher(jax.random.PRNGKey(seed), (probes, flat.size), dtype=flat.dtype)
            return jnp.mean(jax.lax.map(lambda v: v * hvp(v), vs), axis=0)

        return jax.jit(d)

    return ctx.to_host(ctx.cached(("hessian_diag", exact, probes, seed), build)(ctx.to_global(z), ctx.data))


def hessian(program, z: dict) -> np.ndarray:
    """The dense Hessian of the potential at `z` over the flattened parameters, on the split program."""
    return np.asarray(run_spmd(program, _hessian, z), dtype=np.float64)


def hessian_diag(program, z: dict, exact: bool = True, probes: int = 32, seed: int = 0) -> np.ndarray:
    """The diagonal of the potential's Hessian at `z` (flattened, sorted site order), on the split
    program: exact (one Hessian-vector product per parameter) or Hutchinson's estimate."""
    return np.asarray(run_spmd(program, _diag, z, (bool(exact), int(probes), int(seed))), np.float64)


@dataclass(frozen=True)
class LaplaceResult:
    mean: dict  # unconstrained MAP
    cov: np.ndarray  # over the flattened unconstrained parameters (site order: sorted names)
    inference_data: Any
    map: MAPResult

    @property
    def posterior(self):
        return self.inference_data.posterior

    def __repr__(self) -> str:
        return f"LaplaceResult({self.cov.shape[0]} parameters, MAP objective {self.map.objective:.6g})"


def laplace(model: Callable, data, runtime=None, cluster=None, split=None, draws: int = 1000, seed: int = 0,
            map_result: MAPResult | None = None, **map_kwargs) -> LaplaceResult:
    """Gaussian N(z_map, H^-1) in the unconstrained space; draws constrained, as ArviZ InferenceData."""
    s = setup(model, data, runtime, cluster, split)
    m = map_result or map_(model, data, session=s, **map_kwargs)
    z = {k: np.asarray(v) for k, v in m.unconstrained.items()}
    flat, unravel = ravel_pytree(z)
    if flat.size > MAX_DENSE:
        raise ModelError(f"the model has {flat.size} parameters; a dense Laplace Hessian beyond {MAX_DENSE} is not "
                         f"supported yet")
    H = hessian(s.program, z)
    H = 0.5 * (H + H.T)
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
    return LaplaceResult(z, cov, to_inference_data(s.plan.graph, post), m)
