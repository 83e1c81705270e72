"""A low-rank + diagonal mass matrix learnt from draws and gradients in Stan's windows.

nutpie's estimate (Seyboldt et al.): the diagonal sqrt(var(draws) / var(gradients)), then, in the
coordinates that diagonal scales, a low-rank correction: the draws' and the gradients' leading
directions span a subspace Q (at most 2 x max_rank wide); there the inverse mass matrix is the
geometric mean of the draws' covariance and the inverse of the gradients' covariance (the two
agree on a Gaussian), and its eigenvalues outside [1/cutoff, cutoff] become the correction.

What differs from nutpie's (and BlackJAX's `fisher_low_rank`) estimate, so that it can learn in
the short windows of Stan's schedule (10, 20, 40, ... draws) without freezing a chain:
- Both projected covariances are shrunk towards the identity with `prior_draws` pseudo-draws
  ((m C + n0 I) / (m + n0)) instead of nutpie's C + 1e-5 I on sums: with fewer draws than Q has
  directions, the draws (or gradients) have no variance at all in some of Q's directions, and the
  near-unregularised geometric mean then gives eigenvalues near 0 or in the thousands there; one
  such eigenvalue forces the step size down until every chain stands still.
- No low-rank part from a window of fewer than `min_draws` draws (nor where the estimate is not
  finite): the diagonal alone.
- The diagonal is regularised as Stan's (n / (n + 5) d + 1e-3 x 5 / (n + 5)), and a coordinate whose
  draws or gradients did not vary falls back to the draws' variance, else to the previous diagonal.
- Eigenvalues are ranked by |log lambda| (a direction 10x too narrow matters as much as one 10x too
  wide) and clipped to [1e-6, 1e6].

The diagonal's statistics are Welford's running moments over the whole window; the low-rank part
reads a buffer of the window's last `buffer_size` draws and gradients (d x buffer_size each).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.metric_recipes import MetricCore
from blackjax.mcmc.metrics import LowRankInverseMassMatrix
from jax.flatten_util import ravel_pytree

# the most buffer entries (draws + gradients, each d numbers per row) a chain's warm-up keeps
MAX_BUFFER_ENTRIES = 20_000_000


@dataclass(frozen=True)
class LowRankRule:
    max_rank: int = 10  # directions in the correction
    cutoff: float = 2.0  # eigenvalues in [1/cutoff, cutoff] are left at 1
    prior_draws: float = 0.1  # pseudo-draws of the identity in each projected covariance
    min_draws: int = 20  # fewer draws in a window: the diagonal alone
    draws_per_direction: float = 2.0  # nor fewer than this many per direction of Q
    clip: float = 1e6  # eigenvalues are clipped to [1/clip, clip]


class Moments(NamedTuple):
    """Welford's running mean and sum of squared deviations of the draws and the gradients."""
    n: jax.Array
    mean_x: jax.Array
    m2_x: jax.Array
    mean_g: jax.Array
    m2_g: jax.Array


class LowRankState(NamedTuple):
    inverse_mass_matrix: LowRankInverseMassMatrix
    moments: Moments
    draws: jax.Array  # (buffer_size, d): the window's last draws, circular
    grads: jax.Array  # (buffer_size, d)
    change: jax.Array  # the last window's metric against the one before, over its noise bound (`settle_ratio`)
    window: jax.Array  # draws in the last finished window (0: none yet)


class DiagonalState(NamedTuple):
    """Stan's diagonal metric, var(draws) regularised, with the same record of change as LowRankState."""
    inverse_mass_matrix: jax.Array
    moments: Moments
    change: jax.Array
    window: jax.Array


def _empty_moments(d: int, dtype) -> Moments:
    z = jnp.zeros(d, dtype)
    return Moments(jnp.zeros((), jnp.int32), z, z, z, z)


