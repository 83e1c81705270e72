"""Chains x shards on Ray: four workers as two chains of two shards each. Each group holds the
split program for two devices (half the rows per worker) and runs its own chain; the draws
recover the exact posterior. Its own small cluster (four half-CPU workers on this machine)."""
import time

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
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([data.X.shape[1]]).to_event(1))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(data.X @ beta, 1.0), obs=data.y)


@pytest.mark.long  # docs/testing.md: data-parallel chains: tests/infer/test_nuts.py; Ray programs: test_ray_runtime.py
def test_two_chains_of_two_shards_each():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2)).astype(np.float32)
    y = (X @ np.array([1.0, -0.5]) + rng.normal(0, 1.0, 200)).astype(np.float32)
    data = cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(y, "row"))
    V = np.linalg.inv(X.T.astype(np.float64) @ X + np.eye(2))
    mean, sd = V @ X.T.astype(np.float64) @ y, np.sqrt(np.diag(V))

    with cg.runtime.Ray(workers=4, resources_per_worker={"CPU": 0.5}, timeout_s=180) as rt:
        with pytest.raises(ValueError, match="must divide the 4 workers"):
            cg.infer.nuts(model, data, chains=2, runtime=rt, shards_per_chain=3)

        def held(worker):  # every split program on this worker: the devices it spans, its rows
            return [(len(p.fn.mesh.devices.flat), [tuple(s.data.shape) for s in p.data["y"].addressable_shards])
                    for p in worker.programs.values()]

        during = []

        def look(chain, n):  # while sampling: what the workers hold
            if not during:
                during.append(rt.on_workers(held))

        res = cg.infer.nuts(model, data, chains=2, warmup=200, draws=400, runtime=rt, seed=1, segment=100,
                            parallel="mesh", shards_per_chain=2, split=("row",), on_segment=look)
        deadline, after = time.monotonic() + 10, rt.on_workers(held)
        while any(p[0] == 2 for programs in after for p in programs) and time.monotonic() < deadline:
            time.sleep(0.2)  # frees are sent without waiting for them
            after = rt.on_workers(held)
    per_worker = during[0]
    assert res.parallel == "mesh" and res.shards_per_chain == 2 and "2 workers per chain" in repr(res)
    assert sorted(res.worker_busy_s) == [0, 1] and all(b > 0 for b in res.worker_busy_s.values())
    for programs in per_worker:  # the group's program: over its 2 devices, with 100 of the 200 rows
        assert [p for p in programs if p[0] == 2] == [(2, [(100,)])], programs
    assert all(p[0] != 2 for programs in after for p in programs), after  # freed when the run ended
    draws = res.posterior["beta"].values.reshape(-1, 2)
    ess = res.summary()["ess_bulk"].to_numpy()[:2]
    assert np.all(np.abs(draws.mean(0) - mean) < 4 * sd / np.sqrt(ess)), (draws.mean(0), mean)
    assert np.all(np.abs(draws.std(0) / sd - 1) < 0.12), (draws.std(0), sd)
