"""ADVI: a Gaussian in the unconstrained space fitted by maximising the ELBO with Adam (optax).

Guides: "meanfield" (diagonal), "lowrank" (diagonal + rank-k factor), "fullrank" (Cholesky factor).
Each ELBO gradient is a gradient of the split program, so it is computed across the workers;
the loop runs SPMD in jitted chunks. The mean-field and low-rank guides live per site on the sharded
state (claygraph.infer.vi_sites: a per-group site's variational parameters sharded with its groups,
kept on the workers between chunks; a lost worker restarts the fit); the full-rank guide, one dense
factor over every parameter, runs in the user's layout and is checkpointed between chunks.

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

from claygraph.infer import vi_sites
from claygraph.infer.common import (
    Continue,
    constrain_draws,
    kept,
    like_sites,
    new_fit,
    release,
    run_resumable,
    run_spmd,
    setup,
    to_inference_data,
    zeros_like_params,
)
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


def init_guide(dim: int) -> dict:
    """The full-rank guide's standard normal over the whitened coordinates (the Laplace approximation itself)."""
    return {"loc": jnp.zeros(dim), "log_scale": jnp.zeros(dim), "tril": jnp.zeros((dim, dim))}


def sample_guide(g: dict, key, n: int):
    """(n, dim) draws of the full-rank guide and its entropy (up to a constant)."""
    dim = g["loc"].shape[0]
    L = jnp.tril(g["tril"], -1) + jnp.diag(jnp.exp(g["log_scale"]))
    eps = jax.random.normal(key, (n, dim))
    return g["loc"] + eps @ L.T, jnp.sum(g["log_scale"])


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
        w, entropy = sample_guide(g, key, particles)
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
        g = init_guide(center.size)
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
    bar = OptimProgress(f"VI ({guide})", show=progress, every_s=0.0)
    try:
        if guide != "fullrank":
            return _vi_sites(model, data, s, guide, steps, lr, particles, draws, seed, min(chunk, steps), rank,
                             init, bar)
        return _vi_dense(model, data, s, guide, steps, lr, particles, draws, seed, min(chunk, steps), rank, init,
                         bar)
    finally:
        bar.close()


class Begin(NamedTuple):
    """Start the guide at `center` (the user's layout; None: zeros) whitened by `precond` (the user's layout;
    None: Hutchinson's estimate of the Hessian's diagonal at the centre, made on the workers)."""

    center: Any
    precond: Any
    fit: str  # the fit's key for its state on the workers


def _sites_chunk(ctx, command, settings):
    """One chunk of the per-site ADVI loop on the workers; the state stays there (Context.resident)."""
    kind, particles, chunk, lr, steps, seed, rank = settings
    loop = ("vi-sites", kind, particles, chunk, lr, steps)

    def build():
        opt, start, run = vi_sites.build(ctx.internal, kind, particles, chunk, lr, steps,
                                         like_sites(ctx.mesh, ctx.params.sites))
        return opt, jax.jit(start, static_argnums=(3, 4)), kept(ctx, loop, run)

    opt, start, run = ctx.cached(loop, build)
    key = ("vi", command.fit)
    if isinstance(command, Begin):
        center = ctx.params_in(command.center)
        real = ctx.internal_in(ctx.params.real())
        if command.precond is None:
            internal = ctx.internal
            diag = ctx.cached(("hutchinson", PROBES, seed), lambda: jax.jit(
                lambda c, r, d: vi_sites.preconditioner(vi_sites.hutchinson_diag(internal, c, r, d, PROBES, seed))))
            precond = diag(center, real, ctx.data)
        else:
            precond = ctx.params_in(command.precond)
        state = start(center, precond, real, seed, rank)
    elif key in ctx.resident:
        state = ctx.resident[key]
    else:
        return None  # rebuilt after a lost worker: the driver begins again
    state = ctx.resident[key] = run(state, ctx.data)
    elbo, done = ctx.to_host((state.elbo, state.step))
    # the last chunk sends the fitted marginals back with it (inside the resumable step: a worker lost
    # before them restarts the fit)
    marginals = ctx.cached(("vi-marginals",), lambda: jax.jit(vi_sites.marginals))  # not op by op: one program
    return elbo, done, ctx.to_host(marginals(state)) if int(done) >= steps else None





