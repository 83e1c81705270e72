"""Faster kernels for primitives whose XLA CPU lowering is slow, bound by the emitter in their place.

A matrix-vector product `X @ w` (X of shape (n, d), contracting d) has the transpose `r @ X`
in its gradient, a dot that contracts the long row axis. XLA's CPU dot kernel for that vector-matrix
product streams X at a fraction of the memory bandwidth (measured on 2 cores: 26 ms for a
500,000 x 50 float32 X, against 4.2 ms for the same sum written as `sum(X * r[:, None], axis=0)`,
which XLA fuses into one pass over X). `matvec` keeps the forward dot and writes its gradient as
the fused multiply-and-reduce; its value is the same dot, its gradient equal to rounding.
See docs/partition.md ("Emission").
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

MATVEC_DIMS = (((1,), (0,)), ((), ()))


def is_matvec(params: dict[str, Any], lhs_ndim: int, rhs_ndim: int) -> bool:
    """`X @ w`: a 2-D lhs contracting its last axis with a 1-D rhs, no batch axes."""
    dims = params["dimension_numbers"]
    return (lhs_ndim, rhs_ndim) == (2, 1) and tuple(map(tuple, dims[0])) == MATVEC_DIMS[0] and \
        not any(dims[1])


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
            and params.get("preferred_element_type") in (None, args[0].dtype) and args[0].dtype == args[1].dtype:
        return [matvec(*args)]
    out = primitive.bind(*args, **params)
    return list(out) if primitive.multiple_results else [out]
