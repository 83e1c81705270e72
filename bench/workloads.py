"""The workloads of ../shared/WORKLOADS.md as data generators and models, seeded so anyone can regenerate them.

Each `w*_data(...)` returns concrete `claygraph.Data`; `abstract_*` returns the same structure as
`jax.ShapeDtypeStruct`s (nothing generated), which is how the projection plans nominal sizes.
"""
from __future__ import annotations

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist

import claygraph as cg
from claygraph.examples import hier_logistic_model, logistic_model

ZIPF_EXPONENT = 1.1

__all__ = ["abstract_w1", "abstract_w3", "abstract_w6", "hier_logistic_model", "logistic_model", "w1_arrays",
           "w1_data", "w2_arrays", "w2_data", "w2_model", "w2_numpyro_model", "w3_data", "w6_data",
           "w7_arrays", "w7_columns", "w7_data", "zipf_counts", "zipf_index"]


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


# -- W1 / W6: logistic regression (w ~ Normal(0, 1): MAP = log-loss + 0.5 ||w||^2) --------------------

def w1_arrays(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """X ~ N(0, 1) float32 (n, d); w_true ~ N(0, 1) / sqrt(d); y ~ Bernoulli(sigmoid(X @ w_true)) as 0./1."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    w_true = (rng.standard_normal(d) / np.sqrt(d)).astype(np.float32)
    y = (rng.random(n) < _sigmoid((X @ w_true).astype(np.float64))).astype(np.float32)
    return X, y


def _logistic(X, y) -> cg.Data:
    return cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(y, "row"))


def w1_data(n: int, d: int, seed: int = 0) -> cg.Data:
    return _logistic(*w1_arrays(n, d, seed))


def w6_data(n: int, d: int, seed: int = 0) -> cg.Data:
    """The wide model: W1's generator with many more features than rows."""
    return _logistic(*w1_arrays(n, d, seed))


def abstract_w1(n: int, d: int) -> cg.Data:
    return _logistic(jax.ShapeDtypeStruct((n, d), np.float32), jax.ShapeDtypeStruct((n,), np.float32))


abstract_w6 = abstract_w1


# -- W2: hierarchical logistic regression, non-centred, for NUTS ---------------------------------------

def _w2_body(X, g, y, groups: int) -> None:
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("group", groups):
        z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    a = mu + sigma * z
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([X.shape[1]]).to_event(1))
    with numpyro.plate("row", X.shape[0]):
        numpyro.sample("y", dist.Bernoulli(logits=a[g] + X @ w), obs=y)


def w2_model(data) -> None:
    """W2 for claygraph: `mu`, `sigma ~ HalfNormal(1)`, `a = mu + sigma * z` (non-centred), `w`."""
    _w2_body(data.X, data.g, data.y, data.size("group"))


def w2_numpyro_model(X, g, y, groups: int) -> None:
    """The same model for NumPyro (plain arrays; `groups` static)."""
    _w2_body(X, g, y, groups)


