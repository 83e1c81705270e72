"""Scaling projections: every candidate split's predicted time, memory and communication share as the
number of nodes of a cluster grows (`claygraph inspect FILE.py --cluster p5 --nodes 1,2,4,8`).

Nothing runs: the model is lowered once and costed on `ClusterSpec.preset(name, nodes=n)` for each n.
A split stops scaling at the first node count whose predicted time is not at least STOP_GAIN x better
than the previous count's (docs/cluster.md, "Scaling projections").
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from claygraph.errors import ClusterError, PartitionError
from claygraph.frontend.data import Data
from claygraph.ir.graph import Graph
from claygraph.partition.cluster import ClusterSpec
from claygraph.partition.explain import _bytes, _seconds

STOP_GAIN = 1.1  # more nodes that buy less than this factor in time: the split has stopped scaling


@dataclass(frozen=True, slots=True)
class Point:
    """One candidate on one cluster size."""

    nodes: int
    devices: int
    split: tuple[str, ...]
    feasible: bool
    predicted_s: float
    memory_per_device_bytes: int
    comm_s: float
    chosen: bool

    @property
    def comm_share(self) -> float:
        ok = 0 < self.predicted_s < float("inf") and self.comm_s < float("inf")
        return self.comm_s / self.predicted_s if ok else 0.0


@dataclass(frozen=True, slots=True)
class Projection:
    cluster: str
    nodes: tuple[int, ...]
    points: tuple[Point, ...]

    def splits(self) -> list[tuple[str, ...]]:
        return list(dict.fromkeys(p.split for p in self.points))

    def series(self, split: tuple[str, ...]) -> list[Point]:
        return [p for p in self.points if p.split == split]

    def stops_scaling(self, split: tuple[str, ...]) -> int | None:
        """The first node count at which `split` gains less than STOP_GAIN over the previous one (None: it
        scales over the whole range). Infeasible sizes do not count as gains or stops."""
        prev = None
        for p in self.series(split):
            if not p.feasible:
                continue
            if prev is not None and p.predicted_s * STOP_GAIN > prev.predicted_s:
                return p.nodes
            prev = p
        return None

    def to_json(self) -> dict:
        return {"cluster": self.cluster, "nodes": list(self.nodes), "stop_gain": STOP_GAIN,
                "candidates": [{"split": list(s), "stops_scaling_at": self.stops_scaling(s),
                                "points": [{"nodes": p.nodes, "devices": p.devices, "feasible": p.feasible,
                                            "predicted_s": p.predicted_s,
                                            "memory_per_device_bytes": p.memory_per_device_bytes,
                                            "comm_s": p.comm_s, "comm_share": p.comm_share, "chosen": p.chosen}
                                           for p in self.series(s)]} for s in self.splits()]}

    def to_text(self) -> str:
        lines = [f"scaling projection on {self.cluster} (predicted time per gradient evaluation; "
                 f"* chosen, - does not fit; comm share in brackets)"]
        head = f"  {'split':<16}" + "".join(f"{f'{n} node' + ('s' if n > 1 else ''):>20}" for n in self.nodes)
        lines.append(head + "  stops scaling at")
        for s in self.splits():
            cells = []
            for p in self.series(s):
                mark = "*" if p.chosen else " "
                cell = f"{_seconds(p.predicted_s)} ({p.comm_share:.0%}){mark}" if p.feasible else "-"
                cells.append(f"{cell:>20}")
            stop = self.stops_scaling(s)
            lines.append(f"  {','.join(s) or 'none':<16}" + "".join(cells)
                         + f"  {f'{stop} nodes' if stop else '-'}")
        lines.append("  memory per device: " + "; ".join(
            f"{','.join(s) or 'none'} {_bytes(self.series(s)[0].memory_per_device_bytes)} at {self.nodes[0]} -> "
            f"{_bytes(self.series(s)[-1].memory_per_device_bytes)} at {self.nodes[-1]}" for s in self.splits()))
        return "\n".join(lines)


def project(model: Callable | Graph, data: Data, preset: str, nodes: Sequence[int]) -> Projection:
    """Cost every candidate of `model(data)` on `preset` x n nodes for each n in `nodes` (increasing)."""
    from claygraph.ir.lower import lower
    from claygraph.partition.plan import candidates, pick

    counts = tuple(nodes)
    if not counts or any(n < 1 for n in counts) or list(counts) != sorted(set(counts)):
        raise ClusterError(f"--nodes must be increasing whole numbers >= 1, got {list(counts)}")
    graph = model if isinstance(model, Graph) else lower(model, data)
    points = []
    for n in counts:
        spec = ClusterSpec.preset(preset, nodes=n)
        cands, _ = candidates(graph, data, spec)
        try:
            chosen = pick(cands, spec.devices).split.name
        except PartitionError:  # nothing fits at this size: every candidate infeasible
            chosen = None
        for c in cands:
            points.append(Point(n, spec.devices, c.split.name, c.cost.feasible, c.cost.predicted_s,
                                c.cost.memory_per_device_bytes, c.cost.comm_s, c.split.name == chosen))
    name = f"{preset} ({ClusterSpec.preset(preset).devices_per_node} device(s) per node)"
    return Projection(name, counts, tuple(points))


def draw(proj: Projection, path: str, title: str) -> None:
    """Three panels against node count: predicted time, memory per device, communication share; a split's
    line ends in a ring where it stops scaling."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    for s in proj.splits():
        pts = [p for p in proj.series(s) if p.feasible and p.predicted_s < float("inf")]
        if not pts:
            continue
        x = [p.nodes for p in pts]
        label = ",".join(s) or "none"
        line, = axes[0].plot(x, [p.predicted_s * 1e3 for p in pts], marker="o", label=label)
        axes[1].plot(x, [p.memory_per_device_bytes / 1e9 for p in pts], marker="o", color=line.get_color())
        axes[2].plot(x, [100 * p.comm_share for p in pts], marker="o", color=line.get_color())
        stop = proj.stops_scaling(s)
        at = next((p for p in pts if p.nodes == stop), None)
        if at is not None:
            axes[0].plot([at.nodes], [at.predicted_s * 1e3], marker="o", markersize=14, markerfacecolor="none",
                         color=line.get_color())
        chosen = [p for p in pts if p.chosen]
        axes[0].plot([p.nodes for p in chosen], [p.predicted_s * 1e3 for p in chosen], linestyle="none",
                     marker="*", markersize=13, color=line.get_color())
    for ax, what in zip(axes, ("predicted ms per gradient evaluation", "memory per device (GB)",
                               "communication share of the time (%)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("nodes")
        ax.set_title(what, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[0].legend(title="split (* chosen, ring: stops scaling)", fontsize=8)
    fig.suptitle(f"{title} on {proj.cluster}")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