def _welford(m: Moments, x: jax.Array, g: jax.Array) -> Moments:
    n = m.n + 1
    dx, dg = x - m.mean_x, g - m.mean_g
    mean_x, mean_g = m.mean_x + dx / n, m.mean_g + dg / n
    return Moments(n, mean_x, m.m2_x + dx * (x - mean_x), mean_g, m.m2_g + dg * (g - mean_g))


def draws_variance(m: Moments, previous: jax.Array) -> jax.Array:
    """Stan's diagonal: the draws' sample variance, regularised (n / (n + 5) var + 1e-3 x 5 / (n + 5))."""
    n = m.n.astype(m.m2_x.dtype)
    var = (n / (n + 5.0)) * (m.m2_x / jnp.maximum(n - 1.0, 1.0)) + 1e-3 * (5.0 / (n + 5.0))
    return jnp.where(jnp.isfinite(var) & (var > 0), var, previous)


def diagonal(m: Moments, previous: jax.Array) -> jax.Array:
    """The diagonal of the inverse mass matrix: sqrt(var(x) / var(g)), regularised as Stan's."""
    n = jnp.maximum(m.n, 1).astype(m.m2_x.dtype)
    var_x, var_g = m.m2_x / n, m.m2_g / n
    tiny = jnp.finfo(var_x.dtype).tiny * 1e6
    ratio = jnp.sqrt(var_x / jnp.where(var_g > tiny, var_g, 1.0))
    d = jnp.where((var_x > tiny) & (var_g > tiny), ratio, jnp.where(var_x > tiny, var_x, previous))
    d = (n / (n + 5.0)) * d + 1e-3 * (5.0 / (n + 5.0))
    return jnp.where(jnp.isfinite(d) & (d > 0), d, previous)


def _leading_directions(rows: jax.Array, k: int) -> jax.Array:
    """The k leading right singular vectors of rows (m, d), as columns (d, k)."""
    _, _, vt = jnp.linalg.svd(rows, full_matrices=False)
    return vt[:k].T


