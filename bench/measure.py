"""Measurements that run in a fresh interpreter (see bench.timing.run_isolated).

    python -m bench.measure TASK 'JSON spec'

prints one line `BENCH-RESULT {json}`. Tasks:
  candidates  time per gradient evaluation of every (or the given) candidate split of a workload on
              Local(devices=N), next to the cost model's prediction; optionally a MAP solve.
  w1_fit      W1 fits (LogisticRegression or cg.infer.map) on Local or Ray: wall time, compile phases and
              peak resident memory of each fit.
  nuts        one NUTS method on W2 (NumPyro sequential or parallel, or claygraph), run twice with a
              persistent compilation cache so that the second run's wall time excludes compiling.
"""
from __future__ import annotations

import importlib
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

from bench.timing import RESULT_MARK, measure, measure_together


def _data(workload: str, s: dict):
    from bench import workloads as w

    if workload == "W1":
        return w.logistic_model, w.w1_data(s["n"], s["d"])
    if workload == "W6":
        return w.logistic_model, w.w6_data(s["n"], s["d"])
    if workload == "W3":
        return w.hier_logistic_model, w.w3_data(s["n"], s["groups"], s["d"])
    if workload == "poisson":
        from claygraph import examples

        ex = examples.make_poisson_crossed(n=s["n"], products=s["products"], stores=s["stores"], d=s["d"])
        return examples.poisson_crossed_model, ex.data
    if workload == "W2":
        return w.w2_model, w.w2_data(s["n"], s["groups"], s["d"])
    raise ValueError(f"unknown workload {workload!r}")


def _zeros(graph) -> dict[str, np.ndarray]:
    return {k: np.zeros(shape, np.float32) for k, shape in graph.param_shapes.items()}


def _flat_grad(g) -> np.ndarray:
    return np.concatenate([np.ravel(np.asarray(g[k], np.float64)) for k in sorted(g)])


def candidates(spec: dict) -> dict:
    """Predicted and measured seconds per gradient evaluation for each candidate split."""
    import jax

    import claygraph as cg

    devices, repeats = int(spec["devices"]), int(spec["repeats"])
    t0 = time.perf_counter()
    model, data = _data(spec["workload"], spec["sizes"])
    data_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph = cg.lower(model, data)
    lower_s = time.perf_counter() - t0
    cluster = cg.ClusterSpec.local(devices=devices)
    plan = cg.partition(graph, data, cluster=cluster)
    wanted = None if spec.get("splits") is None else {tuple(s) for s in spec["splits"]}
    if spec.get("together"):
        rows = _measure_together(cg, graph, data, cluster, devices, plan, wanted, repeats)
    else:
        rows = _measure_each(cg, graph, data, cluster, devices, plan, wanted, repeats)
    # the same candidates priced with the built-in figures, as on a fresh machine that was never calibrated,
    # and with a quick calibration's profile (what ClusterSpec.local measures on a machine's first use)
    out = {"workload": spec["workload"], "sizes": spec["sizes"], "devices": devices, "data_s": data_s,
           "lower_s": lower_s, "cluster": cluster.describe(), "chosen": list(plan.split), "candidates": rows,
           "built_in": _priced(cg, graph, data, cg.ClusterSpec.built_in(devices)),
           **({"quick": _priced(cg, graph, data, cg.ClusterSpec.from_profile(spec["quick_profile"], devices))}
              if spec.get("quick_profile") else {}),
           "jax_devices": len(jax.devices()), "together": bool(spec.get("together"))}
    if spec.get("map"):
        out["map"] = _map(cg, model, data, devices, spec.get("map_tol", 1e-6))
    return out


def _priced(cg, graph, data, cluster) -> dict:
    """The split `cluster`'s figures pick and every candidate's prediction with them."""
    plan = cg.partition(graph, data, cluster=cluster)
    return {"chosen": list(plan.split), "predicted": [[list(c.split), c.predicted_s] for c in plan.candidates]}


def _row(est) -> dict:
    return {"split": list(est.split), **{k: v for k, v in est.to_json().items() if k != "split"}}


