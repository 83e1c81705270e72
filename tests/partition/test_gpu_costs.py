"""GPU clusters priced by their physics: a roofline per kernel plus launches, NCCL's collectives, the
clear-cut cluster cases of bench/cluster_cases.py, and physical sanity as properties."""
import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import claygraph as cg
from bench.cluster_cases import CASES, CLEAR, LAUNCH_ALLOWANCE, floor
from claygraph import examples
from claygraph.errors import ClusterError
from claygraph.partition.cluster import ClusterSpec

PRESETS = ("p4d", "p5", "g5")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_clear_cut_cluster_case(case):
    """The roofline puts one split CLEAR x ahead of every other feasible one; the cost model picks it, and
    predicts it within 0.5x-3x of its roofline (both with the launch allowance)."""
    plan = cg.partition(case.model, case.data(), cluster=case.cluster())
    roof = {c.split: floor(case, c.split) + LAUNCH_ALLOWANCE for c in plan.candidates if c.feasible}
    best = min(roof, key=roof.get)
    assert best == case.expected, f"the case's own roofline puts {best} first: not the case it claims to be"
    assert all(roof[s] >= CLEAR * roof[best] for s in roof if s != best), roof
    assert plan.split == case.expected, [(c.split, c.predicted_s) for c in plan.candidates]
    assert 0.5 <= plan.chosen.cost.predicted_s / roof[best] <= 3.0


def test_gpu_programs_are_not_priced_in_cpu_row_blocks():
    """A tall GLM on one p5 node: the row split reads its 12.5 GB shard at HBM speed (about 4 ms), not in
    thousands of cache-sized blocks; the same cluster described as CPUs is priced in blocks."""
    data = examples.make_logistic(n=500_000_000, d=50, abstract=True).data
    gpu = ClusterSpec.preset("p5")
    plan = cg.partition(examples.logistic_model, data, cluster=gpu, split="row")
    shard = 500_000_000 * 51 * 4 / 8
    terms = dict(plan.chosen.cost.terms)
    assert shard / gpu.mem_bandwidth <= terms["memory"] <= 3 * shard / gpu.mem_bandwidth
    assert terms["launch"] < 1e-3
    cpu = cg.partition(examples.logistic_model, data, cluster=dataclasses.replace(gpu, device="cpu"), split="row")
    assert set(dict(cpu.chosen.cost.terms)) == {"kernels", "call", "collectives"}


def test_device_kind_is_checked():
    with pytest.raises(ClusterError, match="device must be one of"):
        dataclasses.replace(ClusterSpec.preset("p5"), device="tpu")
    assert {ClusterSpec.preset(p).device for p in PRESETS} == {"gpu"}
    assert ClusterSpec.local(2).device == "cpu"


# -- collectives as NCCL runs them ------------------------------------------------------------------------

def test_nccl_all_reduce_inside_a_node_is_a_ring_or_a_tree():
    p5 = ClusterSpec.preset("p5")
    n, s = 1e9, 8
    ring = 2 * (s - 1) * 5e-6 + 2 * (s - 1) / s * n / 450e9
    assert p5.allreduce_time(n, s) == pytest.approx(ring)  # large: the ring's bus bandwidth
    tiny = 4.0
    tree = 2 * 3 * 5e-6 + 2 * tiny / 450e9
    assert p5.allreduce_time(tiny, s) == pytest.approx(tree)  # small: the tree's log latency


def test_nccl_all_reduce_across_nodes_is_hierarchical():
    """Two p4d nodes, 100 MB: reduce-scatter and all-gather over NVLink, and between them each device's
    eighth crosses EFA at an eighth of the node's 50 GB/s: the network moves 2 (N-1)/N x 100 MB per node."""
    p4d = ClusterSpec.preset("p4d", nodes=2)
    n = 1e8
    inside = 7 * 5e-6 + 7 / 8 * n / 300e9
    across = min(2 * 1 * 20e-6 + 2 * 1 / 2 * (n / 8) / (50e9 / 8), 2 * 1 * 20e-6 + 2 * (n / 8) / (50e9 / 8))
    assert p4d.allreduce_time(n, 16) == pytest.approx(2 * inside + across)
    # a flat ring over 16 devices at an eighth of EFA each would take 30.6 ms; the hierarchy 2.7 ms
    flat = 2 * 15 * 20e-6 + 2 * 15 / 16 * n / (50e9 / 8)
    assert p4d.allreduce_time(n, 16) < flat / 5