def _sqrt_and_inv_sqrt(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    w, v = jnp.linalg.eigh(a)
    w = jnp.maximum(w, jnp.finfo(a.dtype).eps * jnp.max(jnp.abs(w)))
    return (v * jnp.sqrt(w)) @ v.T, (v / jnp.sqrt(w)) @ v.T


def geometric_mean(a: jax.Array, b: jax.Array) -> jax.Array:
    """The geometric mean a # b = a^1/2 (a^-1/2 b a^-1/2)^1/2 a^1/2 of two SPD matrices."""
    ra, ria = _sqrt_and_inv_sqrt(a)
    rm, _ = _sqrt_and_inv_sqrt(ria @ b @ ria)
    out = ra @ rm @ ra
    return (out + out.T) / 2


def low_rank(x: jax.Array, g: jax.Array, m: jax.Array, sigma: jax.Array, rule: LowRankRule):
    """(U (d, k), lam (k,)) in the coordinates scaled by sigma, from the first m rows of the draws x
    and gradients g (B, d); lam = 1 where the window is too short or the estimate not finite."""
    b, d = x.shape
    k = min(rule.max_rank, d)
    valid = (jnp.arange(b) < m)[:, None]
    mf = jnp.maximum(m, 1).astype(x.dtype)
    xs = jnp.where(valid, x / sigma, 0.0)
    gs = jnp.where(valid, g * sigma, 0.0)
    xs = jnp.where(valid, xs - xs.sum(0) / mf, 0.0)
    gs = jnp.where(valid, gs - gs.sum(0) / mf, 0.0)
    q, _ = jnp.linalg.qr(jnp.concatenate([_leading_directions(xs, k), _leading_directions(gs, k)], axis=1))
    width = q.shape[1]
    eye = jnp.eye(width, dtype=x.dtype)

    def shrunk(rows):
        p = rows @ q
        return (p.T @ p + rule.prior_draws * eye) / (mf + rule.prior_draws)

    lam, v = jnp.linalg.eigh(geometric_mean(shrunk(xs), jnp.linalg.inv(shrunk(gs))))
    lam = jnp.clip(lam, 1.0 / rule.clip, rule.clip)
    order = jnp.argsort(-jnp.abs(jnp.log(lam)))[:k]
    u, lam = (q @ v)[:, order], lam[order]
    enough = m >= max(rule.min_draws, rule.draws_per_direction * width)
    trusted = enough & jnp.all(jnp.isfinite(lam)) & jnp.all(jnp.isfinite(u))
    keep = trusted & ((lam < 1.0 / rule.cutoff) | (lam > rule.cutoff))
    lam = jnp.where(keep, lam, 1.0)
    u = jnp.where(keep[None, :], u, 0.0)
    r = lam.shape[0]
    if r < rule.max_rank:  # fewer dimensions (or buffer rows) than the rank: pad with directions that change nothing
        u = jnp.concatenate([u, jnp.zeros((d, rule.max_rank - r), u.dtype)], axis=1)
        lam = jnp.concatenate([lam, jnp.ones(rule.max_rank - r, lam.dtype)])
    return u, lam


def estimate(moments: Moments, x: jax.Array, g: jax.Array, m: jax.Array, previous: LowRankInverseMassMatrix,
             rule: LowRankRule) -> LowRankInverseMassMatrix:
    """The inverse mass matrix diag(sigma) (I + U (lam - 1) U^T) diag(sigma) from one window."""
    sigma = jnp.sqrt(diagonal(moments, previous.sigma ** 2))
    u, lam = low_rank(x, g, m, sigma, rule)
    return LowRankInverseMassMatrix(sigma=sigma, U=u, lam=lam)


def variances(imm) -> jax.Array:
    """The per-coordinate variances of an inverse mass matrix (diagonal, or low-rank + diagonal)."""
    if isinstance(imm, LowRankInverseMassMatrix):
        return imm.sigma ** 2 * (1.0 + jnp.sum((imm.lam - 1.0) * imm.U ** 2, axis=1))
    return imm


# a window's metric counts as settled when no coordinate's scale moved by more than this factor beyond
# the estimates' own noise
SETTLED_FACTOR = 2.0


def settle_ratio(old: jax.Array, new: jax.Array, n_old: jax.Array, n_new: jax.Array) -> jax.Array:
    """How far a window's metric moved from the previous window's, over what the two windows' noise
    allows: max over coordinates of |log(scale_new / scale_old)| (scale = sqrt(variance)) divided by
    log(SETTLED_FACTOR) + z_d sqrt(1 / n_old + 1 / n_new). A scale estimated from n draws (effective
    size about n / 2) has sd(log scale) about 1 / sqrt(n); z_d = sqrt(2 log d) + 2 covers the largest of
    d such deviations. At most 1: the metric has settled; inf when there was no earlier window."""
    d = old.shape[0]
    tiny = jnp.finfo(old.dtype).tiny
    stat = jnp.max(jnp.abs(jnp.log(jnp.maximum(new, tiny)) - jnp.log(jnp.maximum(old, tiny)))) / 2
    n_o, n_n = (jnp.maximum(n, 1).astype(old.dtype) for n in (n_old, n_new))
    bound = np.log(SETTLED_FACTOR) + (np.sqrt(2 * np.log(max(d, 2))) + 2) * jnp.sqrt(1 / n_o + 1 / n_n)
    return jnp.where(n_old > 0, stat / bound, jnp.inf)


def buffer_size(window: int, d: int) -> int:
    """Rows of the window buffer: the longest window, within MAX_BUFFER_ENTRIES."""
    return int(max(1, min(window, MAX_BUFFER_ENTRIES // max(2 * d, 1))))


def longest_window(schedule) -> int:
    """The longest slow window (draws whose statistics give one metric) of a BlackJAX schedule."""
    s = np.asarray(schedule)
    longest, start = 0, None
    for i, (stage, end) in enumerate(s):
        if stage == 1 and start is None:
            start = i
        if stage == 1 and end:
            longest, start = max(longest, i - start + 1), None
    return max(longest, 1)


def low_rank_state(imm: LowRankInverseMassMatrix, rows: int, window=0) -> LowRankState:
    """A core state that starts from `imm`, learnt from a window of `window` draws (a warm-up's extension)."""
    d, dtype = imm.sigma.shape[0], imm.sigma.dtype
    return LowRankState(imm, _empty_moments(d, dtype), jnp.zeros((rows, d), dtype), jnp.zeros((rows, d), dtype),
                        jnp.zeros((), dtype), jnp.asarray(window, jnp.int32))


def low_rank_core(rows: int, rule: LowRankRule = LowRankRule()) -> MetricCore:
    """A BlackJAX MetricCore (init / update / final) for `staged_adaptation`: it accumulates a
    window's draws and gradients and at the window's end sets the low-rank + diagonal metric and
    records how far it moved from the previous window's (`settle_ratio`)."""

    def init(d: int) -> LowRankState:
        dtype = jnp.zeros(()).dtype
        imm = LowRankInverseMassMatrix(sigma=jnp.ones(d, dtype), U=jnp.zeros((d, rule.max_rank), dtype),
                                       lam=jnp.ones(rule.max_rank, dtype))
        return low_rank_state(imm, rows)

    def update(state: LowRankState, position, grad) -> LowRankState:
        x, _ = ravel_pytree(position)
        # BlackJAX hands the gradient of the log density; its variance is what the rule needs
        gr, _ = ravel_pytree(grad)
        x, gr = x.astype(state.draws.dtype), gr.astype(state.draws.dtype)
        i = state.moments.n % rows
        return state._replace(moments=_welford(state.moments, x, gr), draws=state.draws.at[i].set(x),
                              grads=state.grads.at[i].set(gr))

    def final(state: LowRankState) -> LowRankState:
        m = jnp.minimum(state.moments.n, rows)
        imm = estimate(state.moments, state.draws, state.grads, m, state.inverse_mass_matrix, rule)
        d = state.draws.shape[1]
        change = settle_ratio(variances(state.inverse_mass_matrix), variances(imm), state.window, state.moments.n)
        return LowRankState(imm, _empty_moments(d, state.draws.dtype), jnp.zeros_like(state.draws),
                            jnp.zeros_like(state.grads), change.astype(state.change.dtype), state.moments.n)

    return MetricCore(init=init, update=update, final=final)


def diagonal_state(imm: jax.Array, window=0) -> DiagonalState:
    return DiagonalState(imm, _empty_moments(imm.shape[0], imm.dtype), jnp.zeros((), imm.dtype),
                         jnp.asarray(window, jnp.int32))


def diagonal_core() -> MetricCore:
    """Stan's diagonal metric as a MetricCore (BlackJAX's Welford diagonal): the draws' sample variance
    over the window, regularised as Stan's (n / (n + 5) var + 1e-3 x 5 / (n + 5)), with the record of
    change of `low_rank_core`."""

    def init(d: int) -> DiagonalState:
        return diagonal_state(jnp.ones(d, jnp.zeros(()).dtype))

    def update(state: DiagonalState, position, grad) -> DiagonalState:
        x, _ = ravel_pytree(position)
        x = x.astype(state.inverse_mass_matrix.dtype)
        return state._replace(moments=_welford(state.moments, x, jnp.zeros_like(x)))

    def final(state: DiagonalState) -> DiagonalState:
        m = state.moments
        imm = draws_variance(m, state.inverse_mass_matrix)
        change = settle_ratio(state.inverse_mass_matrix, imm, state.window, m.n)
        return DiagonalState(imm, _empty_moments(imm.shape[0], imm.dtype), change.astype(imm.dtype), m.n)

    return MetricCore(init=init, update=update, final=final)