def _measure_each(cg, graph, data, cluster, devices: int, plan, wanted, repeats: int) -> list[dict]:
    """Each candidate compiled and timed in turn, cheapest predicted first."""
    import jax

    rows, ref = [], None
    for est in sorted(plan.candidates, key=lambda c: c.predicted_s):
        row = _row(est)
        if wanted is not None and tuple(est.split) not in wanted:
            continue
        if not est.feasible or est.predicted_s == float("inf"):
            rows.append(row | {"measured": None, "note": est.reason or "not feasible"})
            continue
        row |= _measure_split(cg, graph, data, cluster, devices, est.split, repeats)
        value, grad = row.pop("_value"), row.pop("_grad")
        if ref is None:
            ref = (value, grad)
        row["value_rel_diff"] = abs(value - ref[0]) / max(abs(ref[0]), 1e-30)
        row["grad_rel_diff"] = float(np.max(np.abs(grad - ref[1])) / max(np.max(np.abs(ref[1])), 1e-30))
        rows.append(row)
        jax.clear_caches()
    return rows


def _measure_together(cg, graph, data, cluster, devices: int, plan, wanted, repeats: int) -> list[dict]:
    """Every feasible candidate compiled first, then timed in turns (bench.timing.measure_together)."""
    import jax

    ests = [e for e in sorted(plan.candidates, key=lambda c: c.predicted_s)
            if wanted is None or tuple(e.split) in wanted]
    live = [e for e in ests if e.feasible and e.predicted_s != float("inf")]
    params = _zeros(graph)
    progs, place = [], []
    for est in live:
        t0 = time.perf_counter()
        progs.append(cg.compile(cg.partition(graph, data, cluster=cluster, split=tuple(est.split)),
                                runtime=cg.runtime.Local(devices=devices)))
        place.append(time.perf_counter() - t0)
    outs: list = [None] * len(progs)

    # the program an inference step evaluates: params placed once, in the internal layout
    calls = [prog.context().evaluation(params) for prog in progs]

    def step(i):
        def run():
            jax.block_until_ready(calls[i]())
        return run

    # each timed call follows an untimed one of the same program: a solver evaluates one program over and
    # over, while a call right after another candidate finds its data evicted from the caches (GLM 20k x 200's
    # row split: 2.96 ms after another candidate, 1.72 ms after itself)
    timings = measure_together([step(i) for i in range(len(progs))], repeats, warmup=1, settle=1)
    rows, ref = [], None
    for est in ests:
        if est not in live:
            rows.append(_row(est) | {"measured": None, "note": est.reason or "not feasible"})
            continue
        i = live.index(est)
        outs[i] = progs[i].potential_and_grad(params)  # (the user's layout, for the comparison)
        value, grad = float(outs[i][0]), _flat_grad(outs[i][1])
        ref = ref or (value, grad)
        rows.append(_row(est) | {"measured": timings[i].to_json(), "place_s": place[i], "compile_s": timings[i].first_s,
                                 "value_rel_diff": abs(value - ref[0]) / max(abs(ref[0]), 1e-30),
                                 "grad_rel_diff": float(np.max(np.abs(grad - ref[1])) /
                                                        max(np.max(np.abs(ref[1])), 1e-30))})
    return rows


def _measure_split(cg, graph, data, cluster, devices: int, split, repeats: int) -> dict:
    import jax

    plan = cg.partition(graph, data, cluster=cluster, split=tuple(split))
    t0 = time.perf_counter()
    prog = cg.compile(plan, runtime=cg.runtime.Local(devices=devices))
    place_s = time.perf_counter() - t0
    params = _zeros(graph)
    call = prog.context().evaluation(params)  # what an inference step evaluates: params placed once

    def step():
        jax.block_until_ready(call())

    timing = measure(step, repeats, warmup=1)
    value, grad = prog.potential_and_grad(params)
    return {"measured": timing.to_json(), "place_s": place_s, "compile_s": timing.first_s,
            "_value": float(value), "_grad": _flat_grad(grad)}


