"""A Ray start that fails midway leaves nothing behind: no worker process, placement group or
actor, and no cluster when the runtime started it. The failure is injected where the workers join
the JAX group (after the cluster, the placement group and the actors exist), and, separately, by a
placement group the cluster cannot place."""
import time

import pytest

import claygraph as cg
from claygraph.errors import WorkerError
from claygraph.runtime.ray import Ray

# pytest-xdist: the tests that start a Ray cluster (or a process that does) run one after another on one worker
# (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("ray")

ray = pytest.importorskip("ray")


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def _gone(pids: list[int], within_s: float = 20.0) -> bool:
    deadline = time.monotonic() + within_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not any(_alive(p) for p in pids)


@pytest.fixture
def failing_join(monkeypatch):
    """Ray._join fails after noting the pids of the actors it was given."""
    seen: list[int] = []

    def join(self):
        seen.extend(self._get([a.pid.remote() for a in self._actors], "reading pids"))
        raise RuntimeError("injected: the group did not form")

    monkeypatch.setattr(Ray, "_join", join)
    return seen


def test_a_failed_start_stops_the_cluster_it_started(failing_join):
    assert not ray.is_initialized()
    with pytest.raises(RuntimeError, match="injected"):
        with cg.runtime.Ray(workers=2, timeout_s=60):
            pytest.fail("the body must not run")
    assert len(failing_join) == 2
    assert not ray.is_initialized(), "the cluster this runtime started is still up"
    assert _gone(failing_join), "worker processes outlived the failed start"


def test_a_failed_start_on_a_running_cluster_leaves_no_actor_or_placement_group(failing_join):
    from ray.util.state import list_actors

    assert not ray.is_initialized()
    ray.init(num_cpus=2, include_dashboard=True)  # the state API (list_actors) asks the dashboard
    try:
        rt = cg.runtime.Ray(workers=2, address="auto", timeout_s=60)
        with pytest.raises(RuntimeError, match="injected"):
            rt.start()
        assert ray.is_initialized(), "a cluster the runtime did not start must stay up"
        assert _gone(failing_join), "worker processes outlived the failed start"
        assert {pg["state"] for pg in ray.util.placement_group_table().values()} <= {"REMOVED"}
        here = ray.get_runtime_context().gcs_address  # this cluster (others may run on the machine)
        assert [a for a in list_actors(address=here) if a.state != "DEAD"] == []
        with pytest.raises(WorkerError, match="cannot place 2 workers"):  # more CPUs than the cluster has
            cg.runtime.Ray(workers=2, resources_per_worker={"CPU": 8}, address="auto", timeout_s=3).start()
        assert {pg["state"] for pg in ray.util.placement_group_table().values()} <= {"REMOVED"}
    finally:
        ray.shutdown()
