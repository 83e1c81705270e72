"""The Ray runtime: same numbers as Local and as NumPyro, clear errors when a worker dies, and
long runs that resume after a loss. One small cluster for the whole module (start-up is slow)."""
import gc
import ipaddress
import os
import pickle
import signal
import time

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import init_to_uniform
from numpyro.infer.util import initialize_model, potential_energy

import claygraph as cg
from claygraph.errors import WorkerError
from claygraph.frontend import parquet
from claygraph.partition.storage import key as stored_key

# pytest-xdist: the tests that start a Ray cluster (or a process that does) run one after another on one worker
# (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("ray")

ray = pytest.importorskip("ray")


def _hier_model(w_scale: float):
    def model(data):
        w = numpyro.sample("w", dist.Normal(0.0, w_scale).expand([data.X.shape[1]]).to_event(1))
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        s = numpyro.sample("s", dist.LogNormal(-1.0, 0.5))
        with numpyro.plate("group", data.size("group")):
            a = numpyro.sample("a", dist.Normal(mu, s))
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("y", dist.Bernoulli(logits=a[data.g] + data.X @ w), obs=data.y)

    return model


hier_model = _hier_model(1.0)
other_hier_model = _hier_model(2.0)  # another prior scale: another graph over the same data


def hier_data(n=301, groups=7, d=3, seed=0):
    rng = np.random.default_rng(seed)
    g = np.minimum(rng.zipf(1.6, n) - 1, groups - 2)  # skewed, and the last group has no rows
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (rng.random(n) < 0.4).astype(np.float32)
    return cg.Data(X=cg.array(X, "row", "feature"), g=cg.index(g, "row", into="group", size=groups),
                   y=cg.array(y, "row"))


def test_data_from_a_ray_dataset(tmp_path):
    """First in the module, on a cluster of its own: creating a Dataset runs Ray tasks, which wait
    for a free CPU, and the module's runtime holds every CPU of this machine."""
    import pandas as pd

    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=False)
    try:
        rng = np.random.default_rng(3)
        frame = pd.DataFrame({"x0": rng.normal(size=40).astype(np.float32),
                              "y": rng.normal(size=40).astype(np.float32)})
        data = cg.Data.from_ray_dataset(ray.data.from_pandas(frame), tmp_path / "ds", x=("x0", "row"), y=("y", "row"))
    finally:
        ray.shutdown()
    assert data.has_sources and data.size("row") == 40
    loaded = data.load()
    order = np.argsort(np.asarray(loaded.x))  # Ray may write the blocks in any order
    np.testing.assert_array_equal(np.asarray(loaded.y)[order], frame["y"].to_numpy()[np.argsort(frame["x0"])])



@pytest.fixture(scope="module")
def rt():
    # The scheduling tests need compile times alike on both workers. JAX writes its persistent
    # compilation cache from process 0 only, so with the cache worker 0 loads what worker 1 compiles
    # again; the workers (which inherit this environment) run without it.
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CLAYGRAPH_JAX_CACHE", "0")
        with cg.runtime.Ray(workers=2, timeout_s=120) as runtime:
            yield runtime
    assert not ray.is_initialized(), "closing the runtime must shut down the cluster it started"


@pytest.fixture(scope="module")
def problem():
    data = hier_data()
    info = initialize_model(jax.random.PRNGKey(1), hier_model, model_args=(data,),
                            init_strategy=init_to_uniform(radius=1.5))
    z = info.param_info.z
    ref = jax.jit(jax.value_and_grad(lambda p: potential_energy(hier_model, (data,), {}, p)))(z)
    return data, z, ref


def _close(a, b, rtol=1e-4, atol=1e-3):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


@pytest.mark.parametrize("split", [(), ("row",), ("group",), ("feature",)])
def test_ray_equals_local_and_numpyro(rt, problem, split):
    data, z, (v_ref, g_ref) = problem
    plan = cg.partition(hier_model, data, cluster=cg.ClusterSpec.local(devices=2), split=split)
    v_ray, g_ray = cg.compile(plan, runtime=rt).potential_and_grad(z)
    v_loc, g_loc = cg.compile(plan, runtime=cg.runtime.Local(devices=2)).potential_and_grad(z)
    _close(v_ray, v_ref, rtol=1e-5)
    _close(v_ray, v_loc, rtol=1e-6)
    for k in g_ref:
        _close(g_ray[k], g_ref[k])
        _close(g_ray[k], g_loc[k], rtol=1e-5, atol=1e-4)


