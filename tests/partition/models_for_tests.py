"""Shared helpers for the partition tests: the example models on data whose sizes and group skew a
test chooses, NumPyro's reference potential, and the comparison of a split program against it.

The model functions come from `claygraph.examples`; only the data are made here, because the
tests need what the example makers do not offer: skewed groups, groups without rows, and exact
control of every size.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.distributions.transforms import biject_to
from numpyro.infer import init_to_uniform
from numpyro.infer.util import initialize_model, potential_energy

import claygraph as cg
from claygraph import examples

GROUP_KINDS = ("uniform", "skewed", "sparse", "single")


@dataclass(frozen=True)
class Case:
    """One model on one data set."""

    name: str
    model: Callable
    data: cg.Data


def group_column(rng: np.random.Generator, rows: int, groups: int, kind: str) -> np.ndarray:
    """Each row's group id: uniform, skewed (about 85% of rows in one group), sparse (only about a
    third of the groups have rows) or single (every row in one group)."""
    big = int(rng.integers(groups))
    if kind == "uniform":
        g = rng.integers(0, groups, rows)
    elif kind == "skewed":
        g = np.where(rng.random(rows) < 0.85, big, rng.integers(0, groups, rows))
    elif kind == "sparse":
        used = rng.choice(groups, size=max(1, groups // 3), replace=False)
        g = rng.choice(used, size=rows)
    elif kind == "single":
        g = np.full(rows, big)
    else:
        raise ValueError(kind)
    return g.astype(np.int32)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def logistic(rows: int, features: int, seed: int = 0, dtype=np.float32, name: str = "logistic") -> Case:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    y = rng.random(rows) < _sigmoid(X @ rng.normal(size=features) / np.sqrt(features))
    data = cg.Data(X=cg.array(X.astype(dtype), "row", "feature"), y=cg.array(y.astype(dtype), "row"))
    return Case(name, examples.logistic_model, data)


def wide_logistic(rows: int, features: int, seed: int = 0, dtype=np.float32) -> Case:
    return logistic(rows, features, seed, dtype, name="wide_logistic")


def hier_logistic(rows: int, groups: int, features: int, kind: str = "uniform", seed: int = 0,
                  dtype=np.float32) -> Case:
    """Per-product intercept and price slope (index column `g` into `product`)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    price = rng.normal(size=rows)
    g = group_column(rng, rows, groups, kind)
    logits = rng.normal(0.2, 0.5, groups)[g] + rng.normal(-1.0, 0.3, groups)[g] * price + X.sum(1) * 0.3
    y = rng.random(rows) < _sigmoid(logits)
    data = cg.Data(X=cg.array(X.astype(dtype), "row", "feature"), price=cg.array(price.astype(dtype), "row"),
                   g=cg.index(g, "row", into="product", size=groups), y=cg.array(y.astype(dtype), "row"))
    return Case("hier_logistic", examples.hier_logistic_model, data)


def linear(rows: int, features: int, seed: int = 0, dtype=np.float32) -> Case:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    y = 0.5 + X @ rng.normal(size=features) + rng.normal(0.0, 0.5, rows)
    data = cg.Data(X=cg.array(X.astype(dtype), "row", "feature"), y=cg.array(y.astype(dtype), "row"))
    return Case("linear", examples.linear_model, data)


def eight_schools(schools: int, seed: int = 0, dtype=np.float32) -> Case:
    """Eight-schools-like: a plate over the data dim `school`."""
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(9.0, 18.0, schools)
    y = rng.normal(8.0, 6.0, schools) + rng.normal(0.0, sigma)
    data = cg.Data(y=cg.array(y.astype(dtype), "school"), sigma=cg.array(sigma.astype(dtype), "school"))
    return Case("eight_schools", examples.eight_schools_model, data)


def poisson_crossed(rows: int, products: int, stores: int, features: int, kind: str = "uniform", seed: int = 0,
                    dtype=np.float32) -> Case:
    """Counts with two crossed groupings: index columns into `product` and into `store`."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    product = group_column(rng, rows, products, kind)
    store = group_column(rng, rows, stores, "uniform")
    rate = np.exp(0.5 + 0.3 * rng.normal(size=products)[product] + 0.2 * rng.normal(size=stores)[store])
    y = rng.poisson(rate)
    data = cg.Data(X=cg.array(X.astype(dtype), "row", "feature"),
                   product=cg.index(product, "row", into="product", size=products),
                   store=cg.index(store, "row", into="store", size=stores),
                   y=cg.array(y.astype(np.int32), "row"))
    return Case("poisson_crossed", examples.poisson_crossed_model, data)


# -- the reference and the comparison --------------------------------------------------------------

def hier(data: cg.Data) -> None:
    """A hierarchical logistic model with one group effect a[g] and shared weights w: a group split's
    rows run in row blocks (fused.py), as the row split's do."""
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([data.X.shape[1]]).to_event(1))
    with numpyro.plate("group", data.size("group")):
        a = numpyro.sample("a", dist.Normal(0.0, 1.0))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Bernoulli(logits=a[data.g] + data.X @ w), obs=data.y)


