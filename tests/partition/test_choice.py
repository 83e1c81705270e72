"""Choosing a split on abstract, cluster-scale data (`jax.ShapeDtypeStruct` values: nothing is
generated), and the planner's interface: forced splits, errors, `explain()`, planning speed."""
from __future__ import annotations

import time

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import claygraph as cg
from claygraph import examples
from claygraph.errors import PartitionError
from claygraph.partition.cost import CostEstimate
from claygraph.partition.shardings import Replicated, Sharded

SDS = jax.ShapeDtypeStruct


def logistic_data(rows: int, features: int) -> cg.Data:
    return cg.Data(X=cg.array(SDS((rows, features), np.float32), "row", "feature"),
                   y=cg.array(SDS((rows,), np.float32), "row"))


def hier_data(rows: int, groups: int, features: int = 3, counts=None) -> cg.Data:
    return cg.Data(X=cg.array(SDS((rows, features), np.float32), "row", "feature"),
                   price=cg.array(SDS((rows,), np.float32), "row"),
                   g=cg.index(SDS((rows,), np.int32), "row", into="product", size=groups, counts=counts),
                   y=cg.array(SDS((rows,), np.float32), "row"))


def by_split(plan) -> dict[tuple[str, ...], CostEstimate]:
    return {tuple(c.split): c for c in plan.candidates}


# -- choices ---------------------------------------------------------------------------------------------

def test_data_too_large_for_one_device_forces_a_split():
    # 2e8 rows x 40 float32 features = 32 GB of X: more than one A10G-24GB holds
    plan = cg.partition(examples.logistic_model, logistic_data(200_000_000, 40),
                        cluster=cg.ClusterSpec.preset("g5", nodes=8))
    cands = by_split(plan)
    none = cands[()]
    assert not none.feasible
    assert none.memory_per_device_bytes > 32e9
    assert "GB" in none.reason and "24" in none.reason, none.reason
    assert plan.split != () and cands[tuple(plan.split)].feasible
    assert cands[tuple(plan.split)].memory_per_device_bytes <= 24e9
    for c in plan.candidates:  # every infeasible candidate says why, every feasible one has no reason
        assert (c.reason is None) == c.feasible, c


def test_no_candidate_fits_raises_with_every_reason():
    small = cg.ClusterSpec(devices_per_node=2, nodes=1, flops=1e12, mem_bandwidth=1e11, mem_capacity=1e6,
                           intra_bandwidth=1e9, intra_latency=1e-5, inter_bandwidth=1e9, inter_latency=1e-4)
    with pytest.raises(PartitionError, match="no candidate split fits") as info:
        cg.partition(examples.logistic_model, logistic_data(1_000_000, 20), cluster=small)
    msg = str(info.value)
    assert "row" in msg and "feature" in msg and "more devices" in msg, msg


def test_tens_of_millions_of_groups_on_a_slow_network_choose_the_group_split():
    plan = cg.partition(examples.hier_logistic_model, hier_data(200_000_000, 20_000_000),
                        cluster=cg.ClusterSpec.preset("g5", nodes=8))
    assert tuple(plan.split) == ("product",), plan.explain()
    cands = by_split(plan)
    # the row split all-reduces the gradients of 2 x 2e7 replicated per-group parameters every evaluation;
    # the group split's stay on their shards (sharded parameters): it moves a few scalars
    assert cands[("row",)].comm_bytes >= 2 * 20_000_000 * 4
    assert cands[("product",)].comm_bytes < 1_000
    assert cands[("product",)].predicted_s < cands[("row",)].predicted_s
    shardings = plan.param_shardings()
    assert shardings["a"] == Sharded("product") == shardings["b"]