def test_each_worker_holds_only_its_shard(rt, problem):
    data, _, _ = problem
    plan = cg.partition(hier_model, data, cluster=cg.ClusterSpec.local(devices=2), split=("group",))
    prog = cg.compile(plan, runtime=rt)

    def shapes(worker, key):
        arrays = worker.programs[key].data
        return {k: [tuple(s.data.shape) for s in a.addressable_shards] for k, a in arrays.items()}

    per_worker = rt.on_workers(shapes, prog.key)
    rows = prog.layout["row"].local
    for held in per_worker:
        # X (three features) is held feature-major: each worker has its rows as X.T's columns
        assert held[stored_key("X")] == [(3, rows)] and held["y"] == [(rows,)]
    assert 2 * rows >= data.size("row")


def _listeners(port: int) -> list[str]:
    """Addresses of the TCP sockets listening on `port` on this host (from /proc/net/tcp and tcp6)."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                addr, p = local.split(":")
                if state == "0A" and int(p, 16) == port:
                    raw = bytes.fromhex(addr)
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # each 32-bit word is LE
                    out.append(str(ipaddress.ip_address(words)))
    return out


def test_coordinator_listens_on_loopback_only(rt):
    """Every worker is on this node: worker 0's jax.distributed coordinator binds 127.0.0.1, not *."""
    host, port = rt.coordinator.rsplit(":", 1)
    assert host == "127.0.0.1"
    addrs = _listeners(int(port))
    assert addrs, f"nothing listens on the coordinator's port {port}"
    for a in addrs:
        ip = ipaddress.ip_address(a)
        assert (ip.ipv4_mapped or ip).is_loopback, addrs


def test_a_worker_refuses_a_program_for_another_graph(rt, problem):
    """The artifact's fingerprint is the driver's graph's; a worker whose model lowers to another
    graph refuses to run it."""
    from dataclasses import replace

    from claygraph.partition.program import compile_artifact, shard_blocks

    data, _, _ = problem
    plan = cg.partition(hier_model, data, cluster=cg.ClusterSpec.local(devices=2), split=("row",))
    compiled = compile_artifact(plan, data)
    other = replace(compiled.artifact, model=other_hier_model)
    specs = compiled.artifact.specs(plan.graph)
    blocks = [ray.put(shard_blocks(specs, compiled.internal, 2, i)) for i in range(2)]
    before = rt.on_workers(lambda worker: worker.held())
    with pytest.raises(WorkerError, match="refusing to run it"):
        rt.load(other, plan.graph, blocks, (0, 1))
    assert rt.on_workers(lambda worker: worker.held()) == before
    rt.load(compiled.artifact, plan.graph, blocks, (0, 1))  # the driver's own artifact loads


def test_programs_are_freed_when_the_run_ends(rt, problem):
    data, _, _ = problem
    gc.collect()  # programs earlier tests dropped are freed now, not counted as this run's
    before = rt.on_workers(lambda worker: worker.held())
    cg.infer.map(hier_model, data, runtime=rt, split=("row",), max_iter=5)
    cg.infer.nuts(hier_model, data, chains=2, warmup=20, draws=20, runtime=rt, seed=1, segment=10, parallel="chains")
    gc.collect()
    deadline = time.monotonic() + 10
    def added():  # programs this run left on each worker
        return [sorted(set(now) - set(then)) for now, then in zip(rt.on_workers(lambda w: w.held()), before)]

    while added() != [[], []] and time.monotonic() < deadline:
        time.sleep(0.2)  # frees are sent without waiting for them
    assert added() == [[], []]


def test_a_refit_on_ray_compiles_nothing_on_the_workers(rt, problem):
    """The workers keep what they compiled for a split function (MAP's loop included) across programs:
    a second fit of the same shapes ships its shards again but compiles nothing there."""
    data, _, _ = problem

    def compiles(worker) -> int:  # XLA compiles (or persistent-cache loads) in this worker so far
        import jax.monitoring

        if not hasattr(worker, "compiles"):
            worker.compiles = [0]

            def on(name, seconds, **_):
                if name == "/jax/core/compile/backend_compile_duration":
                    worker.compiles[0] += 1

            jax.monitoring.register_event_duration_secs_listener(on)
        return worker.compiles[0]

    rt.on_workers(compiles)
    first = cg.infer.map(hier_model, data, runtime=rt, split=("row",), max_iter=30)
    after_first = rt.on_workers(compiles)
    second = cg.infer.map(hier_model, data, runtime=rt, split=("row",), max_iter=30)
    assert rt.on_workers(compiles) == after_first
    assert second.objective == first.objective and second.iterations == first.iterations


def test_map_on_ray_matches_local(rt, problem):
    data, _, _ = problem
    local = cg.infer.map(hier_model, data)
    on_ray = cg.infer.map(hier_model, data, runtime=rt, split=("group",))
    assert abs(local.objective - on_ray.objective) <= 1e-4 * abs(local.objective)
    _close(on_ray.params["a"], local.params["a"], rtol=1e-3, atol=1e-3)


