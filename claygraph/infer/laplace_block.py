"""Laplace with a block-structured Hessian, for many per-group parameters.

When the potential is a sum over groups of terms in (that group's parameters, the globals) plus
terms in the globals, its Hessian is [[H_GG, C], [C^T, B]] with B block-diagonal: one k x k
block per group. k + G Hessian-vector products on the split program give every block (perturb
within-group coordinate i of all groups at once: groups do not interact, so each group's
answer is column i of its own block) and the cross terms C (G x J*k). The Gaussian is then
sampled without ever forming the dense (G + J*k)^2 matrix:

    globals  delta_G ~ N(0, S^-1),  S = H_GG - sum_j C_j B_j^-1 C_j^T  (Schur complement)
    group j  delta_j | delta_G ~ N(-B_j^-1 C_j^T delta_G, B_j^-1)

Memory is O(J k (k + G)), linear in the groups. One more product with a random direction checks
that groups really do not interact (a random walk over groups, say, would break the structure)
and raises a clear error when they do.
"""
from __future__ import annotations

from dataclasses import dataclass

import jax
import numpy as np

from claygraph.errors import ModelError
from claygraph.infer.common import hvp, run_spmd

CHECK_RTOL = 1e-3


@dataclass(frozen=True)
class BlockHessian:
    dim: str  # the group dim
    group_sites: tuple[str, ...]  # sites with a leading `dim` axis, each (J, *rest)
    global_sites: tuple[str, ...]
    blocks: np.ndarray  # (J, k, k) within-group blocks B_j
    cross: np.ndarray  # (G, J, k) C
    globals_block: np.ndarray  # (G, G) H_GG

    @property
    def groups(self) -> int:
        return self.blocks.shape[0]


def group_dim(graph) -> str | None:
    """The dim that the most parameter entries have as their leading axis (None: no per-group sites)."""
    count: dict[str, int] = {}
    for k, dims in graph.param_dims.items():
        if dims and dims[0] is not None:
            count[dims[0]] = count.get(dims[0], 0) + int(np.prod(graph.param_shapes[k]))
    return max(count, key=count.get) if count else None


def _hvps(ctx, z: dict, directions: dict):
    """H v for a batch of directions (each leaf with a leading batch axis), on the split program."""
    potential = ctx.potential  # the cached function must not hold the context (its data)

    def build():
        def f(z, vs, data):
            grad = jax.grad(lambda p: potential(p, data))
            return jax.lax.map(lambda v: hvp(grad, z, v), vs)

        return jax.jit(f)

    fn = ctx.cached("block_hvps", build)
    return ctx.to_host(fn(ctx.to_global(z), ctx.to_global(directions), ctx.data))


def block_hessian(program, graph, z: dict, dim: str, seed: int = 0) -> BlockHessian:
    shapes = {k: tuple(np.shape(v)) for k, v in z.items()}
    gsites = tuple(sorted(k for k, d in graph.param_dims.items() if d and d[0] == dim))
    osites = tuple(sorted(k for k in z if k not in gsites))
    J = shapes[gsites[0]][0]
    widths = [int(np.prod(shapes[k][1:])) for k in gsites]
    k = sum(widths)
    gwidths = [int(np.prod(shapes[s])) for s in osites]
    G = sum(gwidths)

    def direction(group_rows: np.ndarray | None, global_vec: np.ndarray | None) -> dict:
        """A direction: group part (J, k) spread over the group sites, global part (G,)."""
        out, c = {}, 0
        for s, w in zip(gsites, widths):
            part = np.zeros((J, w), np.float32) if group_rows is None else group_rows[:, c:c + w]
            out[s] = part.reshape(shapes[s]).astype(z[s].dtype)
            c += w
        c = 0
        for s, w in zip(osites, gwidths):
            part = np.zeros(w, np.float32) if global_vec is None else global_vec[c:c + w]
            out[s] = part.reshape(shapes[s]).astype(z[s].dtype)
            c += w
        return out

    def split_result(hv: dict, b: int) -> tuple[np.ndarray, np.ndarray]:
        rows = np.concatenate([np.asarray(hv[s][b], np.float64).reshape(J, w) for s, w in zip(gsites, widths)],
                              axis=1) if gsites else np.zeros((J, 0))
        glob = (np.concatenate([np.asarray(hv[s][b], np.float64).ravel() for s in osites]) if osites
                else np.zeros(0))
        return rows, glob

    rng = np.random.default_rng(seed)
    probe = rng.standard_normal((J, k))
    dirs = [direction(np.tile(np.eye(k)[i], (J, 1)), None) for i in range(k)]
    dirs += [direction(None, np.eye(G)[g]) for g in range(G)]
    dirs.append(direction(probe, None))
    batch = {s: np.stack([d[s] for d in dirs]) for s in dirs[0]}
    hv = run_spmd(program, _hvps, z, batch)

    blocks = np.zeros((J, k, k))
    for i in range(k):
        rows, _ = split_result(hv, i)
        blocks[:, :, i] = rows
    blocks = 0.5 * (blocks + blocks.transpose(0, 2, 1))
    cross, hgg = np.zeros((G, J, k)), np.zeros((G, G))
    for g in range(G):
        rows, glob = split_result(hv, k + g)
        cross[g], hgg[:, g] = rows, glob
    hgg = 0.5 * (hgg + hgg.T)
    rows, _ = split_result(hv, k + G)
    implied = np.einsum("jab,jb->ja", blocks, probe)
    err = np.linalg.norm(rows - implied) / max(np.linalg.norm(rows), 1e-30)
    if err > CHECK_RTOL:
        raise ModelError(f"the Hessian is not block-diagonal over {dim!r}: groups interact in the potential (a "
                         f"random probe disagrees by {err:.2g} relative); use laplace(..., hessian='dense')")
    return BlockHessian(dim, gsites, osites, blocks, cross, hgg)


