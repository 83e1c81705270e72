"""Parameters of a split dim live sharded in the internal layout: the program takes and returns them so,
its compiled HLO moves nothing of the split dim's size between devices, the optimiser's state stays
sharded, and values change layout only on the way in and out (exactly)."""
import re

import jax
import numpy as np
import pytest
from models_for_tests import hier_logistic, random_params, wide_logistic

import claygraph as cg
from claygraph.partition.params import Pieces, assemble, merge

COLLECTIVE = re.compile(r"=\s*(.*?)\s(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(-start)?\(")
SHAPE = re.compile(r"[a-z]\d*\[([\d,]*)\]")


def collective_operands(hlo: str) -> list[tuple[str, tuple[int, ...]]]:
    """(kind, shape) of every array a collective of the compiled HLO returns (a tuple's each element)."""
    out = []
    for line in hlo.splitlines():
        m = COLLECTIVE.search(line)
        if m:
            for dims in SHAPE.findall(m.group(1)):
                out.append((m.group(2), tuple(int(d) for d in dims.split(",") if d)))
    return out


def compiled_gradient(case, split, devices=2):
    plan = cg.partition(case.model, case.data, cluster=cg.ClusterSpec.local(devices=devices), split=split)
    program = cg.compile(plan)
    ctx = program.context()
    f = jax.jit(jax.value_and_grad(ctx.internal))
    params = ctx.params_in(random_params(case.model, case.data, 0))
    return program, ctx, params, f.lower(params, ctx.data).compile().as_text()


def test_the_parser_finds_the_collectives_of_a_row_split():
    """The row split all-reduces the per-group parameter's whole gradient: the parser must see it."""
    case = hier_logistic(rows=700, groups=301, features=3, kind="uniform", seed=0)
    _, _, _, hlo = compiled_gradient(case, ("row",))
    sizes = [int(np.prod(s)) for _, s in collective_operands(hlo)]
    assert 301 in sizes, collective_operands(hlo)


@pytest.mark.parametrize("make, split, dim", [
    (lambda: hier_logistic(rows=700, groups=301, features=3, kind="skewed", seed=0), ("product",), "product"),
    (lambda: wide_logistic(rows=9, features=301, seed=0), ("feature",), "feature"),
])
def test_no_collective_of_a_split_moves_an_array_of_the_split_dim(make, split, dim):
    case = make()
    program, ctx, params, hlo = compiled_gradient(case, split)
    found = collective_operands(hlo)
    assert found, "the split program has no collective at all (the potential's psum must be there)"
    lay = program.params.layout[dim]
    big = {lay.size, lay.internal, lay.local}
    for kind, shape in found:
        assert not big & set(shape), f"{kind} of shape {shape} moves an array along {dim!r} ({lay})"
    # and the sharded sites really are sharded on the devices
    sharded = [k for k, s in program.params.sites.items() if s.sharded]
    assert sharded
    for k in sharded:
        assert {tuple(s.data.shape) for s in params[k].addressable_shards} != {params[k].shape}


def test_values_enter_and_leave_the_internal_layout_exactly():
    case = hier_logistic(rows=50, groups=13, features=2, kind="skewed", seed=2)
    plan = cg.partition(case.model, case.data, cluster=cg.ClusterSpec.local(devices=3), split=("product",))
    layout = cg.compile(plan).params
    user = random_params(case.model, case.data, 5)
    internal = layout.to_internal(user)
    assert any(internal[k].shape != np.shape(user[k]) for k in user)  # padded to whole shards
    back = layout.to_user(internal)
    for k in user:
        np.testing.assert_array_equal(back[k], user[k])
    with pytest.raises(cg.errors.PartitionError, match="shape"):
        layout.to_internal({k: np.zeros(3) for k in user})


def test_pieces_of_several_processes_make_the_whole_array():
    whole = np.arange(24, dtype=np.float32).reshape(6, 4)
    parts = [Pieces((6, 4), whole.dtype, (((np.s_[0:3], np.s_[:]), whole[0:3]),)),
             Pieces((6, 4), whole.dtype, (((np.s_[3:6], np.s_[:]), whole[3:6]),))]
    np.testing.assert_array_equal(assemble(parts), whole)
    merged = merge([{"a": parts[0], "n": 7}, {"a": parts[1], "n": 7}])
    np.testing.assert_array_equal(merged["a"], whole)
    assert merged["n"] == 7
    assert merge([{"n": 1}, {"n": 2}]) == {"n": 1}  # nothing sharded: worker 0's result


