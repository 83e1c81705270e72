"""Clear-cut cluster cases and the roofline each is judged by (tests, docs/cluster.md's table).

Each case is a model over abstract data at cluster scale on a GPU preset. Its roofline is computed
here from first principles and the preset's own figures, independently of the cost model: a split's
floor is the bytes each device must read once (its share of the data and of the parameters) over
HBM bandwidth, plus the collectives it cannot avoid (the gradients of replicated parameters, the
partial products of a feature split) at the bus bandwidth of the links they cross and the latency of
a tree over the group. A case is clear-cut when the best split's floor is at least CLEAR times every
other feasible split's, both with LAUNCH_ALLOWANCE added.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from claygraph import examples
from claygraph.frontend.data import Data
from claygraph.partition.cluster import ClusterSpec

CLEAR = 2.0
# the fixed cost of one evaluation that no byte count shows: the program's call and its few dozen kernel
# launches (claygraph.partition.gpu: 50-100 us per call, 4 us per kernel)
LAUNCH_ALLOWANCE = 0.2e-3
F32 = 4


@dataclass(frozen=True, slots=True)
class Case:
    """`model(data)` on `preset` x `nodes`; `rows` and per-row bytes, `params` their bytes by split dim."""

    name: str
    model: Callable
    data: Callable[[], Data]
    preset: str
    nodes: int
    rows: int
    row_bytes: float  # bytes of all data arrays per row
    feature_bytes: float  # of which X's, split by a feature split
    group_params: dict[str, float]  # split dim -> bytes of the parameters along it (gradients all-reduced
    # by every split but that dim's)
    feature_params: float  # bytes of the parameters along the features
    expected: tuple[str, ...]

    def cluster(self) -> ClusterSpec:
        return ClusterSpec.preset(self.preset, nodes=self.nodes)


def allreduce_floor(spec: ClusterSpec, nbytes: float, group: int) -> float:
    """A lower bound on an all-reduce of `nbytes` per device: the bus bytes over the slowest link's
    bandwidth (a node's network is shared by its devices), and a tree's latency."""
    if group <= 1 or nbytes <= 0:
        return 0.0
    nodes = math.ceil(group / spec.devices_per_node)
    if nodes == 1:
        band, lat = 2 * (group - 1) / group * nbytes / spec.intra_bandwidth, spec.intra_latency
    else:
        band, lat = 2 * (nodes - 1) / nodes * nbytes / spec.inter_bandwidth, spec.inter_latency
    return band + 2 * math.ceil(math.log2(group)) * lat


def floor(case: Case, split: tuple[str, ...]) -> float:
    """The roofline of one gradient evaluation under `split` (seconds, without the launch allowance)."""
    spec = case.cluster()
    s = spec.devices if split else 1
    data = case.rows * case.row_bytes
    params = case.feature_params + sum(case.group_params.values())
    dim = split[0] if split else None
    if dim == "row":
        read = data / s + params
        comm = allreduce_floor(spec, params, s)
    elif dim == "feature":
        read = case.rows * case.feature_bytes / s + case.rows * (case.row_bytes - case.feature_bytes) \
            + case.feature_params / s + sum(case.group_params.values())
        comm = allreduce_floor(spec, case.rows * F32, s) + allreduce_floor(spec, params - case.feature_params, s)
    elif dim in case.group_params:  # rows co-partitioned with their groups
        read = data / s + case.group_params[dim] / s + params - case.group_params[dim]
        comm = allreduce_floor(spec, params - case.group_params[dim], s) + \
            allreduce_floor(spec, F32, s)
    else:
        read, comm = data + params, 0.0
    return read / spec.mem_bandwidth + comm


def _logistic(n: int, d: int) -> Callable[[], Data]:
    return lambda: examples.make_logistic(n=n, d=d, abstract=True).data


def _hier(n: int, groups: int, d: int) -> Callable[[], Data]:
    return lambda: examples.make_hier_logistic(n=n, products=groups, d=d, abstract=True).data


def _poisson(n: int, products: int, stores: int, d: int) -> Callable[[], Data]:
    return lambda: examples.make_poisson_crossed(n=n, products=products, stores=stores, d=d, abstract=True).data


def _glm(name, n, d, preset, nodes, expected) -> Case:
    return Case(name, examples.logistic_model, _logistic(n, d), preset, nodes, n, (d + 1) * F32, d * F32, {},
                d * F32, expected)


def _hier_case(name, n, groups, d, preset, nodes, expected) -> Case:
    # X (d), price, y: float32; the product id: int32; per product an intercept and a slope
    return Case(name, examples.hier_logistic_model, _hier(n, groups, d), preset, nodes, n, (d + 3) * F32, d * F32,
                {"product": 2 * groups * F32}, d * F32, expected)


def _crossed_case(name, n, products, stores, d, preset, nodes, expected) -> Case:
    return Case(name, examples.poisson_crossed_model, _poisson(n, products, stores, d), preset, nodes, n,
                (d + 3) * F32, d * F32, {"product": products * F32, "store": stores * F32}, d * F32, expected)


CASES = (
    _glm("tall GLM 500M x 50", 500_000_000, 50, "p5", 1, ("row",)),
    _glm("tall GLM 500M x 50, 2 nodes", 500_000_000, 50, "p5", 2, ("row",)),
    _glm("tall GLM 2B x 20, 16 nodes", 2_000_000_000, 20, "p4d", 16, ("row",)),
    _glm("GLM 100M x 30, 4 nodes", 100_000_000, 30, "g5", 4, ("row",)),
    _glm("wide GLM 1k x 20M", 1_000, 20_000_000, "g5", 16, ("feature",)),
    _glm("wide GLM 2k x 10M, 8 nodes", 2_000, 10_000_000, "p4d", 8, ("feature",)),
    _hier_case("50M products, one row each", 50_000_000, 50_000_000, 4, "g5", 8, ("product",)),
    _hier_case("200M rows, 50M products", 200_000_000, 50_000_000, 10, "p5", 4, ("product",)),
    _hier_case("1B rows, 20M products, 64 nodes", 1_000_000_000, 20_000_000, 8, "p4d", 64, ("product",)),
    _crossed_case("crossed 100M rows, 10M products x 1k stores", 100_000_000, 10_000_000, 1_000, 5, "g5", 8,
                  ("product",)),
    _glm("tiny GLM 10k x 10", 10_000, 10, "g5", 16, ()),
    _hier_case("tiny hierarchy 20k rows, 1k products", 20_000, 1_000, 3, "p4d", 8, ()),
    _glm("tiny GLM 50k x 20, 64 nodes", 50_000, 20, "p5", 64, ()),
)


def table() -> list[str]:
    """docs/cluster.md's table of the cases as the cost model plans them now (markdown rows)."""
    from claygraph.partition.plan import partition

    rows = ["| case | cluster | roofline's pick | picked | prediction / roofline |", "|---|---|---|---|---|"]
    for case in CASES:
        plan = partition(case.model, case.data(), cluster=case.cluster())
        roof = {c.split: floor(case, c.split) + LAUNCH_ALLOWANCE for c in plan.candidates if c.feasible}
        best = min(roof, key=roof.get)
        name = lambda split: ",".join(split) or "none"  # noqa: E731
        rows.append(f"| {case.name} | {case.preset} x {case.nodes} | {name(best)} | {name(plan.split)} | "
                    f"{plan.chosen.cost.predicted_s / roof[best]:.3g} |")
    return rows


if __name__ == "__main__":
    print("\n".join(table()))