def _map(cg, model, data, devices: int, tol: float) -> dict:
    if not hasattr(cg.infer, "map"):
        return {"status": "not available", "note": "claygraph.infer has no `map` yet"}
    t0 = time.perf_counter()
    res = cg.infer.map(model, data, runtime=cg.runtime.Local(devices=devices), tol=tol)
    return {"status": "ok", "wall_s": time.perf_counter() - t0, "iterations": int(res.iterations),
            "objective": float(res.objective), "converged": bool(res.converged), "split": list(res.plan.split)}


# -- W2 NUTS -----------------------------------------------------------------------------------------

def _enable_compile_cache() -> str:
    import jax

    path = tempfile.mkdtemp(prefix="claygraph-bench-jax-cache-")
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def _posterior_dict(post) -> dict[str, np.ndarray]:
    """Per-site (chain, draw, ...) arrays from a dict, an xarray Dataset or an InferenceData."""
    if hasattr(post, "posterior"):
        post = post.posterior
    if hasattr(post, "data_vars"):
        return {k: np.asarray(post[k].values) for k in post.data_vars}
    return {k: np.asarray(v) for k, v in dict(post).items()}


def diagnostics(samples: dict[str, np.ndarray], sites: list[str]) -> dict:
    """Minimum bulk ESS and maximum R-hat over every element of the given sites (ArviZ)."""
    import arviz as az

    idata = az.from_dict(posterior={k: samples[k] for k in sites})
    ess = az.ess(idata, method="bulk")
    rhat = az.rhat(idata)
    per_site = {k: {"min_ess_bulk": float(np.min(ess[k].values)), "max_rhat": float(np.max(rhat[k].values))}
                for k in sites}
    return {"min_ess_bulk": min(v["min_ess_bulk"] for v in per_site.values()),
            "max_rhat": max(v["max_rhat"] for v in per_site.values()), "per_site": per_site}


W2_SITES = ["mu", "sigma", "w", "z"]


def nuts(spec: dict) -> dict:
    """One method on W2, run twice (the second with the compiled programs cached) unless the first
    run took over half of `limit_s`: then once, and the sampling-only figures are left empty."""
    import jax

    cache = _enable_compile_cache()
    method, s, seed = spec["method"], spec["sizes"], int(spec.get("seed", 0))
    limit = float(spec.get("limit_s", float("inf")))
    run = _numpyro_run if method.startswith("numpyro") else _nutpie_run if method == "nutpie" else _claygraph_run
    try:
        first = run(method, s, seed)
        if first.get("status") == "not available":
            return first
        second = run(method, s, seed) if first["wall_s"] <= limit / 2 else None
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    sites = [k for k in W2_SITES if k in first["samples"]]
    first_diag = diagnostics(first["samples"], sites)
    out = {"status": "ok", "method": method, "first_run_s": first["wall_s"], "draws": s["chains"] * s["draws"],
           "sites": sites, "devices": len(jax.devices()),
           # compile included: the first run (compiling) with its own draws' ESS and R-hat
           "ess_per_s_with_compile": first_diag["min_ess_bulk"] / first["wall_s"],
           "max_rhat_first_run": first_diag["max_rhat"], "min_ess_bulk_first_run": first_diag["min_ess_bulk"],
           "phases_first_run": first.get("phases")}
    if second is None:
        grads = first.get("gradients")
        return out | {**first_diag, "sampling_s": None, "compile_s": None, "ess_per_s": None,
                      "divergences": first.get("divergences"), "gradients": grads,
                      "ess_per_gradient": first_diag["min_ess_bulk"] / grads if grads else None,
                      "note": "; ".join(filter(None, [first.get("note"), f"run once: the first run took "
                                                      f"{first['wall_s']:.0f} s of a {limit:.0f} s limit"]))}
    diag = diagnostics(second["samples"], sites)
    grads = second.get("gradients")
    return out | {**diag, "sampling_s": second["wall_s"], "compile_s": max(first["wall_s"] - second["wall_s"], 0.0),
                  "ess_per_s": diag["min_ess_bulk"] / second["wall_s"], "divergences": second.get("divergences"),
                  "gradients": grads, "ess_per_gradient": diag["min_ess_bulk"] / grads if grads else None,
                  "phases": second.get("phases"), "note": second.get("note")}


