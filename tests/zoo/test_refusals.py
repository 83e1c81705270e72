"""Every model the front end refuses, refused with the message docs/frontend.md quotes.

Each case triggers the error and checks that the page holds its text (file paths, line numbers
and node ids normalised), so the page cannot drift from what users see.
"""
from __future__ import annotations

import re
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import claygraph as cg
from claygraph.errors import ClaygraphError, DimError, ModelError, PartitionError

PAGE = Path(__file__).resolve().parents[2] / "docs" / "frontend.md"


def _data():
    rng = np.random.default_rng(0)
    return cg.Data(X=cg.array(rng.normal(size=(10, 3)).astype(np.float32), "row", "feature"),
                   y=cg.array(rng.normal(size=10).astype(np.float32), "row"),
                   g=cg.index(rng.integers(0, 4, 10).astype(np.int32), "row", into="group", size=4))


def discrete_latent(data):
    z = numpyro.sample("z", dist.Bernoulli(0.5))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(z, 1.0), obs=data.y)


def observations_plate(data):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("obs", data.size("row")):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=data.y)


def plate_size(data):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("row", 5):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=data.y[:5])


def python_if(data):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    if mu > 0:
        mu = 2 * mu
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=data.y)


def subsampled(data):
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    with numpyro.plate("row", data.size("row"), subsample_size=5) as idx:
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=data.y[idx])


def dim_conflict(data):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(data.X @ w + data.X[:, 0] * w[data.g], 1.0), obs=data.y)


def scan_body_conflict(data):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([data.size("feature")]).to_event(1))
    prior = jnp.sum(w * data.z)  # w is along feature

    def step(total, x_t):
        return total + jnp.sum(w * x_t), None  # x_t is along series: as long as feature, another dim

    total, _ = jax.lax.scan(step, 0.0, data.x)
    numpyro.factor("f", prior + total)


def _series():
    rng = np.random.default_rng(0)
    return cg.Data(x=cg.array(rng.normal(size=(4, 3)).astype(np.float32), "time", "series"),
                   z=cg.array(rng.normal(size=3).astype(np.float32), "feature"))


def short_parameter(data):
    a = numpyro.sample("a", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(a[data.g], 1.0), obs=data.y)


def plain(data):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([3]).to_event(1))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(data.X @ w, 1.0), obs=data.y)


CASES = {
    "discrete latent": (ModelError, lambda d: cg.lower(discrete_latent, d)),
    "plate over observations": (ModelError, lambda d: cg.lower(observations_plate, d)),
    "plate size": (ModelError, lambda d: cg.lower(plate_size, d)),
    "python control flow": (ModelError, lambda d: cg.lower(python_if, d)),
    "subsampling": (ModelError, lambda d: cg.lower(subsampled, d)),
    "dim conflict": (DimError, lambda d: cg.lower(dim_conflict, d)),
    "dim conflict in a scan body": (DimError, lambda d: cg.lower(scan_body_conflict, _series())),
    "parameter shorter than its index": (DimError, lambda d: cg.lower(short_parameter, d)),
    "not a Data": (ModelError, lambda d: cg.lower(plain, {"X": d.X})),
    "unknown split": (PartitionError, lambda d: cg.partition(plain, d, cluster=cg.ClusterSpec.local(devices=2),
                                                             split=("time",))),
}


def normalise(text: str) -> str:
    """Source locations as `model.py:N`, node ids as `node N`."""
    text = re.sub(r"[^\s(]*?[\w.]+\.py:\d+", "model.py:N", text)
    return re.sub(r"node \d+", "node N", text)


def message(name: str) -> str:
    kind, trigger = CASES[name]
    with pytest.raises(kind) as err:
        trigger(_data())
    assert isinstance(err.value, ClaygraphError)
    return str(err.value).split("\n")[0] if name in ("python control flow", "subsampling") else str(err.value)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_page_quotes_the_message(name):
    text = normalise(message(name))
    page = normalise(" ".join(PAGE.read_text().split()))
    assert " ".join(text.split()) in page, f"docs/frontend.md does not quote the {name!r} refusal:\n{text}"


if __name__ == "__main__":  # print the messages for the page
    for n in CASES:
        print(f"{n}:\n    {normalise(message(n))}\n")
