"""claygraph.Data: construction, dims, abstract shapes, and a clear error for each bad input."""
import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import claygraph as cg
from claygraph.errors import ClaygraphError, DataError, ModelError

RNG = np.random.default_rng(0)
X = RNG.normal(size=(6, 3)).astype(np.float32)
Y = (RNG.random(6) < 0.5).astype(np.float32)
G = np.array([0, 1, 2, 0, 1, 3], dtype=np.int32)


def small_data() -> cg.Data:
    return cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(Y, "row"), g=cg.index(G, "row", into="group", size=4))


def grouped_model(data):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([data.size("feature")]).to_event(1))
    with numpyro.plate("group", data.size("group")):
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Bernoulli(logits=a[data.g] + data.X @ w), obs=data.y)


# -- construction ---------------------------------------------------------------------------------

def test_sizes_dims_and_attribute_access():
    data = small_data()
    assert data.dims == {"row": 6, "feature": 3, "group": 4}
    assert (data.size("row"), data.size("feature"), data.size("group")) == (6, 3, 4)
    assert data.X is X and data.g is G
    assert set(data.arrays) == {"X", "y", "g"}


def test_array_metadata():
    arrays = small_data().arrays
    assert arrays["X"].dims == ("row", "feature") and arrays["X"].shape == (6, 3)
    assert arrays["X"].dtype == np.float32 and not arrays["X"].is_index and arrays["X"].into is None
    g = arrays["g"]
    assert g.is_index and g.into == "group" and g.into_size == 4 and g.dims == ("row",)


def test_index_size_comes_from_another_array():
    a = np.zeros(5, np.float32)
    data = cg.Data(g=cg.index(np.array([0, 4, 2]), "row", into="group"), prior=cg.array(a, "group"))
    assert data.size("group") == 5


def test_values_may_be_lists_jax_arrays_or_shapes():
    data = cg.Data(a=cg.array([1.0, 2.0], "row"), b=cg.array(jnp.ones((2, 3)), "row", "k"),
                   c=cg.array(jax.ShapeDtypeStruct((2,), jnp.float32), "row"))
    assert data.dims == {"row": 2, "k": 3}
    assert isinstance(data.a, np.ndarray) and isinstance(data.b, jax.Array)
    assert data.arrays["c"].is_abstract


def test_abstract_keeps_names_dims_and_dtypes():
    data = small_data()
    ab = data.abstract()
    assert ab.dims == data.dims
    for name, arr in ab.arrays.items():
        assert isinstance(arr.values, jax.ShapeDtypeStruct)
        assert (arr.shape, arr.dtype, arr.dims, arr.into) == (data.arrays[name].shape, data.arrays[name].dtype,
                                                               data.arrays[name].dims, data.arrays[name].into)
    assert ab.X.shape == (6, 3)


def test_abstract_index_needs_size_and_skips_value_checks():
    g = jax.ShapeDtypeStruct((1000,), np.int32)
    data = cg.Data(g=cg.index(g, "row", into="product", size=50), X=cg.array(jax.ShapeDtypeStruct((1000, 2),
                                                                                                  np.float32),
                                                                                "row", "feature"))
    assert data.dims == {"row": 1000, "product": 50, "feature": 2}
    with pytest.raises(DataError, match=r"size=N"):
        cg.Data(g=cg.index(g, "row", into="product"))


def test_data_is_immutable_and_a_pytree():
    data = small_data()
    with pytest.raises(AttributeError):
        data.X = X
    leaves, tree = jax.tree_util.tree_flatten(data)
    again = jax.tree_util.tree_unflatten(tree, leaves)
    assert again.dims == data.dims and again.arrays["g"].into == "group"


def test_unknown_field_and_dim():
    data = small_data()
    with pytest.raises(AttributeError, match="'Z'"):
        data.Z  # noqa: B018
    with pytest.raises(DataError, match=r"'nope'.*known dims"):
        data.size("nope")


# -- bad data -------------------------------------------------------------------------------------

def test_inconsistent_sizes_for_one_dim():
    with pytest.raises(DataError) as e:
        cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(np.zeros(7, np.float32), "row"))
    assert "'row'" in str(e.value) and "6" in str(e.value) and "7" in str(e.value)
    assert "X" in str(e.value) and "y" in str(e.value)


def test_inconsistent_index_size():
    with pytest.raises(DataError, match=r"'group' has size 4.*but 5"):
        cg.Data(prior=cg.array(np.zeros(4, np.float32), "group"),
                g=cg.index(np.array([0, 1]), "row", into="group", size=5))