def _numpyro_run(method: str, s: dict, seed: int) -> dict:
    import jax
    from numpyro.infer import MCMC, NUTS

    from bench.workloads import w2_arrays, w2_numpyro_model

    a = w2_arrays(s["n"], s["groups"], s["d"])
    chain_method = method.split("-", 1)[1]
    mcmc = MCMC(NUTS(w2_numpyro_model), num_warmup=s["warmup"], num_samples=s["draws"], num_chains=s["chains"],
                chain_method=chain_method, progress_bar=False)
    t0 = time.perf_counter()
    mcmc.run(jax.random.PRNGKey(seed), a["X"], a["g"], a["y"], s["groups"], extra_fields=("diverging", "num_steps"))
    samples = {k: np.asarray(v) for k, v in mcmc.get_samples(group_by_chain=True).items()}
    wall = time.perf_counter() - t0
    div = int(np.sum(np.asarray(mcmc.get_extra_fields()["diverging"])))
    grads = int(np.sum(np.asarray(mcmc.get_extra_fields()["num_steps"])))
    note = None
    if chain_method == "parallel" and len(jax.devices()) < s["chains"]:
        note = f"only {len(jax.devices())} devices for {s['chains']} chains: NumPyro drew them sequentially"
    return {"wall_s": wall, "samples": samples, "divergences": div, "note": note, "gradients": grads}


def _nutpie_run(method: str, s: dict, seed: int) -> dict:
    """nutpie (its gradient-based diagonal adaptation, numba backend) on the PyMC version of W2; the
    time includes building and compiling the PyMC model. Needs the `bench-peers` extra."""
    try:
        import nutpie
    except ImportError:
        return {"status": "not available", "method": method, "note": "nutpie is not installed (extra bench-peers)"}
    from bench.workloads import w2_arrays, w2_pymc_model

    a = w2_arrays(s["n"], s["groups"], s["d"])
    t0 = time.perf_counter()
    compiled = nutpie.compile_pymc_model(w2_pymc_model(a, s["groups"]), backend="numba")
    t1 = time.perf_counter()
    trace = nutpie.sample(compiled, draws=s["draws"], tune=s["warmup"], chains=s["chains"], seed=seed,
                          progress_bar=False, cores=os.cpu_count() or 1)
    wall = time.perf_counter() - t0
    samples = {k: np.asarray(trace.posterior[k].values) for k in ("mu", "sigma", "z", "w")}
    st = trace.sample_stats
    return {"wall_s": wall, "samples": samples, "divergences": int(st["diverging"].values.sum()),
            "gradients": int(st["n_steps"].values.sum()), "phases": {"build_and_compile_s": t1 - t0},
            "note": f"nutpie {nutpie.__version__}, numba backend, data as pm.Data; build + compile {t1 - t0:.0f} s"}


def _claygraph_run(method: str, s: dict, seed: int) -> dict:
    import claygraph as cg

    if not hasattr(cg.infer, "nuts"):
        return {"status": "not available", "method": method, "note": "claygraph.infer has no `nuts` yet"}
    from bench.workloads import w2_data, w2_model

    data = w2_data(s["n"], s["groups"], s["d"])
    t0 = time.perf_counter()
    res = cg.infer.nuts(w2_model, data, chains=s["chains"], warmup=s["warmup"], draws=s["draws"], seed=seed)
    samples = _posterior_dict(res.posterior)
    wall = time.perf_counter() - t0
    div = None
    idata = getattr(res, "inference_data", res)
    stats = getattr(idata, "sample_stats", None)
    if stats is not None and hasattr(stats, "data_vars") and "diverging" in stats.data_vars:
        div = int(np.sum(stats["diverging"].values))
    how = [getattr(res, "ran", None) or f"parallel: {res.parallel}", getattr(res, "stopped_because", None)]
    grads = int(sum(np.sum(st["n_steps"]) for c in res.chains for st in c.stats))
    return {"wall_s": wall, "samples": samples, "divergences": div, "note": "; ".join(filter(None, how)) or None,
            "gradients": grads}


# -- W1 fits in a fresh process: compile share, peak memory, runtimes --------------------------------------

