"""The Ray runtime: one actor per shard, joined into one JAX multi-process group.

The driver starts (or connects to) a cluster, places actors through a placement group, lets
them join `jax.distributed` (gloo on CPU, NCCL on GPU), sends each one only its shard through the
object store, and then only starts, monitors and collects: every actor runs the same jitted
program (SPMD). A worker that dies or stops answering becomes a `WorkerError` naming it.
"""
from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from claygraph.errors import PartitionError, WorkerError
from claygraph.runtime.worker import Worker

DEFAULT_TIMEOUT_S = 600.0
DEATH_GRACE_S = 10.0  # how long a failed step waits to learn whether a peer died
log = logging.getLogger("claygraph.runtime")


@dataclass
class SetupTimes:
    """Set-up overhead by phase, in seconds (W5)."""

    cluster_s: float = 0.0
    actors_s: float = 0.0
    distributed_s: float = 0.0
    shards_s: list[float] = field(default_factory=list)
    compile_s: list[float] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"cluster_s": self.cluster_s, "actors_s": self.actors_s, "distributed_s": self.distributed_s,
                "shards_s": list(self.shards_s), "first_compile_s": list(self.compile_s)}


def _ship_model_by_value(model) -> None:
    """Models defined in scripts or test files are not importable on workers: pickle them by value."""
    from ray import cloudpickle

    mod = sys.modules.get(getattr(model, "__module__", ""), None)
    if mod is None or mod.__name__ == "__main__" or mod.__name__.startswith("claygraph"):
        return
    path = getattr(mod, "__file__", "") or ""
    if "site-packages" not in path:
        cloudpickle.register_pickle_by_value(mod)


