"""The fused loss-and-gradient (row blocks read once) equals the plain split program, and is used only
where the potential is a sum over row blocks."""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from models_for_tests import hier

import claygraph as cg
from claygraph.partition import fused


def logistic(data):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([data.X.shape[1]]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 5.0))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Bernoulli(logits=data.X @ w + b), obs=data.y)


def centred(data):
    """Not a sum over rows: the data's mean is subtracted first (a reduction consumed non-linearly)."""
    s = numpyro.sample("s", dist.LogNormal(0.0, 1.0))
    y = data.y - jnp.mean(data.y) * jnp.max(data.y)
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("obs", dist.Normal(0.0, s), obs=y)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    # 16 KiB shared by a node's devices (4-16 KiB each): tests see many blocks and a tail
    monkeypatch.setattr(fused, "BLOCK_BYTES", 16384)


def _data(n=3001, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (rng.random(n) < 0.4).astype(np.float32)
    return cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(y, "row"))


def _program(model, data, devices, split):
    plan = cg.partition(model, data, cluster=cg.ClusterSpec.local(devices=devices), split=split)
    return cg.compile(plan, runtime=cg.runtime.Local(devices=devices))


def _params(prog, seed=1):
    rng = np.random.default_rng(seed)
    return {k: (0.3 * rng.normal(size=s)).astype(np.float32) for k, s in prog.graph.param_shapes.items()}


@pytest.mark.parametrize("devices,split,n", [(1, None, 3001), (2, ("row",), 3000), (4, ("row",), 6000)])
def test_fused_equals_plain(devices, split, n):
    data = _data(n)
    prog = _program(logistic, data, devices, split)
    assert getattr(prog.fn.fn, "fused", None) is not None
    assert prog.fn.fn.fused.blocks >= fused.MIN_BLOCKS
    params = _params(prog)
    v, g = prog.potential_and_grad(params)
    pj = {k: jnp.asarray(x) for k, x in params.items()}
    v0, g0 = jax.jit(jax.value_and_grad(prog.fn.plain))(pj, prog.data)
    assert float(v) == pytest.approx(float(v0), rel=1e-6)
    assert float(prog.potential(params)) == pytest.approx(float(v0), rel=1e-6)
    for k in g0:
        np.testing.assert_allclose(np.asarray(g[k]), np.asarray(g0[k]), rtol=1e-4, atol=1e-3)
    # second derivatives go through the fused pass too (forward over reverse)
    h = jax.jit(jax.hessian(lambda b: prog.fn.fn(dict(pj, b=b), prog.data)))(pj["b"])
    h0 = jax.jit(jax.hessian(lambda b: prog.fn.plain(dict(pj, b=b), prog.data)))(pj["b"])
    assert float(h) == pytest.approx(float(h0), rel=1e-4)


def test_fused_value_is_compensated():
    """The float32 objective of a long sum, added block by block, stays within a few float32 ulps of float64."""
    data = _data(20000, 4, seed=3)
    prog = _program(logistic, data, 1, None)
    params = _params(prog, 2)
    v, _ = prog.potential_and_grad(params)
    X, y = (np.asarray(data.arrays[k].values, np.float64) for k in ("X", "y"))
    z = X @ params["w"].astype(np.float64) + float(params["b"])
    ref = np.sum(np.logaddexp(0, z) - y * z)
    ref += 0.5 * np.sum(params["w"].astype(np.float64) ** 2) + 2 * np.log(2 * np.pi)
    ref += 0.5 * (float(params["b"]) / 5) ** 2 + 0.5 * np.log(2 * np.pi) + np.log(5.0)
    assert abs(float(v) - ref) <= 4 * np.spacing(np.float32(ref))


@pytest.mark.parametrize("devices,split,n", [(2, ("feature",), 3000), (2, ("row",), 3001), (2, (), 3000)])
def test_not_fused_where_blocks_do_not_apply(devices, split, n):
    """Feature split, padded rows, whole data on several devices: the plain program."""
    prog = _program(logistic, _data(n), devices, split)
    assert getattr(prog.fn.fn, "fused", None) is None