def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> bool:
    """Reset this process's peak resident set (VmHWM) to its current size (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _peak_bytes() -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class CompileEvents:
    """Seconds JAX reports spending on tracing, lowering, XLA compiling and loading from its persistent cache."""

    KINDS = {"/jax/core/compile/jaxpr_trace_duration": "trace_s",
             "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower_s",
             "/jax/core/compile/backend_compile_duration": "compile_s",
             "/jax/compilation_cache/cache_retrieval_time_sec": "cache_load_s"}

    def __init__(self):
        import jax.monitoring

        self.totals = dict.fromkeys(self.KINDS.values(), 0.0)
        jax.monitoring.register_event_duration_secs_listener(self._on)

    def _on(self, name: str, seconds: float, **_) -> None:
        if name in self.KINDS:
            self.totals[self.KINDS[name]] += seconds

    def take(self) -> dict[str, float]:
        out = dict(self.totals)
        self.totals = dict.fromkeys(self.KINDS.values(), 0.0)
        return out


def w1_fit(spec: dict) -> dict:
    """Fits of W1 in this fresh process: wall time, JAX's compile-phase seconds and the peak resident memory
    of each fit. spec: n, d, repeats, method ("glm" LogisticRegression(tol=spec["tol"]), "map" defaults, or
    "sklearn": scikit-learn's LogisticRegression with its defaults but no intercept, the peer's first fit in
    a fresh process), runtime ("local" or "ray") and devices."""
    events = CompileEvents()
    import jax
    import sklearn.linear_model  # noqa: F401 - every library loaded before the baseline and the timed fits

    import claygraph as cg
    import claygraph.glm  # noqa: F401
    import claygraph.infer  # noqa: F401
    from bench import workloads as w

    jax.devices()  # JAX's CPU backend started: its fixed memory is the runtime's, not the fit's
    base = _rss_bytes()  # an idle process: libraries loaded, JAX's backend up, no data yet
    X, y = w.w1_arrays(spec["n"], spec["d"])
    data_bytes = X.nbytes + y.nbytes
    rt = cg.runtime.Ray(workers=spec["devices"]) if spec["runtime"] == "ray" else cg.runtime.Local(spec["devices"])
    from claygraph.runtime import program_store

    fits = []
    with rt:
        for _ in range(spec["repeats"]):
            stored = dict(program_store.STATS)
            events.take()
            reset = _reset_peak()
            t0 = time.perf_counter()
            if spec["method"] == "glm":
                m = cg.glm.LogisticRegression(C=1.0, fit_intercept=False, tol=spec["tol"], runtime=rt).fit(X, y)
                res = m.fit_summary_
            elif spec["method"] == "sklearn":
                res = _sklearn_fit(X, y)
            else:
                data = cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(y, "row"))
                res = cg.infer.map(w.logistic_model, data, runtime=rt)
            wall = time.perf_counter() - t0
            peak = _peak_bytes() if reset else None
            fits.append({"wall_s": wall, "iterations": int(res.iterations), "objective": float(res.objective),
                         "converged": bool(res.converged), "message": res.message,
                         "split": list(res.split if spec["method"] != "map" else res.plan.split),
                         "peak_rss_bytes": peak, **events.take(),
                         # programs this fit read from the store, or exported to it (claygraph.runtime.program_store)
                         "programs": {k: program_store.STATS[k] - stored[k] for k in stored}})
    # the median of the fits after the first, which compiles (reported apart as first_s); of all when only one ran
    walls = sorted(f["wall_s"] for f in (fits[1:] or fits))
    return {"spec": spec, "fits": fits, "median_s": walls[len(walls) // 2], "first_s": fits[0]["wall_s"],
            "baseline_rss_bytes": base, "x_bytes": int(X.nbytes), "data_bytes": int(data_bytes),
            "jax_cache": _jax_cache()}


@dataclass(frozen=True)
class _PeerFit:
    iterations: int
    objective: float
    converged: bool
    message: str
    split: tuple = ()


def _sklearn_fit(X: np.ndarray, y: np.ndarray) -> _PeerFit:
    """scikit-learn's LogisticRegression as its users call it (lbfgs, tol=1e-4, max_iter=100), without an
    intercept as W1 states; its objective in W1's terms (sum of log-losses + ||w||^2 / 2)."""
    from sklearn.linear_model import LogisticRegression

    m = LogisticRegression(C=1.0, fit_intercept=False).fit(X, y)
    z = X @ m.coef_[0].astype(X.dtype)
    objective = float(np.sum(np.logaddexp(0.0, z, dtype=np.float64) - y * z) + 0.5 * np.sum(m.coef_ ** 2))
    iterations = int(m.n_iter_[0])
    return _PeerFit(iterations, objective, iterations < m.max_iter, f"{iterations} lbfgs iterations")


