"""Example models with generated data, used by the tests, the demo, the benchmarks and the docs.

Every `make_<name>(..., seed=0, abstract=False)` returns an `Example`: the model (a plain
NumPyro function of one argument, `data`), its `claygraph.Data`, and the dims that lowering
should infer for each latent site. With `abstract=True` the data are `jax.ShapeDtypeStruct`
shapes only: nothing is generated, which is how a model over cluster-scale data is lowered
and planned on a laptop.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from claygraph.frontend.data import Array, Data, array, index

Dims = tuple[str | None, ...]


@dataclass(frozen=True, slots=True)
class Example:
    """A model, its data, and the dims lowering should give each latent site."""

    name: str
    model: Callable[[Data], None]
    data: Data
    expected_dims: Mapping[str, Dims]
    truth: Mapping[str, np.ndarray] | None = None  # the generating parameters, where the data are generated


@dataclass(frozen=True, slots=True)
class _Spec:
    """How one data array looks: dims, shape, dtype, and for an index column what it points into."""

    dims: tuple[str, ...]
    shape: tuple[int, ...]
    dtype: Any = np.float32
    into: str | None = None
    size: int | None = None


def _build(abstract: bool, generate: Callable[[], Mapping[str, np.ndarray]], **specs: _Spec) -> Data:
    """Data from specs; `generate` runs only for concrete data (abstract data never makes values)."""
    values = {} if abstract else generate()
    arrays: dict[str, Array] = {}
    for name, s in specs.items():
        v = jax.ShapeDtypeStruct(s.shape, s.dtype) if abstract else np.asarray(values[name], dtype=s.dtype)
        arrays[name] = index(v, s.dims[0], into=s.into, size=s.size) if s.into else array(v, *s.dims)
    return Data(**arrays)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _weights(data: Data, name: str = "w", scale: float = 1.0) -> Any:
    """A weight vector over `feature`, without a plate: dim inference finds its dim from `X @ w`."""
    return numpyro.sample(name, dist.Normal(0.0, scale).expand([data.size("feature")]).to_event(1))


# -- logistic regression (also the wide variant) -------------------------------------------------

def logistic_model(data: Data) -> None:
    w = _weights(data)
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Bernoulli(logits=data.X @ w), obs=data.y)


def _logistic_data(n: int, d: int, seed: int, abstract: bool) -> Data:
    def generate():
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(n, d))
        w = rng.normal(size=d) / np.sqrt(d)
        return {"X": X, "y": rng.random(n) < _sigmoid(X @ w)}

    return _build(abstract, generate, X=_Spec(("row", "feature"), (n, d)), y=_Spec(("row",), (n,)))


def make_logistic(n: int = 500, d: int = 5, seed: int = 0, abstract: bool = False) -> Example:
    """Logistic regression: `y ~ Bernoulli(logits=X @ w)`, `w ~ Normal(0, 1)` per feature."""
    return Example("logistic", logistic_model, _logistic_data(n, d, seed, abstract), {"w": ("feature",)})


def make_wide_logistic(n: int = 200, d: int = 2000, seed: int = 0, abstract: bool = False) -> Example:
    """Logistic regression with many more features than rows: the case for splitting `feature`."""
    return Example("wide_logistic", logistic_model, _logistic_data(n, d, seed, abstract), {"w": ("feature",)})


# -- hierarchical logistic regression (price elasticity) -----------------------------------------

def hier_logistic_model(data: Data) -> None:
    w = _weights(data)
    mu_a = numpyro.sample("mu_a", dist.Normal(0.0, 1.0))
    mu_b = numpyro.sample("mu_b", dist.Normal(0.0, 1.0))
    # log-normal scales vanish fast at zero, so the joint mode exists (DESIGN.md)
    s_a = numpyro.sample("s_a", dist.LogNormal(-1.0, 0.5))
    s_b = numpyro.sample("s_b", dist.LogNormal(-1.0, 0.5))
    with numpyro.plate("product", data.size("product")):
        a = numpyro.sample("a", dist.Normal(mu_a, s_a))
        b = numpyro.sample("b", dist.Normal(mu_b, s_b))
    logits = a[data.g] + b[data.g] * data.price + data.X @ w
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Bernoulli(logits=logits), obs=data.y)


def make_hier_logistic(n: int = 1000, products: int = 20, d: int = 3, seed: int = 0,
                       abstract: bool = False) -> Example:
    """Per-product intercept `a` and price slope `b` (a price-elasticity model), shared weights `w`."""

    truth: dict[str, np.ndarray] = {}

    def generate():
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(n, d))
        price = rng.normal(size=n)
        g = rng.integers(0, products, n)
        a = rng.normal(0.2, 0.5, products)
        b = rng.normal(-1.0, 0.3, products)
        w = rng.normal(size=d) * 0.3
        truth.update(a=a, b=b, w=w)
        logits = a[g] + b[g] * price + X @ w
        return {"X": X, "price": price, "g": g, "y": rng.random(n) < _sigmoid(logits)}

    data = _build(abstract, generate,
                  X=_Spec(("row", "feature"), (n, d)),
                  price=_Spec(("row",), (n,)),
                  g=_Spec(("row",), (n,), np.int32, into="product", size=products),
                  y=_Spec(("row",), (n,)))
    expected = {"w": ("feature",), "mu_a": (), "mu_b": (), "s_a": (), "s_b": (),
                "a": ("product",), "b": ("product",)}
    return Example("hier_logistic", hier_logistic_model, data, expected, truth or None)


# -- linear regression ---------------------------------------------------------------------------

def linear_model(data: Data) -> None:
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 5.0))
    beta = _weights(data, "beta", scale=2.0)
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(alpha + data.X @ beta, sigma), obs=data.y)


def make_linear(n: int = 500, d: int = 4, seed: int = 0, abstract: bool = False) -> Example:
    """Linear regression with a Normal likelihood and a HalfNormal noise scale."""

    def generate():
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(n, d))
        return {"X": X, "y": 0.5 + X @ rng.normal(size=d) + rng.normal(0.0, 0.5, n)}

    data = _build(abstract, generate, X=_Spec(("row", "feature"), (n, d)), y=_Spec(("row",), (n,)))
    return Example("linear", linear_model, data, {"alpha": (), "beta": ("feature",), "sigma": ()})


# -- eight schools (non-centred) -----------------------------------------------------------------

EIGHT_SCHOOLS_Y = (28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0)
EIGHT_SCHOOLS_SIGMA = (15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0)


def eight_schools_model(data: Data) -> None:
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", data.size("school")):
        theta_raw = numpyro.sample("theta_raw", dist.Normal(0.0, 1.0))
        numpyro.sample("y", dist.Normal(mu + tau * theta_raw, data.sigma), obs=data.y)


def make_eight_schools(n: int = 8, seed: int = 0, abstract: bool = False) -> Example:
    """Eight schools, non-centred. `n=8` gives the classic data; another `n` generates schools."""

    def generate():
        if n == len(EIGHT_SCHOOLS_Y):
            return {"y": EIGHT_SCHOOLS_Y, "sigma": EIGHT_SCHOOLS_SIGMA}
        rng = np.random.default_rng(seed)
        sigma = rng.uniform(9.0, 18.0, n)
        return {"y": rng.normal(8.0, 6.0, n) + rng.normal(0.0, sigma), "sigma": sigma}

    data = _build(abstract, generate, y=_Spec(("school",), (n,)), sigma=_Spec(("school",), (n,)))
    return Example("eight_schools", eight_schools_model, data, {"mu": (), "tau": (), "theta_raw": ("school",)})


# -- Poisson regression with crossed groupings ---------------------------------------------------

def poisson_crossed_model(data: Data) -> None:
    w = _weights(data, scale=0.5)
    b0 = numpyro.sample("b0", dist.Normal(0.0, 2.0))
    s_product = numpyro.sample("s_product", dist.LogNormal(-1.0, 0.5))
    s_store = numpyro.sample("s_store", dist.LogNormal(-1.0, 0.5))
    with numpyro.plate("product", data.size("product")):
        a_product = numpyro.sample("a_product", dist.Normal(0.0, s_product))
    with numpyro.plate("store", data.size("store")):
        a_store = numpyro.sample("a_store", dist.Normal(0.0, s_store))
    log_rate = b0 + a_product[data.product] + a_store[data.store] + data.X @ w
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Poisson(jnp.exp(log_rate)), obs=data.y)


def make_poisson_crossed(n: int = 1000, products: int = 20, stores: int = 8, d: int = 3, seed: int = 0,
                         abstract: bool = False) -> Example:
    """Counts (units sold) with a per-product and a per-store effect: two crossed groupings of rows."""

    def generate():
        rng = np.random.default_rng(seed)
        X = rng.normal(size=(n, d))
        product = rng.integers(0, products, n)
        store = rng.integers(0, stores, n)
        log_rate = 1.0 + rng.normal(0, 0.4, products)[product] + rng.normal(0, 0.3, stores)[store] \
            + X @ rng.normal(size=d) * 0.2
        return {"X": X, "product": product, "store": store, "y": rng.poisson(np.exp(log_rate))}

    data = _build(abstract, generate,
                  X=_Spec(("row", "feature"), (n, d)),
                  product=_Spec(("row",), (n,), np.int32, into="product", size=products),
                  store=_Spec(("row",), (n,), np.int32, into="store", size=stores),
                  y=_Spec(("row",), (n,), np.int32))
    expected = {"w": ("feature",), "b0": (), "s_product": (), "s_store": (),
                "a_product": ("product",), "a_store": ("store",)}
    return Example("poisson_crossed", poisson_crossed_model, data, expected)


EXAMPLES: dict[str, Callable[..., Example]] = {
    "logistic": make_logistic,
    "hier_logistic": make_hier_logistic,
    "linear": make_linear,
    "eight_schools": make_eight_schools,
    "poisson_crossed": make_poisson_crossed,
    "wide_logistic": make_wide_logistic,
}
