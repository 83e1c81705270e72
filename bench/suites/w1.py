"""W1: logistic regression MAP, claygraph against scikit-learn and scipy, side by side in one process.

Objective (every method, evaluated afterwards in float64 at its solution): sum of log-loss +
0.5 ||w||^2, no intercept (scikit-learn's C=1.0, fit_intercept=False). The reference solution is
Newton's method in float64 to max|grad| < 1e-8. The scipy baseline minimises the same objective with
a NumPy gradient (float32 BLAS passes over chunks of X, objective and gradient accumulated in float64). Also times one
loss-and-gradient evaluation (NumPy, plain `jax.jit(value_and_grad)`, claygraph on Local(devices=1)
and, in subprocesses, on 1 and 2 forced host devices) against two floors: reading X once at the
copy bandwidth `claygraph calibrate` measures, and one multi-threaded BLAS pass X.v (as fast as this
machine reads X). In fresh processes: the share of a fit spent tracing and compiling (cold and warm
persistent cache), the driver's peak resident memory during a fit, and MAP on Local(devices=2)
against Ray(workers=2).
"""
from __future__ import annotations

import gc
import importlib
import importlib.util
import tempfile
import time
import warnings
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from bench.sizes import Sizes
from bench.suites import SuiteEnv
from bench.timing import measure, run_isolated, timing_of

TIMEOUT_S = 1800
CHUNK_ROWS = 200_000


# -- objective, gradient and reference ----------------------------------------------------------------

GRAD_CHUNK_ROWS = 65_536  # rows per BLAS call of the NumPy gradient: 26 MB of W1's X, float64 between chunks


def numpy_loss_grad(X: np.ndarray, y: np.ndarray) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
    """Loss and gradient with NumPy: float32 BLAS passes over chunks of X, the objective and the gradient
    accumulated in float64 across chunks. A float32 gradient summed over 2M rows in one BLAS call is too
    coarse for scipy's line search at W1's size (it ends ABNORMAL after ~46 evaluations); accumulated in
    float64 it converges in 7."""

    def f(w: np.ndarray) -> tuple[float, np.ndarray]:
        w32 = w.astype(np.float32)
        loss, grad = 0.5 * float(w @ w), w.copy()
        for i in range(0, X.shape[0], GRAD_CHUNK_ROWS):
            Xc, yc = X[i:i + GRAD_CHUNK_ROWS], y[i:i + GRAD_CHUNK_ROWS]
            z = (Xc @ w32).astype(np.float64)
            loss += float(np.sum(np.logaddexp(0.0, z) - yc * z))
            r = (1.0 / (1.0 + np.exp(-z)) - yc).astype(np.float32)
            grad += (Xc.T @ r).astype(np.float64)
        return loss, grad

    return f


def objective(X: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    """The W1 objective in float64, by row chunks (no float64 copy of X)."""
    w = np.asarray(w, np.float64).ravel()
    total = 0.5 * float(w @ w)
    for i in range(0, X.shape[0], CHUNK_ROWS):
        z = X[i:i + CHUNK_ROWS].astype(np.float64) @ w
        total += float(np.sum(np.logaddexp(0.0, z) - y[i:i + CHUNK_ROWS] * z))
    return total


def newton_reference(X: np.ndarray, y: np.ndarray, gtol: float = 1e-8, max_iter: int = 50) -> tuple[np.ndarray, int]:
    """The exact minimiser in float64 by Newton's method (the objective is strictly convex)."""
    d = X.shape[1]
    w = np.zeros(d)
    for it in range(1, max_iter + 1):
        g, H = w.copy(), np.eye(d)
        for i in range(0, X.shape[0], CHUNK_ROWS):
            Xc = X[i:i + CHUNK_ROWS].astype(np.float64)
            p = 1.0 / (1.0 + np.exp(-(Xc @ w)))
            g += Xc.T @ (p - y[i:i + CHUNK_ROWS])
            H += (Xc * (p * (1.0 - p))[:, None]).T @ Xc
        w = w - np.linalg.solve(H, g)
        if np.max(np.abs(g)) < gtol * max(1.0, X.shape[0] / 1e4):
            return w, it
    return w, max_iter


# -- solvers: each returns (w, iterations, note, extra figures) ---------------------------------------

def sklearn_lbfgs(X, y, tol: float):
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression(C=1.0, fit_intercept=False, solver="lbfgs", tol=tol, max_iter=1000).fit(X, y)
    return m.coef_.ravel(), int(m.n_iter_[0]), None, {}


def scipy_lbfgsb(X, y):
    from scipy.optimize import minimize

    res = minimize(numpy_loss_grad(X, y), np.zeros(X.shape[1]), jac=True, method="L-BFGS-B")
    return res.x, int(res.nit), f"{res.nfev} evaluations; {res.message}", {"evaluations": int(res.nfev)}


def claygraph_glm(X, y, tol: float):
    import claygraph as cg

    glm = cg.glm if hasattr(cg, "glm") else importlib.import_module("claygraph.glm")
    m = glm.LogisticRegression(C=1.0, fit_intercept=False, tol=tol, max_iter=1000).fit(X, y)
    res = getattr(m, "fit_summary_", None)  # objective, iterations, converged, message
    return np.asarray(m.coef_).ravel(), int(np.ravel(m.n_iter_)[0]), getattr(res, "message", None), _map_extra(res)


def claygraph_map(X, y):
    """`cg.infer.map` with its defaults (tol relative to the objective's scale)."""
    import claygraph as cg
    from bench.workloads import logistic_model

    data = cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(y, "row"))
    res = cg.infer.map(logistic_model, data)
    return np.asarray(res.params["w"]).ravel(), int(res.iterations), getattr(res, "message", None), _map_extra(res)