def test_one_device_per_node_all_reduce_is_the_network_alone():
    g5 = ClusterSpec.preset("g5", nodes=16)
    n = 4e7
    ring = 2 * 15 * 50e-6 + 2 * 15 / 16 * n / 3.125e9
    assert g5.allreduce_time(n, 16) == pytest.approx(ring)


def test_cpu_collectives_stay_rings():
    spec = dataclasses.replace(ClusterSpec.preset("p4d", nodes=2), device="cpu")
    flat = 2 * 15 * 20e-6 + 2 * 15 / 16 * 1e8 / (50e9 / 8)
    assert spec.allreduce_time(1e8, 16) == pytest.approx(flat)


# -- physical sanity as properties --------------------------------------------------------------------------

def _glm_cost(preset: str, nodes: int, n: int, d: int, split: tuple[str, ...]):
    data = examples.make_logistic(n=n, d=d, abstract=True).data
    spec = ClusterSpec.preset(preset, nodes=nodes)
    return spec, cg.partition(examples.logistic_model, data, cluster=spec, split=split).chosen.cost


@settings(max_examples=25, deadline=None)
@given(preset=st.sampled_from(PRESETS), nodes=st.sampled_from([1, 2, 4, 16, 64]),
       n=st.integers(10_000, 2_000_000_000), d=st.integers(1, 200), split=st.sampled_from([(), ("row",)]))
def test_no_prediction_beats_its_own_bytes(preset, nodes, n, d, split):
    """No predicted time is below the time to read the device's share of the data once from HBM."""
    spec, cost = _glm_cost(preset, nodes, n, d, split)
    share = n * (d + 1) * 4 / (spec.devices if split else 1)
    assert cost.predicted_s >= share / spec.mem_bandwidth


@settings(max_examples=20, deadline=None)
@given(preset=st.sampled_from(PRESETS), nodes=st.sampled_from([1, 2, 8, 32]), n=st.integers(1_000, 10**9),
       factor=st.integers(2, 16), d=st.integers(1, 100), split=st.sampled_from([(), ("row",), ("feature",)]))
def test_predictions_grow_with_the_data(preset, nodes, n, factor, d, split):
    _, small = _glm_cost(preset, nodes, n, d, split)
    _, big = _glm_cost(preset, nodes, n * factor, d, split)
    assert big.predicted_s >= small.predicted_s * (1 - 1e-9)


@settings(max_examples=20, deadline=None)
@given(preset=st.sampled_from(PRESETS), nodes=st.sampled_from([1, 2, 4, 8, 16, 32]), n=st.integers(10**5, 10**10),
       d=st.integers(1, 100))
def test_more_devices_never_help_more_than_in_proportion(preset, nodes, n, d):
    """Twice the nodes at most halve a split's time: compute shrinks at most in proportion, the rest grows."""
    spec, one = _glm_cost(preset, nodes, n, d, ("row",))
    spec2, two = _glm_cost(preset, 2 * nodes, n, d, ("row",))
    assert two.predicted_s >= one.predicted_s * spec.devices / spec2.devices * (1 - 1e-9)


@pytest.mark.parametrize("preset, nodes", [("g5", 8), ("p4d", 4), ("p5", 2)])
def test_group_split_communication_does_not_grow_with_the_groups(preset, nodes):
    """Parameters of the split dim live sharded: the product split moves the same bytes for 10^3 groups as
    for 10^7 (only the replicated parameters' gradients and the value are all-reduced)."""
    spec = ClusterSpec.preset(preset, nodes=nodes)
    comm = []
    for groups in (1_000, 100_000, 10_000_000):
        data = examples.make_hier_logistic(n=20_000_000, products=groups, d=4, abstract=True).data
        plan = cg.partition(examples.hier_logistic_model, data, cluster=spec, split="product")
        comm.append((plan.chosen.cost.comm_bytes, plan.chosen.cost.comm_s))
    assert len(set(comm)) == 1, comm
    assert math.isfinite(comm[0][1])
