"""Feature-major storage (X @ w reads X.T, for one chain and a vmapped batch) and the softplus kernel:
the split program equals the unsplit graph and NumPyro, for one chain, a batch of chains and splits."""
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer.util import potential_energy

import claygraph as cg
from claygraph.partition import kernels
from claygraph.partition.patterns import softplus_roots
from claygraph.partition.storage import FEATURE_MAJOR_WIDTHS, key, stored_feature_major


def _body(X, g, y, groups):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("group", groups):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("row", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=(mu + sigma * z)[g] + X @ w), obs=y)


def hier(data):
    _body(data.X, data.g, data.y, data.size("group"))


def reads_x_twice(data):
    """X is read by X @ w and by a column sum: it stays row-major only."""
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([data.X.shape[1]]).to_event(1))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(data.X @ w + jnp.sum(data.X, axis=1), 1.0), obs=data.y)


def _arrays(n=1203, d=5, groups=17, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    g = rng.integers(0, groups, n).astype(np.int32)
    y = (rng.random(n) < 0.4).astype(np.float32)
    return X, g, y


def _data(n=1203, d=5, groups=17):
    X, g, y = _arrays(n, d, groups)
    return cg.Data(X=cg.array(X, "row", "feature"), g=cg.index(g, "row", into="group", size=groups),
                   y=cg.array(y, "row"))


def _program(model, data, devices=1, split=None):
    plan = cg.partition(model, data, cluster=cg.ClusterSpec.local(devices=devices), split=split)
    return cg.compile(plan, runtime=cg.runtime.Local(devices=devices))


def _params(graph, seed=1, scale=0.5):
    rng = np.random.default_rng(seed)
    return {k: (scale * rng.normal(size=s)).astype(np.float32) for k, s in graph.param_shapes.items()}


def _close(got, want):
    np.testing.assert_allclose(float(got[0]), float(want[0]), rtol=2e-6)
    for k in want[1]:
        scale = float(jnp.max(jnp.abs(want[1][k]))) + 1e-3
        np.testing.assert_allclose(np.asarray(got[1][k]) / scale, np.asarray(want[1][k]) / scale, atol=1e-5)


def test_few_features_read_only_by_matvec_are_held_feature_major():
    data = _data()
    prog = _program(hier, data)
    assert prog.artifact.candidate.feature_major == frozenset({"X"})
    assert "X" not in prog.data  # no second copy
    np.testing.assert_array_equal(np.asarray(prog.data[key("X")]), np.asarray(data.arrays["X"].values).T)
    graph = prog.graph
    sh = prog.artifact.candidate.propagation.shardings
    assert stored_feature_major(graph, sh, backend="gpu") == frozenset()
    assert stored_feature_major(graph, sh) == frozenset({"X"})  # on the CPU (files too: read feature-major)


def test_wide_or_otherwise_read_data_stays_row_major():
    wide = _data(d=max(FEATURE_MAJOR_WIDTHS) + 1)
    assert _program(hier, wide).artifact.candidate.feature_major == frozenset()
    X, _, y = _arrays()
    other = cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(y, "row"))
    prog = _program(reads_x_twice, other)
    assert prog.artifact.candidate.feature_major == frozenset()
    assert sorted(prog.data) == ["X", "y"]


@pytest.mark.parametrize("devices,split,held", [(1, None, {"X"}), (2, ("row",), {"X"}), (4, ("group",), {"X"}),
                                                (3, ("row",), {"X"}), (2, ("feature",), set())])
def test_split_program_equals_unsplit_graph_and_numpyro(devices, split, held):
    """A feature split shards X's columns: X stays row-major there."""
    data = _data()
    prog = _program(hier, data, devices, split)
    assert prog.artifact.candidate.feature_major == frozenset(held)
    params = _params(prog.graph)
    want = jax.value_and_grad(lambda p: prog.graph.evaluate(p, data))(params)
    _close(prog.potential_and_grad(params), want)
    X, g, y = _arrays()
    ref = jax.jit(jax.value_and_grad(lambda p: potential_energy(_body, (X, g, y, 17), {}, p)))(params)
    _close(want, ref)


@pytest.mark.parametrize("devices,split", [(1, None), (2, ("row",))])
def test_batched_chains_equal_each_chain(devices, split):
    """A batch of chains (jax.vmap over params, as the NUTS chains run) gives each chain's own value
    and gradient; so does forward-over-reverse (a Hessian)."""
    data = _data()
    prog = _program(hier, data, devices, split)
    pot = prog.context().potential
    chains = [_params(prog.graph, seed=s) for s in range(3)]
    stacked = {k: jnp.stack([jnp.asarray(c[k]) for c in chains]) for k in chains[0]}
    vals, grads = jax.jit(jax.vmap(jax.value_and_grad(pot), in_axes=(0, None)))(stacked, prog.data)
    for i, c in enumerate(chains):
        want = jax.value_and_grad(lambda p: prog.graph.evaluate(p, data))(c)
        _close((vals[i], {k: grads[k][i] for k in grads}), want)
    w = {k: jnp.asarray(v) for k, v in chains[0].items()}
    hess = jax.jit(jax.hessian(lambda u: pot({**w, "w": u}, prog.data)))(w["w"])
    want = jax.hessian(lambda u: prog.graph.evaluate({**chains[0], "w": u}, data))(w["w"])
    np.testing.assert_allclose(np.asarray(hess), np.asarray(want), rtol=1e-4, atol=1e-2)