def _jax_cache() -> str:
    """Which persistent compilation cache the fits used, without its path (results are committed)."""
    import tempfile

    import jax

    folder = jax.config.jax_compilation_cache_dir
    if not folder:
        return "off"
    return "fresh temporary folder" if folder.startswith(tempfile.gettempdir()) else "per-user default"


def gpu_check(spec: dict) -> dict:
    from bench.gpu_check import measure as check

    return check(spec)


def parquet_write(spec: dict) -> dict:
    """The parquet suite's folder: `files` files of `rows` rows in all (row groups of 250,000); W3's shape:
    product ids with Zipf(1.1)-skewed row counts over `products`, rows in random order."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from bench.workloads import zipf_index

    rng = np.random.default_rng(0)
    g = zipf_index(spec["rows"], spec["products"]).astype(np.int32)
    per = spec["rows"] // spec["files"]
    for f in range(spec["files"]):
        cols = {f"x{j}": rng.normal(size=per).astype(np.float32) for j in range(spec["features"])}
        cols["product_id"] = g[f * per:(f + 1) * per]
        cols["price"] = rng.normal(0.0, 0.3, size=per).astype(np.float32)
        cols["y"] = (rng.random(per) < 0.4).astype(np.float32)
        pq.write_table(pa.table(cols), os.path.join(spec["folder"], f"part-{f}.parquet"), row_group_size=250_000)
    return {"rows": per * spec["files"]}


def parquet_arrow(spec: dict) -> dict:
    """Rows per second of a plain `pyarrow.parquet.read_table` of the suite's folder (every column the model
    reads, then NumPy arrays of them): the reference the workers' streamed reading is set beside."""
    import pyarrow.parquet as pq

    cols = [f"x{j}" for j in range(spec["features"])] + ["product_id", "price", "y"]
    times = []
    for _ in range(2):
        t0 = time.perf_counter()
        table = pq.read_table(spec["folder"], columns=cols)
        arrays = [table.column(c).to_numpy() for c in cols]
        times.append(time.perf_counter() - t0)
        rows = table.num_rows
        del table, arrays
    return {"rows": rows, "seconds": min(times), "rows_per_s": rows / min(times)}


def _phase_peak(worker=None) -> int | None:
    """This process's peak resident set since the last reset; then resets it (each phase its own peak)."""
    peak = _peak_bytes()
    _reset_peak()
    return peak


def _read_seconds(worker=None) -> dict:
    from claygraph.frontend import parquet

    log = [e for e in parquet.READ_LOG if e["pid"] == os.getpid()]
    return {"seconds": sum(e.get("seconds", 0.0) for e in log), "rows": sum(e["rows"] for e in log
                                                                             if e["array"] == "X")}


def w3_noncentred_model(data) -> None:
    """W3's price-elasticity hierarchy written non-centred (a = mu_a + s_a * z_a, the same for b), so that its
    MAP is well posed at any number of products (the centred form's joint density peaks where every product's
    values collapse onto their mean and the scale goes to 0, which 100,000 products reach even under a
    LogNormal scale prior)."""
    import numpyro
    import numpyro.distributions as dist

    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([data.size("feature")]).to_event(1))
    mu_a = numpyro.sample("mu_a", dist.Normal(0.0, 1.0))
    mu_b = numpyro.sample("mu_b", dist.Normal(0.0, 1.0))
    s_a = numpyro.sample("s_a", dist.LogNormal(-1.0, 0.5))
    s_b = numpyro.sample("s_b", dist.LogNormal(-1.0, 0.5))
    with numpyro.plate("product", data.size("product")):
        z_a = numpyro.sample("z_a", dist.Normal(0.0, 1.0))
        z_b = numpyro.sample("z_b", dist.Normal(0.0, 1.0))
    a, b = mu_a + s_a * z_a, mu_b + s_b * z_b
    logits = a[data.g] + b[data.g] * data.price + data.X @ w
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Bernoulli(logits=logits), obs=data.y)


