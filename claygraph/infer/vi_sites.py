"""ADVI's mean-field and low-rank guides on sharded state: one Gaussian factor per site, in the internal layout.

Each site's variational parameters live where the site does (claygraph.partition.params): a per-group
site's `loc`, `log_scale` and low-rank `factor` rows are sharded with its groups, so no step moves an
array of the groups' size between devices. The whitening (z = center + precond * w) is per site too.
Padding slots are no part of the posterior: the entropy and the low-rank factor's Gram matrix count real
slots only (`real`), and the potential does not read padding, so their gradients are zero and Adam
leaves them where they started.

The low-rank entropy term 0.5 log det(I + W^T W) needs only the rank x rank Gram matrix of the whitened
factor rows, a sum over every site's rows: a small all-reduce, whatever the number of groups. The
state stays on the workers between chunks (`Context.resident`); the driver gets the ELBO and, at the
end, the guide's marginals in the user's layout.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class SiteVIState(NamedTuple):
    guide: Any  # {"loc": {site: ...}, "log_scale": {...}[, "factor": {site: (..., rank)}]}
    opt: Any
    key: Any
    step: Any
    elbo: Any  # mean of the last chunk
    center: Any  # per site: z = center + precond * w
    precond: Any
    logdet: Any  # sum of log precond over real slots
    real: Any  # per site: True on real slots


class Marginals(NamedTuple):
    """The fitted Gaussian in the model's unconstrained space, per site (internal layout, host)."""

    loc: dict
    scale: dict  # precond * exp(log_scale): the diagonal part's sd
    factor: dict | None  # precond * factor (low rank): cov = diag(scale^2) + factor factor^T


def init_guide(kind: str, center: dict, rank: int) -> dict:
    """The standard normal over the whitened coordinates, each array sharded as its site (it is made from
    the site's own array, so that the compiler keeps that sharding)."""
    zero = {k: x * 0 for k, x in center.items()}
    g = {"loc": zero, "log_scale": dict(zero)}
    if kind == "lowrank":
        g["factor"] = {k: x[..., None] * jnp.zeros(rank, x.dtype) for k, x in zero.items()}
    return g


def sample(kind: str, g: dict, real: dict, key, n: int) -> tuple[dict, Any]:
    """(n draws per site of the whitened coordinates, the guide's entropy up to a constant)."""
    sites = sorted(g["loc"])
    keys = dict(zip(sites, jax.random.split(key, len(sites) + 1)[1:]))
    scale = {k: jnp.exp(g["log_scale"][k]) for k in sites}
    w = {k: g["loc"][k] + jax.random.normal(keys[k], (n, *g["loc"][k].shape), g["loc"][k].dtype) * scale[k]
         for k in sites}
    entropy = sum(jnp.sum(jnp.where(real[k], g["log_scale"][k], 0.0)) for k in sites)
    if kind == "lowrank":
        rank = next(iter(g["factor"].values())).shape[-1]
        eps = jax.random.normal(jax.random.split(key)[0], (n, rank))
        gram = jnp.zeros((rank, rank))
        for k in sites:
            f = g["factor"][k]
            w[k] = w[k] + jnp.einsum("nr,...r->n...", eps, f)
            W = jnp.where(real[k][..., None], f / scale[k][..., None], 0.0).reshape(-1, rank)
            gram = gram + W.T @ W  # rank x rank: over sharded rows, a small all-reduce
        entropy = entropy + 0.5 * jnp.linalg.slogdet(jnp.eye(rank) + gram)[1]
    return w, entropy


def build(potential, kind: str, particles: int, chunk: int, lr: float, steps: int, place=lambda x: x):
    """(optimiser, start(center, precond, real, seed, rank), run(state, data)), functions to jit (seed and rank
    static). `place` puts each array of the first state where the loop keeps it (common.like_sites)."""
    opt = optax.adam(optax.cosine_decay_schedule(lr, max(steps, 1), alpha=0.01))

    def loss(g, key, center, precond, real, data):
        w, entropy = sample(kind, g, real, key, particles)
        energy = jax.lax.map(lambda x: potential({k: center[k] + precond[k] * x[k] for k in center}, data), w)
        return jnp.mean(energy) - entropy  # -ELBO up to a constant (without log|det precond|)

    def run(state: SiteVIState, data) -> SiteVIState:
        def one(s, _):
            g, o, key, step, acc = s
            key, sub = jax.random.split(key)
            val, grad = jax.value_and_grad(loss)(g, sub, state.center, state.precond, state.real, data)
            upd, o = opt.update(grad, o, g)
            return (optax.apply_updates(g, upd), o, key, step + 1, acc + val), None

        s, _ = jax.lax.scan(one, (*state[:4], jnp.float32(0.0)), None, length=chunk)
        return state._replace(guide=s[0], opt=s[1], key=s[2], step=s[3], elbo=-s[4] / chunk + state.logdet)

    def start(center, precond, real, seed, rank):
        g = init_guide(kind, center, rank)
        logdet = sum(jnp.sum(jnp.where(real[k], jnp.log(precond[k]), 0.0)) for k in center)
        return SiteVIState(g, jax.tree.map(place, opt.init(g)), jax.random.PRNGKey(seed), jnp.int32(0),
                           jnp.float32(-np.inf), center, precond, logdet, real)

    return opt, start, run


def marginals(state: SiteVIState) -> Marginals:
    g, p = state.guide, state.precond
    loc = {k: state.center[k] + p[k] * g["loc"][k] for k in p}
    scale = {k: p[k] * jnp.exp(g["log_scale"][k]) for k in p}
    factor = {k: p[k][..., None] * g["factor"][k] for k in p} if "factor" in g else None
    return Marginals(loc, scale, factor)


def hutchinson_diag(potential, center: dict, real: dict, data, probes: int, seed: int) -> dict:
    """Hutchinson's estimate of the Hessian's diagonal per site (E[v * Hv], Rademacher v), in the internal
    layout: each probe a Hessian-vector product of the sharded program (reverse over reverse, as
    claygraph.infer.common.hvp). Padding slots get 0."""
    from claygraph.infer.common import hvp

    grad = jax.grad(lambda z: potential(z, data))
    sites = sorted(center)

    def one(key):
        keys = dict(zip(sites, jax.random.split(key, len(sites))))
        v = {k: jax.random.rademacher(keys[k], center[k].shape, center[k].dtype) for k in sites}
        hv = hvp(grad, center, v)
        return {k: v[k] * hv[k] for k in sites}

    est = jax.lax.map(one, jax.random.split(jax.random.PRNGKey(seed), probes))
    return {k: jnp.where(real[k], jnp.mean(est[k], axis=0), 0.0) for k in sites}


def preconditioner(diag: dict) -> dict:
    """1 / sqrt(diag H) where the curvature is positive and finite, else 1."""
    out = {}
    for k, d in diag.items():
        ok = jnp.isfinite(d) & (d > 1e-12)
        out[k] = jnp.where(ok, 1.0 / jnp.sqrt(jnp.where(ok, d, 1.0)), 1.0).astype(d.dtype)
    return out
