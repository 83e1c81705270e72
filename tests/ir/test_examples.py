"""Every example model lowers from shapes alone, shows its expected dims, and evaluates to NumPyro's
potential energy and gradient at random sizes and random points (the central lowering property)."""
import jax
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpyro.infer import init_to_uniform
from numpyro.infer.util import initialize_model, potential_energy

import claygraph as cg
from claygraph.examples import EXAMPLES, Example

# Sizes start at 2: a dim of size 1 is not propagated by dim inference (docs/frontend.md).
n, small = st.integers(2, 40), st.integers(2, 6)
SIZES = {
    "logistic": st.fixed_dictionaries({"n": n, "d": small}),
    "hier_logistic": st.fixed_dictionaries({"n": n, "products": small, "d": st.integers(2, 4)}),
    "linear": st.fixed_dictionaries({"n": n, "d": small}),
    "eight_schools": st.fixed_dictionaries({"n": st.integers(2, 12)}),
    "poisson_crossed": st.fixed_dictionaries({"n": n, "products": small, "stores": small, "d": st.integers(2, 4)}),
    "wide_logistic": st.fixed_dictionaries({"n": st.integers(2, 12), "d": st.integers(20, 120)}),
}
DEFAULTS = {"wide_logistic": {"d": 300}}  # keep the default-size tests quick


def test_every_example_has_sizes():
    assert set(SIZES) == set(EXAMPLES)


def numpyro_point(ex: Example, seed: int) -> dict:
    """A random unconstrained point from NumPyro's own initialisation (compiles: seconds per shape)."""
    info = initialize_model(jax.random.PRNGKey(seed), ex.model, model_args=(ex.data,),
                            init_strategy=init_to_uniform(radius=2.0))
    return info.param_info.z


def uniform_point(graph, seed: int) -> dict:
    """What `init_to_uniform(radius=2)` draws: Uniform(-2, 2) on every unconstrained coordinate.

    Drawn directly because `initialize_model` compiles a loop for every new shape, which would
    dominate the property test; `test_uniform_point_is_numpyros_layout` checks the layout agrees.
    """
    rng = np.random.default_rng(seed)
    return {k: rng.uniform(-2.0, 2.0, shape).astype(np.float32) for k, shape in graph.param_shapes.items()}


@pytest.fixture(scope="module", autouse=True)
def quick_compiles():
    """Most XLA optimisations off while this module runs: every new shape compiles about 4x faster
    (compilation dominates these tests); the computed maths is the same."""
    before = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", before)


def assert_matches_numpyro(graph, ex: Example, z: dict) -> None:
    @jax.jit  # one compilation for both sides; eager mode would compile every primitive on its own
    def both(z, data):
        ref = jax.jit(jax.value_and_grad(lambda p: potential_energy(ex.model, (data,), {}, p)))(z)
        return ref, jax.value_and_grad(lambda p: graph.evaluate(p, data))(z)

    (ref, ref_grad), (val, grad) = both(z, ex.data)
    np.testing.assert_allclose(val, ref, rtol=1e-5, atol=1e-3)
    assert set(grad) == set(ref_grad)
    for k in ref_grad:
        np.testing.assert_allclose(grad[k], ref_grad[k], rtol=1e-4, atol=1e-3, err_msg=f"gradient of {k}")


@pytest.mark.parametrize("name", EXAMPLES)
@settings(max_examples=8, deadline=None)
@given(data=st.data())
def test_lowered_graph_equals_numpyro(name, data):
    sizes = data.draw(SIZES[name], label="sizes")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    ex = EXAMPLES[name](**sizes, seed=seed)
    graph = cg.lower(ex.model, ex.data.abstract())  # lowering sees shapes only
    assert graph.param_dims == dict(ex.expected_dims)
    assert_matches_numpyro(graph, ex, uniform_point(graph, seed))


def test_uniform_point_is_numpyros_layout():
    ex = EXAMPLES["hier_logistic"](n=30, products=4)
    graph = cg.lower(ex.model, ex.data.abstract())
    z = numpyro_point(ex, seed=1)
    mine = uniform_point(graph, seed=1)
    assert {k: np.shape(v) for k, v in z.items()} == {k: v.shape for k, v in mine.items()}
    assert all(np.all(np.abs(v) <= 2.0) for v in z.values())
    assert_matches_numpyro(graph, ex, z)


@pytest.mark.parametrize("name", EXAMPLES)
def test_lowering_never_needs_concrete_data(name):
    make = EXAMPLES[name]
    kw = DEFAULTS.get(name, {})
    concrete = cg.lower(make(**kw).model, make(**kw).data)
    for data in (make(**kw).data.abstract(), make(**kw, abstract=True).data):
        assert all(isinstance(a.values, jax.ShapeDtypeStruct) for a in data.arrays.values())
        graph = cg.lower(make(**kw).model, data)
        assert len(graph) == len(concrete)
        assert graph.param_dims == concrete.param_dims
        assert graph.primitive_counts() == concrete.primitive_counts()
        assert str(graph) == str(concrete)


@pytest.mark.parametrize("name", EXAMPLES)
def test_expected_dims_at_default_sizes(name):
    ex = EXAMPLES[name](**DEFAULTS.get(name, {}))
    graph = cg.lower(ex.model, ex.data)
    assert graph.param_dims == dict(ex.expected_dims)
    assert set(graph.dims) >= {d for dims in ex.expected_dims.values() for d in dims}
    assert graph.dims == {**ex.data.dims, **graph.dims}  # every data dim keeps its size


def test_hierarchical_dims():
    ex = EXAMPLES["hier_logistic"]()
    graph = cg.lower(ex.model, ex.data)
    assert graph.param_dims["a"] == ("product",) and graph.param_dims["b"] == ("product",)
    assert graph.param_dims["w"] == ("feature",)
    assert graph.data_dims == {"X": ("row", "feature"), "g": ("row",), "price": ("row",), "y": ("row",)}
    assert graph.meta.arrays["g"].into == "product"


def test_abstract_examples_need_no_values():
    ex = EXAMPLES["hier_logistic"](n=10_000_000, products=100_000, abstract=True)
    assert ex.data.dims == {"row": 10_000_000, "feature": 3, "product": 100_000}
    graph = cg.lower(ex.model, ex.data)
    assert graph.param_shapes["a"] == (100_000,) and graph.param_dims["a"] == ("product",)


def test_examples_are_deterministic():
    a, b = EXAMPLES["poisson_crossed"](seed=3), EXAMPLES["poisson_crossed"](seed=3)
    for k in a.data.arrays:
        np.testing.assert_array_equal(getattr(a.data, k), getattr(b.data, k))
    assert not np.array_equal(a.data.y, EXAMPLES["poisson_crossed"](seed=4).data.y)
