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
from claygraph.infer.common import constrain_draws, hvp, run_spmd, setup, to_inference_data
from claygraph.infer.map import MAPResult
from claygraph.infer.map import map as map_

MAX_DENSE = 20_000


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

    @property
    def posterior(self):
        return self.inference_data.posterior

    def __repr__(self) -> str:
        n = sum(int(np.size(v)) for v in self.mean.values())
        kind = "dense" if self.block is None else f"block over {self.block.dim!r} ({self.block.groups} groups)"
        return f"LaplaceResult({n} parameters, {kind} Hessian, MAP objective {self.map.objective:.6g})"


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
        bh = laplace_block.block_hessian(s.program, s.plan.graph, z, dim, seed)
        x, sd = laplace_block.sample(bh, z, draws, seed)
        batch = {k: v.astype(np.float32) for k, v in x.items()}
        post = {k: v[None] for k, v in constrain_draws(model, data, batch).items()}
        return LaplaceResult(z, None, to_inference_data(s.plan.graph, post), m, sd, bh)
    if flat.size > MAX_DENSE:
        raise ModelError(f"the model has {flat.size} parameters; a dense Laplace Hessian beyond {MAX_DENSE} is not "
                         f"supported" + (f"; hessian='block' works over {dim!r}" if dim else ""))
    H = hessian_matrix(s.program, z)
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
    sd = {k: np.asarray(v) for k, v in unravel(np.sqrt(np.diag(cov)).astype(np.float32)).items()}
    return LaplaceResult(z, cov, to_inference_data(s.plan.graph, post), m, sd)
