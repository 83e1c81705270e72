"""The cost model against hand-computed figures.

What cost.py counts (its docstring and code): per node the kernel time of its family on the local
shapes of the slowest shard, forward and, where the node depends on the parameters, backward; for
the ROUND spec (data-sheet lines, no measured curves) a dot is max(FLOPs / 1e12, bytes / 1e11) per
pass, a reduction its input bytes / 1e11 forward and a broadcast of 2 bytes per element backward;
every unfused kernel adds 5 us, every program call 100 us. `dot_general` costs 2 x output size x
contracted size FLOPs (again in the backward pass for a differentiated operand), a reduction one
FLOP per input element; memory per device = data shard + parameters x (1 + 12 optimiser/sampler
copies) + every intermediate; communication = one ring all-reduce per forward psum, plus one
all-reduce of the gradients of all replicated parameters, with ClusterSpec's alpha-beta formulas.

The main model here is the smallest that has the parts that matter: `X @ w` summed over rows, with
a Normal prior on `w`. With 1e6 rows and 100 features, the terms that involve rows dwarf the rest
(the prior's few nodes over 100 features), which the tests bound instead of counting one by one.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from models_for_tests import hier

import claygraph as cg
from claygraph import examples
from claygraph.partition import cost
from claygraph.partition.plan import STATE_COPIES

SDS = jax.ShapeDtypeStruct
N, D = 1_000_000, 100
F32 = 4

# Round numbers: 1 TFLOP/s, 100 GB/s memory, 10 GB per device; 1 GB/s + 10 us inside a node,
# 1 GB/s per node + 100 us between nodes.
ROUND = dict(devices_per_node=4, nodes=1, flops=1e12, mem_bandwidth=1e11, mem_capacity=1e10,
             intra_bandwidth=1e9, intra_latency=1e-5, inter_bandwidth=1e9, inter_latency=1e-4)


def spec(**changes) -> cg.ClusterSpec:
    return cg.ClusterSpec(**(ROUND | changes))


def linear_sum_model(data):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([data.size("feature")]).to_event(1))
    numpyro.factor("lik", -jnp.sum(data.X @ w))


def linear_sum_data(rows=N, features=D) -> cg.Data:
    return cg.Data(X=cg.array(SDS((rows, features), np.float32), "row", "feature"))


def estimates(rows=N, features=D, cluster=None, split=None) -> dict[tuple[str, ...], cost.CostEstimate]:
    plan = cg.partition(linear_sum_model, linear_sum_data(rows, features), cluster=cluster or spec(), split=split)
    return {tuple(c.split): c for c in plan.candidates}


def ring_allreduce(nbytes, devices, bandwidth, latency):
    """2(S-1) latency + 2(S-1)/S bytes / bandwidth."""
    return 2 * (devices - 1) * latency + 2 * (devices - 1) / devices * nbytes / bandwidth


# Everything the prior adds is over `feature` (100 entries): a few KB, a few thousand FLOPs.
SMALL_BYTES = 64 * D
SMALL_FLOPS = 40 * D
SMALL_SECONDS = 3 * 30 * 3 * D * F32 / 1e11 + 30 * 5e-6  # 30 such nodes, 3 operands, 3 passes; their kernels
CALL_S, KERNEL_S = 1e-4, 5e-6  # KernelRates.nominal's fixed costs


def test_row_split_flops_are_the_local_matmul_twice_and_row_sum():
    c = estimates()[("row",)]
    local = N // 4
    # dot_general: 2 x 250,000 x 100 per shard forward, the same again for w's gradient; reduce_sum
    # over the shard's 250,000 logits (its backward is a broadcast, no FLOPs)
    # the fused program runs the prior's few nodes once per row block (48 of them: the node's four
    # devices share BLOCK_BYTES, 2 MiB of rows each)
    assert c.flops == pytest.approx(2 * 2 * local * D + local, abs=64 * SMALL_FLOPS)


def test_unsplit_and_feature_split_flops():
    est = estimates()
    assert est[()].flops == pytest.approx(2 * 2 * N * D + N, abs=3 * SMALL_FLOPS)
    # feature split: each shard contracts its 25 features over every row; the row sum of the
    # partial logits runs on every shard (it is linear, so it stays partial)
    assert est[("feature",)].flops == pytest.approx(2 * 2 * N * (D // 4) + N, abs=3 * SMALL_FLOPS)


def test_padding_is_counted_on_the_largest_shard():
    est = estimates(rows=N + 2, features=D + 2)
    local_rows, local_features = (N + 2 + 3) // 4, (D + 2 + 3) // 4  # 250,001 and 26
    assert est[("row",)].flops == pytest.approx(4 * local_rows * (D + 2) + local_rows, abs=3 * SMALL_FLOPS)
    assert est[("feature",)].flops == pytest.approx(4 * N * local_features + N, abs=3 * SMALL_FLOPS)
    assert est[("row",)].memory_per_device_bytes >= local_rows * (D + 2) * F32


def test_dot_general_flops_per_shard():
    graph = cg.lower(linear_sum_model, linear_sum_data())
    (dot,) = [n for n in graph.nodes() if n.primitive == "dot_general"]
    assert cost.node_flops(dot, [(N // 4, D), (D,)], [(N // 4,)]) == 2 * (N // 4) * D
    assert cost.node_flops(dot, [(N, D // 4), (D // 4,)], [(N,)]) == 2 * N * (D // 4)


def test_batched_dot_general_flops():
    def model(data):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([data.size("feature")]).to_event(1))
        numpyro.factor("lik", -jnp.sum(jnp.einsum("nd,nd->n", data.X, data.X * w)))

    graph = cg.lower(model, linear_sum_data(1000, 10))
    (dot,) = [n for n in graph.nodes() if n.primitive == "dot_general"]
    assert cost.node_flops(dot, [(1000, 10), (1000, 10)], [(1000,)]) == 2 * 1000 * 10


def test_compute_time_is_a_memory_bound_roofline():
    """Unsplit on 4 devices (the plain program): every pass of the dot streams X from memory."""
    c = estimates()[()]
    # dot_general moves X, w and the logits: 4.0e8 bytes at 1e11 B/s is 4.0 ms, far above its 2e8
    # FLOPs at 1e12 FLOP/s (0.2 ms), forward and again backward; the row sum reads N floats forward
    # and broadcasts 2 bytes per element backward; 3 kernels (2 dots, 1 reduction) and one call
    dot = (N * D + D + N) * F32 / 1e11
    row_sum = N * F32 / 1e11 + 2 * N / 1e11
    assert c.compute_s == pytest.approx(CALL_S + 2 * dot + row_sum + 3 * KERNEL_S, abs=SMALL_SECONDS)


def test_compute_bound_when_flops_are_slow():
    c = estimates(cluster=spec(flops=1e9))[()]
    assert c.compute_s == pytest.approx(2 * 2 * N * D / 1e9, rel=1e-3)


def test_a_fused_row_split_reads_the_data_once_and_runs_blocks_from_cache():
    """The row split of a row-separable potential runs in cached row blocks (claygraph.partition.fused):
    X's shard is read from memory once, then each block's dot runs forward and backward on it."""
    c = estimates()[("row",)]
    local = N // 4
    blocks = 16  # 250,000 rows of 400 bytes in ~8 MiB blocks: 16 blocks of 15,625 rows divide them
    rows = local // blocks
    x_read = local * D * F32 / 1e11
    dots = 2 * (rows * D + D + rows) * F32 / 1e11 * blocks
    row_sum = (rows * F32 / 1e11 + 2 * rows / 1e11) * blocks
    kernels = 3 * blocks * KERNEL_S
    assert c.compute_s == pytest.approx(CALL_S + x_read + dots + row_sum + kernels, abs=blocks * SMALL_SECONDS)


def test_the_backward_elementwise_work_runs_inside_a_multiply_reduce_gradient(monkeypatch):
    """Where the gradient of X @ w is the emitter's multiply-reduce (kernels.FUSED_WIDTHS), XLA fuses the
    elementwise chain that computes r into that loop over X: the backward pass costs the slower of the
    two. Other widths run r @ X as a dot of its own after the chain: their sum."""
    from claygraph.partition.plan import shape_fn

    plan, _ = logistic_estimates(100_000, 200)  # the feature split over 4 devices: X of width 50 per device
    cand = plan.candidate(("feature",))
    graph, prop, shape, rates = plan.graph, cand.propagation, shape_fn(cand.layout), plan.cluster.rates
    dot = next(n for n in graph.nodes() if cost.family(n) == "matmul")
    assert cost._multiply_reduce_gradient(dot, [(100_000, 50), (50,)], [False, True])
    assert not cost._multiply_reduce_gradient(dot, [(100_000, 500), (500,)], [False, True])
    assert not cost._multiply_reduce_gradient(dot, [(100_000, 50), (50,)], [False, False])
    hidden = cost.compute(graph, prop, shape, rates)
    monkeypatch.setattr(cost.kernels, "FUSED_WIDTHS", range(0))
    summed = cost.compute(graph, prop, shape, rates)
    assert hidden.forward_s == summed.forward_s and hidden.flops == summed.flops
    assert hidden.seconds < summed.seconds


def test_gather_and_scatter_count_the_bytes_they_move():
    """a[g] over 1e6 rows: the gather writes 4 bytes and reads a 4-byte index per row; its backward
    (a depends on the parameters) is a scatter-add of the same bytes."""
    from claygraph.partition.cluster import KernelRates

    graph = cg.lower(examples.hier_logistic_model, examples.make_hier_logistic(
        n=1000, products=10, abstract=True).data)
    gathers = [n for n in graph.nodes() if cost.family(n) == "gather"]
    assert gathers
    node = gathers[0]
    ins = [graph.value(i) for i in node.inputs]
    outs = [graph.value(o) for o in node.outputs]
    rates = KernelRates.nominal(1e12, 1e11)
    c = cost.node_cost(node, ins, outs, [(20,), (N, 1)], [(N,)], [True, False], rates)
    moved = N * 4 + N * 4
    assert c.forward_s == pytest.approx(moved / 5e10) and c.backward_s == pytest.approx(moved / 2.5e10)
    frozen = cost.node_cost(node, ins, outs, [(20,), (N, 1)], [(N,)], [False, False], rates)
    assert frozen.backward_s == 0.0


def test_memory_per_device_is_data_shard_params_with_state_and_intermediates():
    assert STATE_COPIES == 12
    est = estimates()
    params = D * F32 * (1 + 12)
    # row split: X's shard (250,000 x 100), w with 12 copies of state, the shard's logits
    row = est[("row",)].memory_per_device_bytes
    assert 0 <= row - (N // 4 * D * F32 + params + N // 4 * F32) <= SMALL_BYTES
    # unsplit: all of X and all the logits
    none = est[()].memory_per_device_bytes
    assert 0 <= none - (N * D * F32 + params + N * F32) <= SMALL_BYTES
    # feature split: X's 25 columns, a quarter of w (with state), and all the partial logits
    feature = est[("feature",)].memory_per_device_bytes
    assert 0 <= feature - (N * (D // 4) * F32 + params // 4 + N * F32) <= SMALL_BYTES


def test_memory_decides_feasibility():
    row = estimates()[("row",)].memory_per_device_bytes
    below = estimates(cluster=spec(mem_capacity=row - 1), split=("row",))
    assert not below[("row",)].feasible and "GB per device" in below[("row",)].reason
    assert estimates(cluster=spec(mem_capacity=row), split=("row",))[("row",)].feasible


def test_row_split_communication():
    """One psum of the scalar potential, one all-reduce of w's gradient (D floats)."""
    c = estimates()[("row",)]
    assert c.comm_bytes == F32 + D * F32
    assert c.collectives == 2
    assert c.comm_s == pytest.approx(ring_allreduce(F32, 4, 1e9, 1e-5) + ring_allreduce(D * F32, 4, 1e9, 1e-5),
                                     rel=1e-12)
    assert c.predicted_s == pytest.approx(c.compute_s + c.comm_s, rel=1e-12)


