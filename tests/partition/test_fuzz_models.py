"""Differential fuzzing: random models built from the primitives the registry knows, each checked
on every candidate split against NumPyro's potential and gradient.

A model is a random expression tree over typed values (a row vector, a vector over `k`, a vector
over `grp`, a scalar), grown from data (X, x, A, the index column g) and parameters (mu, beta over
k, a per-group effect a under a plate over grp) by the ops models use: elementwise arithmetic and
non-linear functions, reductions over data dims combined non-linearly (sum * max, sum / max, ...),
matrix products, gathers through the index column, scatter-adds into groups, concatenations,
cumulative sums and softmax-like normalisations. The tree is printed on failure.
CLAYGRAPH_FUZZ_EXAMPLES sets how many models a run draws (docs/partition.md says how many were run).
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from hypothesis import given, settings
from hypothesis import strategies as st
from models_for_tests import assert_close, random_params, reference

import claygraph as cg

ROW_UNARY = {"tanh": jnp.tanh, "sin": jnp.sin, "logistic": jax.nn.sigmoid, "abs": jnp.abs,
             "softplus": jax.nn.softplus, "square": lambda v: jnp.tanh(v) ** 2}
BINARY = {"add": jnp.add, "sub": jnp.subtract, "mul": jnp.multiply, "max": jnp.maximum, "min": jnp.minimum,
          "div": lambda a, b: a / (1.0 + jnp.abs(b))}
REDUCE = {"sum": jnp.sum, "max": jnp.max, "min": jnp.min, "mean": jnp.mean,
          "logsumexp": jax.scipy.special.logsumexp}


def _tree(draw, kind: str, depth: int):
    """A random expression of `kind` (row, k, grp, scalar) as nested tuples."""
    leaves = {"row": [("x",), ("Xbeta",), ("a[g]",)], "k": [("beta",), ("colsum",), ("colmax",)],
              "grp": [("a",), ("A",)], "scalar": [("mu",)]}
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(leaves[kind]))
    sub = lambda k: _tree(draw, k, depth - 1)  # noqa: E731
    choices = {
        "row": ["unary", "binary", "scale", "gather", "cumsum", "where", "concat_slice"],
        "k": ["unary", "binary", "scale", "Xt_r"],
        "grp": ["unary", "binary", "scale", "segment_sum"],
        "scalar": ["reduce", "binary", "unary", "reduce_pair"],
    }[kind]
    op = draw(st.sampled_from(choices))
    if op == "unary":
        return ("unary", draw(st.sampled_from(sorted(ROW_UNARY))), sub(kind))
    if op == "binary":
        return ("binary", draw(st.sampled_from(sorted(BINARY))), sub(kind), sub(kind))
    if op == "scale":
        return ("binary", "mul", sub(kind), ("bcast", kind, sub("scalar")))
    if op == "gather":
        return ("gather", sub("grp"))
    if op == "cumsum":
        return ("cumsum", sub("row"))
    if op == "where":
        return ("where", sub("row"), sub("row"), sub("row"))
    if op == "concat_slice":
        return ("concat_slice", sub("row"), sub("row"))
    if op == "Xt_r":
        return ("Xt_r", sub("row"))
    if op == "segment_sum":
        return ("segment_sum", sub("row"))
    if op == "reduce":
        return ("reduce", draw(st.sampled_from(sorted(REDUCE))), sub(draw(st.sampled_from(["row", "k", "grp"]))))
    # two reductions of one value combined non-linearly: sum(v) * max(v), min(v) / sum(v), ...
    v = sub(draw(st.sampled_from(["row", "grp"])))
    return ("binary", draw(st.sampled_from(["mul", "div", "sub", "max"])),
            ("reduce", draw(st.sampled_from(sorted(REDUCE))), v), ("reduce", draw(st.sampled_from(sorted(REDUCE))), v))


def evaluate(t, env):
    head = t[0]
    if len(t) == 1:
        return env[head]
    if head == "unary":
        return ROW_UNARY[t[1]](evaluate(t[2], env))
    if head == "binary":
        return BINARY[t[1]](evaluate(t[2], env), evaluate(t[3], env))
    if head == "bcast":
        return evaluate(t[2], env)  # a scalar broadcasts against the other operand
    if head == "gather":
        return evaluate(t[1], env)[env["g"]]
    if head == "cumsum":
        return jnp.cumsum(jnp.tanh(evaluate(t[1], env))) / env["x"].shape[0]
    if head == "where":
        return jnp.where(evaluate(t[1], env) > 0, evaluate(t[2], env), evaluate(t[3], env))
    if head == "concat_slice":
        n = env["x"].shape[0]
        both = jnp.concatenate([evaluate(t[1], env), evaluate(t[2], env)])
        return both[:n] * 0.5 + both[n:] * 0.5
    if head == "Xt_r":
        return env["X"].T @ jnp.tanh(evaluate(t[1], env))
    if head == "segment_sum":
        return jnp.zeros(env["A"].shape[0]).at[env["g"]].add(jnp.tanh(evaluate(t[1], env)))
    if head == "reduce":
        return REDUCE[t[1]](evaluate(t[2], env))
    raise ValueError(head)


@st.composite
def fuzz_case(draw):
    tree = ("reduce", "sum", ("unary", "tanh", _tree(draw, "scalar", 4)))
    n, k, groups = draw(st.integers(2, 14)), draw(st.integers(1, 4)), draw(st.integers(1, 5))
    return tree, n, k, groups, draw(st.integers(0, 2**16)), draw(st.integers(2, 4))


def make_model(tree):
    def model(data):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([data.size("k")]).to_event(1))
        with numpyro.plate("grp", data.size("grp")):
            a = numpyro.sample("a", dist.Normal(0.0, 1.0))
        X, x, A, g = (jnp.asarray(getattr(data, n)) for n in ("X", "x", "A", "g"))
        env = {"X": X, "x": x, "A": A, "g": g, "mu": mu, "beta": beta, "a": a, "a[g]": a[g], "Xbeta": X @ beta,
               "colsum": jnp.sum(X, 0), "colmax": jnp.max(X, 0)}
        numpyro.factor("fuzz", jnp.reshape(evaluate(tree, env), ()))

    return model


def make_data(n, k, groups, seed) -> cg.Data:
    rng = np.random.default_rng(seed)
    return cg.Data(X=cg.array(rng.normal(size=(n, k)).astype(np.float32), "row", "k"),
                   x=cg.array(rng.normal(size=n).astype(np.float32), "row"),
                   A=cg.array(rng.normal(size=groups).astype(np.float32), "grp"),
                   g=cg.index(rng.integers(0, groups, n).astype(np.int32), "row", into="grp", size=groups))


FUZZ = int(os.environ.get("CLAYGRAPH_FUZZ_EXAMPLES", 8))


@settings(max_examples=FUZZ)
@given(case=fuzz_case())
def test_random_models_equal_numpyro_on_every_split(case):
    tree, n, k, groups, seed, devices = case
    model, data = make_model(tree), make_data(n, k, groups, seed)
    graph = cg.lower(model, data)
    params = random_params(model, data, seed)
    ref = reference(model, data, params)
    plan = cg.partition(graph, data, cluster=cg.ClusterSpec.local(devices=devices))
    for c in plan.candidates:
        if not c.feasible:
            continue
        split_plan = cg.partition(graph, data, cluster=cg.ClusterSpec.local(devices=devices), split=c.split)
        got = cg.compile(split_plan).potential_and_grad(params)
        assert_close(got, ref, rtol_value=2e-4, rtol_grad=2e-3, atol_grad_rel=2e-4,
                     where=f"split {c.split} on {devices} devices, n={n} k={k} groups={groups}, model {tree}")