def _map_extra(res) -> dict:
    """What a MAPResult reports about itself (None-safe: the attributes are read where they exist)."""
    if res is None:
        return {}
    plan = getattr(res, "plan", None)
    return {"reported_objective": float(res.objective), "converged": bool(getattr(res, "converged", False)),
            "split": list(plan.split) if plan is not None else None, "stop": getattr(res, "stop", None)}


def dask_ml_lbfgs(X, y):
    import dask.array as da
    from dask_ml.linear_model import LogisticRegression

    chunks = (max(1, X.shape[0] // 4), X.shape[1])
    m = LogisticRegression(C=1.0, fit_intercept=False, solver="lbfgs", max_iter=1000)
    m.fit(da.from_array(X, chunks=chunks), da.from_array(y, chunks=chunks[0]))
    return np.asarray(m.coef_).ravel(), None, None, {}


def _has_glm() -> bool:
    try:
        importlib.import_module("claygraph.glm")
    except ImportError:
        return False
    return hasattr(importlib.import_module("claygraph.glm"), "LogisticRegression")


def solvers() -> list[tuple[str, str, Callable | None, str | None]]:
    """(name, kind, fit(X, y) or None, why not available) in report order."""
    import claygraph as cg

    has_map = hasattr(cg.infer, "map")
    glm, dask = _has_glm(), importlib.util.find_spec("dask_ml") is not None
    return [
        ("claygraph LogisticRegression tol=1e-4", "claygraph",
         (lambda X, y: claygraph_glm(X, y, 1e-4)) if glm else None, None if glm else "cg.glm.LogisticRegression"),
        ("claygraph LogisticRegression tol=1e-8", "claygraph",
         (lambda X, y: claygraph_glm(X, y, 1e-8)) if glm else None, None if glm else "cg.glm.LogisticRegression"),
        ("claygraph infer.map (defaults)", "claygraph", claygraph_map if has_map else None,
         None if has_map else "cg.infer.map"),
        ("scikit-learn lbfgs tol=1e-4 (default)", "peer", lambda X, y: sklearn_lbfgs(X, y, 1e-4), None),
        ("scikit-learn lbfgs tol=1e-8", "peer", lambda X, y: sklearn_lbfgs(X, y, 1e-8), None),
        ("scipy L-BFGS-B, NumPy gradient (float64 objective)", "peer", scipy_lbfgsb, None),
        ("dask-ml lbfgs", "peer", dask_ml_lbfgs if dask else None, None if dask else "dask-ml (not installed)"),
    ]


def run_solver(name: str, kind: str, fit: Callable, X, y, w_ref, f_ref: float, repeats: int, events) -> dict:
    out: dict = {}
    phases: list[dict] = []

    def once():
        gc.collect()  # what earlier stages left to free is freed here, not inside a timed fit
        events.take()
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out["fit"] = fit(X, y)
        phases.append({"wall_s": time.perf_counter() - t0, **events.take()})

    for _ in range(max(1, repeats)):
        once()
    timing = timing_of([p["wall_s"] for p in phases])  # the fits alone, not the collections between them
    w, iterations, note, extra = out["fit"]
    f = objective(X, y, w)
    return {"name": name, "kind": kind, "status": "ok", "timing": timing.to_json(), "iterations": iterations,
            "objective": f, "objective_gap": f - f_ref, "max_abs_w_err": float(np.max(np.abs(w - w_ref))),
            "note": note, "fits": phases, **extra}


def ratios(rows: list[dict]) -> None:
    """Each claygraph solver's time divided by each peer's (< 1: claygraph is faster)."""
    peers = [r for r in rows if r["kind"] == "peer" and r["status"] == "ok"]
    for r in rows:
        if r["kind"] == "claygraph" and r["status"] == "ok":
            r["time_over_peer"] = {p["name"]: r["timing"]["median_s"] / p["timing"]["median_s"] for p in peers}


# -- gradient evaluations -----------------------------------------------------------------------------

def gradient_times(X, y, repeats: int) -> list[dict]:
    """One loss-and-gradient by NumPy, hand-written JAX and claygraph on one device, each timed in its
    own steady state, one after another. Not in turns: right after a NumPy (BLAS) call, claygraph's
    gradient took 86.8 ms against 61.2 ms in a row of its own, and NumPy in turns 92 ms against 117
    alone (one process, W1 sizes, load about 1): the libraries' thread pools get in each other's way."""
    import jax
    import jax.numpy as jnp

    import claygraph as cg
    from bench.workloads import logistic_model

    rows = []
    f = numpy_loss_grad(X, y)
    w0 = np.zeros(X.shape[1])
    rows.append({"name": "NumPy (float32 X, BLAS, float64 sums)", "devices": 1,
                 "timing": measure(lambda: f(w0), repeats).to_json()})

    Xj, yj = jnp.asarray(X), jnp.asarray(y)

    def loss(w):
        z = Xj @ w
        return jnp.sum(jnp.logaddexp(0.0, z) - yj * z) + 0.5 * w @ w

    vg = jax.jit(jax.value_and_grad(loss))
    wj = jnp.zeros(X.shape[1], jnp.float32)
    t = measure(lambda: jax.block_until_ready(vg(wj)), repeats)
    rows.append({"name": "JAX jit(value_and_grad), hand-written", "devices": 1, "timing": t.to_json()})

    data = cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(y, "row"))
    plan = cg.partition(logistic_model, data, cluster=cg.ClusterSpec.local(devices=1))
    prog = cg.compile(plan, runtime=cg.runtime.Local(devices=1))
    params = {k: np.zeros(s, np.float32) for k, s in plan.graph.param_shapes.items()}
    t = measure(lambda: jax.block_until_ready(prog.potential_and_grad(params)), repeats)
    rows.append({"name": "claygraph Local(devices=1), this process", "devices": 1, "timing": t.to_json(),
                 "predicted_s": plan.chosen.cost.predicted_s, "split": list(plan.split)})
    return rows


def bandwidth(nbytes: int) -> float:
    """Bytes per second of the fastest of three np.copyto over `nbytes`, each byte counted once
    (read and written): the rate at which a streaming pass over X consumes it."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # the first touch maps dst's pages, outside the timing
    return src.nbytes / measure(lambda: np.copyto(dst, src), 3).min_s


def blas_read_s(X: np.ndarray, repeats: int) -> float:
    """The fastest of `repeats` BLAS passes X @ v (all cores): an upper bound on reading X once."""
    v = np.ones(X.shape[1], X.dtype)
    return measure(lambda: X @ v, repeats).min_s


def floors(X: np.ndarray, sizes: Sizes) -> dict:
    bw = bandwidth(sizes.bandwidth_bytes)
    return {"x_bytes": X.nbytes, "bandwidth_bytes_per_s": bw, "read_x_once_s": X.nbytes / bw,
            "loss_and_grad_s": 2 * X.nbytes / bw, "blas_read_x_s": blas_read_s(X, sizes.repeats)}


def fresh_process_fits(sizes: Sizes, env: SuiteEnv) -> dict:
    """LogisticRegression(tol=1e-4) twice in a fresh process with an empty persistent cache, then twice in
    another fresh process with the cache the first one left; scikit-learn's LogisticRegression twice in a
    fresh process; MAP on Local(devices=2) and Ray(workers=2)."""
    n, d = sizes.w1_n, sizes.w1_d
    glm = {"n": n, "d": d, "repeats": 2, "method": "glm", "tol": 1e-4, "runtime": "local", "devices": 1}
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="claygraph-bench-jax-cache-") as cache:
        for name in ("cold_cache", "warm_cache"):
            env.log(f"  w1: LogisticRegression in a fresh process, {name.replace('_', ' ')}")
            out[name] = _isolated("w1_fit", glm, 1, env, {"CLAYGRAPH_JAX_CACHE": cache})
    # the peer's first fit in a fresh process of its own, the same way: what a script that fits once pays
    env.log("  w1: scikit-learn's LogisticRegression in a fresh process")
    out["sklearn"] = _isolated("w1_fit", glm | {"method": "sklearn"}, 1, env)
    # one compiling fit, then solver_repeats + 2 timed ones (Ray's fits vary by their object-store puts)
    maps = {"n": n, "d": d, "repeats": sizes.solver_repeats + 3, "method": "map", "runtime": "local", "devices": 2}
    env.log("  w1: cg.infer.map on Local(devices=2), fresh process")
    out["local2_map"] = _isolated("w1_fit", maps, 2, env)
    env.log("  w1: cg.infer.map on Ray(workers=2), fresh driver process")
    out["ray2_map"] = _isolated("w1_fit", maps | {"runtime": "ray"}, 1, env)
    return out


def _isolated(task: str, spec: dict, devices: int, env: SuiteEnv, extra: dict | None = None) -> dict:
    try:
        return {"status": "ok", **run_isolated(task, spec, devices, TIMEOUT_S, env.platform, extra)}
    except Exception as e:  # one failing measurement must not hide the others
        return {"status": "error", "note": f"{type(e).__name__}: {e}"[-800:]}


def run(sizes: Sizes, env: SuiteEnv) -> dict:
    from bench.measure import CompileEvents
    from bench.workloads import w1_arrays

    events = CompileEvents()
    n, d = sizes.w1_n, sizes.w1_d
    env.log(f"  w1: data N={n:,} D={d}")
    t0 = time.perf_counter()
    X, y = w1_arrays(n, d)
    y64 = y.astype(np.float64)
    data_s = time.perf_counter() - t0
    floor = floors(X, sizes)
    env.log("  w1: loss-and-gradient evaluations")
    grads = gradient_times(X, y64, sizes.repeats)
    env.log("  w1: float64 Newton reference")
    t0 = time.perf_counter()
    with threadpool_limits(1):  # not timed against anyone; one thread is robust on a loaded machine
        w_ref, ref_iter = newton_reference(X, y64)
    ref = {"method": "Newton, float64", "iterations": ref_iter, "objective": objective(X, y64, w_ref),
           "seconds": time.perf_counter() - t0}
    rows = []
    for name, kind, fit, missing in solvers():
        if fit is None:
            rows.append({"name": name, "kind": kind, "status": "not available", "note": f"{missing} not available"})
            continue
        env.log(f"  w1: {name}")
        try:
            rows.append(run_solver(name, kind, fit, X, y64 if kind == "peer" else y, w_ref, ref["objective"],
                                   sizes.solver_repeats, events))
        except Exception as e:  # one failing solver must not hide the others
            rows.append({"name": name, "kind": kind, "status": "error", "note": f"{type(e).__name__}: {e}"[:500]})
    ratios(rows)
    del X, y, y64
    fresh = fresh_process_fits(sizes, env)
    runtimes = []
    for devices in (1, env.devices):
        env.log(f"  w1: gradient on Local(devices={devices}) in a subprocess")
        spec = {"workload": "W1", "sizes": {"n": n, "d": d}, "devices": devices, "repeats": sizes.repeats,
                "map": False, "splits": None if devices > 1 else [[]]}
        try:
            runtimes.append(run_isolated("candidates", spec, devices, TIMEOUT_S, env.platform))
        except Exception as e:
            runtimes.append({"devices": devices, "status": "error", "note": str(e)[-800:]})
    return {"status": "ok", "sizes": {"n": n, "d": d}, "data_s": data_s, "floor": floor, "gradient": grads,
            "reference": ref, "solvers": rows, "runtimes": runtimes, "fresh": fresh}