def test_one_giant_group_makes_the_group_split_lose():
    """Load imbalance counts: with 90% of the rows in one product, its shard does most of the work."""
    groups, rows = 2_000_000, 200_000_000
    counts = np.full(groups, (rows // 10) // (groups - 1), np.int64)
    counts[0] = rows - counts[1:].sum()
    plan = cg.partition(examples.hier_logistic_model, hier_data(rows, groups, counts=counts),
                        cluster=cg.ClusterSpec.preset("g5", nodes=8))
    cands = by_split(plan)
    assert tuple(plan.split) == ("row",), plan.explain()
    uniform = by_split(cg.partition(examples.hier_logistic_model, hier_data(rows, groups),
                                    cluster=cg.ClusterSpec.preset("g5", nodes=8)))
    assert cands[("product",)].compute_s > 4 * uniform[("product",)].compute_s
    assert cands[("product",)].memory_per_device_bytes > 4 * uniform[("product",)].memory_per_device_bytes


def test_one_device_runs_the_unsplit_program():
    """A split over one device is the same kernels on the same shapes: the unsplit candidate is chosen."""
    for model, data in ((examples.logistic_model, logistic_data(3_000, 6)), (examples.hier_logistic_model,
                                                                          hier_data(4_000, 17))):
        plan = cg.partition(model, data, cluster=cg.ClusterSpec.local(devices=1))
        assert plan.split == (), plan.explain()
        assert len(plan.candidates) > 1


def test_tiny_model_chooses_no_split():
    for cluster in (cg.ClusterSpec.local(devices=4), cg.ClusterSpec.preset("g5", nodes=8),
                    cg.ClusterSpec.preset("p4d")):
        plan = cg.partition(examples.logistic_model, logistic_data(100, 3), cluster=cluster)
        assert plan.split == (), plan.explain()
        assert plan.param_shardings() == {"w": Replicated()}


def test_very_wide_model_on_a_slow_network_chooses_the_feature_split():
    """The row split all-reduces the gradient of a million weights; the feature split sends only the
    logits (w lives sharded along the features, its gradient stays on its shard): on the network it wins."""
    plan = cg.partition(examples.logistic_model, logistic_data(10_000, 1_000_000),
                        cluster=cg.ClusterSpec.preset("g5", nodes=8))
    cands = by_split(plan)
    assert not cands[()].feasible  # 40 GB of X
    assert cands[("row",)].comm_bytes >= 4_000_000
    assert cands[("feature",)].comm_bytes == 10_000 * 4 + 4  # the logits and the potential
    assert tuple(plan.split) == ("feature",), plan.explain()


def test_wide_model_feature_split_all_reduces_the_logits_once():
    plan = cg.partition(examples.logistic_model, logistic_data(10_000, 1_000_000),
                        cluster=cg.ClusterSpec.preset("g5", nodes=8), split=("feature",))
    psums = [c for c in plan.collectives if c.kind == "psum"]
    assert len({c.value for c in psums}) == len(psums), psums


# -- interface ------------------------------------------------------------------------------------------

def test_forcing_an_unknown_split_says_which_splits_exist():
    data = hier_data(1000, 10)
    with pytest.raises(PartitionError) as info:
        cg.partition(examples.hier_logistic_model, data, split=("store",))
    msg = str(info.value)
    assert "('store',)" in msg and "not a candidate" in msg
    for known in ("'row'", "'product'", "'feature'"):
        assert known in msg, msg


def test_forcing_a_refused_split_says_why():
    """Two index columns into one dim: rows can follow only one of them."""
    rows = 1000
    data = cg.Data(X=cg.array(SDS((rows, 2), np.float32), "row", "feature"),
                   src=cg.index(SDS((rows,), np.int32), "row", into="node", size=50),
                   dst=cg.index(SDS((rows,), np.int32), "row", into="node", size=50),
                   y=cg.array(SDS((rows,), np.float32), "row"))

    def model(data):
        with numpyro.plate("node", data.size("node")):
            a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("y", dist.Normal(a[data.src] - a[data.dst], 1.0), obs=data.y)

    plan = cg.partition(model, data, cluster=cg.ClusterSpec.local(devices=2))
    assert ("node",) in plan.refused and ("node",) not in by_split(plan)
    assert "node" in plan.explain() and "refused" in plan.explain()
    with pytest.raises(PartitionError, match="src.*dst|rows can follow only one"):
        cg.partition(model, data, cluster=cg.ClusterSpec.local(devices=2), split=("node",))


@pytest.mark.parametrize("split", [(), ("row",), "row", ["product"], ("feature",)])
def test_forced_split_is_the_plans_split_in_any_spelling(split):
    plan = cg.partition(examples.hier_logistic_model, hier_data(1000, 10), cluster=cg.ClusterSpec.local(devices=2),
                        split=split)
    want = (split,) if isinstance(split, str) else tuple(split)
    assert tuple(plan.split) == want
    assert len(plan.candidates) == 4  # forcing a split still costs every candidate


@pytest.mark.parametrize("split, sharded", [
    ((), {}),
    (("row",), {}),
    (("product",), {"a": "product", "b": "product"}),
    (("feature",), {"w": "feature"}),
])
def test_param_shardings_follow_the_split(split, sharded):
    plan = cg.partition(examples.hier_logistic_model, hier_data(1000, 10), cluster=cg.ClusterSpec.local(devices=2),
                        split=split)
    want = {site: Sharded(sharded[site]) if site in sharded else Replicated() for site in plan.graph.param_shapes}
    assert plan.param_shardings() == want


def test_explain_lists_every_candidate_and_marks_the_chosen_one():
    plan = cg.partition(examples.poisson_crossed_model,
                        examples.make_poisson_crossed(n=10_000_000, products=100_000, stores=500,
                                                      abstract=True).data,
                        cluster=cg.ClusterSpec.preset("p4d", nodes=2))
    text = plan.explain()
    table = text.split("candidates (* = chosen")[1].split("\n\n")[0]  # the candidate table's lines
    rows = {line[2:].split()[0]: line for line in table.splitlines()
            if line[:2] in ("* ", "  ") and line[2:].split() and line[2:].split()[0] in
            {",".join(c.split) or "none" for c in plan.candidates}}
    terms = text.split("where the time goes:")[1].split("\n\n")[0].splitlines()[1:]
    memory = text.split("memory per device (")[1].split("\n\n")[0]
    assert "data shard" in memory and "optimiser or sampler state" in memory and "intermediates" in memory
    assert {t.split()[0] for t in terms} == {",".join(c.split) or "none" for c in plan.candidates if c.feasible}
    assert set(rows) == {",".join(c.split) or "none" for c in plan.candidates} == \
        {"none", "row", "feature", "product", "store"}
    chosen = ",".join(plan.split) or "none"
    assert rows[chosen].startswith("* ")
    assert all(line.startswith("  ") for name, line in rows.items() if name != chosen)
    for c in plan.candidates:
        if c.reason:
            assert c.reason in text
    for site in plan.graph.param_shapes:
        assert site in text
    assert text == plan.explain()  # deterministic


def test_candidates_carry_consistent_figures():
    plan = cg.partition(examples.hier_logistic_model, hier_data(10**7, 10**5),
                        cluster=cg.ClusterSpec.preset("p4d", nodes=2))
    for c in plan.candidates:
        assert c.predicted_s == pytest.approx(c.compute_s + c.comm_s)
        assert c.memory_per_device_bytes > 0 and c.compute_s > 0
        assert (c.comm_bytes == 0) == (c.split == ())
        assert set(c.to_json()) == {"split", "feasible", "memory_per_device_bytes", "compute_s", "comm_bytes",
                                    "comm_s", "predicted_s", "reason", "terms", "memory_terms"}
        # memory part by part adds up to the memory per device
        assert [k for k, _ in c.memory_terms] == ["data", "parameters", "state", "intermediates"]
        assert sum(v for _, v in c.memory_terms) == pytest.approx(c.memory_per_device_bytes, rel=1e-6, abs=1)
        # a GPU's roofline, term by term, adds up to the prediction
        terms = dict(c.terms)
        assert set(terms) == {"flops", "memory", "launch", "collectives"}
        assert sum(terms.values()) == pytest.approx(c.predicted_s)
    best = min((c for c in plan.candidates if c.feasible), key=lambda c: c.predicted_s)
    assert tuple(plan.split) == tuple(best.split)


# -- planning speed ---------------------------------------------------------------------------------------

def many_heads_model(heads: int):
    """`heads` hierarchical logistic regressions on the same rows: about 110 graph nodes each."""

    def model(data):
        for k in range(heads):
            w = numpyro.sample(f"w{k}", dist.Normal(0.0, 1.0).expand([data.size("feature")]).to_event(1))
            s = numpyro.sample(f"s{k}", dist.LogNormal(0.0, 1.0))
            with numpyro.plate("group", data.size("group")):
                a = numpyro.sample(f"a{k}", dist.Normal(0.0, s))
            with numpyro.plate("row", data.size("row")):
                numpyro.sample(f"y{k}", dist.Bernoulli(logits=data.X @ w + a[data.g]), obs=data.y)

    return model


def test_planning_a_thousand_node_graph_takes_well_under_a_second():
    rows = 100_000
    data = cg.Data(X=cg.array(SDS((rows, 20), np.float32), "row", "feature"),
                   y=cg.array(SDS((rows,), np.float32), "row"),
                   g=cg.index(SDS((rows,), np.int32), "row", into="group", size=1000))
    graph = cg.lower(many_heads_model(9), data)
    assert 900 <= len(graph) <= 1500, len(graph)
    cluster = cg.ClusterSpec.preset("p4d", nodes=2)
    cg.partition(graph, data, cluster=cluster)  # warm: rule imports, numba kernels
    seconds = []
    for _ in range(3):
        t = time.perf_counter()
        plan = cg.partition(graph, data, cluster=cluster)
        seconds.append(time.perf_counter() - t)
    assert len(plan.candidates) == 4
    assert min(seconds) < 1.0, seconds


# -- chains x shards: workers per chain ---------------------------------------------------------------

def _session(model, data, workers: int, cluster):
    from types import SimpleNamespace

    plan = cg.partition(model, data, cluster=cluster)
    return SimpleNamespace(runtime=SimpleNamespace(workers=workers, submit=None), plan=plan, data=data, split=None)


def test_mesh_shape_follows_data_size_and_chains():
    from claygraph.examples import logistic_model
    from claygraph.infer.nuts import choose_shards

    g5 = cg.ClusterSpec.preset("g5", nodes=8)
    small = _session(logistic_model, logistic_data(10_000, 10), 8, g5)
    s, options = choose_shards(small, chains=8)
    assert s == 1 and [o["shards"] for o in options] == [1, 2, 4, 8]  # 8 chains at once, no communication
    # 5 x 10^8 rows x 10 features (20 GB of X, 2 GB of y, and the logits and their cotangent) do not fit
    # one 24 GB A10G: one chain needs a group of several devices
    big = _session(logistic_model, logistic_data(500_000_000, 10), 8, g5)
    s, options = choose_shards(big, chains=8)
    fits = {o["shards"]: o["feasible"] for o in options}
    assert not fits[1] and s > 1 and fits[s]
    # every option is costed the same way: waves of chains times the predicted gradient time
    for o in options:
        assert o["waves"] == -(-8 // o["groups"]) and o["score_s"] == pytest.approx(o["waves"] * o["gradient_s"])


def _w7_shapes(rows: int, groups: int) -> cg.Data:
    """W7's shapes (D = 8; Zipf(1.1) rows per product, every product at least one) for planning."""
    from bench.workloads import zipf_counts

    f32 = np.float32
    return cg.Data(X=cg.array(jax.ShapeDtypeStruct((rows, 8), f32), "row", "feature"),
                   y=cg.array(jax.ShapeDtypeStruct((rows,), f32), "row"),
                   g=cg.index(jax.ShapeDtypeStruct((rows,), np.int32), "row", into="group", size=groups,
                              counts=1 + zipf_counts(rows - groups, groups)))


@pytest.mark.parametrize("cluster, rows, groups", [
    (cg.ClusterSpec.local(devices=2), 10_000_000, 2_000_000),
    (cg.ClusterSpec.local(devices=2, link="processes"), 10_000_000, 2_000_000),
    (cg.ClusterSpec.preset("g5", nodes=8), 250_000_000, 50_000_000),
    (cg.ClusterSpec.preset("g5", nodes=8), 50_000_000, 50_000_000),
], ids=["local2", "ray2", "g5x8-50M", "g5x8-50M-one-row-each"])
def test_many_products_choose_the_product_split(cluster, rows, groups):
    """W7: the per-group parameters live sharded, so the product split moves scalars while the row split
    all-reduces every product's gradient; the planner picks the product split on two local devices, on two
    Ray workers and on eight g5 nodes at 50,000,000 products."""
    from bench.workloads import w2_model

    plan = cg.partition(w2_model, _w7_shapes(rows, groups), cluster=cluster)
    assert tuple(plan.split) == ("group",), plan.explain()
    cands = by_split(plan)
    assert cands[("group",)].comm_bytes < 1_000 <= groups * 4 <= cands[("row",)].comm_bytes
