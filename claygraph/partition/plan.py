"""Candidate splits, their layouts and costs, and the chosen Plan."""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from claygraph.errors import PartitionError
from claygraph.frontend.data import Data
from claygraph.ir.graph import Graph, Value
from claygraph.partition.blocks import row_split_of
from claygraph.partition.cluster import ClusterSpec
from claygraph.partition.cost import CostEstimate, estimate, host_devices
from claygraph.partition.layout import DimLayout, block_layout, block_sizes, group_layout, group_sizes, routed_layout
from claygraph.partition.propagate import Collective, Propagation, propagate
from claygraph.partition.shardings import Partial, Sharded, Sharding, Split
from claygraph.partition.verify import checks_enabled, verify

Layout = Mapping[str, DimLayout]
STATE_COPIES = 12.0  # parameter-sized buffers kept by the optimiser or sampler (L-BFGS: x, g, 2 x 5 history)
_ORDER = {"none": 0, "dim": 1, "group": 2}


def enumerate_splits(graph: Graph) -> tuple[list[Split], dict[tuple[str, ...], str]]:
    """Every candidate: none; each data dim; each index target with its rows co-partitioned.

    Returns the candidates and, for splits that cannot be made, the reason.
    """
    arrays = graph.meta.arrays
    targets: dict[str, list[tuple[str, str]]] = {}
    for name, a in sorted(arrays.items()):
        if a.is_index:
            targets.setdefault(a.into, []).append((name, a.dims[0]))
    out, refused = [Split(())], {}
    # data dims, and latent dims (plates over parameters only)
    data_dims = sorted({d for a in arrays.values() for d in a.dims} | {d for d, _ in graph.meta.info.plates})
    for d in data_dims:
        if d not in targets:
            out.append(Split((d,), frozenset({d})))
    for g, cols in sorted(targets.items()):
        if len(cols) > 1:
            refused[(g,)] = (f"{len(cols)} index columns point into {g!r} ({', '.join(c for c, _ in cols)}); "
                             f"rows can follow only one of them")
            continue
        (router, row), = cols
        out.append(Split((g,), frozenset({g, row}), ((row, g),), router))
    return out, refused


def layout_for(split: Split, graph: Graph, data: Data | None, devices: int) -> dict[str, DimLayout]:
    """Sizes (abstract data) or the layouts data are laid out by (concrete data, in memory or in files: a group
    split's rows by their Route, which needs only the index column's counts here)."""
    sizes = graph.dims
    concrete = data is not None and data.has_values
    out: dict[str, DimLayout] = {}
    for row, g in split.copartition:
        router = data.arrays[split.router] if concrete else None
        if concrete and router.source is not None:  # in files: counted when read, routed where it is read
            counts = np.pad(router.counts, (0, sizes[g] - router.counts.size))
            out[g], out[row] = routed_layout(g, row, counts, router.source, devices)
        elif concrete:
            out[g], out[row] = group_layout(g, row, np.asarray(router.values), sizes[g], devices)
        else:
            counts = graph.meta.arrays[split.router].counts
            out[g], out[row] = group_sizes(g, row, counts, sizes[g], sizes[row], devices)
    for d in sorted(split.dims - set(out)):
        out[d] = (block_layout if concrete else block_sizes)(d, sizes[d], devices)
    return out


def shape_fn(layout: Layout) -> Callable[[Value, Sharding], tuple[int, ...]]:
    """Local shape of a value under a sharding: its split axis local, other split dims internal size."""

    def shape(v: Value, s: Sharding) -> tuple[int, ...]:
        cut = v.axis_of(s.dim) if isinstance(s, Sharded) else None
        out = []
        for i, (d, n) in enumerate(zip(v.dims, v.shape)):
            lay = layout.get(d) if d is not None else None
            out.append(n if lay is None else (lay.local if i == cut else lay.internal))
        return tuple(out)

    return shape


@dataclass(frozen=True, slots=True)
class Candidate:
    split: Split
    layout: Layout
    propagation: Propagation | None
    cost: CostEstimate
    # data arrays also held feature-major (claygraph.partition.storage), decided when the data is laid out
    feature_major: frozenset[str] = frozenset()
    # devices of one node, which run their row blocks at once in its shared cache (blocks.host_share)
    host_devices: int = 1


def _bytes_fn(shape):
    return lambda v, s: int(np.prod(shape(v, s), dtype=np.int64)) * v.dtype.itemsize


def evaluate_candidate(graph: Graph, split: Split, data: Data | None, cluster: ClusterSpec,
                       devices: int) -> Candidate:
    return candidate_with_layout(graph, split, layout_for(split, graph, data, devices), cluster, devices)


def candidate_with_layout(graph: Graph, split: Split, layout: Mapping[str, DimLayout], cluster: ClusterSpec,
                          devices: int) -> Candidate:
    shape = shape_fn(layout)
    padded = frozenset(d for d, lay in layout.items() if lay.padded)
    try:
        prop = propagate(graph, split, padded, _bytes_fn(shape))
        if checks_enabled():
            verify(graph, prop, padded)
    except PartitionError as e:
        bad = CostEstimate(split.name, False, 0, float("inf"), 0, float("inf"), float("inf"), str(e))
        return Candidate(split, MappingProxyType(layout), None, bad, host_devices=host_devices(cluster, devices))
    rows = row_split_of(graph, enumerate_splits(graph)[0])  # a row-separable program runs in fused blocks
    return Candidate(split, MappingProxyType(layout), prop, estimate(graph, prop, shape, cluster, devices,
                                                                     STATE_COPIES, rows),
                     host_devices=host_devices(cluster, devices))


