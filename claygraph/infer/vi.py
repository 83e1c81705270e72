"""ADVI: a Gaussian in the unconstrained space fitted by maximising the ELBO with Adam (optax).

Guides: "meanfield" (diagonal), "lowrank" (diagonal + rank-k factor), "fullrank" (Cholesky factor).
Each ELBO gradient is a gradient of the split program, so it is computed across the workers;
the loop runs SPMD in jitted chunks, checkpointed between chunks like MAP.

Posterior scales of one model can differ by orders of magnitude, and Adam's step is in absolute
units, so by default (`init="map"`) the guide lives in whitened coordinates: z = center + p * w,
where `center` is the MAP and p = 1 / sqrt(diag H) the Laplace diagonal's scales (H the Hessian of
the potential at the MAP: exact diagonal for up to EXACT_DIAG parameters, Hutchinson's estimate
beyond). The guide over w starts at the standard normal, i.e. at the diagonal Laplace
approximation. The full-rank guide, dense anyway, is whitened with the full Laplace factor P
(P P^T = H^-1), so it starts at the Laplace approximation itself and strong correlations cost
it nothing. Adam's learning rate decays (cosine) to 1% over the run. `init="zero"` is
plain ADVI from the origin with p = 1, for models with no mode.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from claygraph.infer.common import constrain_draws, run_resumable, run_spmd, setup, to_inference_data, zeros_like_params
from claygraph.infer.laplace import hessian_diag, hessian_matrix
from claygraph.infer.map import map as map_
from claygraph.infer.progress import OptimProgress

EXACT_DIAG = 2048  # parameters up to which the Hessian diagonal is exact
PROBES = 32  # Rademacher probes for Hutchinson's diagonal beyond that

log = logging.getLogger("claygraph.infer")


class VIState(NamedTuple):
    guide: Any
    opt: Any
    key: Any
    step: Any
    elbo: Any  # running mean of the last chunk
    center: Any  # z = center + precond * w (or precond @ w), w drawn from the guide
    precond: Any  # (D,) scales, or (D, D) for the full Laplace factor
    logdet: Any  # log|det| of the map w -> z


def init_guide(kind: str, dim: int, rank: int) -> dict:
    """The standard normal over the whitened coordinates (the Laplace approximation itself)."""
    g = {"loc": jnp.zeros(dim), "log_scale": jnp.zeros(dim)}
    if kind == "lowrank":
        g["factor"] = jnp.zeros((dim, rank))
    elif kind == "fullrank":
        g["tril"] = jnp.zeros((dim, dim))
    return g


def sample_guide(kind: str, g: dict, key, n: int):
    """(n, dim) draws and the guide's entropy (up to a constant)."""
    dim = g["loc"].shape[0]
    scale = jnp.exp(g["log_scale"])
    if kind == "fullrank":
        L = jnp.tril(g["tril"], -1) + jnp.diag(scale)
        eps = jax.random.normal(key, (n, dim))
        return g["loc"] + eps @ L.T, jnp.sum(g["log_scale"])
    eps = jax.random.normal(key, (n, dim))
    z = g["loc"] + eps * scale
    if kind == "lowrank":
        k1, _ = jax.random.split(key)
        eps2 = jax.random.normal(k1, (n, g["factor"].shape[1]))
        z = z + eps2 @ g["factor"].T
        W = g["factor"] / scale[:, None]
        _, logdet = jnp.linalg.slogdet(jnp.eye(W.shape[1]) + W.T @ W)
        return z, jnp.sum(g["log_scale"]) + 0.5 * logdet
    return z, jnp.sum(g["log_scale"])


def whiten(precond, w):
    """z - center for whitened draws w (..., D): a diagonal or a full (D, D) factor."""
    return w @ precond.T if precond.ndim == 2 else precond * w


def _logdet(precond: np.ndarray) -> float:
    p = np.asarray(precond, np.float64)
    return float(np.linalg.slogdet(p)[1] if p.ndim == 2 else np.sum(np.log(p)))


def _build(potential, kind: str, template: dict, particles: int, chunk: int, lr: float, steps: int):
    _, unravel = ravel_pytree(template)
    opt = optax.adam(optax.cosine_decay_schedule(lr, max(steps, 1), alpha=0.01))

    def loss(g, key, center, precond, data):
        w, entropy = sample_guide(kind, g, key, particles)
        energy = jax.lax.map(lambda x: potential(unravel(center + whiten(precond, x)), data), w)
        return jnp.mean(energy) - entropy  # -ELBO up to a constant (without log|det precond|)

    def run(state: VIState, data) -> VIState:
        def one(s, _):
            g, o, key, step, acc = s
            key, sub = jax.random.split(key)
            val, grad = jax.value_and_grad(loss)(g, sub, state.center, state.precond, data)
            upd, o = opt.update(grad, o, g)
            return (optax.apply_updates(g, upd), o, key, step + 1, acc + val), None

        s, _ = jax.lax.scan(one, (*state[:4], jnp.float32(0.0)), None, length=chunk)
        return VIState(s[0], s[1], s[2], s[3], -s[4] / chunk + state.logdet, state.center, state.precond,
                       state.logdet)

    return opt, jax.jit(run)


def _vi_chunk(ctx, host_state, settings):
    kind, template, particles, chunk, lr, seed, rank, steps, center, precond = settings
    opt, run = ctx.cached(("vi", kind, particles, chunk, lr, steps),
                          lambda: _build(ctx.potential, kind, template, particles, chunk, lr, steps))
    if host_state is None:
        g = init_guide(kind, center.size, rank)
        state = VIState(g, opt.init(g), jax.random.PRNGKey(seed), jnp.int32(0), jnp.float32(-np.inf),
                        jnp.asarray(center, jnp.float32), jnp.asarray(precond, jnp.float32),
                        jnp.float32(_logdet(precond)))
        state = ctx.to_global(ctx.to_host(state))
    else:
        state = ctx.to_global(host_state)
    return ctx.to_host(run(state, ctx.data))


