"""Dim inference, one primitive family at a time, on tiny hand-written models.

Each latent below has *no* plate, so its dims can only come from unification with data dims.
"""
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import claygraph as cg
from claygraph.errors import DimError

ROWS, FEATURES, GROUPS, ITEMS, OUT = 7, 3, 4, 5, 2


def data(**extra) -> cg.Data:
    rng = np.random.default_rng(0)
    base = dict(
        X=cg.array(rng.normal(size=(ROWS, FEATURES)).astype(np.float32), "row", "feature"),
        y=cg.array(rng.normal(size=ROWS).astype(np.float32), "row"),
        g=cg.index(rng.integers(0, GROUPS, ROWS).astype(np.int32), "row", into="group", size=GROUPS),
        x=cg.array(rng.normal(size=ITEMS).astype(np.float32), "item"),
        Y=cg.array(rng.normal(size=(ROWS, OUT)).astype(np.float32), "row", "out"),
        E=cg.array(rng.normal(size=(GROUPS, FEATURES)).astype(np.float32), "group", "feature"),
    )
    return cg.Data(**{**base, **extra})


def latent(name, *shape):
    return numpyro.sample(name, dist.Normal(0.0, 1.0).expand(list(shape)).to_event(len(shape)))


def observe(mean, obs):
    numpyro.sample("obs", dist.Normal(mean, 1.0).to_event(jnp.ndim(obs)), obs=obs)


def param_dims(model, d=None):
    graph = cg.lower(model, d or data())
    return graph.param_dims


def test_elementwise_aligns_axes():
    def model(data):
        v = latent("v", ITEMS)
        observe(jnp.exp(v) * data.x + 1.0, data.x)

    assert param_dims(model)["v"] == ("item",)


def test_broadcast_in_dim_maps_axes():
    def model(data):
        w = latent("w", FEATURES)   # broadcast along rows
        b = latent("b", ROWS)       # broadcast along features
        observe(data.X * w[None, :] + b[:, None], data.X)

    assert param_dims(model) == {"b": ("row",), "w": ("feature",)}


def test_reshape_keeps_whole_axes():
    def model(data):
        w = latent("w", FEATURES)
        observe((data.X @ w.reshape(FEATURES, 1)).reshape(ROWS), data.y)

    assert param_dims(model)["w"] == ("feature",)


def test_reshape_that_merges_axes_names_nothing():
    def model(data):
        m = latent("m", ROWS, FEATURES)
        observe(m.reshape(-1).sum(), data.y.sum())

    assert param_dims(model)["m"] == (None, None)


def test_squeeze_and_expand_dims():
    def model(data):
        w_col = latent("w_col", FEATURES, 1)
        u = latent("u", ROWS)
        observe(data.X @ jnp.squeeze(w_col, -1) + jnp.expand_dims(u, 1)[:, 0], data.y)

    assert param_dims(model) == {"u": ("row",), "w_col": ("feature", None)}


def test_transpose():
    def model(data):
        W = latent("W", OUT, FEATURES)
        observe(data.X @ W.T, data.Y)

    assert param_dims(model)["W"] == ("out", "feature")


def test_dot_general_contracting_and_batch_axes():
    def model(data):
        B = latent("B", GROUPS, FEATURES)
        v = latent("v", GROUPS)
        observe(jnp.einsum("gf,gf->g", data.E, B) + v, data.E.sum(1))

    assert param_dims(model) == {"B": ("group", "feature"), "v": ("group",)}


def test_dot_general_free_axes():
    def model(data):
        W = latent("W", FEATURES, OUT)   # X @ W: W's free axis meets Y's "out"
        observe(data.X @ W, data.Y)

    assert param_dims(model)["W"] == ("feature", "out")


@pytest.mark.parametrize("reduce", [jnp.sum, jnp.max, jnp.min, jnp.prod])
def test_reductions_keep_the_other_axes(reduce):
    def model(data):
        m = latent("m", ROWS, FEATURES)
        observe(reduce(m, axis=1), data.y)

    assert param_dims(model)["m"] == ("row", None)


def test_gather_through_an_index_names_the_unplated_vector():
    def model(data):
        a = latent("a", GROUPS)
        observe(a[data.g], data.y)

    assert param_dims(model)["a"] == ("group",)


def test_gather_of_rows_of_a_matrix():
    def model(data):
        A = latent("A", GROUPS, FEATURES)
        observe((A[data.g] * data.X).sum(1), data.y)

    assert param_dims(model)["A"] == ("group", "feature")


def test_index_pointee_survives_arithmetic():
    def model(data):
        a = latent("a", GROUPS)
        observe(a[jnp.clip(data.g + 0, 0, GROUPS - 1)], data.y)

    assert param_dims(model)["a"] == ("group",)


def test_concatenate_unifies_the_other_axes_only():
    def model(data):
        A = latent("A", 1, FEATURES)
        B = latent("B", OUT - 1, FEATURES)
        observe(data.X @ jnp.concatenate([A, B], axis=0).T, data.Y)

    # the concatenated axis is "out" only as a whole; its parts have no dim
    assert param_dims(model) == {"A": (None, "feature"), "B": (None, "feature")}


def test_data_and_value_dims_in_the_graph():
    def model(data):
        a = latent("a", GROUPS)
        observe(a[data.g] + data.X @ latent("w", FEATURES), data.y)

    graph = cg.lower(model, data())
    assert graph.data_dims["X"] == ("row", "feature") and graph.data_dims["g"] == ("row",)
    assert graph.dims == {"feature": FEATURES, "group": GROUPS, "item": ITEMS, "out": OUT, "row": ROWS}
    out = graph.value(graph.output)
    assert out.shape == () and out.dims == ()
    dot = next(n for n in graph.nodes() if n.primitive == "dot_general")
    assert graph.value(dot.outputs[0]).dims == ("row",)


def test_conflict_names_the_primitive_and_the_source_file():
    same = data(z=cg.array(np.ones(ROWS, np.float32), "other"))  # "other" has the size of "row"

    def model(data):
        w = latent("w", ROWS)
        observe(data.y * data.z + w, data.y)  # combines "row" with "other": a conflict

    with pytest.raises(DimError) as e:
        cg.lower(model, same)
    msg = str(e.value)
    assert "`mul`" in msg and __file__ in msg and "'row'" in msg and "'other'" in msg
