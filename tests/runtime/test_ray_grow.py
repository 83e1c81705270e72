"""A worker that joins while chains run is put to work: a node is added to the Ray cluster
mid-run (as an autoscaler would add one), the chain-parallel scheduler starts a worker on it
and hands it chains. Its own cluster (ray.cluster_utils), shut down at the end."""
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import claygraph as cg

# pytest-xdist: the tests that start a Ray cluster (or a process that does) run one after another on one worker
# (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("ray")

ray = pytest.importorskip("ray")


def model(data):
    mu = numpyro.sample("mu", dist.Normal(0.0, 3.0))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=data.y)


@pytest.mark.long  # docs/testing.md: a second Ray cluster with a node added; scheduling: test_ray_runtime.py
def test_a_node_added_mid_run_gets_chains():
    from ray.cluster_utils import Cluster

    y = np.random.default_rng(0).normal(1.0, 1.0, 50).astype(np.float32)
    data = cg.Data(y=cg.array(y, "row"))
    assert not ray.is_initialized()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    added = []

    def add_a_node(chain, n):  # after the first segment: the cluster grows by one CPU
        if not added:
            added.append(cluster.add_node(num_cpus=1))

    try:
        ray.init(address=cluster.address)
        with cg.runtime.Ray(workers=2, address=cluster.address, timeout_s=180) as rt:
            ray.get([a.set_delay.remote(0.5) for a in rt.actors])  # the first two workers are slow
            res = cg.infer.nuts(model, data, chains=3, warmup=100, draws=1000, runtime=rt, seed=0, segment=50,
                                parallel="chains", on_segment=add_a_node)
            assert rt.extra_workers == 1
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert sorted(res.worker_busy_s) == [0, 1, 2], res.worker_busy_s
    assert res.worker_busy_s[2] > 0, "the worker that joined ran segments"
    assert all(c.n >= 1000 for c in res.chains)  # a worker never idles: chains done keep drawing
    draws = res.posterior["mu"].values.ravel()
    assert abs(draws.mean() - y.sum() / (50 + 1 / 9)) < 0.05  # conjugate normal: posterior mean