def _vi_sites(model, data, s, guide, steps, lr, particles, draws, seed, chunk, rank, init, bar) -> VIResult:
    """Mean-field and low-rank ADVI per site, on the sharded state (claygraph.infer.vi_sites)."""
    graph, m, fit = s.plan.graph, None, new_fit()
    begin = Begin(None, {k: np.ones(shape, np.float32) for k, shape in graph.param_shapes.items()}, fit)
    if init == "map":
        m = map_(model, data, session=s)
        z = {k: np.asarray(v) for k, v in m.unconstrained.items()}
        size = sum(int(np.prod(shape)) for shape in graph.param_shapes.values())
        precond = None  # Hutchinson's estimate, on the workers
        if size <= EXACT_DIAG:
            _, unravel = ravel_pytree(z)
            diag = hessian_diag(s.program, z, exact=True)
            ok = np.isfinite(diag) & (diag > 1e-12)
            precond = {k: np.asarray(v, np.float32) for k, v in
                       unravel(np.where(ok, 1.0 / np.sqrt(np.where(ok, diag, 1.0)), 1.0)).items()}
        begin = Begin(z, precond, fit)
    settings = (guide, particles, chunk, lr, steps, seed, rank)
    trace: list[float] = []

    def step(program, command):
        out = run_spmd(program, _sites_chunk, command, settings)
        if out is None:
            trace.clear()
            return begin, False
        elbo, done, marg = float(out[0]), int(out[1]), out[2]
        trace.append(elbo)
        bar.update(done, -elbo)
        return (marg, True) if done >= steps else (Continue(fit), False)

    try:
        fitted = run_resumable(s, step, begin)
    finally:
        release(s, ("vi", fit))
    user = s.program.params.to_user
    loc, scale = user(fitted.loc), user(fitted.scale)
    factor = user(fitted.factor) if fitted.factor is not None else None
    batch = {}
    eps2 = (np.random.default_rng([seed, 1, 0]).standard_normal((draws, rank), dtype=np.float32)
            if factor is not None else None)
    for i, k in enumerate(sorted(loc)):  # in place: the draws are `draws` x the params, the largest output
        # NumPy's generator writes them once, in float32 (a JAX draw and its host copy held them twice)
        z = np.random.default_rng([seed, 1, i + 1]).standard_normal((draws, *np.shape(loc[k])), dtype=np.float32)
        z *= scale[k]
        z += loc[k]
        if factor is not None:
            z += np.einsum("nr,...r->n...", eps2, factor[k])
        batch[k] = z
    post = {k: v[None] for k, v in constrain_draws(model, data, batch).items()}
    del batch
    sd = scale if factor is None else {k: np.sqrt(scale[k] ** 2 + np.sum(factor[k] ** 2, axis=-1)) for k in scale}
    return VIResult(guide, loc, sd, np.asarray(trace), to_inference_data(graph, post), s.plan, m)


def _vi_dense(model, data, s, guide, steps, lr, particles, draws, seed, chunk, rank, init, bar) -> VIResult:
    """The full-rank guide: one dense factor over every parameter, in the user's layout (it is dense
    anyway: a model it suits has no per-group arrays worth sharding)."""
    template = zeros_like_params(s.plan.graph)
    center, precond, m = _start(init, guide, model, data, s, template, seed)
    settings = (guide, template, particles, chunk, lr, seed, rank, steps, center, precond)
    trace: list[float] = []

    def step(program, state):
        out = run_spmd(program, _vi_chunk, state, settings)
        trace.append(float(out.elbo))
        bar.update(int(out.step), -float(out.elbo))
        return out, int(out.step) >= steps

    final = run_resumable(s, step, None)
    g = {k: np.asarray(v) for k, v in final.guide.items()}
    _, unravel = ravel_pytree(template)
    w, _ = sample_guide(g, jax.random.PRNGKey(seed + 1), draws)
    z = center + np.asarray(whiten(precond, np.asarray(w)))
    batch = jax.vmap(unravel)(np.asarray(z, np.float32))
    post = {k: v[None] for k, v in constrain_draws(model, data, batch).items()}
    # cov_z = (P L)(P L)^T with P the preconditioner
    factor = np.tril(g["tril"], -1) + np.diag(np.exp(g["log_scale"]))
    factor = precond @ factor if precond.ndim == 2 else precond[:, None] * factor
    sd = np.sqrt(np.sum(factor ** 2, axis=1))
    loc = center + np.asarray(whiten(precond, g["loc"]))
    return VIResult(guide, {k: np.asarray(v) for k, v in unravel(loc).items()},
                    {k: np.asarray(v) for k, v in unravel(sd).items()}, np.asarray(trace),
                    to_inference_data(s.plan.graph, post), s.plan, m)