class Plan:
    """The chosen split with every candidate's figures; `explain()` says why it won."""

    def __init__(self, graph: Graph, data: Data | None, cluster: ClusterSpec, devices: int,
                 chosen: Candidate, candidates: list[Candidate], refused: Mapping[tuple[str, ...], str]):
        self.graph, self.data, self.cluster, self.devices = graph, data, cluster, devices
        self.chosen = chosen
        self._candidates = candidates
        self.refused = dict(refused)

    @property
    def split(self) -> tuple[str, ...]:
        return self.chosen.split.name

    @property
    def candidates(self) -> list[CostEstimate]:
        return [c.cost for c in self._candidates]

    def candidate(self, split: tuple[str, ...]) -> Candidate:
        return next(c for c in self._candidates if c.split.name == tuple(split))

    @property
    def shardings(self) -> Mapping[int, Sharding]:
        return self.chosen.propagation.shardings

    @property
    def collectives(self) -> tuple[Collective, ...]:
        return self.chosen.propagation.collectives

    def param_shardings(self) -> dict[str, Sharding]:
        return {k: self.shardings[v] for k, v in self.graph.inputs.params.items()}

    def verify(self) -> None:
        """Check the chosen split's propagation against the partitioner's invariants (see
        claygraph.partition.verify); raises PartitionError naming each broken one."""
        layout = self.chosen.layout
        verify(self.graph, self.chosen.propagation, frozenset(d for d, lay in layout.items() if lay.padded))

    def explain(self) -> str:
        from claygraph.partition.explain import explain

        return explain(self)

    def __repr__(self) -> str:
        return f"<Plan split={self.split or '()'} devices={self.devices} cost={self.chosen.cost.predicted_s:.3g}s>"


def pick(cands: list[Candidate], devices: int) -> Candidate:
    """The cheapest feasible candidate (on one device, the unsplit program); PartitionError if none fits."""
    feasible = [c for c in cands if c.cost.feasible]
    if not feasible:
        rows = "; ".join(f"{c.split}: {c.cost.reason}" for c in cands)
        raise PartitionError(f"no candidate split fits in device memory: {rows}. Use more devices or a "
                             f"cluster with more memory per device")
    # one device: a split runs the unsplit program's kernels on the same shapes, its parameters relaid;
    # the figures of two different kernels for one product (a feature-major X @ w against a row-major
    # one) must not decide between them
    unsplit = [c for c in feasible if not c.split.name]
    if devices == 1 and unsplit:
        return unsplit[0]
    return min(feasible, key=lambda c: (c.cost.predicted_s, _ORDER[c.split.kind], c.split.name))


def candidates(graph: Graph, data: Data | None, cluster: ClusterSpec) -> tuple[list[Candidate], dict]:
    """Every candidate split of `graph` costed on `cluster`, and the splits refused with why."""
    splits, refused = enumerate_splits(graph)
    return [evaluate_candidate(graph, s, data, cluster, cluster.devices) for s in splits], refused


def partition(model: Callable | Graph, data: Data, cluster: ClusterSpec | None = None,
              split: tuple[str, ...] | list[str] | str | None = None, jacobian: bool = True) -> Plan:
    """Choose the cheapest feasible split of `model(data)` for `cluster` (or the one `split=` forces)."""
    from claygraph.ir.lower import lower

    graph = model if isinstance(model, Graph) else lower(model, data, jacobian)
    cluster = cluster or ClusterSpec.local(devices=1)
    devices = cluster.devices
    cands, refused = candidates(graph, data, cluster)
    if split is None:
        return Plan(graph, data, cluster, devices, pick(cands, devices), cands, refused)
    want = (split,) if isinstance(split, str) else tuple(split)
    match = [c for c in cands if c.split.name == want]
    if not match:
        why = refused.get(want, f"known splits: {[c.split.name for c in cands]}")
        raise PartitionError(f"split {want} is not a candidate for this model: {why}")
    if match[0].propagation is None:
        raise PartitionError(f"split {want} cannot be made: {match[0].cost.reason}")
    return Plan(graph, data, cluster, devices, match[0], cands, refused)


def is_partial(s: Sharding) -> bool:
    return isinstance(s, Partial)


def summary(plan: Plan) -> dict[str, Any]:
    """The JSON view `inspect --json` adds."""
    g = plan.graph
    return {
        "candidates": [c.to_json() for c in plan.candidates],
        "chosen": list(plan.split),
        "collectives": [{"kind": c.kind, "value": c.value, "node": c.node, "bytes": c.nbytes,
                         "shape": list(g.value(c.value).shape), "reason": c.reason or None}
                        for c in plan.collectives],
        "shardings": {k: str(s) for k, s in plan.param_shardings().items()},
        "devices": plan.devices,
    }
