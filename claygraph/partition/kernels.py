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
