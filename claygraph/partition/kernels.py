"""Faster kernels for primitives whose XLA CPU lowering is slow, bound by the emitter in their place.

A matrix-vector product `X @ w` (X of shape (n, d), contracting d) has the transpose `r @ X`
in its gradient, a dot that contracts the long row axis. For some widths XLA's CPU dot kernel
for that vector-matrix product streams X at a fraction of the memory bandwidth, and the same sum
written as `sum(X * r[:, None], axis=0)` (fused into one pass over X) is several times faster;
for others it is the reverse. Measured on 2 cores, 100 MB of float32 X, dot / multiply-reduce:
d = 8: 5.6 / 153 ms, 16: 15 / 120, 20: 21 / 6.9, 32: 48 / 11, 64: 43 / 6.7, 100: 57 / 25,
128: 15 / 12, 200: 32 / 32, 500: 22 / 34. `matvec` keeps the forward dot and writes its gradient
as the multiply-reduce for widths in FUSED_WIDTHS, on the CPU only; its value is the same dot, its
gradient equal to rounding. See docs/partition.md ("Emission").

`matvec_t` is `X @ w` for an X held feature-major (claygraph.partition.storage), with a batching
rule for chains under jax.vmap; `softplus` is NumPyro's softplus expression as one kernel
(claygraph.partition.patterns finds it). See docs/performance.md.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

MATVEC_DIMS = (((1,), (0,)), ((), ()))
FUSED_WIDTHS = range(20, 161)  # where the multiply-reduce beat the dot (the measurements above)


def is_matvec(params: dict[str, Any], lhs_ndim: int, rhs_ndim: int) -> bool:
    """`X @ w`: a 2-D lhs contracting its last axis with a 1-D rhs, no batch axes."""
    dims = params["dimension_numbers"]
    return (lhs_ndim, rhs_ndim) == (2, 1) and tuple(map(tuple, dims[0])) == MATVEC_DIMS[0] and \
        not any(dims[1])


def fuses(x, w) -> bool:
    """The multiply-reduce gradient is the faster one for this X (see the module's measurements)."""
    return jax.default_backend() == "cpu" and x.shape[1] in FUSED_WIDTHS and x.dtype == w.dtype


@jax.custom_vjp
def matvec(x, w):
    return lax.dot_general(x, w, MATVEC_DIMS)


def _matvec_fwd(x, w):
    return matvec(x, w), (x, w)


def _matvec_bwd(res, r):
    x, w = res
    r = r.astype(x.dtype)
    # the cotangent of x (data, never differentiated in a potential) is dead code XLA removes
    return (r[:, None] * w[None, :].astype(x.dtype)).astype(x.dtype), jnp.sum(x * r[:, None], axis=0).astype(w.dtype)


matvec.defvjp(_matvec_fwd, _matvec_bwd)


def bind(primitive, args: list, params: dict[str, Any]) -> list:
    """Bind `primitive` on `args`, through a faster kernel where one applies (a list of outputs)."""
    if primitive.name == "dot_general" and is_matvec(params, args[0].ndim, args[1].ndim) \
            and params.get("preferred_element_type") in (None, args[0].dtype) and fuses(*args):
        return [matvec(*args)]
    out = primitive.bind(*args, **params)
    return list(out) if primitive.multiple_results else [out]


# -- feature-major storage: X @ w reading X.T ------------------------------------------------------
#
# A tall-skinny X (n rows, few features) is stored feature-major (X.T, contiguous; see
# claygraph.partition.storage). `matvec_t(xt, w)` is X @ w read from it: one chain's d x n by n-vector
# products (value and gradient) run several times faster on the CPU than the row-major pair. Under
# jax.vmap (a batch of chains) the products are written so that JAX's own batching rule gives the fast
# form: w . X.T (w's axis against X.T's leading one) batches to W (k, d) . X.T (d, n) -> (k, n), and
# r . X.T over n to R (k, n) . X.T (d, n) -> (k, d), both streaming X.T once (measured in
# claygraph.partition.storage). Plain dot_generals, not a custom batching rule, so that the pair can be
# differentiated again (reverse over reverse: Hessians for Laplace and VI, claygraph.infer.common.hvp).

T_DOT = (((0,), (0,)), ((), ()))  # w (d,) . X.T (d, n) -> (n,)
T_VJP = (((0,), (1,)), ((), ()))  # r (n,) . X.T (d, n) -> (d,)
ROW_DOT = MATVEC_DIMS  # X (n, d) . w (d,) -> (n,)


def _t_dot(xt, w):
    return lax.dot_general(w, xt, T_DOT)


def matvec_t_transpose(xt, r):
    return lax.dot_general(r, xt, T_VJP)


@jax.custom_vjp
def matvec_t(xt, w):
    """`X @ w` for X held feature-major as `xt` (= X.T): the same value, the faster read."""
    return _t_dot(xt, w)


def _matvec_t_fwd(xt, w):
    return _t_dot(xt, w), (xt, w)


def _matvec_t_bwd(res, r):
    xt, w = res
    # the cotangent of the data (never differentiated in a potential) is dead code XLA removes
    return jnp.zeros_like(xt), matvec_t_transpose(xt, r.astype(xt.dtype)).astype(w.dtype)


matvec_t.defvjp(_matvec_t_fwd, _matvec_t_bwd)


# -- softplus: value and gradient from one exp -------------------------------------------------------
#
# NumPyro writes softplus(s) = max(s, 0) + log1p(exp(-|s|)) (Bernoulli and binomial logits, log_sigmoid).
# Autodiff of that expression differentiates max, abs, neg, exp and log1p one by one (XLA fuses them and
# reuses the exp; the measured gain is small, docs/performance.md). The kernel computes e = exp(-|s|)
# once and states the derivative JAX's autodiff of the expression gives, op for op, so that it agrees
# to the last bit:
# max'(s) + e * (-abs'(s)) / (1 + e); at s = 0 that is 0.5 - 0.5 = 0 (JAX's convention at the kinks),
# elsewhere sigmoid(s).

def _softplus_value(s, e):
    return jnp.maximum(s, 0) + jnp.log1p(e)


@jax.custom_jvp
def softplus(s):
    return _softplus_value(s, jnp.exp(-jnp.abs(s)))


@softplus.defjvp
def _softplus_jvp(primals, tangents):
    (s,), (ds,) = primals, tangents
    e = jnp.exp(-jnp.abs(s))
    _, dmax = jax.jvp(lambda u: jnp.maximum(u, 0), (s,), (ds,))
    _, dabs = jax.jvp(jnp.abs, (s,), (ds,))
    return _softplus_value(s, e), dmax + e * -dabs / (1 + e)