def solve(bh: BlockHessian, g: dict) -> dict:
    """H^-1 g per site through the block structure (Schur complement on the globals); LinAlgError where a
    block or the complement is not positive definite.

    [[H_GG, C], [C^T, B]] [x_G; x_j] = [g_G; g_j]:  S x_G = g_G - sum_j C_j B_j^-1 g_j,
    x_j = B_j^-1 (g_j - C_j^T x_G)."""
    J, k, _ = bh.blocks.shape
    gj = (np.concatenate([np.asarray(g[s], np.float64).reshape(J, -1) for s in bh.group_sites], axis=1)
          if bh.group_sites else np.zeros((J, 0)))
    gG = (np.concatenate([np.asarray(g[s], np.float64).ravel() for s in bh.global_sites]) if bh.global_sites
          else np.zeros(0))
    np.linalg.cholesky(bh.blocks)  # positive definite, or LinAlgError
    binv_g = np.linalg.solve(bh.blocks, gj[..., None])[..., 0]  # (J, k)
    if gG.size:
        bc = np.linalg.solve(bh.blocks, bh.cross.transpose(1, 2, 0))  # B_j^-1 C_j^T: (J, k, G)
        S = bh.globals_block - np.einsum("gja,jah->gh", bh.cross, bc)
        L = np.linalg.cholesky(0.5 * (S + S.T))
        xG = np.linalg.solve(L.T, np.linalg.solve(L, gG - np.einsum("gja,ja->g", bh.cross, binv_g)))
        xj = binv_g - np.einsum("jag,g->ja", bc, xG)
    else:
        xG, xj = gG, binv_g
    out, c = {}, 0
    for s in bh.group_sites:
        shape = np.shape(g[s])
        w = int(np.prod(shape[1:]))
        out[s], c = xj[:, c:c + w].reshape(shape), c + w
    c = 0
    for s in bh.global_sites:
        shape = np.shape(g[s])
        w = int(np.prod(shape))
        out[s], c = xG[c:c + w].reshape(shape), c + w
    return out


def curvature(graph, dim: str, seed: int = 0):
    """For laplace.polish_mode: the block Hessian at z and H^-1 g over the flattened (sorted) sites."""
    from jax.flatten_util import ravel_pytree

    def at(program, z: dict):
        bh = block_hessian(program, graph, z, dim, seed)
        _, unravel = ravel_pytree({k: np.asarray(v, np.float64) for k, v in z.items()})

        def flat_solve(g: np.ndarray) -> np.ndarray:
            return np.asarray(ravel_pytree(solve(bh, unravel(g)))[0])

        return bh, flat_solve

    return at


def sample(bh: BlockHessian, center: dict, draws: int, seed: int) -> tuple[dict, dict]:
    """Draws (leading axis) of every site, and each site's marginal sd."""
    J, k, _ = bh.blocks.shape
    G = bh.globals_block.shape[0]
    try:
        Lb = np.linalg.cholesky(bh.blocks)  # (J, k, k)
    except np.linalg.LinAlgError:
        raise ModelError(f"a per-{bh.dim} block of the Hessian at the MAP is not positive definite: the mode is "
                         f"flat or a saddle there; Laplace cannot be used") from None
    binv = np.linalg.inv(bh.blocks)  # (J, k, k), small blocks
    bc = np.einsum("jab,gjb->jag", binv, bh.cross)  # B_j^-1 C_j^T: (J, k, G)
    S = bh.globals_block - np.einsum("gja,jah->gh", bh.cross, bc)
    rng = np.random.default_rng(seed)
    if G:
        try:
            Ls = np.linalg.cholesky(0.5 * (S + S.T))
        except np.linalg.LinAlgError:
            raise ModelError("the globals' Schur complement of the Hessian at the MAP is not positive definite: "
                             "the mode is flat or a saddle; Laplace cannot be used") from None
        dG = np.linalg.solve(Ls.T, rng.standard_normal((G, draws))).T  # (draws, G), cov S^-1
        s_inv = np.linalg.inv(S)
    else:
        dG, s_inv = np.zeros((draws, 0)), np.zeros((0, 0))
    eps = rng.standard_normal((draws, J, k))
    # L_j^-T eps_j has covariance B_j^-1
    noise = np.linalg.solve(np.broadcast_to(Lb.transpose(0, 2, 1), (draws, J, k, k)), eps[..., None])[..., 0]
    dg = -np.einsum("jag,ng->nja", bc, dG) + noise  # (draws, J, k)
    var_g = np.einsum("jaa->ja", binv) + np.einsum("jag,gh,jah->ja", bc, s_inv, bc)
    out, sd, c = {}, {}, 0
    for s in bh.group_sites:
        shape = np.shape(center[s])
        w = int(np.prod(shape[1:]))
        out[s] = np.asarray(center[s], np.float64) + dg[:, :, c:c + w].reshape((draws, *shape))
        sd[s] = np.sqrt(var_g[:, c:c + w]).reshape(shape)
        c += w
    c = 0
    for s in bh.global_sites:
        shape = np.shape(center[s])
        w = int(np.prod(shape))
        out[s] = np.asarray(center[s], np.float64) + dG[:, c:c + w].reshape((draws, *shape))
        sd[s] = np.sqrt(np.diag(s_inv)[c:c + w]).reshape(shape)
        c += w
    return out, sd


__all__ = ["BlockHessian", "block_hessian", "curvature", "group_dim", "sample", "solve"]