def test_matvec_t_equals_the_row_major_product_one_chain_or_a_batch():
    x = jnp.asarray(np.arange(12.0, dtype=np.float32).reshape(4, 3))
    w = jnp.asarray([1.0, -2.0, 0.5], jnp.float32)
    np.testing.assert_array_equal(kernels.matvec_t(x.T, w), x @ w)
    batch = jnp.stack([w, 2 * w, -w])
    np.testing.assert_array_equal(jax.vmap(kernels.matvec_t, in_axes=(None, 0))(x.T, batch), batch @ x.T)
    r = jnp.asarray([1.0, 2.0, 3.0, 4.0], jnp.float32)
    np.testing.assert_array_equal(jax.grad(lambda u: kernels.matvec_t(x.T, u) @ r)(w), r @ x)
    grads = jax.vmap(jax.grad(lambda u, v: kernels.matvec_t(x.T, u) @ v))(batch, jnp.stack([r, 2 * r, r]))
    np.testing.assert_array_equal(grads, jnp.stack([r @ x, 2 * r @ x, r @ x]))
    xs = jnp.stack([x, 2 * x])  # a batch that carries its own data
    np.testing.assert_array_equal(jax.vmap(kernels.matvec_t, in_axes=(0, None))(jnp.swapaxes(xs, 1, 2), w), xs @ w)


def test_softplus_subgraph_is_one_kernel_with_exact_gradient():
    prog = _program(hier, _data())
    assert len(softplus_roots(prog.graph)) == 1
    jaxpr = str(jax.make_jaxpr(prog.fn.potential)({k: jnp.asarray(v) for k, v in _params(prog.graph).items()},
                                                  prog.data))
    assert "custom_jvp_call" in jaxpr and "softplus" in jaxpr
    s = jnp.asarray([-jnp.inf, -90.0, -20.0, -1.5, -1e-8, 0.0, 1e-8, 0.7, 20.0, 90.0, jnp.inf], jnp.float32)
    plain = lambda u: jnp.maximum(u, 0) + jnp.log1p(jnp.exp(-jnp.abs(u)))  # noqa: E731 - NumPyro's expression
    np.testing.assert_array_equal(kernels.softplus(s), plain(s))
    got = jax.vmap(jax.grad(kernels.softplus))(s)
    want = jax.vmap(jax.grad(plain))(s)
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))  # JAX's value at the kink s = 0 too


def test_an_array_used_in_place_is_transposed_on_its_device(monkeypatch):
    """The fused one-device program takes large arrays in place (a flat view): held feature-major, the
    view is transposed on the device, and the values equal those of a program that copied X."""
    from claygraph.partition import fused

    logistic = _glm
    rng = np.random.default_rng(5)
    buf = np.empty(3001 * 4 + 16, np.float32)
    k = next(k for k in range(1, 16) if (buf.ctypes.data + 4 * k) % 64)
    X = buf[k:k + 3001 * 4].reshape(3001, 4)
    X[...] = rng.normal(size=X.shape)
    y = (rng.random(3001) < 0.5).astype(np.float32)
    params = {"w": np.asarray([0.3, -0.2, 0.1, 0.05], np.float32), "b": np.float32(0.2)}
    monkeypatch.setattr(fused, "BLOCK_BYTES", 4096)  # blocks small enough for 3,001 rows to be fused
    monkeypatch.setattr(fused, "IN_PLACE_BYTES", 1)
    prog = _program(logistic, cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(y, "row")))
    assert getattr(prog.fn.fn, "fused", None) is not None and prog.artifact.candidate.feature_major == {"X"}
    np.testing.assert_array_equal(np.asarray(prog.data[key("X")]), X.T)
    got = prog.potential_and_grad(params)
    monkeypatch.setattr(fused, "IN_PLACE_BYTES", 1 << 60)
    copied = _program(logistic, cg.Data(X=cg.array(X.copy(), "row", "feature"), y=cg.array(y, "row")))
    want = copied.potential_and_grad(params)
    assert float(got[0]) == float(want[0])
    for name in want[1]:
        np.testing.assert_array_equal(np.asarray(got[1][name]), np.asarray(want[1][name]))


def _glm(data):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([data.X.shape[1]]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 5.0))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Bernoulli(logits=data.X @ w + b), obs=data.y)
