"""ADVI: a Gaussian in the unconstrained space fitted by maximising the ELBO with Adam (optax).

Guides: "meanfield" (diagonal), "lowrank" (diagonal + rank-k factor), "fullrank" (Cholesky factor).
Each ELBO gradient is a gradient of the split program, so it is computed across the workers;
the loop runs SPMD in jitted chunks, checkpointed between chunks like MAP.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from claygraph.infer.common import constrain_draws, run_resumable, setup, to_inference_data, zeros_like_params
from claygraph.runtime.spmd import run_spmd


class VIState(NamedTuple):
    guide: Any
    opt: Any
    key: Any
    step: Any
    elbo: Any  # running mean of the last chunk


def init_guide(kind: str, dim: int, rank: int) -> dict:
    g = {"loc": jnp.zeros(dim), "log_scale": jnp.full(dim, -2.0)}
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


def _build(ctx, kind: str, template: dict, particles: int, chunk: int, lr: float):
    _, unravel = ravel_pytree(template)
    opt = optax.adam(lr)

    def loss(g, key, data):
        z, entropy = sample_guide(kind, g, key, particles)
        energy = jax.lax.map(lambda x: ctx.potential(unravel(x), data), z)
        return jnp.mean(energy) - entropy  # -ELBO up to a constant

    def run(state: VIState, data) -> VIState:
        def one(s, _):
            g, o, key, step, acc = s
            key, sub = jax.random.split(key)
            val, grad = jax.value_and_grad(loss)(g, sub, data)
            upd, o = opt.update(grad, o, g)
            return (optax.apply_updates(g, upd), o, key, step + 1, acc + val), None

        s, _ = jax.lax.scan(one, (*state[:4], jnp.float32(0.0)), None, length=chunk)
        return VIState(s[0], s[1], s[2], s[3], -s[4] / chunk)

    return opt, jax.jit(run)


def _vi_chunk(ctx, host_state, settings):
    kind, template, particles, chunk, lr, seed = settings
    opt, run = ctx.cached(("vi", kind, particles, chunk, lr), lambda: _build(ctx, kind, template, particles, chunk, lr))
    if host_state is None:
        dim = ravel_pytree(template)[0].size
        g = init_guide(kind, dim, settings_rank(settings))
        state = VIState(g, opt.init(g), jax.random.PRNGKey(seed), jnp.int32(0), jnp.float32(-np.inf))
        state = ctx.to_global(ctx.to_host(state))
    else:
        state = ctx.to_global(host_state)
    return ctx.to_host(run(state, ctx.data))


def settings_rank(settings) -> int:
    return getattr(settings, "rank", 5)


@dataclass(frozen=True)
class VIResult:
    guide: str
    loc: dict
    scale: dict  # marginal sd per site, unconstrained
    elbo: np.ndarray  # per chunk
    inference_data: Any
    plan: Any

    @property
    def posterior(self):
        return self.inference_data.posterior

    def __repr__(self) -> str:
        return f"VIResult(guide={self.guide!r}, final ELBO {self.elbo[-1]:.6g} after {len(self.elbo)} chunks)"


def vi(model: Callable, data, runtime=None, cluster=None, split=None, guide: str = "meanfield", steps: int = 2000,
       lr: float = 0.01, particles: int = 1, draws: int = 1000, seed: int = 0, chunk: int = 250) -> VIResult:
    """Fit `guide` by ADVI; returns the Gaussian (unconstrained) and constrained draws as InferenceData."""
    if guide not in ("meanfield", "lowrank", "fullrank"):
        raise ValueError(f"guide must be 'meanfield', 'lowrank' or 'fullrank', not {guide!r}")
    s = setup(model, data, runtime, cluster, split)
    template = zeros_like_params(s.plan.graph)
    settings = (guide, template, particles, chunk, lr, seed)
    trace: list[float] = []

    def step(program, state):
        out = run_spmd(program, _vi_chunk, state, settings)
        trace.append(float(out.elbo))
        return out, int(out.step) >= steps

    final = run_resumable(s, step, None)
    g = {k: np.asarray(v) for k, v in final.guide.items()}
    _, unravel = ravel_pytree(template)
    z, _ = sample_guide(guide, g, jax.random.PRNGKey(seed + 1), draws)
    batch = jax.vmap(unravel)(np.asarray(z, np.float32))
    post = {k: v[None] for k, v in constrain_draws(model, data, batch).items()}
    sd = np.exp(g["log_scale"])
    if guide == "lowrank":
        sd = np.sqrt(sd ** 2 + np.sum(g["factor"] ** 2, axis=1))
    elif guide == "fullrank":
        L = np.tril(g["tril"], -1) + np.diag(sd)
        sd = np.sqrt(np.sum(L ** 2, axis=1))
    return VIResult(guide, {k: np.asarray(v) for k, v in unravel(g["loc"]).items()},
                    {k: np.asarray(v) for k, v in unravel(sd).items()}, np.asarray(trace),
                    to_inference_data(s.plan.graph, post), s.plan)