def _unbounded_model(data) -> None:
    """W3's model with a HalfNormal group scale and centred intercepts: its density has no mode (MAP must say so)."""
    import numpyro
    import numpyro.distributions as dist

    s_a = numpyro.sample("s_a", dist.HalfNormal(1.0))
    with numpyro.plate("product", data.size("product")):
        a = numpyro.sample("a", dist.Normal(0.0, s_a))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Bernoulli(logits=a[data.g]), obs=data.y)


def parquet_memory(spec: dict) -> dict:
    """Peak resident memory of the driver and of each Ray worker, by phase, reading the suite's folder split by
    product and fitting W3's model (non-centred) by MAP; the streamed reading's throughput; how soon MAP
    refuses a density without a mode on the same data."""
    import claygraph as cg

    t0 = time.perf_counter()
    out: dict = {}
    with cg.runtime.Ray(workers=2, timeout_s=600) as rt:
        out["workers_started"] = rt.on_workers(_phase_peak)
        out["driver_started"] = _phase_peak()
        t = time.perf_counter()
        data = cg.Data.from_parquet(spec["folder"], X=([f"x{j}" for j in range(spec["features"])], "row", "feature"),
                                    y=("y", "row"), price=("price", "row"),
                                    g=cg.parquet.index_column("product_id", "row", into="product",
                                                              size=spec["products"]))
        out["driver_index_s"] = time.perf_counter() - t
        out["driver_read"] = _phase_peak()
        setup = importlib.import_module("claygraph.infer.common").setup
        session = setup(w3_noncentred_model, data, runtime=rt, split=("product",))
        out["workers_loaded"] = rt.on_workers(_phase_peak)
        out["driver_loaded"] = _phase_peak()
        out["workers_read"] = rt.on_workers(_read_seconds)
        out["worker_rows"] = [int(n) for n in session.program.artifact.candidate.layout["row"].counts]
        graph = session.plan.graph  # each worker's parameters: a product-sized site holds its half
        params = sum(int(np.prod(shape)) // (2 if shape and shape[0] == spec["products"] else 1)
                     for shape in graph.param_shapes.values()) * 4
        out["state_bytes"] = params * (2 * 10 + 5)  # the point, L-BFGS's 10 pairs, gradient, direction, trial
        t = time.perf_counter()
        fit = importlib.import_module("claygraph.infer.map").map(w3_noncentred_model, data, session=session,
                                                                 max_iter=spec["max_iter"])
        out["fit"] = {"wall_s": time.perf_counter() - t, "iterations": int(fit.iterations),
                      "converged": bool(fit.converged), "objective": float(fit.objective), "stop": fit.stop}
        out["workers_fitted"] = rt.on_workers(_phase_peak)
        out["driver_fitted"] = _phase_peak()
        chunks: list[int] = []
        t = time.perf_counter()
        try:
            importlib.import_module("claygraph.infer.map").map(_unbounded_model, data, runtime=rt, split=("product",),
                                                               on_chunk=lambda it, obj: chunks.append(it))
            out["unbounded"] = {"raised": False}
        except cg.errors.ClaygraphError as exc:
            out["unbounded"] = {"raised": True, "message": str(exc)[:300], "seconds": time.perf_counter() - t,
                                "iterations": chunks[-1] if chunks else 0, "error": type(exc).__name__}
    out["seconds"] = time.perf_counter() - t0
    return out


TASKS = {"candidates": candidates, "nuts": nuts, "w1_fit": w1_fit, "gpu_check": gpu_check,
         "parquet_write": parquet_write, "parquet_memory": parquet_memory, "parquet_arrow": parquet_arrow}


def main(argv: list[str]) -> int:
    task, spec = argv[0], json.loads(argv[1])
    result = TASKS[task](spec)
    print(RESULT_MARK + json.dumps(result, default=float), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