@pytest.mark.long  # docs/testing.md: chain-parallel NUTS on Ray also runs in the two tests around it
def test_chain_parallel_nuts_keeps_workers_busy(rt, problem):
    data, _, _ = problem
    res = cg.infer.nuts(hier_model, data, chains=2, warmup=150, draws=200, runtime=rt, seed=2, segment=50,
                        parallel="chains")
    assert res.parallel == "chains"
    assert res.posterior["a"].shape == (2, 200, 7)
    summary = res.summary()
    assert summary["r_hat"].max() < 1.1, summary


def test_scheduler_keeps_a_fast_worker_busy_beside_a_slow_one(rt, problem):
    """Worker 1 is made slow. Without barriers the fast worker keeps drawing for its chain, the
    target ESS counts its extra draws, and neither worker waits while the target is unmet."""
    data, _, _ = problem
    ray.get(rt.actors[1].set_delay.remote(0.4))  # every step on worker 1 takes 0.4 s longer
    try:
        res = cg.infer.nuts(hier_model, data, chains=2, warmup=100, draws=50, runtime=rt, seed=4, segment=25,
                            parallel="chains", target_ess=100, max_rhat=1.1)
    finally:
        ray.get(rt.actors[1].set_delay.remote(0.0))
    assert "min ESS" in res.stopped_because, res.stopped_because
    n = sorted(c.n for c in res.chains)
    assert n[1] > n[0], "the chain on the fast worker should have drawn more"
    assert any("ms per draw" in note for note in res.notes), res.notes  # the slow chain is reported
    for w, busy in res.worker_busy_s.items():
        assert busy > 0.6 * res.wall_s * 0.5, (w, busy, res.wall_s)  # busy most of the sampling phase


# docs/testing.md: long; a lost worker is detected and its group rebuilt in test_killed_worker_gives_clear_
# error_quickly; that sampling keeps its draws and MAP resumes after the loss is checked by `make test-all`
@pytest.mark.long
def test_sampling_survives_a_killed_worker_and_keeps_its_draws(rt, problem):
    data, _, _ = problem
    seen: dict[int, int] = {}

    def kill_after_first_segments(chain, n):
        seen[chain] = n
        if len(seen) == 2 and not getattr(kill_after_first_segments, "done", False):
            kill_after_first_segments.done = True
            kill_after_first_segments.before = dict(seen)
            os.kill(rt.pids[0], signal.SIGKILL)

    res = cg.infer.nuts(hier_model, data, chains=2, warmup=80, draws=100, runtime=rt, seed=6, segment=25,
                        parallel="chains", on_segment=kill_after_first_segments)
    assert getattr(kill_after_first_segments, "done", False)
    assert res.posterior["a"].shape == (2, 100, 7)
    for c in res.chains:  # the draws made before the loss are the first draws of the result
        assert c.n >= 100 and c.n >= kill_after_first_segments.before[c.id]


def test_killed_worker_gives_clear_error_quickly(rt, problem):
    data, z, _ = problem
    plan = cg.partition(hier_model, data, cluster=cg.ClusterSpec.local(devices=2), split=("row",))
    prog = cg.compile(plan, runtime=rt)
    os.kill(rt.pids[1], signal.SIGKILL)
    t0 = time.monotonic()
    try:  # the survivor's collective fails too; the error names the worker that died
        with pytest.raises(WorkerError, match="worker 1 of 2 died"):
            prog.potential_and_grad(z)
        assert time.monotonic() - t0 < 60
    finally:
        rt.restart()  # the group is rebuilt (also for the next tests if this one failed)
    v, _ = cg.compile(plan, runtime=rt).potential_and_grad(z)
    assert np.isfinite(v)


@pytest.mark.long  # docs/testing.md: see test_sampling_survives_a_killed_worker_and_keeps_its_draws
def test_map_resumes_after_a_worker_is_killed(rt, problem):
    data, _, _ = problem
    reference = cg.infer.map(hier_model, data, chunk=5)
    killed = []

    def kill_once(iteration, objective):
        if not killed:
            killed.append(iteration)
            os.kill(rt.pids[1], signal.SIGKILL)

    res = cg.infer.map(hier_model, data, runtime=rt, split=("group",), chunk=5, on_chunk=kill_once)
    assert killed, "the hook never ran"
    assert res.converged
    assert abs(res.objective - reference.objective) <= 1e-4 * abs(reference.objective)