def test_feature_split_of_a_linear_potential_sends_the_scalar_only():
    """The partial logits are only summed (linear), so they stay partial until the output; w lives
    sharded along the features and its gradient stays on its shard: only the potential is all-reduced."""
    c = estimates()[("feature",)]
    assert c.comm_bytes == F32 and c.collectives == 1
    assert c.comm_s == pytest.approx(ring_allreduce(F32, 4, 1e9, 1e-5), rel=1e-12)


def test_no_split_communicates_nothing():
    c = estimates()[()]
    assert c.comm_bytes == 0 and c.comm_s == 0.0 and c.collectives == 0
    assert c.predicted_s == c.compute_s


def test_collectives_across_nodes_use_the_network_share_of_each_device():
    """Two nodes of 4: a ring over 8 devices crosses the network, each device getting 1/4 of it."""
    c = estimates(cluster=spec(nodes=2))[("row",)]
    want = sum(ring_allreduce(b, 8, 1e9 / 4, 1e-4) for b in (F32, D * F32))
    assert c.comm_s == pytest.approx(want, rel=1e-12)


# -- the logistic example: partial logits made whole ------------------------------------------------------

def logistic_estimates(rows, features, devices=4):
    data = cg.Data(X=cg.array(SDS((rows, features), np.float32), "row", "feature"),
                   y=cg.array(SDS((rows,), np.float32), "row"))
    plan = cg.partition(examples.logistic_model, data, cluster=spec(devices_per_node=devices))
    return plan, {tuple(c.split): c for c in plan.candidates}


