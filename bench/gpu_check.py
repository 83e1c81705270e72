"""The GPU check (`claygraph bench --suite gpu`): what a GPU really does, beside what the cost model predicts.

On the GPU present (one device), for W1, W3 and W6 at their nominal sizes: the time per gradient
evaluation of the program inference runs (`Program.context().evaluation`, median of repeats) and the
cost model's prediction for a `ClusterSpec` of this GPU (its data-sheet figures below), with the
prediction's roofline terms. Then the figures the GPU model assumes (claygraph.partition.gpu): a program
call's fixed cost, HBM's streaming bandwidth, and the efficiency of gathers and scatter-adds (group-sorted
and random indices). Where there are several GPUs, NCCL all-reduces of 4 B to 400 MB against
`ClusterSpec.allreduce_time`.

It runs in a fresh interpreter (bench.timing.run_isolated, task `gpu_check`). `measure(spec)` also runs
on CPU devices with tiny sizes and a named GPU's figures: that is how tests check its structure where no
GPU is lent (its figures then say nothing about any GPU).
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np

# Data-sheet figures by the name nvidia-smi prints (the first key found in the name wins, so the more
# specific come first): float32 FLOP/s (non-tensor), HBM bytes/s, memory bytes, and the preset whose links
# the node has. Sources: NVIDIA's data sheets (H200: 4.8 TB/s, 141 GB; H100 SXM: 67 TFLOPS, 3.35 TB/s;
# H100 NVL: 60 TFLOPS, 3.9 TB/s, 94 GB; H100 PCIe: 51 TFLOPS, 2 TB/s; A100 80GB SXM: 2,039 GB/s; A100 40GB:
# 1,555 GB/s, 19.5 TFLOPS; A10: 31.2 TFLOPS, 600 GB/s; L40S: 91.6 TFLOPS, 864 GB/s, 48 GB; L40: 90.5 TFLOPS;
# L4: 30.3 TFLOPS, 300 GB/s), as in docs/cluster.md.
FIGURES = (
    ("H200", 67e12, 4.8e12, 141e9, "p5"),
    ("H100 NVL", 60e12, 3.9e12, 94e9, "p5"),
    ("H100 PCIe", 51e12, 2.0e12, 80e9, "p5"),
    ("H100", 67e12, 3.35e12, 80e9, "p5"),
    ("A100-SXM4-80GB", 19.5e12, 2.039e12, 80e9, "p4d"),
    ("A100 80GB", 19.5e12, 2.039e12, 80e9, "p4d"),
    ("A100", 19.5e12, 1.555e12, 40e9, "p4d"),
    ("A10G", 31.2e12, 600e9, 24e9, "g5"),
    ("A10", 31.2e12, 600e9, 24e9, "g5"),
    ("L40S", 91.6e12, 864e9, 48e9, "g5"),
    ("L40", 90.5e12, 864e9, 48e9, "g5"),
    ("L4", 30.3e12, 300e9, 24e9, "g5"),
)
WORKLOADS = ("W1", "W3", "W6")
ALLREDUCE_BYTES = (4, 4_000, 400_000, 40_000_000, 400_000_000)


class UnknownGPU(ValueError):
    pass


def spec_for(name: str, devices: int):
    """A one-node ClusterSpec of `devices` GPUs called `name`, from FIGURES."""
    from claygraph.partition.cluster import ClusterSpec

    for key, flops, bandwidth, memory, preset in FIGURES:
        if key.lower() in name.lower():
            return dataclasses.replace(ClusterSpec.preset(preset), devices_per_node=devices, nodes=1, flops=flops,
                                       mem_bandwidth=bandwidth, mem_capacity=memory, name=key)
    raise UnknownGPU(f"no data-sheet figures for GPU {name!r}; add its FLOP rate, bandwidth and memory to "
                     f"bench/gpu_check.py FIGURES")


def _sizes(workload: str, s: dict) -> dict:
    return {"W1": {"n": s["w1_n"], "d": s["w1_d"]}, "W6": {"n": s["w6_n"], "d": s["w6_d"]},
            "W3": {"n": s["w3_n"], "groups": s["w3_groups"], "d": s["w3_d"]}}[workload]


def _time(fn, repeats: int) -> dict:
    from bench.timing import measure

    return measure(fn, repeats, warmup=1).to_json()


def workload(cg, name: str, sizes: dict, spec, repeats: int) -> dict:
    """One workload unsplit on one device: measured and predicted seconds per gradient evaluation."""
    import jax

    from bench.measure import _data, _zeros

    model, data = _data(name, sizes)
    graph = cg.lower(model, data)
    one = dataclasses.replace(spec, devices_per_node=1)
    plan = cg.partition(graph, data, cluster=one)
    prog = cg.compile(plan, runtime=cg.runtime.Local(devices=1))
    call = prog.context().evaluation(_zeros(graph))
    timing = _time(lambda: jax.block_until_ready(call()), repeats)
    cost = plan.chosen.cost
    return {"workload": name, "sizes": sizes, "measured": timing, "predicted_s": cost.predicted_s,
            "terms": dict(cost.terms), "ratio": cost.predicted_s / timing["median_s"]}


def assumptions(cg, spec, repeats: int, elements: int) -> dict:
    """The GPU model's own figures, measured: call cost, stream bandwidth, gather and scatter-add efficiency."""
    import jax
    import jax.numpy as jnp

    from bench.measure import _data, _zeros
    from claygraph.partition import gpu

    model, data = _data("W1", {"n": 1_000, "d": 4})
    graph = cg.lower(model, data)
    plan = cg.partition(graph, data, cluster=dataclasses.replace(spec, devices_per_node=1))
    prog = cg.compile(plan, runtime=cg.runtime.Local(devices=1))
    call = prog.context().evaluation(_zeros(graph))
    tiny = _time(lambda: jax.block_until_ready(call()), repeats)

    x = jnp.ones(elements, jnp.float32)
    stream = jax.jit(lambda v: v * 2.0 + 1.0)
    streamed = _time(lambda: jax.block_until_ready(stream(x)), repeats)
    bandwidth = 8.0 * elements / streamed["median_s"]  # 4 bytes read, 4 written per element

    table = jnp.ones(max(1, elements // 10), jnp.float32)
    rng = np.random.default_rng(0)
    ids = {"sorted": jnp.asarray(np.sort(rng.integers(0, table.shape[0], elements)).astype(np.int32)),
           "random": jnp.asarray(rng.integers(0, table.shape[0], elements).astype(np.int32))}
    gather = jax.jit(lambda t, i: t[i])
    scatter = jax.jit(lambda t, i, v: t.at[i].add(v))
    out = {"call": {"measured": tiny, "predicted_s": plan.chosen.cost.predicted_s,
                    "model_call_s": gpu.CALL_S, "model_launch_s": gpu.LAUNCH_S},
           "stream": {"measured": streamed, "bandwidth": bandwidth, "data_sheet": spec.mem_bandwidth,
                      "efficiency": bandwidth / spec.mem_bandwidth}}
    # the bytes the roofline charges (claygraph.partition.gpu), at the data sheet's bandwidth as it does: a gather
    # reads its ids, looks up its values and stores its result; a scatter-add reads ids and updates and stores
    # the table
    gathered = 12.0 * elements
    scattered = 8.0 * elements + 4.0 * table.shape[0]
    for order, i in ids.items():
        g = _time(lambda i=i: jax.block_until_ready(gather(table, i)), repeats)
        s = _time(lambda i=i: jax.block_until_ready(scatter(table, i, x)), repeats)
        out[f"gather_{order}"] = {"measured": g, "efficiency": gathered / g["median_s"] / spec.mem_bandwidth,
                                  "model": gpu.GATHER_EFFICIENCY}
        out[f"scatter_{order}"] = {"measured": s, "efficiency": scattered / s["median_s"] / spec.mem_bandwidth,
                                   "model": gpu.SCATTER_EFFICIENCY}
    return out


def allreduce(spec, devices: list, repeats: int) -> list[dict]:
    """psum over every device of `devices`, per size: measured against ClusterSpec.allreduce_time."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import Mesh, NamedSharding
    from jax.sharding import PartitionSpec as P

    mesh = Mesh(np.array(devices), ("d",))
    fn = jax.jit(jax.shard_map(lambda v: jax.lax.psum(v, "d"), mesh=mesh, in_specs=P("d"), out_specs=P("d")))
    rows = []
    for nbytes in ALLREDUCE_BYTES:
        n = max(1, nbytes // 4)
        x = jax.device_put(jnp.ones(n * len(devices), jnp.float32), NamedSharding(mesh, P("d")))
        t = _time(lambda x=x: jax.block_until_ready(fn(x)), repeats)
        rows.append({"bytes": 4 * n, "measured": t, "predicted_s": spec.allreduce_time(4 * n, len(devices))})
    return rows


def measure(spec: dict) -> dict:
    """The task: `spec` = {"sizes": Sizes.to_json(), "gpu": name (default: the first GPU present),
    "platform": "gpu" (or "cpu" for a structure check), "elements": stream/gather size}."""
    import jax

    import claygraph as cg

    platform = spec.get("platform", "gpu")
    devices = jax.devices(platform)
    name = spec.get("gpu") or getattr(devices[0], "device_kind", str(devices[0]))
    cluster = spec_for(name, len(devices))
    sizes, repeats = spec["sizes"], int(spec["sizes"]["repeats"])
    t0 = time.perf_counter()
    out = {"gpu": name, "devices": len(devices), "platform": platform, "cluster": cluster.describe(),
           "workloads": [workload(cg, w, _sizes(w, sizes), cluster, repeats) for w in WORKLOADS],
           "assumptions": assumptions(cg, cluster, repeats, int(spec.get("elements", 1 << 26)))}
    if len(devices) > 1:
        out["allreduce"] = allreduce(cluster, devices, repeats)
    out["elapsed_s"] = time.perf_counter() - t0
    return out