def random_params(model: Callable, data: cg.Data, seed: int = 0) -> dict[str, jax.Array]:
    """Unconstrained params uniform in (-1.5, 1.5), as NumPyro's `init_to_uniform(radius=1.5)` draws them.

    Sites and unconstrained shapes come from one NumPyro trace, traced abstractly (`jax.eval_shape`: no
    operation runs, nothing compiles); this is much quicker than `initialize_model`, which compiles the
    potential for every new shape (see `test_random_params_match_numpyro_initialisation`).
    """
    def unconstrained():
        trace = handlers.trace(handlers.seed(model, 0)).get_trace(data)
        return {name: biject_to(site["fn"].support).inv(site["value"]) for name, site in trace.items()
                if site["type"] == "sample" and not site["is_observed"]}

    rng = np.random.default_rng(seed)
    return {name: jnp.asarray(rng.uniform(-1.5, 1.5, s.shape).astype(s.dtype))
            for name, s in jax.eval_shape(unconstrained).items()}


def numpyro_initial_params(model: Callable, data: cg.Data, seed: int = 0) -> dict[str, jax.Array]:
    """Unconstrained params by NumPyro's own initialisation (slow: it compiles the potential)."""
    info = initialize_model(jax.random.PRNGKey(seed), model, model_args=(data,),
                            init_strategy=init_to_uniform(radius=1.5))
    return dict(info.param_info.z)


def reference(model: Callable, data: cg.Data, params: Mapping[str, jax.Array]):
    """NumPyro's potential energy at `params` and its gradient: what every split must reproduce (jitted: one
    XLA program, not one per operation)."""
    return jax.jit(jax.value_and_grad(lambda z: potential_energy(model, (data,), {}, z)))(dict(params))


def candidate_splits(graph, data: cg.Data) -> list[tuple[str, ...]]:
    """Every split the planner offers for this graph (the set does not depend on the device count)."""
    plan = cg.partition(graph, data, cluster=cg.ClusterSpec.local(devices=2))
    return sorted(tuple(c.split) for c in plan.candidates)


def split_value_and_grad(graph, data: cg.Data, split: tuple[str, ...], devices: int, params):
    """The program's potential and gradient (the internal program inference runs, params entering and the
    gradient leaving the internal layout); checks on the way that its padding slots carry no gradient."""
    plan = cg.partition(graph, data, cluster=cg.ClusterSpec.local(devices=devices), split=split)
    assert tuple(plan.split) == tuple(split)
    program = cg.compile(plan)
    _, internal = program.context().value_and_grad(params)
    assert_padding_has_no_gradient(program.params, internal, where=f"split={split} devices={devices}")
    return program.potential_and_grad(params)


def assert_padding_has_no_gradient(layout, grads, where: str) -> None:
    """Every padding slot of a site in the internal layout has gradient exactly 0."""
    for k, site in layout.sites.items():
        g = np.asarray(grads[k])
        assert g.shape == site.internal_shape, f"{where}: {k!r} internal gradient {g.shape} != {site.internal_shape}"
        for i, d in enumerate(site.dims):
            if d in layout.layout:
                pads = np.compress(~layout.layout[d].pad_mask(), g, axis=i)
                assert not np.any(pads), f"{where}: padding slots of {k!r} along {d!r} carry gradient {pads}"


def assert_close(got, ref, *, rtol_value: float, rtol_grad: float, where: str, atol_value: float | None = None,
                 atol_grad_rel: float = 1e-5) -> None:
    """Value within rtol_value (and an absolute slack for sums that cancel); each gradient within
    rtol_grad plus an absolute slack relative to the largest gradient entry of the model."""
    (v, g), (v_ref, g_ref) = got, ref
    v, v_ref = float(v), float(v_ref)
    atol = atol_value if atol_value is not None else rtol_value * 10.0
    assert np.isfinite(v), f"{where}: potential is {v}"
    assert abs(v - v_ref) <= atol + rtol_value * abs(v_ref), f"{where}: potential {v!r} != NumPyro's {v_ref!r}"
    assert set(g) == set(g_ref), f"{where}: gradient sites {sorted(g)} != {sorted(g_ref)}"
    scale = max([1.0] + [float(np.max(np.abs(x), initial=0.0)) for x in g_ref.values()])
    for k in sorted(g_ref):
        a, b = np.asarray(g[k]), np.asarray(g_ref[k])
        assert a.shape == b.shape, f"{where}: gradient of {k!r} has shape {a.shape}, NumPyro's {b.shape}"
        np.testing.assert_allclose(a, b, rtol=rtol_grad, atol=atol_grad_rel * scale,
                                   err_msg=f"{where}: gradient of {k!r}")