def test_logistic_row_split_sends_the_gradient_of_w_and_the_scalar():
    _, est = logistic_estimates(1000, 10)
    assert est[("row",)].comm_bytes == 10 * F32 + F32
    assert est[("row",)].collectives == 2


def test_logistic_feature_split_charges_what_it_lists():
    plan, est = logistic_estimates(1000, 12)
    prop = plan.candidate(("feature",)).propagation
    assert all(c.kind == "psum" for c in prop.collectives)
    assert {c.nbytes for c in prop.collectives} == {1000 * F32, F32}  # the logits, and the potential
    c = est[("feature",)]  # w's gradient stays on its shard
    assert c.comm_bytes == sum(col.nbytes for col in prop.collectives)
    assert c.comm_s == pytest.approx(sum(ring_allreduce(col.nbytes, 4, 1e9, 1e-5) for col in prop.collectives),
                                     rel=1e-12)


def test_logistic_feature_split_all_reduces_the_partial_logits_once():
    _, est = logistic_estimates(1000, 12)
    assert est[("feature",)].comm_bytes == 1000 * F32 + F32  # the logits and the potential


def test_an_all_gather_costs_itself_and_its_transpose():
    """A fallback gathers a split value: counted in both passes with the ring all-gather formula."""

    def model(data):
        m = numpyro.sample("m", dist.Normal(0.0, 1.0))
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("y", dist.Normal(m + jnp.cumsum(data.x) * 0.0, 1.0), obs=data.y)

    rows = 4000
    data = cg.Data(x=cg.array(SDS((rows,), np.float32), "row"), y=cg.array(SDS((rows,), np.float32), "row"))
    plan = cg.partition(model, data, cluster=spec(), split=("row",))
    gathers = [c for c in plan.collectives if c.kind == "all_gather"]
    assert [g.nbytes for g in gathers] == [rows // 4 * F32]  # the shard's block of x
    c = plan.chosen.cost
    total = rows * F32
    gather_s = 3 * 1e-5 + 3 / 4 * total / 1e9
    psums = [col for col in plan.collectives if col.kind == "psum"]
    assert c.comm_bytes == 2 * total + sum(p.nbytes for p in psums) + F32  # + m's gradient
    assert c.comm_s == pytest.approx(2 * gather_s + sum(ring_allreduce(p.nbytes, 4, 1e9, 1e-5) for p in psums)
                                     + ring_allreduce(F32, 4, 1e9, 1e-5), rel=1e-12)
    assert c.collectives == 2 + len(psums) + 1


@pytest.mark.parametrize("width,slow", [(10, False), (64, False), (500, True), (5000, True), (20_000, False)])
def test_a_matvec_gradient_runs_at_the_vecmat_rate_only_where_it_was_measured_slower(width, slow):
    """r @ X (w's gradient in X @ w): the vecmat curve for widths of hundreds to thousands; a narrow X's
    gradient is a multiply-reduce or a fast dot, a very wide one streams like the forward dot."""
    from types import SimpleNamespace

    node = SimpleNamespace(params={"dimension_numbers": (((1,), (0,)), ((), ()))})
    back = cost._dot_backward(node, [(1000, width), (width,)], [False, True], one=1.0, vecmat=3.0)
    assert back == (3.0 if slow else 1.0)
    assert cost._dot_backward(node, [(1000, width), (width,)], [False, False], one=1.0, vecmat=3.0) == 0.0


def test_a_group_split_that_runs_in_row_blocks_is_costed_per_block():
    """Its shards' rows are blocked as the row split's are (fused.py): the same blocks, about the same time."""
    n, groups = 2_000_000, 20_000
    data = cg.Data(X=cg.array(SDS((n, 10), np.float32), "row", "feature"), y=cg.array(SDS((n,), np.float32), "row"),
                   g=cg.index(SDS((n,), np.int32), "row", into="group", size=groups))
    plan = cg.partition(hier, data, cluster=cg.ClusterSpec.local(devices=2))
    from claygraph.partition.blocks import row_split_of
    from claygraph.partition.plan import enumerate_splits, shape_fn

    rows = row_split_of(plan.graph, enumerate_splits(plan.graph)[0])
    group, row = plan.candidate(("group",)), plan.candidate(("row",))
    blocked = cost.fused_blocks(plan.graph, group.propagation, rows, 2, shape_fn(group.layout))
    assert blocked is not None and blocked[0] == "row" and blocked[2] >= 4
    assert blocked[1:] == cost.fused_blocks(plan.graph, row.propagation, rows, 2, shape_fn(row.layout))[1:]
    assert group.cost.compute_s == pytest.approx(row.cost.compute_s, rel=0.1)


def test_a_sharded_parameter_moves_nothing_and_its_gradient_stays_on_its_shard():
    """A group split's per-group parameter lives sharded in the internal layout: the program neither moves
    it nor all-reduces its gradient, so the group split's traffic does not grow with the groups, while the
    row split (a replicated) all-reduces a's whole gradient."""
    n = 100_000
    costs = {}
    for groups in (5_000, 50_000):
        data = cg.Data(X=cg.array(SDS((n, 10), np.float32), "row", "feature"),
                       y=cg.array(SDS((n,), np.float32), "row"),
                       g=cg.index(SDS((n,), np.int32), "row", into="group", size=groups))
        plan = cg.partition(hier, data, cluster=spec())
        costs[groups] = plan.candidate(("group",)).cost, plan.candidate(("row",)).cost
    (g5, r5), (g50, r50) = costs[5_000], costs[50_000]
    assert g5.comm_bytes == g50.comm_bytes < 1_000
    assert r5.comm_bytes >= 5_000 * F32 and r50.comm_bytes >= 50_000 * F32


def test_a_feature_major_matvec_is_costed_on_its_own_curves():
    """Up to 16 features, X @ w reads X held feature-major (storage.py): the dot and w's gradient are
    read from the matvec_t and vecmat_t curves (timed one call each: this program runs them once per call,
    not in a loop over row blocks); wider X keeps the row-major curves."""

    from claygraph.partition.cluster import Curve, KernelRates

    base = KernelRates.nominal(1e12, 1e11)
    slow = base.with_curves(matvec_t_call=Curve.line(1e10), vecmat_t_call=Curve.line(1e10))
    assert unblocked_is_unchanged_by_loop_curves(base)

    def unsplit(rates, features):
        return estimates(features=features, cluster=spec(kernels=rates))[()].compute_s

    moved = (N * 8 + 8 + N) * F32  # X, w and the logits
    assert unsplit(slow, 8) - unsplit(base, 8) == pytest.approx(2 * moved * (1 / 1e10 - 1 / 1e11), rel=1e-6)
    assert unsplit(slow, 32) == unsplit(base, 32)


def unblocked_is_unchanged_by_loop_curves(base) -> bool:
    """A program that is not run in row blocks never reads the in-loop product curves."""

    from claygraph.partition.cluster import Curve

    loop = base.with_curves(matvec_t=Curve.line(1e9), vecmat_t=Curve.line(1e9), matvec=Curve.line(1e9),
                   vecmat=Curve.line(1e9))
    for features in (8, 32):
        a = estimates(features=features, cluster=spec(kernels=base))[()].compute_s
        b = estimates(features=features, cluster=spec(kernels=loop))[()].compute_s
        if a != b:
            return False
    return True


def test_the_working_set_counts_only_the_values_the_program_writes_to_memory():
    """A chain of elementwise ops between two kernels stays in registers: only values that a kernel that
    does not fuse (dot, gather, reduction) reads, or that no node reads, count toward the working set."""
    from claygraph.partition.plan import shape_fn

    plan = cg.partition(examples.hier_logistic_model, examples.make_hier_logistic(
        n=1000, products=10, abstract=True).data, cluster=spec(), split=())
    graph, prop = plan.graph, plan.chosen.propagation
    shape = shape_fn(plan.chosen.layout)
    every = sum(graph.value(o).nbytes for n in graph.nodes() for o in n.outputs)
    kept = cost.materialized_bytes(graph, prop, shape)
    fused_inside = [o for n in graph.nodes() if cost.family(n) in cost.FUSED for o in n.outputs
                    if graph.consumers(o) and all(cost.family(u) in cost.FUSED for u in graph.consumers(o))]
    assert fused_inside and kept == pytest.approx(every - sum(graph.value(o).nbytes for o in fused_inside))


def test_an_elementwise_value_costs_a_residual_only_where_the_program_stores_it():
    """A value the compiled program writes to memory is written forward and read backward once more; one
    inside a fused chain is recomputed by the backward fusions and costs its arithmetic alone; a value no
    gradient needs costs nothing backward either way."""
    from claygraph.ir.graph import Node, Value
    from claygraph.partition.cluster import KernelRates

    rates = KernelRates.nominal(1e12, 1e11)
    v = Value(1, (N,), np.dtype(np.float32), ("row",))
    node = Node(0, jax.lax.mul_p, (1, 1), (2,))

    def backward(stored, need=True):
        return cost.node_cost(node, [v, v], [v], [(N,), (N,)], [(N,)], [need, need], rates, stored=stored).backward_s

    residual = rates.time("stream", 2 * v.nbytes)
    assert backward(True) == pytest.approx(backward(False) + residual) and backward(False) > 0
    assert backward(True, need=False) == backward(False, need=False) == 0.0
    # and the graph's stored values are the ones the working set counts
    plan, _ = logistic_estimates(10_000, 8)
    kept = cost.materialized(plan.graph)
    assert kept and all(o in {x for n in plan.graph.nodes() for x in n.outputs} for o in kept)


def test_a_transcendental_function_costs_its_measured_weight_and_its_derivative_backward():
    """exp's derivative is its value (an elementwise op's backward), lgamma's is digamma (weighed on its own),
    a function in neither table (bessel_i0e) costs its own weight again."""
    from dataclasses import replace

    from claygraph.ir.graph import Node, Value
    from claygraph.partition.cluster import KernelRates

    rates = replace(KernelRates.nominal(1e12, 1e11), weights=(("digamma", 9.0), ("lgamma", 8.0), ("log", 0.5)))
    v = Value(1, (N,), np.dtype(np.float32), ("row",))

    def cost_of(name):
        node = Node(0, getattr(jax.lax, f"{name}_p"), (1,), (2,))
        return cost.node_cost(node, [v], [v], [(N,)], [(N,)], [True], rates)

    unit = N / (1e12 / 10.0)  # one element on the nominal transcendental line (10 FLOPs each)
    elementwise_back = cost.BACKWARD_ELEMENTWISE * rates.time("stream", cost.STREAM_BYTES_PER_OP * N)
    assert (cost_of("exp").forward_s, cost_of("exp").backward_s) == (pytest.approx(unit),
                                                                     pytest.approx(elementwise_back))
    assert cost_of("log").forward_s == pytest.approx(0.5 * unit)
    assert cost_of("log").backward_s == pytest.approx(elementwise_back)
    bessel = cost_of("bessel_i0e")
    assert bessel.backward_s == pytest.approx(bessel.forward_s) == pytest.approx(unit)
    lg = cost_of("lgamma")
    assert (lg.forward_s, lg.backward_s) == (pytest.approx(8 * unit), pytest.approx(9 * unit))


def test_a_blocked_program_reads_the_in_loop_product_curves_and_an_unblocked_one_the_one_call_curves():
    """The row split of X @ w over 1e6 rows runs in row blocks (fused.py): its products are the in-loop
    curves' and the one-call curves do not touch it; the feature split runs once per call: the reverse."""

    from claygraph.partition.cluster import Curve, KernelRates

    base = KernelRates.nominal(1e12, 1e11)
    slow_call = base.with_curves(matvec_call=Curve.line(1e9), vecmat_call=Curve.line(1e9))
    slow_loop = base.with_curves(matvec=Curve.line(1e9), vecmat=Curve.line(1e9))

    def compute(rates, split):
        return estimates(cluster=spec(kernels=rates), split=split)[split].compute_s

    assert compute(slow_call, ("row",)) == compute(base, ("row",)) < compute(slow_loop, ("row",))
    assert compute(slow_loop, ("feature",)) == compute(base, ("feature",)) < compute(slow_call, ("feature",))


@pytest.mark.parametrize("overlap", [1.0, 0.68, 0.0])
def test_a_blocked_program_reads_its_data_while_the_forward_kernels_run(overlap):
    """Each block comes from memory while the forward kernels run on it: over the blocks, the share
    `block_overlap` of the data read (or of the forward kernels, the shorter) hides under the other; with 1,
    the two are a roofline (the slower of the two), with 0 they add; the backward kernels add. Only the
    read's rate moves here (the block_read curve at the whole shard's size)."""

    from claygraph.partition.blocks import row_split_of
    from claygraph.partition.cluster import Curve
    from claygraph.partition.plan import enumerate_splits, shape_fn

    plan, _ = logistic_estimates(1_000_000, 100)
    cand = plan.candidate(("row",))
    graph, prop, shape = plan.graph, cand.propagation, shape_fn(cand.layout)
    rows = row_split_of(graph, enumerate_splits(graph)[0])
    base = dataclasses.replace(plan.cluster.rates, block_overlap=overlap)
    shard = 250_000 * 100 * F32

    def with_read(seconds):
        # X's whole shard (100 MB) read in blocks in `seconds`
        curve = Curve((1e3, shard / 4, float(shard)), (1e-8, shard / 4 / 1e11, seconds))
        return cost.gradient_compute(graph, prop, shape, base.with_curves(block_read=curve), 4, rows)

    def expected(c, rest):
        return c.read_s + c.forward_s - overlap * min(c.read_s, c.forward_s) + rest

    fast = with_read(1e-6)
    rest = fast.seconds - fast.forward_s - fast.read_s + overlap * fast.read_s  # the backward kernels
    assert fast.read_s < fast.forward_s
    for seconds in (fast.forward_s / 2, 3 * fast.forward_s, 4 * fast.forward_s):
        c = with_read(seconds)
        assert c.forward_s == pytest.approx(fast.forward_s)  # the read moves nothing else
        assert c.seconds == pytest.approx(expected(c, rest))
    half, slow, slower = with_read(fast.forward_s / 2), with_read(3 * fast.forward_s), with_read(4 * fast.forward_s)
    if overlap == 1.0:  # a roofline: a read shorter than the kernels is free, a longer one is all there is
        assert half.seconds == pytest.approx(fast.seconds)
        assert slow.seconds == pytest.approx(fast.seconds - fast.forward_s + slow.read_s)
    assert slower.seconds - slow.seconds == pytest.approx(slower.read_s - slow.read_s)  # past them, the read adds
    assert half.seconds - fast.seconds == pytest.approx((1 - overlap) * (half.read_s - fast.read_s))


def test_an_unblocked_product_reads_between_its_narrow_and_wide_curves_by_the_width_of_x():
    """XLA's one-call dot streams long rows faster: X @ w over 64 columns or fewer reads matvec_call, over
    PRODUCT_WIDE_COLS or more matvec_wide_call, and in between their log-width mix; r @ X alike from 512."""

    from claygraph.ir.graph import Node, Value
    from claygraph.partition.cluster import PRODUCT_COLS, PRODUCT_WIDE_COLS, Curve, KernelRates

    rates = KernelRates.nominal(1e15, 1e11).with_curves(matvec_wide_call=Curve.line(4e11),
                    vecmat_wide_call=Curve.line(2e11))
    nbytes = 1e9

    def dot(width, loop=False):
        rows = int(nbytes / 4 / width)
        x, w, z = (Value(1, (rows, width), np.dtype(np.float32), ("row", "feature")),
                   Value(2, (width,), np.dtype(np.float32), ("feature",)), Value(3, (rows,), np.dtype(np.float32),
                                                                           ("row",)))
        node = Node(0, jax.lax.dot_general_p, (1, 2), (3,), params={"dimension_numbers": (((1,), (0,)), ((), ()))})
        moved = (rows * width + width + rows) * 4
        c = cost.node_cost(node, [x, w], [z], [(rows, width), (width,)], [(rows,)], [False, True], rates, loop=loop)
        return c.forward_s, c.backward_s, moved

    t, _, moved = dot(PRODUCT_COLS["matvec"])
    assert t == pytest.approx(moved / 1e11)
    t, _, moved = dot(PRODUCT_WIDE_COLS)
    assert t == pytest.approx(moved / 4e11)
    t, _, moved = dot(1024)  # 1024 = 64 x 16, 8192 = 64 x 128: 4/7 of the way on a log scale
    assert t == pytest.approx(moved / 1e11 + 4 / 7 * (moved / 4e11 - moved / 1e11))
    t, _, moved = dot(PRODUCT_WIDE_COLS, loop=True)  # a blocked program's products: the in-loop curve only
    assert t == pytest.approx(moved / 1e11)
    assert PRODUCT_COLS["vecmat"] == 512
    _, back, moved = dot(2048)  # r @ X (w's gradient) from 512 columns: 2048 is half the way to 8192 (log scale)
    assert back == pytest.approx(moved / 1e11 + 0.5 * (moved / 2e11 - moved / 1e11))


def test_gathers_scatters_and_reductions_read_in_loop_curves_when_blocked_and_one_call_curves_otherwise():
    """As the products do: W3's model split by rows runs in row blocks (its gathers a[g], b[g], their
    scatter-add gradients and its sums inside the loop), split by features it runs once per call; a
    parameter's relayout (the feature split's w, moved in and out once per call) reads the one-call
    curves in either."""

    from claygraph.partition.cluster import Curve, KernelRates

    n, groups = 1_000_000, 1_000
    data = cg.Data(X=cg.array(SDS((n, 10), np.float32), "row", "feature"), y=cg.array(SDS((n,), np.float32), "row"),
                   g=cg.index(SDS((n,), np.int32), "row", into="group", size=groups))
    base = KernelRates.nominal(1e12, 1e11)
    families = ("gather", "scatter", "reduce")
    slow_loop = base.with_curves(**{f: Curve.line(1e8) for f in families})
    slow_call = base.with_curves(**{f + "_call": Curve.line(1e8) for f in families})

    def compute(rates, split):
        plan = cg.partition(hier, data, cluster=spec(kernels=rates), split=split)
        return {tuple(c.split): c for c in plan.candidates}[split].compute_s

    row, feature = ("row",), ("feature",)
    assert compute(slow_call, row) == compute(base, row) < compute(slow_loop, row)
    assert compute(slow_loop, feature) == compute(base, feature) < compute(slow_call, feature)