@dataclass(frozen=True)
class VIResult:
    guide: str
    loc: dict  # guide mean per site, unconstrained
    scale: dict  # marginal sd per site, unconstrained
    elbo: np.ndarray  # mean ELBO per chunk
    inference_data: Any
    plan: Any
    map: Any = None  # the MAPResult the guide started from (init="map")

    @property
    def posterior(self):
        return self.inference_data.posterior

    def __repr__(self) -> str:
        return f"VIResult(guide={self.guide!r}, final ELBO {self.elbo[-1]:.6g} after {len(self.elbo)} chunks)"


def _start(init: str, guide: str, model, data, s, template: dict, seed: int):
    """(center, precond, MAPResult | None) for init="map" or "zero"."""
    flat, _ = ravel_pytree(template)
    if init == "zero":
        return np.zeros(flat.size, np.float32), np.ones(flat.size, np.float32), None
    m = map_(model, data, session=s)
    z = {k: np.asarray(v) for k, v in m.unconstrained.items()}
    center = np.asarray(ravel_pytree(z)[0], np.float32)
    if guide == "fullrank":  # the guide is dense anyway: whiten with the full Laplace factor
        H = np.asarray(hessian_matrix(s.program, z), np.float64)
        try:
            L = np.linalg.cholesky(0.5 * (H + H.T))
            return center, np.linalg.solve(L.T, np.eye(flat.size)).astype(np.float32), m  # P P^T = H^-1
        except np.linalg.LinAlgError:
            log.warning("the Hessian at the MAP is not positive definite; VI falls back to its diagonal")
    diag = hessian_diag(s.program, z, exact=flat.size <= EXACT_DIAG, probes=PROBES, seed=seed)
    # curvature that is not positive (flat or saddle) or not finite gets unit scale
    ok = np.isfinite(diag) & (diag > 1e-12)
    precond = np.where(ok, 1.0 / np.sqrt(np.where(ok, diag, 1.0)), 1.0)
    return center, precond.astype(np.float32), m


def vi(model: Callable, data, runtime=None, cluster=None, split=None, guide: str = "meanfield", steps: int = 2000,
       lr: float = 0.05, particles: int = 1, draws: int = 1000, seed: int = 0, chunk: int = 250, rank: int = 5,
       init: str = "map", progress: bool | None = None) -> VIResult:
    """Fit `guide` by ADVI; returns the Gaussian (unconstrained) and constrained draws as InferenceData.

    init="map" (default) starts from the MAP with the Laplace diagonal as preconditioner (the
    full-rank guide with the full Laplace factor; see the module docstring); init="zero" is plain
    ADVI from the origin. `lr` is Adam's initial learning rate, in whitened units with
    init="map", decayed by a cosine schedule to 1% at `steps`. progress: show the iteration and the
    objective, -ELBO (None: when stderr is a terminal or a notebook).
    """
    if guide not in ("meanfield", "lowrank", "fullrank"):
        raise ValueError(f"guide must be 'meanfield', 'lowrank' or 'fullrank', not {guide!r}")
    if init not in ("map", "zero"):
        raise ValueError(f"init must be 'map' or 'zero', not {init!r}")
    if steps < 1 or chunk < 1 or particles < 1:
        raise ValueError(f"steps, chunk and particles must be positive (got {steps}, {chunk}, {particles})")
    s = setup(model, data, runtime, cluster, split)
    template = zeros_like_params(s.plan.graph)
    center, precond, m = _start(init, guide, model, data, s, template, seed)
    chunk = min(chunk, steps)
    settings = (guide, template, particles, chunk, lr, seed, rank, steps, center, precond)
    trace: list[float] = []
    bar = OptimProgress(f"VI ({guide})", show=progress, every_s=0.0)

    def step(program, state):
        out = run_spmd(program, _vi_chunk, state, settings)
        trace.append(float(out.elbo))
        bar.update(int(out.step), -float(out.elbo))
        return out, int(out.step) >= steps

    try:
        final = run_resumable(s, step, None)
    finally:
        bar.close()
    g = {k: np.asarray(v) for k, v in final.guide.items()}
    _, unravel = ravel_pytree(template)
    w, _ = sample_guide(guide, g, jax.random.PRNGKey(seed + 1), draws)
    z = center + np.asarray(whiten(precond, np.asarray(w)))
    batch = jax.vmap(unravel)(np.asarray(z, np.float32))
    post = {k: v[None] for k, v in constrain_draws(model, data, batch).items()}
    scale = np.exp(g["log_scale"])
    if guide == "fullrank":  # cov_z = (P L)(P L)^T with P the preconditioner
        factor = np.tril(g["tril"], -1) + np.diag(scale)
        factor = precond @ factor if precond.ndim == 2 else precond[:, None] * factor
        sd = np.sqrt(np.sum(factor ** 2, axis=1))
    else:
        sd = scale if guide == "meanfield" else np.sqrt(scale ** 2 + np.sum(g["factor"] ** 2, axis=1))
        sd = precond * sd
    loc = center + np.asarray(whiten(precond, g["loc"]))
    return VIResult(guide, {k: np.asarray(v) for k, v in unravel(loc).items()},
                    {k: np.asarray(v) for k, v in unravel(sd).items()}, np.asarray(trace),
                    to_inference_data(s.plan.graph, post), s.plan, m)