@pytest.mark.parametrize("bad", [4, -1])
def test_index_out_of_range(bad):
    with pytest.raises(DataError) as e:
        cg.Data(g=cg.index(np.array([0, 1, bad]), "row", into="group", size=4))
    msg = str(e.value)
    assert "'g'" in msg and str(bad) in msg and "position 2" in msg and "[0, 4)" in msg and "'group'" in msg


def test_index_non_integer_dtype():
    with pytest.raises(DataError, match=r"index 'g' has dtype float64.*integers"):
        cg.Data(g=cg.index(np.array([0.0, 1.0]), "row", into="group", size=2))


def test_index_non_integer_dtype_abstract():
    with pytest.raises(DataError, match=r"index 'g' has dtype float32"):
        cg.Data(g=cg.index(jax.ShapeDtypeStruct((3,), np.float32), "row", into="group", size=2))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_data(bad):
    values = X.copy()
    values[2, 1] = bad
    with pytest.raises(DataError) as e:
        cg.Data(X=cg.array(values, "row", "feature"))
    msg = str(e.value)
    assert "'X'" in msg and "non-finite" in msg and "(2, 1)" in msg and str(bad) in msg


def test_wrong_number_of_dim_names():
    with pytest.raises(DataError, match=re.escape("shape (6, 3) (2 axes) but 1 dim names ('row',)")):
        cg.Data(X=cg.array(X, "row"))
    with pytest.raises(DataError, match="3 dim names"):
        cg.Data(X=cg.array(X, "row", "feature", "extra"))


def test_raw_ndarray_not_wrapped():
    with pytest.raises(DataError, match=r"'X' is a ndarray; wrap it with cg.array"):
        cg.Data(X=X)


def test_bad_dim_name_and_reserved_field():
    with pytest.raises(DataError, match="identifier"):
        cg.Data(X=cg.array(X, "row", "not a name"))
    with pytest.raises(DataError, match="reserved"):
        cg.Data(size=cg.array(Y, "row"))


def test_data_errors_are_value_errors_and_claygraph_errors():
    with pytest.raises(ValueError):
        cg.Data(X=X)
    assert issubclass(DataError, ClaygraphError)


# -- bad models -----------------------------------------------------------------------------------

def test_lower_needs_data():
    with pytest.raises(ModelError, match="takes a claygraph.Data, got dict"):
        cg.lower(grouped_model, {"X": X})


def test_plate_not_a_known_dim():
    def model(data):
        with numpyro.plate("obs", data.size("row")):
            numpyro.sample("y", dist.Normal(0.0, 1.0), obs=data.y)

    with pytest.raises(ModelError) as e:
        cg.lower(model, small_data())
    msg = str(e.value)
    assert "plate 'obs'" in msg and "not a dim of the data" in msg and "'row'" in msg and "data.size" in msg


def test_plate_size_disagrees():
    def model(data):
        with numpyro.plate("group", 3):
            numpyro.sample("a", dist.Normal(0.0, 1.0))
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("y", dist.Normal(0.0, 1.0), obs=data.y)

    with pytest.raises(ModelError, match=r"plate 'group' has size 3 but dim 'group' of the data has size 4"):
        cg.lower(model, small_data())


def failing_model(data):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([5]).to_event(1))
    numpyro.sample("y", dist.Normal(data.X @ w, 1.0), obs=data.y)  # MARK: fails here


def test_model_that_fails_to_trace_names_its_own_source_line():
    line = next(i for i, text in enumerate(Path(__file__).read_text().splitlines(), 1) if "MARK: fails" in text
                and "numpyro.sample" in text)
    with pytest.raises(ModelError) as e:
        cg.lower(failing_model, small_data())
    msg = str(e.value)
    assert f"{__file__}:{line}" in msg
    assert "'failing_model'" in msg and "dot_general" in msg


def test_model_that_needs_concrete_values_names_its_line():
    def model(data):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0))
        if w > 0:  # python control flow on a traced value
            numpyro.sample("y", dist.Normal(w, 1.0), obs=data.y)

    with pytest.raises(ModelError) as e:
        cg.lower(model, small_data())
    assert f"{Path(__file__).name}:" in str(e.value) and "if w > 0" in str(e.value)


def test_discrete_latent_site():
    def model(data):
        k = numpyro.sample("k", dist.Bernoulli(0.5))
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("y", dist.Normal(k, 1.0), obs=data.y)

    with pytest.raises(ModelError, match=r"latent site 'k' is discrete.*marginalise it out or observe it"):
        cg.lower(model, small_data())


def test_model_lowers_without_concrete_values():
    graph = cg.lower(grouped_model, small_data().abstract())
    assert graph.param_dims == {"a": ("group",), "w": ("feature",)}