class Ray:
    """`workers` actors, one device each, as one mesh. Use as a context manager.

    address: None starts a local cluster (shut down on close); "auto" or an address connects
    to a running one (left running on close). strategy: "PACK" (default) or "SPREAD".
    """

    def __init__(self, workers: int = 2, resources_per_worker: Mapping[str, float] | None = None,
                 address: str | None = None, strategy: str = "PACK", timeout_s: float = DEFAULT_TIMEOUT_S):
        self.workers = int(workers)
        self.resources = dict(resources_per_worker or {"CPU": 1})
        self.address, self.strategy, self.timeout_s = address, strategy, timeout_s
        self.platform = "gpu" if self.resources.get("GPU", 0) > 0 else "cpu"
        self.times = SetupTimes()
        self._started_ray = False
        self._actors: list[Any] = []
        self._extras: list[Any] = []  # workers that joined later, outside the JAX group
        self._pg = None
        self.info: list[dict] = []
        self._closed = True

    def __deepcopy__(self, memo) -> Ray:
        # a handle to live workers, not a value: copies (scikit-learn's clone deep-copies an
        # estimator's parameters) share the workers and are closed with them
        return self

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Ray:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> Ray:
        t0 = time.perf_counter()
        if not ray.is_initialized():
            if self.address is None:
                cpus = max(int(self.resources.get("CPU", 1) * self.workers), 1)
                ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=True)
                self._started_ray = True
            else:
                ray.init(address=self.address)
        self.times.cluster_s = time.perf_counter() - t0
        self._spawn()
        self._closed = False
        return self

    def _spawn(self) -> None:
        t0 = time.perf_counter()
        bundles = [dict(self.resources) for _ in range(self.workers)]
        self._pg = placement_group(bundles, strategy=self.strategy)
        try:
            ray.get(self._pg.ready(), timeout=min(self.timeout_s, 120))
        except ray.exceptions.GetTimeoutError:
            raise WorkerError(f"the cluster cannot place {self.workers} workers with {self.resources} each "
                              f"({self.strategy}); available: {ray.available_resources()}") from None
        cls = ray.remote(Worker)
        opts = self._actor_options()
        self._actors = [cls.options(**opts, scheduling_strategy=PlacementGroupSchedulingStrategy(
            placement_group=self._pg, placement_group_bundle_index=i)).remote(i, self.workers, self.platform)
                        for i in range(self.workers)]
        coordinator = self._get([self._actors[0].address.remote()], "finding a coordinator port")[0]
        self.times.actors_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        self.info = self._get([a.init.remote(coordinator) for a in self._actors], "jax.distributed.initialize")
        self.times.distributed_s = time.perf_counter() - t1
        self.pids = self._get([a.pid.remote() for a in self._actors], "reading process ids")

    # -- workers that join later (chain-parallel only) ---------------------------------------
    def grow(self, wait_s: float = 15.0) -> int | None:
        """Start one more worker outside the JAX group if the cluster has room for it now (e.g. a
        node the autoscaler added); returns its index for `submit`, or None. Extra workers run
        one-device programs (whole chains), never collectives, so they need no place in the group."""
        self._check_open()
        free = ray.available_resources()
        if any(free.get(k, 0.0) < v for k, v in self.resources.items()):
            return None
        rank = len(self._actors) + len(self._extras)
        actor = ray.remote(Worker).options(**self._actor_options()).remote(rank, 1, self.platform)
        try:
            ray.get(actor.pid.remote(), timeout=wait_s)
        except (ray.exceptions.GetTimeoutError, ray.exceptions.RayActorError):
            ray.kill(actor, no_restart=True)  # placed nowhere after all
            return None
        self._extras.append(actor)
        log.info("a worker joined: %d in the group and %d extra", len(self._actors), len(self._extras))
        return len(self._actors) + len(self._extras) - 1

    @property
    def extra_workers(self) -> int:
        return len(self._extras)

    def load_local_on(self, worker: int, key: str, model, data, jacobian: bool = True) -> None:
        """Load the one-device program `key` (see load_local) on one worker, e.g. one that just joined."""
        self._get([self._everyone()[worker].load_local.remote(key, model, data, jacobian)],
                  "loading the whole data on a worker that joined")

    def _everyone(self) -> list:
        return list(self._actors) + list(self._extras)

    def _actor_options(self) -> dict:
        return {"num_cpus": self.resources.get("CPU", 0), "num_gpus": self.resources.get("GPU", 0),
                "max_restarts": 0, "max_concurrency": 2}

    def close(self) -> None:
        for a in self._extras:
            try:
                ray.kill(a, no_restart=True)
            except Exception:
                pass
        self._extras = []
        for a in self._actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # an actor that already died
                pass
        self._actors = []
        if self._pg is not None:
            try:
                remove_placement_group(self._pg)
            except Exception:
                pass
            self._pg = None
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False
        self._closed = True

    def restart(self) -> None:
        """Rebuild the worker group (after a loss): new actors, a new JAX group; programs must be re-sent."""
        started = self._started_ray
        self._started_ray = False  # keep the cluster
        self.close()
        self._started_ray = started
        self._spawn()
        self._closed = False

    # -- monitoring --------------------------------------------------------------------------
    def _get(self, refs: list, what: str, timeout: float | None = None) -> list:
        """Every ref's value, in order. Fails fast: the first worker to die or fail raises a
        WorkerError naming it (its peers may be stuck in a collective waiting for it)."""
        timeout = self.timeout_s if timeout is None else timeout
        index = {r: i for i, r in enumerate(refs)}
        values: dict[int, Any] = {}
        pending, deadline = list(refs), time.monotonic() + timeout
        while pending:
            ready, pending = ray.wait(pending, num_returns=1, timeout=max(0.0, deadline - time.monotonic()))
            if not ready:
                late = sorted(index[r] for r in pending)
                raise WorkerError(f"workers {late} did not finish {what} within {timeout:.0f} s; a peer may have "
                                  f"died (collectives wait for every worker)")
            i = index[ready[0]]
            try:
                values[i] = ray.get(ready[0])
            except ray.exceptions.RayActorError as e:
                raise WorkerError(f"worker {i} of {len(refs)} died while {what}: {str(e).splitlines()[0]}") from e
            except ray.exceptions.RayTaskError as e:
                # a collective fails on the survivors when a peer dies: name the dead worker if there is one
                dead = self._dead_among(pending, index)
                if dead is not None:
                    raise WorkerError(f"worker {dead} of {len(refs)} died while {what} (worker {i} failed with "
                                      f"it: {e.cause!r})") from e
                raise WorkerError(f"worker {i} failed while {what}: {e.cause!r}") from e
        return [values[i] for i in range(len(refs))]

    def _dead_among(self, pending: list, index: dict, grace_s: float = DEATH_GRACE_S) -> int | None:
        """The first of the `pending` refs' workers found dead within `grace_s`, or None."""
        ready, _ = ray.wait(pending, num_returns=len(pending), timeout=grace_s) if pending else ([], [])
        for ref in ready:
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                return index[ref]
            except Exception:  # another failure of the same collective
                continue
        return None

    def run(self, fn, *args, timeout: float | None = None, what: str = "running a step",
            ranks: tuple[int, ...] | None = None) -> list:
        """Run `fn(worker, *args)` on every worker, or on workers `ranks` (SPMD); returns each one's result."""
        self._check_open()
        refs = [ray.put(a) if isinstance(a, np.ndarray) and a.nbytes > 1 << 20 else a for a in args]
        return self._get([a.run.remote(fn, *refs) for a in self._group(ranks)], what, timeout)

    def _group(self, ranks: tuple[int, ...] | None) -> list:
        return list(self._actors) if ranks is None else [self._actors[r] for r in ranks]

    def submit(self, worker: int | tuple[int, ...], key: str, fn, *args):
        """Start fn(context, *args) on program `key` of one worker, or of every worker of a group (SPMD);
        returns a ref, or the group's refs (no barrier)."""
        from claygraph.runtime.spmd import _on_worker

        self._check_open()
        if isinstance(worker, tuple):
            return [self._actors[r].run.remote(_on_worker, key, fn, *args) for r in worker]
        return self._everyone()[worker].run.remote(_on_worker, key, fn, *args)

    def wait_one(self, refs: list, what: str):
        """The first of `refs` to finish, and its value; a dead worker becomes a WorkerError."""
        ready, _ = ray.wait(refs, num_returns=1, timeout=self.timeout_s)
        if not ready:
            raise WorkerError(f"no worker finished {what} within {self.timeout_s:.0f} s")
        ref = ready[0]
        try:
            return ref, ray.get(ref)
        except ray.exceptions.RayActorError as e:
            raise WorkerError(f"a worker died while {what}: {str(e).splitlines()[0]}") from e
        except ray.exceptions.RayTaskError as e:
            raise WorkerError(f"a worker failed while {what}: {e.cause!r}") from e

    def load_local(self, model, data, jacobian: bool = True) -> str:
        """Every worker builds a one-device program over the whole data (for chain-parallel runs)."""
        self._check_open()
        _ship_model_by_value(model)
        key = uuid.uuid4().hex[:12]
        ref = ray.put(data)
        self._get([a.load_local.remote(key, model, ref, jacobian) for a in self._actors],
                  "loading the whole data for chain-parallel sampling")
        return key

    def _check_open(self) -> None:
        if self._closed or not self._actors:
            raise WorkerError("the Ray runtime is closed; use it inside `with cg.runtime.Ray(...) as rt:`")

    @property
    def actors(self) -> list:
        return list(self._actors)

    # -- programs --------------------------------------------------------------------------
    def compile(self, plan, data=None, ranks: tuple[int, ...] | None = None) -> RayProgram:
        """The split program on every worker, or on the workers `ranks` (a group of a chains x shards
        mesh: the plan is for len(ranks) devices, and only those workers get shards)."""
        from claygraph.partition.plan import candidate_with_layout, layout_for
        from claygraph.partition.program import data_specs, internal_data, shard_blocks

        self._check_open()
        data = data if data is not None else plan.data
        if data is None or not data.has_values:
            raise PartitionError("compiling on Ray needs the real data: cg.compile(plan, data=..., runtime=rt)")
        ranks = tuple(range(self.workers)) if ranks is None else tuple(int(r) for r in ranks)
        if sorted(set(ranks)) != sorted(ranks) or not all(0 <= r < self.workers for r in ranks):
            raise PartitionError(f"ranks {ranks} must be distinct workers of 0..{self.workers - 1}")
        if plan.devices != len(ranks):
            raise PartitionError(f"the plan is for {plan.devices} devices but the program spans {len(ranks)} "
                                 f"workers; plan with cluster=ClusterSpec.local(devices={len(ranks)})")
        model = plan.graph.meta.model
        _ship_model_by_value(model)
        layout = layout_for(plan.chosen.split, plan.graph, data, plan.devices)
        cand = candidate_with_layout(plan.graph, plan.chosen.split, layout, plan.cluster, plan.devices)
        specs = data_specs(plan.graph, cand)
        internal = internal_data(plan.graph, cand, data)  # the in-memory arrays
        shapes = {k: x.shape for k, x in internal.items()}
        files = {k: data.arrays[k].source for k in plan.graph.inputs.data if data.arrays[k].source is not None}
        shapes.update({k: _internal_shape(plan.graph, k, cand.layout) for k in files})
        key = uuid.uuid4().hex[:12]
        # each worker gets its own block of the in-memory arrays, and reads its rows of the files itself
        refs = [ray.put({**shard_blocks(specs, internal, len(ranks), i), **files}) for i in range(len(ranks))]
        del internal
        t0 = time.perf_counter()
        loads = self._get([a.load.remote(key, model, data.abstract(), plan.chosen.split, dict(layout), plan.cluster,
                                         plan.devices, refs[i], shapes, plan.graph.meta.jacobian, ranks)
                           for i, a in enumerate(self._group(ranks))],
                          "loading its shard and building the program")
        self.times.shards_s.append(time.perf_counter() - t0)
        prog = RayProgram(self, key, plan, cand, ranks)
        t1 = time.perf_counter()
        prog.potential_and_grad(_zeros(plan.graph))  # first compile, measured
        self.times.compile_s.append(time.perf_counter() - t1)
        prog.load_s = loads
        return prog

    def __repr__(self) -> str:
        return f"Ray(workers={self.workers}, resources_per_worker={self.resources}, address={self.address!r})"


