"""Plan.explain(): the candidate table and the chosen split, for people."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from claygraph.partition.plan import Plan


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def _seconds(s: float) -> str:
    if s == float("inf"):
        return "-"
    return f"{s * 1e3:.3g} ms" if s < 1 else f"{s:.3g} s"


def candidate_table(plan: Plan) -> list[str]:
    head = f"  {'split':<16}{'memory/dev':>12}{'compute':>12}{'comm':>12}{'comm time':>12}{'predicted':>12}  note"
    lines = [head]
    for c in sorted(plan.candidates, key=lambda c: c.predicted_s):
        name = ",".join(c.split) or "none"
        mark = "*" if tuple(c.split) == tuple(plan.split) else " "
        note = c.reason or ""
        lines.append(f"{mark} {name:<16}{_bytes(c.memory_per_device_bytes):>12}{_seconds(c.compute_s):>12}"
                     f"{_bytes(c.comm_bytes):>12}{_seconds(c.comm_s):>12}{_seconds(c.predicted_s):>12}  {note}")
    for split, why in sorted(plan.refused.items()):
        lines.append(f"  {','.join(split):<16}{'refused':>12}  {why}")
    return lines


def terms_table(plan: Plan) -> list[str]:
    """Where each candidate's predicted time goes: on GPUs its roofline (arithmetic-bound kernels,
    memory-bound kernels, launches), on CPUs its kernels and call overhead; then the collectives."""
    lines = []
    for c in sorted(plan.candidates, key=lambda c: c.predicted_s):
        if c.terms and c.feasible:
            lines.append(f"  {','.join(c.split) or 'none':<16}" + "  ".join(f"{k} {_seconds(v)}" for k, v in c.terms))
    return lines


# A process's own resident memory before any data: Python, JAX, claygraph and the compiled programs of a small
# fit (measured: 0.34 GB after importing claygraph and a MAP fit of a 1,000 x 4 GLM on the Local runtime, 2 cores,
# 2026-12-07). A Ray worker adds Ray's own libraries (BENCHMARKS.md, W7, gives whole workers' peaks).
PROCESS_BASELINE_BYTES = 0.34e9


def memory_lines(plan: Plan) -> list[str]:
    """The chosen split's memory per device, part by part, and the process's own baseline."""
    c = plan.chosen.cost
    if not c.memory_terms:
        return []
    parts = dict(c.memory_terms)
    copies = parts["state"] / parts["parameters"] if parts.get("parameters") else 0.0
    what = {"data": "data shard", "parameters": "parameters", "state": f"optimiser or sampler state ({copies:.3g} "
            "parameter-sized buffers)", "intermediates": "intermediates kept for the backward pass"}
    lines = [f"memory per device ({','.join(plan.split) or 'none'}): {_bytes(c.memory_per_device_bytes)}"]
    lines += [f"  {what.get(k, k):<58}{_bytes(v):>10}" for k, v in c.memory_terms]
    if plan.cluster.device == "cpu":
        base = _bytes(PROCESS_BASELINE_BYTES)
        lines.append(f"  + each process's own baseline (Python, JAX, claygraph): about {base}")
    return lines


def explain(plan: Plan) -> str:
    c = plan.chosen
    lines = [f"cluster: {plan.cluster.describe()}",
             f"devices: {plan.devices}; chosen split: {','.join(plan.split) or 'none'} "
             f"({c.split}; predicted {_seconds(c.cost.predicted_s)} per gradient evaluation)", "",
             "candidates (* = chosen; time per gradient evaluation):", *candidate_table(plan), "",
             "where the time goes:", *terms_table(plan), "",
             *memory_lines(plan), "",
             "parameters:"]
    for name, s in sorted(plan.param_shardings().items()):
        shape = plan.graph.param_shapes[name]
        lines.append(f"  {name:<12}{str(shape):<16}{'sharded along ' + s.dim if hasattr(s, 'dim') else 'replicated'}")
    if c.propagation and c.propagation.collectives:
        lines += ["", "collectives per evaluation (forward pass):"]
        for col in c.propagation.collectives:
            where = f"before node {col.node}" if col.node is not None else "on the output"
            why = f"  ({col.reason})" if col.reason else ""
            lines.append(f"  {col.kind:<10}{_bytes(col.nbytes):>10}  {where}{why}")
    if plan.devices > 1 and plan.split:
        lines.append("  + one all-reduce of the replicated parameters' gradients (backward pass; a parameter sharded "
                     "along the split keeps its gradient on its shard)")
    if c.propagation and c.propagation.fallbacks:
        lines += ["", "replicated fallbacks:", *(f"  {f}" for f in c.propagation.fallbacks)]
    return "\n".join(lines)