def w2_arrays(n: int, groups: int, d: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    g = rng.integers(0, groups, n).astype(np.int32)
    a = rng.normal(0.0, 0.5, groups)
    w = rng.normal(size=d) / np.sqrt(d)
    y = (rng.random(n) < _sigmoid(a[g] + X @ w)).astype(np.float32)
    return {"X": X, "g": g, "y": y}


def w2_pymc_model(a: dict[str, np.ndarray], groups: int):
    """W2 in PyMC (for nutpie): the same priors, non-centred group effects and likelihood. X and g go
    in as `pm.Data`: as plain arrays PyMC bakes them into the graph as constants, and nutpie's numba
    compile of a graph with 100,000 x 10 constants did not finish in 20 minutes."""
    import pymc as pm

    with pm.Model() as model:
        X = pm.Data("X", a["X"])
        g = pm.Data("g", a["g"])
        mu = pm.Normal("mu", 0.0, 1.0)
        sigma = pm.HalfNormal("sigma", 1.0)
        z = pm.Normal("z", 0.0, 1.0, shape=groups)
        w = pm.Normal("w", 0.0, 1.0, shape=a["X"].shape[1])
        pm.Bernoulli("y", logit_p=(mu + sigma * z)[g] + X @ w, observed=a["y"])
    return model


def w2_data(n: int, groups: int, d: int, seed: int = 0) -> cg.Data:
    a = w2_arrays(n, groups, d, seed)
    return cg.Data(X=cg.array(a["X"], "row", "feature"), g=cg.index(a["g"], "row", into="group", size=groups),
                   y=cg.array(a["y"], "row"))


# -- W3: price elasticity with Zipf-skewed products ----------------------------------------------------

def zipf_counts(n: int, groups: int, exponent: float = ZIPF_EXPONENT) -> np.ndarray:
    """Rows per group, proportional to rank^-exponent, summing to n (largest remainders get the rest)."""
    p = np.arange(1, groups + 1, dtype=np.float64) ** -exponent
    share = p / p.sum() * n
    counts = np.floor(share).astype(np.int64)
    rest = n - int(counts.sum())
    counts[np.argsort(counts - share, kind="stable")[:rest]] += 1
    return counts


def zipf_index(n: int, groups: int, seed: int = 0) -> np.ndarray:
    """A group id per row with Zipf-skewed counts, rows in random order."""
    rng = np.random.default_rng(seed)
    return rng.permutation(np.repeat(np.arange(groups, dtype=np.int64), zipf_counts(n, groups)))


def w3_data(n: int, groups: int, d: int, seed: int = 0) -> cg.Data:
    """Per-product intercept `a` and log-price slope `b`; shared weights `w` over `d` features."""
    rng = np.random.default_rng(seed)
    g = zipf_index(n, groups, seed).astype(np.int32)
    X = rng.standard_normal((n, d), dtype=np.float32)
    log_price = rng.normal(0.0, 0.3, n).astype(np.float32)
    a = rng.normal(0.2, 0.5, groups)
    b = rng.normal(-1.0, 0.3, groups)
    logits = a[g] + b[g] * log_price + X @ (rng.normal(size=d).astype(np.float32) * 0.3)
    y = (rng.random(n) < _sigmoid(logits)).astype(np.float32)
    return cg.Data(X=cg.array(X, "row", "feature"), price=cg.array(log_price, "row"),
                   g=cg.index(g, "row", into="product", size=groups), y=cg.array(y, "row"))


def abstract_w3(n: int, groups: int, d: int) -> cg.Data:
    """W3's shapes only; the Zipf row counts let the planner see the load imbalance of the group split."""
    f32 = np.float32
    return cg.Data(X=cg.array(jax.ShapeDtypeStruct((n, d), f32), "row", "feature"),
                   price=cg.array(jax.ShapeDtypeStruct((n,), f32), "row"),
                   g=cg.index(jax.ShapeDtypeStruct((n,), np.int32), "row", into="product", size=groups,
                              counts=zipf_counts(n, groups)),
                   y=cg.array(jax.ShapeDtypeStruct((n,), f32), "row"))


# -- W7: many products (W2's model with millions of groups, Zipf-skewed) -------------------------------

def w7_arrays(n: int, groups: int, d: int, seed: int = 0) -> dict[str, np.ndarray]:
    """X ~ N(0, 1) float32 (n, d); group ids with Zipf(1.1)-skewed counts, every group at least one row
    (1 + zipf_counts(n - groups, groups)), rows in random order; y ~ Bernoulli(sigmoid(a[g] + X @ w))
    with a ~ N(0, 0.5) per group and w ~ N(0, 1) / sqrt(d)."""
    if n < groups:
        raise ValueError(f"W7 needs at least one row per group: n = {n:,} < groups = {groups:,}")
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    counts = 1 + zipf_counts(n - groups, groups)
    g = rng.permutation(np.repeat(np.arange(groups, dtype=np.int32), counts))
    a = rng.normal(0.0, 0.5, groups)
    w = rng.normal(size=d) / np.sqrt(d)
    y = (rng.random(n) < _sigmoid(a[g] + X @ w)).astype(np.float32)
    return {"X": X, "g": g, "y": y}


def w7_data(n: int, groups: int, d: int, seed: int = 0) -> cg.Data:
    """W7 for claygraph: W2's columns, `g` an index into `groups` products (the model is `w2_model`)."""
    return w7_columns(w7_arrays(n, groups, d, seed), groups)


def w7_columns(a: dict[str, np.ndarray], groups: int) -> cg.Data:
    """`w7_data` of arrays already generated by `w7_arrays` (the bench holds one copy, not two)."""
    return cg.Data(X=cg.array(a["X"], "row", "feature"), g=cg.index(a["g"], "row", into="group", size=groups),
                   y=cg.array(a["y"], "row"))