def test_not_fused_when_not_a_sum_over_rows():
    y = np.random.default_rng(5).normal(size=4000).astype(np.float32)
    prog = _program(centred, cg.Data(y=cg.array(y, "row")), 1, None)
    assert getattr(prog.fn.fn, "fused", None) is None


def _grouped_data(n=4003, groups=17, seed=6):
    """Skewed group sizes: the shards' row counts differ, so rows are padded (masked) in the last blocks."""
    rng = np.random.default_rng(seed)
    return cg.Data(X=cg.array(rng.normal(size=(n, 3)).astype(np.float32), "row", "feature"),
                   g=cg.index(rng.zipf(1.5, n) % groups, "row", into="group", size=groups),
                   y=cg.array((rng.random(n) < 0.5).astype(np.float32), "row"))


def _same_as(prog, ref):
    params = _params(ref)
    v, g = prog.potential_and_grad(params)
    pj = {k: jnp.asarray(x) for k, x in params.items()}
    v0, g0 = jax.jit(jax.value_and_grad(ref.fn.plain))(pj, ref.data)
    assert float(v) == pytest.approx(float(v0), rel=1e-6)
    assert float(prog.potential(params)) == pytest.approx(float(v0), rel=1e-6)
    for k in g0:
        np.testing.assert_allclose(np.asarray(g[k]), np.asarray(g0[k]), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("devices", [2, 4])
def test_group_split_runs_in_row_blocks(devices):
    """Each shard's co-partitioned rows run in blocks that gather from the shard's groups; the per-group
    prior counts once per shard, padded rows not at all; `a`'s gradient stays sharded."""
    data = _grouped_data()
    grouped = _program(hier, data, devices, ("group",))
    blk = grouped.fn.fn.fused
    assert blk is not None and blk.dim == "row" and blk.blocks >= fused.MIN_BLOCKS
    assert grouped.layout["row"].padded
    _same_as(grouped, _program(hier, data, 1, None))


def per_group_mean(data):
    """Not a sum over row blocks: each group's mean of y (a scatter-add of rows into groups) enters non-linearly."""
    with numpyro.plate("group", data.size("group")):
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    mean = jnp.zeros(data.size("group")).at[data.g].add(data.y)
    numpyro.factor("fit", -jnp.sum((a - mean) ** 2))


def test_group_split_not_fused_when_rows_build_per_group_values():
    data = _grouped_data()
    grouped = _program(per_group_mean, data, 2, ("group",))
    assert getattr(grouped.fn.fn, "fused", None) is None
    _same_as(grouped, _program(per_group_mean, data, 1, None))


def test_latent_per_group_params_on_one_device():
    data = _grouped_data()
    one = _program(hier, data, 1, None)  # a sum over rows; a[g] gathers from a replicated parameter
    assert one.fn.fn.fused is not None
    _same_as(one, _program(hier, data, 1, None))


def test_map_on_the_fused_program_equals_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    X = rng.normal(size=(6000, 5)).astype(np.float32)
    y = (rng.random(6000) < 1 / (1 + np.exp(-X @ rng.normal(size=5)))).astype(np.float64)
    ref = LogisticRegression(C=1.0, fit_intercept=False, tol=1e-10, max_iter=5000).fit(X, y)
    for devices in (1, 2):
        m = cg.glm.LogisticRegression(C=1.0, fit_intercept=False, tol=1e-8,
                                      runtime=cg.runtime.Local(devices=devices)).fit(X, y)
        assert m.fit_summary_.converged, m.fit_summary_.message
        np.testing.assert_allclose(m.coef_, ref.coef_, atol=1e-4)


def _misaligned(shape, dtype=np.float32, seed=0):
    """An array whose data start is not 64-byte aligned (as NumPy's usually is not), filled with normals."""
    size = int(np.prod(shape))
    buf = np.empty(size + 16, dtype)
    k = next(k for k in range(1, 16) if (buf.ctypes.data + k * buf.itemsize) % 64)
    x = buf[k:k + size].reshape(shape)
    x[...] = np.random.default_rng(seed).normal(size=shape)
    return x


def test_in_place_data_are_not_copied_and_give_the_same_values(monkeypatch):
    monkeypatch.setattr(fused, "IN_PLACE_BYTES", 1)  # every array of the test goes in place
    monkeypatch.setattr(fused, "BLOCK_BYTES", 1 << 16)  # blocks of 640 rows of 24 features: the fused path
    X = _misaligned((3001, 24))  # wider than claygraph.partition.storage holds feature-major (a copy)
    y = _misaligned((3001,))  # a misaligned 1-D array too
    y[...] = y > 0
    data = cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(y, "row"))
    prog = _program(logistic, data, 1, None)
    assert prog.data["X"].ndim == 1 and prog.data["y"].shape != (3001,)  # flat views, offset inside
    assert prog.data["X"].unsafe_buffer_pointer() == X.ctypes.data - X.ctypes.data % 64  # X's own memory
    params = _params(prog)
    v, g = prog.potential_and_grad(params)
    monkeypatch.setattr(fused, "IN_PLACE_BYTES", 1 << 60)
    copied = _program(logistic, cg.Data(X=cg.array(X.copy(), "row", "feature"), y=cg.array(y.copy(), "row")), 1,
                      None)
    v0, g0 = copied.potential_and_grad(params)
    assert float(v) == float(v0)
    for k in g0:
        np.testing.assert_array_equal(np.asarray(g[k]), np.asarray(g0[k]))


