"""W5: set-up overhead of the Ray runtime, and the latency of an all-reduce between its two workers.

Phases come from `Ray.times` (cluster start, actors, `jax.distributed` initialisation, shards
delivered, first compile) plus what the driver spends around them (importing Ray, planning).
The data shipped are W1's at this mode's size, so the suite also gives W1's steady-state time
per gradient evaluation on Ray(workers=2), which the W1 table shows next to Local.

All-reduce latency is measured on the workers: through the runtime's SPMD entry `Ray.run`,
every worker jits a `shard_map` whose body is one `psum` over the mesh of both workers and
times repeated calls of it (median; a call includes its dispatch, some tens of microseconds).
The driver-side figure is `potential_and_grad` of a two-row model on Ray: a round trip from the
driver to both actors and back, of which the all-reduce is a small part.
"""
from __future__ import annotations

import sys
import time

import numpy as np

from bench.sizes import Sizes
from bench.suites import SuiteEnv
from bench.timing import measure

ALLREDUCE_FLOATS = (1, 1_000, 1_000_000)


def allreduce_probe(worker, sizes: list[int], reps: int) -> dict:
    """Runs on every Ray worker (SPMD): median seconds of a jitted psum of `n` float32 per worker."""
    import time as _time

    import jax
    import numpy as _np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = worker.mesh
    axis = mesh.axis_names[0]
    world = int(mesh.devices.size)
    out = {}
    for n in sizes:
        f = jax.jit(jax.shard_map(lambda x: jax.lax.psum(x, axis), mesh=mesh, in_specs=P(axis), out_specs=P()))
        x = jax.make_array_from_process_local_data(NamedSharding(mesh, P(axis)), _np.ones(n, _np.float32),
                                                   (world * n,))
        r = f(x).block_until_ready()
        for _ in range(10):  # untimed: the first calls set up gloo's buffers and pairs
            f(x).block_until_ready()
        check = float(_np.asarray(r.addressable_data(0))[0])
        times = []
        for _ in range(reps):
            t0 = _time.perf_counter()
            f(x).block_until_ready()
            times.append(_time.perf_counter() - t0)
        out[str(n)] = {"median_s": float(_np.median(times)), "min_s": float(min(times)), "reps": reps,
                       "sum_check": check, "expected": float(world)}
    return out


def _zeros(graph) -> dict[str, np.ndarray]:
    return {k: np.zeros(s, np.float32) for k, s in graph.param_shapes.items()}


def run(sizes: Sizes, env: SuiteEnv) -> dict:
    import cloudpickle
    import jax

    import claygraph as cg
    from bench.workloads import logistic_model, w1_data

    if env.device == "gpu":
        workers, resources = env.devices, {"CPU": 1, "GPU": 1}
    else:
        workers, resources = 2, {"CPU": 1}
    data = w1_data(sizes.w1_n, sizes.w1_d)
    tiny = w1_data(2, 1)
    phases: dict[str, float] = {}
    t0 = time.perf_counter()
    if "ray" not in sys.modules:
        import claygraph.runtime.ray  # noqa: F401 - timed: importing Ray is part of the set-up
    phases["import_ray_s"] = time.perf_counter() - t0
    # Pickle the probe by value: the workers need not be able to import the bench folder.
    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    env.log(f"  setup: Ray(workers={workers}) from nothing to the first W1 gradient")
    try:
        t_start = time.perf_counter()
        with cg.runtime.Ray(workers=workers, resources_per_worker=resources) as rt:
            started = time.perf_counter()
            cluster = cg.ClusterSpec.local(devices=workers)
            plan = cg.partition(logistic_model, data, cluster=cluster)
            phases["plan_s"] = time.perf_counter() - started
            prog = cg.compile(plan, runtime=rt)
            first_gradient_s = time.perf_counter() - t_start
            times = rt.times.to_json()
            params = _zeros(plan.graph)
            env.log("  setup: steady-state W1 gradient on Ray")
            w1_grad = measure(lambda: prog.potential_and_grad(params), sizes.repeats)
            tiny_plan = cg.partition(logistic_model, tiny, cluster=cluster, split=("row",))
            tiny_prog = cg.compile(tiny_plan, runtime=rt)
            tiny_params = _zeros(tiny_plan.graph)
            round_trip = measure(lambda: tiny_prog.potential_and_grad(tiny_params), max(20, sizes.repeats * 3))
            env.log("  setup: worker-side all-reduce latency")
            probe = rt.on_workers(allreduce_probe, list(ALLREDUCE_FLOATS), max(50, sizes.repeats * 10),
                           what="timing all-reduces")
            map_row = _map_on_ray(cg, logistic_model, data, rt, env)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    worker_rows = [{"floats": n, "bytes": 4 * n, "median_s": max(p[str(n)]["median_s"] for p in probe),
                    "per_worker_s": [p[str(n)]["median_s"] for p in probe],
                    "correct": all(p[str(n)]["sum_check"] == p[str(n)]["expected"] for p in probe),
                    "predicted_s": cluster.allreduce_time(4 * n, workers)} for n in ALLREDUCE_FLOATS]
    return {
        "status": "ok", "workers": workers, "resources_per_worker": resources, "jax_backend": jax.default_backend(),
        "phases": {"import_ray_s": phases["import_ray_s"], "cluster_s": times["cluster_s"],
                   "actors_s": times["actors_s"], "distributed_s": times["distributed_s"],
                   "plan_s": phases["plan_s"], "shards_s": times["shards_s"][0],
                   "first_compile_s": times["first_compile_s"][0]},
        "time_to_first_gradient_s": first_gradient_s + phases["import_ray_s"],
        "data": {"workload": "W1", "n": sizes.w1_n, "d": sizes.w1_d, "bytes": sizes.w1_n * (sizes.w1_d + 1) * 4},
        "w1_gradient": {"split": list(plan.split), "timing": w1_grad.to_json(),
                        "predicted_s": plan.chosen.cost.predicted_s},
        "driver_round_trip": {"what": "potential_and_grad of a 2-row model on Ray", "timing": round_trip.to_json()},
        "allreduce": worker_rows,
        "allreduce_method": "worker-side: jitted shard_map psum over both workers via Ray.run, median of repeats "
                            "per worker, slower worker reported",
        "map": map_row,
    }


def _map_on_ray(cg, model, data, rt, env: SuiteEnv) -> dict:
    if not hasattr(cg.infer, "map"):
        return {"status": "not available", "note": "claygraph.infer has no `map` yet"}
    env.log("  setup: W1 MAP on Ray")
    t0 = time.perf_counter()
    try:
        res = cg.infer.map(model, data, runtime=rt)
    except Exception as e:
        return {"status": "error", "note": f"{type(e).__name__}: {e}"[:500]}
    return {"status": "ok", "wall_s": time.perf_counter() - t0, "iterations": int(res.iterations),
            "objective": float(res.objective), "split": list(res.plan.split)}
