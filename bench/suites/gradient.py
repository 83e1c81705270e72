"""W2's gradient: claygraph's potential and gradient against NumPyro's, per chain, for chain batches.

One NUTS leapfrog step costs one potential-and-gradient evaluation; chains run as a batch under
`jax.vmap` (claygraph.infer.chains) or one at a time. For batches of 1, 2 and 4 chains, at W2's
size, this times claygraph's program (`Program.context().potential`, the function NUTS runs) and
NumPyro's `potential_fn` (from `initialize_model`), both as `jit(vmap(value_and_grad))` (one chain:
`jit(value_and_grad)`), interleaved in rounds so that both see the same load; the report gives the
minimum over rounds of each round's median. `widths` times the X @ w pair (value and gradient) with
X row-major (claygraph's row-major kernel) and feature-major (`kernels.matvec_t`), for one chain and
a batch, for the rule in claygraph.partition.storage.

Run alone: `python -m bench.suites.gradient [rows groups features]`.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable

import numpy as np

from bench.sizes import Sizes
from bench.suites import SuiteEnv

BATCHES = (1, 2, 4)
ROUNDS = 9
CALLS = 15  # calls per round


def _batched(fn: Callable, k: int, data_axes) -> Callable:
    import jax

    vg = jax.value_and_grad(fn)
    return jax.jit(vg if k == 1 else jax.vmap(vg, in_axes=(0, *data_axes)))


def _stack(params: dict, k: int, rng) -> dict:
    """k chains' positions near `params` (one chain: the tree itself)."""
    import jax.numpy as jnp

    if k == 1:
        return {n: jnp.asarray(v) for n, v in params.items()}
    return {n: jnp.asarray(np.stack([v + 0.1 * rng.normal(size=v.shape).astype(v.dtype) for _ in range(k)]))
            for n, v in params.items()}


def _rounds(fns: dict[str, Callable[[], object]], rounds: int, calls: int) -> dict[str, float]:
    """Minimum over rounds of the median seconds per call; every function runs once in every round."""
    import jax

    for f in fns.values():
        jax.block_until_ready(f())
    best = {k: float("inf") for k in fns}
    for _ in range(rounds):
        for name, f in fns.items():
            times = []
            for _ in range(calls):
                t0 = time.perf_counter()
                jax.block_until_ready(f())
                times.append(time.perf_counter() - t0)
            best[name] = min(best[name], float(np.median(times)))
    return best


def leapfrog_costs(n: int, groups: int, d: int, batches=BATCHES, rounds: int = ROUNDS, calls: int = CALLS) -> dict:
    """Seconds per potential-and-gradient evaluation of a batch of k chains (and per chain), claygraph
    against NumPyro, at W2's sizes on this process's first device."""
    from numpyro.infer.util import initialize_model

    import claygraph as cg
    from bench import workloads as w

    arrays = w.w2_arrays(n, groups, d)
    data = w.w2_data(n, groups, d)
    plan = cg.partition(w.w2_model, data, cluster=cg.ClusterSpec.local(devices=1))
    prog = cg.compile(plan, runtime=cg.runtime.Local(devices=1))
    import jax

    info = initialize_model(jax.random.PRNGKey(0), w.w2_numpyro_model,
                            model_args=(arrays["X"], arrays["g"], arrays["y"], groups))
    numpyro_pe = info.potential_fn
    start = {k: np.asarray(v) for k, v in info.param_info.z.items()}
    ctx = prog.context()
    fns, rng = {}, np.random.default_rng(0)
    for k in batches:
        params = _stack(start, k, rng)
        cg_fn = _batched(ctx.potential, k, (None,))
        np_fn = _batched(numpyro_pe, k, ())
        fns[("claygraph", k)] = lambda f=cg_fn, p=params: f(p, ctx.data)
        fns[("numpyro", k)] = lambda f=np_fn, p=params: f(p)
    best = _rounds(fns, rounds, calls)
    rows = [{"chains": k, "claygraph_ms": 1e3 * best[("claygraph", k)], "numpyro_ms": 1e3 * best[("numpyro", k)],
             "claygraph_per_chain_ms": 1e3 * best[("claygraph", k)] / k,
             "numpyro_per_chain_ms": 1e3 * best[("numpyro", k)] / k} for k in batches]
    return {"n": n, "groups": groups, "d": d, "split": list(prog.split),
            "feature_major": sorted(prog.artifact.candidate.feature_major), "rows": rows,
            "load_average": list(os.getloadavg())}


