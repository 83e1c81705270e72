"""The Runtime protocol and the compiled artifact, without a cluster: Local and Ray implement every
member of the protocol with its signature; the artifact pickles, and a graph that is not the
driver's is refused."""
import inspect
import pickle
from dataclasses import replace

import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from ray import cloudpickle

import claygraph as cg
from claygraph.errors import PartitionError
from claygraph.partition.context import Context
from claygraph.partition.program import compile_artifact
from claygraph.runtime.protocol import Runtime
from claygraph.runtime.ray import Ray, coordinator_host


def model(data):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([data.X.shape[1]]).to_event(1))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(data.X @ w, 1.0), obs=data.y)


def wider_prior(data):
    w = numpyro.sample("w", dist.Normal(0.0, 2.0).expand([data.X.shape[1]]).to_event(1))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(data.X @ w, 1.0), obs=data.y)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(21, 3)).astype(np.float32)
    return cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(X.sum(1), "row"))


def _members(cls) -> dict[str, inspect.Signature | None]:
    out = {}
    for name, v in vars(cls).items():
        if name.startswith("_"):
            continue
        out[name] = None if isinstance(v, property) else inspect.signature(v)
    return out


@pytest.mark.parametrize("impl", [cg.runtime.Local, Ray])
def test_runtimes_implement_the_protocol(impl):
    for name, sig in _members(Runtime).items():
        got = inspect.getattr_static(impl, name, None)
        assert got is not None, f"{impl.__name__} lacks {name}"
        if sig is None:
            assert isinstance(got, property), f"{impl.__name__}.{name} should be a property"
        else:
            want = [p.name for p in sig.parameters.values()]
            have = [p.name for p in inspect.signature(got).parameters.values()][: len(want)]
            assert have == want, (impl.__name__, name, have, want)


def test_the_artifact_pickles_and_refuses_another_graph(data):
    plan = cg.partition(model, data, cluster=cg.ClusterSpec.local(devices=2), split=("row",))
    compiled = compile_artifact(plan, data)
    art = pickle.loads(cloudpickle.dumps(compiled.artifact))
    assert art.fingerprint == plan.graph.fingerprint() and art.split == ("row",)
    assert art.graph().fingerprint() == plan.graph.fingerprint()  # lowered again: the same graph
    assert art.shapes["X"] == (22, 3)  # 21 rows padded to 2 x 11
    with pytest.raises(PartitionError, match="refusing to run it"):
        replace(art, model=wider_prior).graph()
    other = cg.partition(wider_prior, data, cluster=cg.ClusterSpec.local(devices=2), split=("row",)).graph
    assert other.fingerprint() != plan.graph.fingerprint()
    with pytest.raises(PartitionError, match="refusing to run it"):
        cg.runtime.Local(devices=2).compile(plan).artifact.verify(other)


def test_local_runs_steps_through_the_protocol(data):
    rt = cg.runtime.Local(devices=2)
    plan = cg.partition(model, data, cluster=cg.ClusterSpec.local(devices=2), split=("row",))
    program = cg.compile(plan, runtime=rt)
    assert program.runtime is rt and rt.workers == 1 and rt.devices == 2 and not rt.elastic

    def step(ctx, scale):
        assert isinstance(ctx, Context)
        return float(ctx.potential({"w": np.zeros(3, np.float32)}, ctx.data)) * scale

    want = float(program.potential({"w": np.zeros(3, np.float32)}))
    assert rt.run(program, step, 2.0) == pytest.approx(2 * want)
    handles = rt.submit(program, step, 1.0)
    assert rt.wait(handles, "a step")[1] == pytest.approx(want)
    assert rt.gather(handles, "a step") == [pytest.approx(want)]
    with pytest.raises(PartitionError, match="one worker"):
        rt.compile(plan, ranks=(0, 1))


def test_the_coordinator_binds_loopback_on_one_node_and_the_node_address_otherwise():
    assert coordinator_host([("n1", "10.0.0.5"), ("n1", "10.0.0.5")]) == "127.0.0.1"
    assert coordinator_host([("n1", "10.0.0.5"), ("n2", "10.0.0.6")]) == "10.0.0.5"
    assert coordinator_host([("n2", "10.0.0.6"), ("n1", "10.0.0.5"), ("n2", "10.0.0.6")]) == "10.0.0.6"
