"""Scaling beyond this machine, on paper: W1, W3 and W6 at their nominal sizes on cluster presets.

Nothing runs on a cluster: the model is lowered with `jax.ShapeDtypeStruct` data at full size
and `cg.partition` costs every candidate split with the preset's figures (see docs/cluster.md).
Every figure here is a projection. To say what would change the choice, the link bandwidth,
the link latency and the number of nodes are varied one at a time and the new choice recorded.
"""
from __future__ import annotations

import dataclasses
import time

from bench.sizes import NOMINAL, Sizes
from bench.suites import SuiteEnv

# (label, preset, nodes): one p5 node (8 x H100 over NVLink), two p5 nodes (EFA between them),
# g5 nodes of one A10G each over 25 Gb/s Ethernet.
CLUSTERS = (("p5 x1 (8 x H100)", "p5", 1), ("p5 x2 (16 x H100)", "p5", 2), ("g5 x4 (4 x A10G, 25 Gb/s)", "g5", 4),
            ("g5 x16 (16 x A10G, 25 Gb/s)", "g5", 16))
BANDWIDTH_FACTORS = (0.01, 0.1, 10.0, 100.0)
LATENCY_FACTORS = (0.1, 10.0, 100.0)
NODE_FACTORS = (0.5, 2.0, 4.0)


def workloads():
    """(name, model, abstract data, sizes) at the nominal sizes of WORKLOADS.md."""
    from bench import workloads as w

    n1, n3, n6 = NOMINAL["W1"], NOMINAL["W3"], NOMINAL["W6"]
    return [("W1", w.logistic_model, w.abstract_w1(n1["n"], n1["d"]), n1),
            ("W3", w.hier_logistic_model, w.abstract_w3(n3["n"], n3["groups"], n3["d"]), n3),
            ("W6", w.logistic_model, w.abstract_w6(n6["n"], n6["d"]), n6)]


def _choice(cg, graph, data, cluster) -> str:
    try:
        return ",".join(cg.partition(graph, data, cluster=cluster).split) or "none"
    except Exception as e:  # no feasible split
        return f"infeasible ({type(e).__name__})"


def what_changes(cg, graph, data, cluster, chosen: str) -> list[str]:
    """The variations of the cluster that change the chosen split, as 'what -> split'."""
    out = []
    scale = lambda f: dataclasses.replace(cluster, intra_bandwidth=cluster.intra_bandwidth * f,  # noqa: E731
                                          inter_bandwidth=cluster.inter_bandwidth * f)
    variants = [(f"link bandwidth x{f:g}", scale(f)) for f in BANDWIDTH_FACTORS]
    variants += [(f"link latency x{f:g}", dataclasses.replace(cluster, intra_latency=cluster.intra_latency * f,
                                                              inter_latency=cluster.inter_latency * f))
                 for f in LATENCY_FACTORS]
    variants += [(f"{max(1, int(cluster.nodes * f))} node(s)", dataclasses.replace(cluster,
                                                                                  nodes=max(1, int(cluster.nodes * f))))
                 for f in NODE_FACTORS if int(cluster.nodes * f) != cluster.nodes and cluster.nodes * f >= 1]
    for label, spec in variants:
        new = _choice(cg, graph, data, spec)
        if new != chosen:
            out.append(f"{label} -> {new}")
    return out


def project(cg, name: str, graph, data, label: str, cluster) -> dict:
    plan = cg.partition(graph, data, cluster=cluster)
    chosen = ",".join(plan.split) or "none"
    cands = sorted((c.to_json() for c in plan.candidates), key=lambda c: c["predicted_s"])
    feasible = [c for c in cands if c["feasible"]]
    margin = feasible[1]["predicted_s"] / feasible[0]["predicted_s"] if len(feasible) > 1 else None
    return {"workload": name, "cluster": label, "devices": cluster.devices, "describe": cluster.describe(),
            "chosen": chosen, "candidates": cands, "runner_up_over_chosen": margin,
            "changes": what_changes(cg, graph, data, cluster, chosen)}


def run(sizes: Sizes, env: SuiteEnv) -> dict:
    import claygraph as cg

    rows, lowering = [], {}
    for name, model, data, nominal in workloads():
        env.log(f"  projection: {name} at {nominal}")
        t0 = time.perf_counter()
        graph = cg.lower(model, data)
        lowering[name] = {"sizes": nominal, "lower_s": time.perf_counter() - t0}
        local = cg.ClusterSpec.local(devices=2)
        rows.append(project(cg, name, graph, data, "this machine, 2 devices", local))
        for label, preset, nodes in CLUSTERS:
            rows.append(project(cg, name, graph, data, label, cg.ClusterSpec.preset(preset, nodes=nodes)))
    return {"status": "ok", "projected": True, "workloads": lowering, "rows": rows}