def widths(n: int = 100_000, ds=(2, 5, 10, 16, 20, 32), batches=(1, 2, 4), rounds: int = 5, calls: int = 11) -> dict:
    """ms per gradient of sum(tanh(X @ w)) with X row-major (claygraph's row-major kernel) and feature-major."""
    import jax
    import jax.numpy as jnp
    from jax import lax

    from claygraph.partition import kernels

    rng = np.random.default_rng(0)
    fns = {}
    for d in ds:
        x = rng.normal(size=(n, d)).astype(np.float32)
        row, col = jnp.asarray(x), jnp.asarray(np.ascontiguousarray(x.T))
        for k in batches:
            w = jnp.full((k, d), 0.1, jnp.float32) if k > 1 else jnp.full((d,), 0.1, jnp.float32)
            loss_row = jax.grad(lambda u, a: jnp.sum(jnp.tanh(kernels.bind(lax.dot_general_p, [a, u], dict(
                dimension_numbers=kernels.ROW_DOT, precision=None, preferred_element_type=None,
                out_sharding=None))[0])))
            loss_col = jax.grad(lambda u, a: jnp.sum(jnp.tanh(kernels.matvec_t(a, u))))
            for name, loss, arr in (("row", loss_row, row), ("col", loss_col, col)):
                f = jax.jit(loss if k == 1 else jax.vmap(loss, in_axes=(0, None)))
                fns[(d, k, name)] = lambda f=f, w=w, a=arr: f(w, a)
    best = _rounds(fns, rounds, calls)
    rows = [{"d": d, "chains": k, "row_major_ms": 1e3 * best[(d, k, "row")],
             "feature_major_ms": 1e3 * best[(d, k, "col")]} for d in ds for k in batches]
    return {"n": n, "rows": rows, "load_average": list(os.getloadavg())}


def run(sizes: Sizes, env: SuiteEnv) -> dict:
    env.log(f"gradient: W2 n={sizes.w2_n} groups={sizes.w2_groups} d={sizes.w2_d}, chains {BATCHES}")
    return {"status": "ok", "leapfrog": leapfrog_costs(sizes.w2_n, sizes.w2_groups, sizes.w2_d),
            "widths": widths(sizes.w2_n)}


def _print(res: dict) -> None:
    print(f"W2 n={res['n']} groups={res['groups']} d={res['d']} split={res['split'] or '()'} "
          f"feature-major={res['feature_major']} load={res['load_average'][0]:.2f}")
    print("chains  claygraph ms  numpyro ms  per chain: claygraph  numpyro  ratio")
    for r in res["rows"]:
        print(f"{r['chains']:6d}  {r['claygraph_ms']:12.3f}  {r['numpyro_ms']:10.3f}  "
              f"{r['claygraph_per_chain_ms']:20.3f}  {r['numpyro_per_chain_ms']:7.3f}  "
              f"{r['numpyro_ms'] / r['claygraph_ms']:5.2f}x")


if __name__ == "__main__":
    import sys

    n, groups, d = (int(a) for a in sys.argv[1:4]) if len(sys.argv) > 3 else (100_000, 1_000, 10)
    _print(leapfrog_costs(n, groups, d))
    if "--widths" in sys.argv:
        for r in widths(n)["rows"]:
            print(f"d={r['d']:3d} chains={r['chains']}  row-major {r['row_major_ms']:.3f} ms  "
                  f"feature-major {r['feature_major_ms']:.3f} ms")