def test_parquet_workers_read_only_their_rows(rt, problem, tmp_path):
    """Each worker reads its own rows from the file (row split: only the row groups that hold its
    block; group split: only those holding its groups' rows), and the program equals the one
    built from the same data in memory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data, z, (v_ref, g_ref) = problem
    path = tmp_path / "hier.parquet"
    X = np.asarray(data.X)
    pq.write_table(pa.table({"x0": X[:, 0], "x1": X[:, 1], "x2": X[:, 2], "g": np.asarray(data.g).astype(np.int64),
                             "y": np.asarray(data.y)}), path, row_group_size=25)
    files = cg.Data.from_parquet(path, X=(["x0", "x1", "x2"], "row", "feature"), y=("y", "row"),
                                 g=cg.parquet.index_column("g", "row", into="group", size=7))

    def reads(worker, file):
        from claygraph.frontend import parquet

        return [e for e in parquet.READ_LOG if e["file"] == file]

    for split in [("row",), ("group",)]:
        plan = cg.partition(hier_model, files, cluster=cg.ClusterSpec.local(devices=2), split=split)
        prog = cg.compile(plan, runtime=rt)
        v, g = prog.potential_and_grad(z)
        _close(v, v_ref, rtol=1e-5)
        for k in g_ref:
            _close(g[k], g_ref[k])
        logs = rt.on_workers(reads, str(path))
        if split == ("group",):  # nobody holds a table of every row: each worker finds its rows in the column
            rows = prog.artifact.candidate.layout["row"]
            assert rows.table is None and isinstance(rows.route.index, parquet.ParquetSource)
            assert len(pickle.dumps(dict(prog.artifact.candidate.layout))) < 20_000  # (the groups' slots)
            # the index column's values reach the workers from the files: both passes, then each shard's rows
            assert all(sum(e["array"] == "g" for e in log) >= 3 for log in logs)
        for worker, log in enumerate(logs):
            assert {e["pid"] for e in log} != {os.getpid()} and log, "the workers read, not the driver"
            # X (3 features, read only by X @ w) is held feature-major: each worker reads it so, no row-major copy
            assert {e["feature_major"] for e in log if e["array"] == "X"} == {True}
            assert {e["feature_major"] for e in log if e["array"] != "X"} == {False}
            if split == ("row",):  # rows [0, 151) and [151, 301): row groups 0-6 and 6-12 of 13
                groups = {g for e in log for g in e["row_groups"]}
                assert groups == (set(range(7)) if worker == 0 else set(range(6, 13))), groups
        rt.on_workers(lambda worker: __import__("claygraph.frontend.parquet").frontend.parquet.READ_LOG.clear())



# docs/testing.md: the unsplit fit on Ray (one worker runs it whole) is long; the row and feature splits,
# whose collectives cross the processes, stay in the default suite
@pytest.mark.parametrize("split", [pytest.param((), marks=pytest.mark.long), ("row",), ("feature",)])
def test_logistic_regression_on_ray_equals_scikit_learn(rt, split):
    """W1's shape at test scale on Ray(workers=2), every split the partitioner offers for it."""
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression

    rng = np.random.default_rng(0)
    X = rng.normal(size=(800, 5)).astype(np.float32)
    y = (rng.random(800) < 1 / (1 + np.exp(-(X @ (rng.normal(size=5) / np.sqrt(5)) + 0.2)))).astype(np.float64)
    ref = SkLogisticRegression(C=1.0, tol=1e-10, max_iter=5000).fit(X, y)
    m = cg.glm.LogisticRegression(C=1.0, tol=1e-8, split=split, runtime=rt).fit(X, y)
    assert np.max(np.abs(m.coef_ - ref.coef_)) < 1e-4
    assert np.allclose(m.intercept_, ref.intercept_, atol=1e-4)


def test_estimators_in_model_selection_on_ray(rt):
    """GridSearchCV over a Pipeline on Ray(workers=2): clone shares the runtime, the scores are finite and
    equal Local's, and the fitted estimator pickles without its runtime's state."""
    import pickle

    from sklearn.model_selection import GridSearchCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(4)
    X = rng.normal(size=(120, 3))
    y = np.argmax(X @ rng.normal(size=(3, 3)) + rng.gumbel(size=(120, 3)), axis=1)

    def search(runtime):
        pipe = make_pipeline(StandardScaler(), cg.glm.LogisticRegression(runtime=runtime))
        return GridSearchCV(pipe, {"logisticregression__C": [0.01, 1.0]}, cv=2).fit(X, y)

    on_ray, local = search(rt), search(None)
    scores = on_ray.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(scores))
    np.testing.assert_allclose(scores, local.cv_results_["mean_test_score"])
    best = on_ray.best_estimator_[-1]
    assert best.get_params()["runtime"] is rt
    np.testing.assert_allclose(best.coef_, local.best_estimator_[-1].coef_, atol=1e-4)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(best, protocol=5)).coef_, best.coef_)