def test_an_array_used_in_place_outlives_its_last_python_reference():
    """XLA reads a host array in place for as long as its device array lives, so the view that hands it over
    must keep the array alive even where nothing else does (claygraph's own relaid-out copies: the group
    layout's rows on one device). Before, the owner hung on a view JAX drops: the device array read freed
    memory, which gave NaN potentials and segfaults on a group split on one device at W7's size."""
    import gc

    x = _misaligned((300_000,), seed=5)
    expected = x.copy()
    view = fused.in_place(x)
    assert view.ctypes.data != x.ctypes.data  # (a view starting before x: the case that needs an owner)
    d = jax.device_put(view)
    assert d.unsafe_buffer_pointer() == view.ctypes.data  # in place, no copy
    del x, view
    gc.collect()
    junk = [np.full(300_016, np.nan, np.float32) for _ in range(8)]  # (reuses freed memory if any was)
    np.testing.assert_array_equal(np.asarray(d)[-300_000:], expected)
    del junk


def test_a_group_split_on_one_device_with_its_data_in_place(monkeypatch):
    """The group layout's rows (claygraph's own sorted copies, nobody else's) in place in the fused blocks:
    the same potential and gradient as the unsplit program, after those copies' last Python references are
    gone and their memory could be reused."""
    import gc

    monkeypatch.setattr(fused, "IN_PLACE_BYTES", 1)
    rng = np.random.default_rng(2)
    n, groups = 4000, 37  # (a multiple of 16 rows: one shard without padding, the fused path)
    data = cg.Data(X=cg.array(rng.normal(size=(n, 3)).astype(np.float32), "row", "feature"),
                   g=cg.index(rng.integers(0, groups, n), "row", into="group", size=groups),
                   y=cg.array((rng.random(n) < 0.5).astype(np.float32), "row"))
    grouped = _program(hier, data, 1, ("group",))
    # (whether a copy goes in place depends on where the allocator put it: 3 in 4 do; the mechanism itself is
    # tested deterministically above)
    assert grouped.fn.fn.fused is not None
    gc.collect()
    junk = [np.full(n + 16, np.nan, np.float32) for _ in range(64)]
    monkeypatch.setattr(fused, "IN_PLACE_BYTES", 1 << 60)  # (the reference: its data copied to the device)
    _same_as(grouped, _program(hier, data, 1, None))
    del junk