def test_map_keeps_its_state_sharded_on_the_devices(monkeypatch):
    """L-BFGS's params and memory of a per-group site stay sharded between chunks (as FSDP/ZeRO keep
    optimiser state), and MAP on the split equals MAP on one device."""
    import importlib

    map_module = importlib.import_module("claygraph.infer.map")  # (cg.infer.map is the function)
    from bench.workloads import w2_data, w2_model  # non-centred with a learnt scale: its MAP is well posed

    data = w2_data(2_000, 61, 3, seed=1)
    ref = cg.infer.map(w2_model, data)
    seen = {}
    chunk = map_module._lbfgs_chunk

    def spy(ctx, *args):
        out = chunk(ctx, *args)
        state = next((v for k, v in ctx.resident.items() if k[0] == "lbfgs"), None)
        if state is not None:
            a = max(state.params.values(), key=lambda x: x.size)  # the per-group site
            seen["params"] = a.sharding.spec
            leaves = [x for x in jax.tree.leaves(state.opt) if hasattr(x, "addressable_shards") and x.ndim >= 1
                      and x.size >= a.size]
            seen["memory"] = [(x.shape, tuple(x.addressable_shards[0].data.shape)) for x in leaves]
        return out

    monkeypatch.setattr(map_module, "_lbfgs_chunk", spy)
    res = cg.infer.map(w2_model, data, runtime=cg.runtime.Local(devices=2), split=("group",))
    assert seen["params"] == jax.sharding.PartitionSpec("shards")
    assert seen["memory"] and all(local != whole for whole, local in seen["memory"]), seen["memory"]
    assert ref.converged and res.converged, (ref.message, res.message)
    assert abs(res.objective - ref.objective) <= 1e-4 * abs(ref.objective)
    for k in ref.params:
        np.testing.assert_allclose(res.params[k], ref.params[k], rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("split", [("product",), ("row",), ("feature",), ()])
def test_each_shard_is_laid_out_alone_exactly_as_from_the_whole_internal_copy(split):
    """A multi-process runtime lays out each shard's block from the user's arrays (the driver never holds
    the whole internal copy): the blocks equal those cut from the whole internal data; an array the program
    holds feature-major comes transposed, under its stored name, as one contiguous block."""
    from claygraph.partition.program import compile_artifact, shard_blocks
    from claygraph.partition.storage import key as stored_key

    case = hier_logistic(rows=83, groups=11, features=3, kind="skewed", seed=4)
    plan = cg.partition(case.model, case.data, cluster=cg.ClusterSpec.local(devices=3), split=split)
    whole, lazy = compile_artifact(plan), compile_artifact(plan, materialize=False)
    assert not lazy.internal
    specs = whole.artifact.specs(plan.graph)
    assert lazy.artifact.shapes == whole.artifact.shapes
    stored = {stored_key(k): k for k in whole.artifact.candidate.feature_major}
    assert bool(stored) == (split != ("feature",))  # X @ w reads X feature-major unless X is split by feature
    for i in range(3):
        want, got = shard_blocks(specs, whole.internal, 3, i), lazy.shard(plan.graph, specs, 3, i)
        assert {stored.get(k, k) for k in got} == set(want)
        for k, x in got.items():
            expect = want[stored[k]].T if k in stored else want[k]
            assert x.flags.c_contiguous
            np.testing.assert_array_equal(x, expect, err_msg=f"{split} shard {i} {k}")


def test_padding_values_never_reach_the_potential():
    """Whatever the padding slots of the internal params hold, the value and the real entries' gradients are
    the same: every use of a padding slot is masked (its gradient being 0 is also forced; its value is not)."""
    case = hier_logistic(rows=40, groups=13, features=2, kind="skewed", seed=3)
    plan = cg.partition(case.model, case.data, cluster=cg.ClusterSpec.local(devices=3), split=("product",))
    program = cg.compile(plan)
    ctx = program.context()
    layout = program.params
    user = random_params(case.model, case.data, 1)
    f = jax.jit(jax.value_and_grad(ctx.internal))
    host = layout.to_internal(user)
    real = layout.real()
    assert any(not m.all() for m in real.values())
    v0, g0 = f(ctx.internal_in(host), ctx.data)
    poked = {k: np.where(real[k], x, np.float32(1e4)) for k, x in host.items()}
    v1, g1 = f(ctx.internal_in(poked), ctx.data)
    assert float(v1) == float(v0)
    for k in host:
        np.testing.assert_array_equal(np.asarray(g1[k])[real[k]], np.asarray(g0[k])[real[k]])


def test_merge_puts_pieces_together_inside_the_results_inference_returns():
    from typing import NamedTuple

    class Out(NamedTuple):
        lost: bool
        value: float
        point: object

    whole = np.arange(6, dtype=np.float32)
    parts = [Pieces((6,), whole.dtype, (((np.s_[0:3],), whole[:3]),)),
             Pieces((6,), whole.dtype, (((np.s_[3:6],), whole[3:]),))]
    got = merge([Out(False, 1.5, {"a": parts[0], "mu": np.float32(2), "none": None}),
                 Out(False, 1.5, {"a": parts[1], "mu": np.float32(2), "none": None})])
    assert isinstance(got, Out) and got.value == 1.5 and got.point["none"] is None
    np.testing.assert_array_equal(got.point["a"], whole)


@pytest.mark.long  # docs/testing.md: VI on a split program: tests/infer/test_laplace_vi.py
def test_lowrank_vi_on_a_group_split_equals_unsplit():
    """The per-site guides on sharded state (padding left out of the entropy and the Gram matrix; over 2,048
    parameters, so Hutchinson's diagonal is estimated on the sharded program) fit what the unsplit program
    fits. The draws differ (the padded shapes draw other random numbers), so the fits agree within VI's
    own noise: means within 0.25 sd, sds within 25% (a padding slot that leaked into the entropy would
    grow without bound and pull every scale with it)."""
    from bench.workloads import w2_data, w2_model

    data = w2_data(4_000, 2_100, 2, seed=2)
    one = cg.infer.vi(w2_model, data, guide="lowrank", rank=2, steps=300, draws=50, seed=1, progress=False)
    two = cg.infer.vi(w2_model, data, guide="lowrank", rank=2, steps=300, draws=50, seed=1, progress=False,
                      runtime=cg.runtime.Local(devices=2), split=("group",))
    assert two.plan.split == ("group",)
    for k in one.loc:
        sd = np.maximum(one.scale[k], 1e-3)
        assert np.all(np.isfinite(two.loc[k])) and np.all(np.isfinite(two.scale[k])), k
        assert np.median(np.abs(one.loc[k] - two.loc[k]) / sd) < 0.25, k
        assert abs(np.median(two.scale[k] / one.scale[k]) - 1) < 0.25, k