def _internal_shape(graph, name: str, layout) -> tuple[int, ...]:
    v = graph.value(graph.inputs.data[name])
    return tuple(layout[d].internal if d in layout else n for d, n in zip(v.dims, v.shape))


def _zeros(graph) -> dict[str, np.ndarray]:
    return {k: np.zeros(s, graph.value(graph.inputs.params[k]).dtype) for k, s in graph.param_shapes.items()}


class RayProgram:
    """A Program whose shards live on Ray workers; same `potential`/`potential_and_grad` as Program."""

    def __init__(self, runtime: Ray, key: str, plan, candidate, ranks: tuple[int, ...] | None = None):
        self.runtime, self.key, self.plan, self.candidate = runtime, key, plan, candidate
        self.ranks = tuple(range(runtime.workers)) if ranks is None else tuple(ranks)
        self.graph = plan.graph
        self.layout = candidate.layout
        self.load_s: list[float] = []

    @property
    def split(self) -> tuple[str, ...]:
        return self.plan.split

    def _params(self, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
        from claygraph.partition.program import check_params

        return check_params(self.graph, params)

    def potential(self, params: Mapping[str, Any]):
        p = ray.put(self._params(params))
        return self.runtime._get([a.potential.remote(self.key, p) for a in self.runtime._group(self.ranks)],
                                 "evaluating the potential")[0]

    def potential_and_grad(self, params: Mapping[str, Any]):
        p = ray.put(self._params(params))
        return self.runtime._get([a.potential_and_grad.remote(self.key, p)
                                  for a in self.runtime._group(self.ranks)],
                                 "evaluating the potential and its gradient")[0]

    def __repr__(self) -> str:
        return f"<RayProgram split={self.split or '()'} workers={list(self.ranks)}>"


__all__ = ["Ray", "RayProgram", "SetupTimes"]