def test_fused_potential_under_vmap():
    """VI evaluates the potential on a batch of draws: the fused pass batches like the plain one."""
    prog = _program(logistic, _data(), 1, None)
    rng = np.random.default_rng(3)
    batch = {k: jnp.asarray((0.3 * rng.normal(size=(3, *s))).astype(np.float32))
             for k, s in prog.graph.param_shapes.items()}
    vg = jax.jit(jax.vmap(jax.value_and_grad(prog.fn.fn), in_axes=(0, None)))
    vg0 = jax.jit(jax.vmap(jax.value_and_grad(prog.fn.plain), in_axes=(0, None)))
    (v, g), (v0, g0) = vg(batch, prog.data), vg0(batch, prog.data)
    np.testing.assert_allclose(np.asarray(v), np.asarray(v0), rtol=1e-6)
    for k in g0:
        np.testing.assert_allclose(np.asarray(g[k]), np.asarray(g0[k]), rtol=1e-4, atol=1e-3)


def test_a_row_split_forced_on_one_device_with_data_in_place(monkeypatch):
    monkeypatch.setattr(fused, "IN_PLACE_BYTES", 1)
    monkeypatch.setattr(fused, "BLOCK_BYTES", 1 << 16)  # the fused path, whose data go in place
    X = _misaligned((3000, 24))
    y = _misaligned((3000,))
    y[...] = y > 0
    data = cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(y, "row"))
    forced, plain = _program(logistic, data, 1, ("row",)), _program(logistic, data, 1, None)
    assert plain.split == () and forced.split == ("row",)  # on one device the tie goes to no split
    params = _params(plain)
    v1, g1 = forced.potential_and_grad(params)
    v0, g0 = plain.potential_and_grad(params)
    np.testing.assert_allclose(float(v1), float(v0), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g1["w"]), np.asarray(g0["w"]), rtol=1e-5, atol=1e-5)


def test_the_devices_of_a_node_share_the_block_budget():
    """Two local devices run their blocks at once in one cache: each gets half of BLOCK_BYTES (blocks.host_share),
    as the plan's candidate records and the cost model assumes; one device keeps all of it."""
    from claygraph.partition.blocks import blocking, host_share

    data = _data(6000)
    plans = [cg.partition(logistic, data, cluster=cg.ClusterSpec.local(devices=d), split=s) for d, s in
             ((2, ("row",)), (1, None))]
    assert [p.chosen.host_devices for p in plans] == [2, 1]
    two, one = (cg.compile(p, runtime=cg.runtime.Local(devices=d)) for p, d in zip(plans, (2, 1)))
    blk2, blk1 = two.fn.fn.fused, one.fn.fn.fused  # the Blocking each program runs
    assert blk2 == blocking(two.graph, "row", 3000, 2, host_share(fused.BLOCK_BYTES, 2))
    assert blk1 == blocking(one.graph, "row", 6000, 1, fused.BLOCK_BYTES)
    assert blk2.rows < blk1.rows


def test_no_row_blocks_where_the_parameters_gradient_sums_cost_more_than_the_read_they_save():
    """Each block makes the parameters' whole gradient and adds it to the running sum: with many per-group
    parameters (W7's shape: about as many groups as rows per block) that costs more than the second pass
    over the data that blocking saves, and the program runs unblocked; with few it is blocked."""
    from claygraph.partition.blocks import blocking

    data = _data(6000)
    graph = cg.partition(logistic, data, cluster=cg.ClusterSpec.local(devices=1)).graph
    free = blocking(graph, "row", 6000, 1, 4096)
    assert free is not None and free.blocks >= 4
    saved = 6000 * (6 * 4 + 4) / 2  # half of one pass over X (6 float32 features) and y
    at = saved / (3 * free.blocks)  # where the rule turns (about: the rule counts the blocks before evening)
    small, large = int(at / 2), int(at * 2)
    assert blocking(graph, "row", 6000, 1, 4096, param_bytes=small) == free
    assert blocking(graph, "row", 6000, 1, 4096, param_bytes=large) is None
