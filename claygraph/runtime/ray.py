"""The Ray runtime: one actor per shard, joined into one JAX multi-process group.

The driver starts (or connects to) a cluster, places actors through a placement group, lets
them join `jax.distributed` (gloo on CPU, NCCL on GPU; the coordinator bound to loopback when
every worker shares a node, else to worker 0's node address), compiles each program once into an
artifact, sends each actor the artifact and only its shard through the object store, and then
only starts, monitors and collects: every actor runs the same jitted program (SPMD). A worker
that dies or stops answering becomes a `WorkerError` naming it. Whatever a failed start created
is torn down before the error propagates.
"""
from __future__ import annotations

import contextlib
import logging
import sys
import time
import uuid
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from claygraph.errors import PartitionError, WorkerError
from claygraph.partition.cache import CompileCache
from claygraph.partition.params import ParamLayout, merge
from claygraph.partition.program import Compiled, check_params, compile_artifact, param_layout
from claygraph.runtime.worker import Worker

DEFAULT_TIMEOUT_S = 600.0
DEATH_GRACE_S = 10.0  # how long a failed step waits to learn whether a peer died
MAX_PENDING_FREES = 64  # replies to program frees kept for the next compile to await
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

    link = "processes"  # what its collectives cross: ClusterSpec.local(link=...) plans for it

    def __init__(self, workers: int = 2, resources_per_worker: Mapping[str, float] | None = None,
                 address: str | None = None, strategy: str = "PACK", timeout_s: float = DEFAULT_TIMEOUT_S):
        self._workers = int(workers)
        self.resources = dict(resources_per_worker or {"CPU": 1})
        self.address, self.strategy, self.timeout_s = address, strategy, timeout_s
        self.platform = "gpu" if self.resources.get("GPU", 0) > 0 else "cpu"
        self.times = SetupTimes()
        self._started_ray = False
        self._actors: list[Any] = []
        self._extras: list[Any] = []  # workers that joined later, outside the JAX group
        self._pg = None
        self._generation = 0  # bumped whenever the workers go: programs of an older generation are gone
        self._freeing: list = []  # replies of workers dropping programs, awaited before the next shards go out
        self.info: list[dict] = []
        self.pids: list[int] = []
        self.coordinator: str | None = None
        self._closed = True
        # driver-side functions jitted per graph (constraining a result), shared by refits of one graph
        self._driver_jits = CompileCache()

    def __deepcopy__(self, memo) -> Ray:
        # a handle to live workers, not a value: copies (scikit-learn's clone deep-copies an
        # estimator's parameters) share the workers and are closed with them
        return self

    def __getstate__(self) -> dict:
        # a pickled handle (a fitted estimator's `runtime`) leaves this process's jitted functions and
        # pending replies behind
        state = dict(self.__dict__)
        state.update(_driver_jits=None, _freeing=[])
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._driver_jits = CompileCache()

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> Ray:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def workers(self) -> int:
        return self._workers

    @property
    def devices(self) -> int:
        return self._workers

    @property
    def elastic(self) -> bool:
        """Connected to a running cluster: nodes may join (an autoscaler), so chain-parallel runs grow."""
        return self.address is not None

    def start(self) -> Ray:
        """Start (or connect to) the cluster and the worker group. If any step fails, everything
        this call created (actors, placement group, the cluster it started) is gone before the error
        propagates."""
        try:
            t0 = time.perf_counter()
            if not ray.is_initialized():
                if self.address is None:
                    cpus = max(int(self.resources.get("CPU", 1) * self._workers), 1)
                    self._started_ray = True
                    with _quiet_auth_notice():
                        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=True)
                else:
                    ray.init(address=self.address)
            self.times.cluster_s = time.perf_counter() - t0
            self._spawn()
        except BaseException:
            self.close()
            raise
        self._closed = False
        return self

    def _spawn(self) -> None:
        t0 = time.perf_counter()
        bundles = [dict(self.resources) for _ in range(self._workers)]
        self._pg = placement_group(bundles, strategy=self.strategy)
        try:
            ray.get(self._pg.ready(), timeout=min(self.timeout_s, 120))
        except ray.exceptions.GetTimeoutError:
            raise WorkerError(f"the cluster cannot place {self._workers} workers with {self.resources} each "
                              f"({self.strategy}); available: {ray.available_resources()}") from None
        cls = ray.remote(Worker)
        opts = self._actor_options()
        for i in range(self._workers):  # one by one: a failure midway leaves the ones made so far to close
            self._actors.append(cls.options(**opts, scheduling_strategy=PlacementGroupSchedulingStrategy(
                placement_group=self._pg, placement_group_bundle_index=i)).remote(i, self._workers, self.platform))
        self.pids = self._get([a.pid.remote() for a in self._actors], "starting")
        self.times.actors_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        self._join()
        self.times.distributed_s = time.perf_counter() - t1

    def _join(self) -> None:
        """Join the JAX group through a coordinator on worker 0, bound to loopback when every worker
        is on one node, else to worker 0's node address; its port is held from choice to bind."""
        nodes = self._get([a.node.remote() for a in self._actors], "finding the workers' nodes")
        host = coordinator_host(nodes)
        port = self._get([self._actors[0].reserve_port.remote(host)], "reserving the coordinator's port")[0]
        self.coordinator = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.info = self._get([a.init.remote(self.coordinator) for a in self._actors], "jax.distributed.initialize")

    def close(self) -> None:
        """Kill the workers, remove the placement group, and stop the cluster if this runtime started
        it. Safe after a partial start and when called twice."""
        self._generation += 1
        self._driver_jits.clear()
        self._freeing = []
        for a in self._extras + self._actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # an actor that already died
                pass
        self._extras, self._actors = [], []
        if self._pg is not None:
            try:
                remove_placement_group(self._pg)
            except Exception:  # the cluster is gone
                pass
            self._pg = None
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False
        self._closed = True

    def restart(self) -> None:
        """Rebuild the worker group (after a loss): new actors, a new JAX group; programs must be
        compiled again. A failed rebuild closes the runtime."""
        started = self._started_ray
        self._started_ray = False  # keep the cluster
        self.close()
        self._started_ray = started
        try:
            self._spawn()
        except BaseException:
            self.close()
            raise
        self._closed = False

    def _actor_options(self) -> dict:
        return {"num_cpus": self.resources.get("CPU", 0), "num_gpus": self.resources.get("GPU", 0),
                "max_restarts": 0, "max_concurrency": 2}

    # -- workers that join later (chain-parallel only) ---------------------------------------
    def grow(self, plan, data=None, wait_s: float = 15.0) -> RayProgram | None:
        """Start one more worker outside the JAX group if the cluster has room for it now (e.g. a
        node the autoscaler added) and compile `plan` (one device) on it; None when there is no room.
        Extra workers run one-device programs (whole chains), never collectives."""
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
        compiled = self._compiled(plan, data, 1, materialize=True)
        blocks = ray.put({**compiled.internal, **compiled.files})
        return self.load(compiled.artifact, plan.graph, [blocks], (rank,), warm=False)

    @property
    def extra_workers(self) -> int:
        return len(self._extras)

    def _everyone(self) -> list:
        return list(self._actors) + list(self._extras)

    def _group(self, ranks: tuple[int, ...]) -> list:
        everyone = self._everyone()
        return [everyone[r] for r in ranks]

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

    def _check_open(self) -> None:
        if self._closed or not self._actors:
            raise WorkerError("the Ray runtime is closed; use it inside `with cg.runtime.Ray(...) as rt:`")

    @property
    def actors(self) -> list:
        return list(self._actors)

    # -- steps (the Runtime protocol) ------------------------------------------------------------
    def run(self, program: RayProgram, fn, *args) -> Any:
        """fn(context, *args) on every worker of `program` (SPMD); worker 0's (replicated) result, with
        the workers' shards of a sharded result put together."""
        return merge(self.gather(self.submit(program, fn, *args), f"running {getattr(fn, '__name__', 'a step')}"))

    def submit(self, program: RayProgram, fn, *args) -> list:
        """Start fn(context, *args) on every worker of `program`; one ref per worker (no barrier)."""
        self._check_open()
        refs = [ray.put(a) if isinstance(a, np.ndarray) and a.nbytes > 1 << 20 else a for a in args]
        return [a.step.remote(program.key, fn, *refs) for a in self._group(program.ranks)]

    def wait(self, handles: list, what: str) -> tuple[Any, Any]:
        """The first of `handles` to finish, and its value; a dead worker becomes a WorkerError."""
        ready, _ = ray.wait(list(handles), num_returns=1, timeout=self.timeout_s)
        if not ready:
            raise WorkerError(f"no worker finished {what} within {self.timeout_s:.0f} s")
        ref = ready[0]
        try:
            return ref, ray.get(ref)
        except ray.exceptions.RayActorError as e:
            raise WorkerError(f"a worker died while {what}: {str(e).splitlines()[0]}") from e
        except ray.exceptions.RayTaskError as e:
            raise WorkerError(f"a worker failed while {what}: {e.cause!r}") from e

    def gather(self, handles: list, what: str) -> list:
        return self._get(list(handles), what)

    def on_workers(self, fn, *args, ranks: tuple[int, ...] | None = None, timeout: float | None = None,
                   what: str = "running a function on the workers") -> list:
        """fn(worker, *args) on every worker of the group, or on workers `ranks`; each one's result
        (measurements and checks that need the worker itself, not a program)."""
        self._check_open()
        ranks = tuple(range(self._workers)) if ranks is None else tuple(ranks)
        return self._get([a.run.remote(fn, *args) for a in self._group(ranks)], what, timeout)

    # -- programs --------------------------------------------------------------------------
    def compile(self, plan, data=None, ranks: tuple[int, ...] | None = None) -> RayProgram:
        """The split program on every worker, or on the workers `ranks` (a group of a chains x shards
        mesh: the plan is for len(ranks) devices, and only those workers get shards). Compiled once
        here; each worker gets the artifact and its own block of the in-memory arrays, and reads its
        rows of file-backed arrays itself."""
        self._check_open()
        ranks = tuple(range(self._workers)) if ranks is None else tuple(int(r) for r in ranks)
        if len(set(ranks)) != len(ranks) or not all(0 <= r < self._workers for r in ranks):
            raise PartitionError(f"ranks {ranks} must be distinct workers of 0..{self._workers - 1}")
        compiled = self._compiled(plan, data, len(ranks))
        specs = compiled.artifact.specs(plan.graph)
        self._settle()
        # each shard's block made from the user's arrays, put and dropped before the next (the driver
        # never holds the whole data set in the internal layout)
        blocks = [ray.put({**compiled.shard(plan.graph, specs, len(ranks), i), **compiled.files})
                  for i in range(len(ranks))]
        return self.load(compiled.artifact, plan.graph, blocks, ranks)

    def compile_each(self, plan, data=None) -> list[RayProgram]:
        """`plan` (one device) on every worker of the group alone: one artifact, the data sent once."""
        self._check_open()
        compiled = self._compiled(plan, data, 1, materialize=True)
        self._settle()
        blocks = ray.put({**compiled.internal, **compiled.files})
        return [self.load(compiled.artifact, plan.graph, [blocks], (r,), warm=False) for r in range(self._workers)]

    def _compiled(self, plan, data, devices: int, materialize: bool = False) -> Compiled:
        data = data if data is not None else plan.data
        if data is None or not data.has_values:
            raise PartitionError("compiling on Ray needs the real data: cg.compile(plan, data=..., runtime=rt)")
        if plan.devices != devices:
            raise PartitionError(f"the plan is for {plan.devices} devices but the program spans {devices} "
                                 f"workers; plan with cluster=ClusterSpec.local(devices={devices})")
        _ship_model_by_value(plan.graph.meta.model)
        return compile_artifact(plan, data, materialize=materialize)

    def load(self, artifact, graph, blocks: list, ranks: tuple[int, ...], warm: bool = True) -> RayProgram:
        """Send `artifact` (compiled from `graph`, the driver's) and each worker its block
        (`blocks[i]` to worker `ranks[i]`, or one block to all); each worker lowers the model and
        refuses the artifact unless its graph is the one compiled. With `warm`, the first gradient
        is evaluated here when a worker built the program's split function afresh (the first compile,
        measured); a refit that reuses the workers' compiled functions skips it."""
        self._check_open()
        key = uuid.uuid4().hex[:12]
        art = ray.put(artifact)
        t0 = time.perf_counter()
        loads = self._get([a.load.remote(key, art, blocks[i % len(blocks)], ranks)
                           for i, a in enumerate(self._group(ranks))], "loading its shard and building the program")
        self.times.shards_s.append(time.perf_counter() - t0)
        prog = RayProgram(self, key, artifact, graph, ranks, [s for s, _ in loads],
                          self._driver_jits.get(artifact.fingerprint, dict))
        if warm and any(new for _, new in loads):
            t1 = time.perf_counter()
            prog.potential_and_grad(_zeros(graph))
            self.times.compile_s.append(time.perf_counter() - t1)
        return prog

    def free(self, program: RayProgram) -> None:
        """Drop `program` on its workers (also done when the program is garbage)."""
        program._release()

    def _settle(self, timeout_s: float = 10.0) -> None:
        """Wait until the workers have dropped the programs freed so far: their shards leave the object
        store before new ones are put (which then reuse that memory instead of growing the store)."""
        pending, self._freeing = self._freeing, []
        if pending:
            ray.wait(pending, num_returns=len(pending), timeout=timeout_s)

    def __repr__(self) -> str:
        return f"Ray(workers={self._workers}, resources_per_worker={self.resources}, address={self.address!r})"


class _AuthNotice(logging.Filter):
    """Drops Ray's notice that a cluster it starts uses token authentication by default (docs/runtime.md
    says so once); any other record, and every notice when the user chose a mode, passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Token authentication is enabled for this Ray cluster")


@contextlib.contextmanager
def _quiet_auth_notice():
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    notice = _AuthNotice()
    log.addFilter(notice)
    try:
        yield
    finally:
        log.removeFilter(notice)


def coordinator_host(nodes: list[tuple[str, str]]) -> str:
    """Where worker 0's coordinator binds, from each worker's (node id, node address): loopback
    when every worker is on one node, else worker 0's node address. Never a wildcard."""
    return "127.0.0.1" if len({node for node, _ in nodes}) == 1 else nodes[0][1]


def _zeros(graph) -> dict[str, np.ndarray]:
    return {k: np.zeros(s, graph.value(graph.inputs.params[k]).dtype) for k, s in graph.param_shapes.items()}


def _release(runtime_ref: weakref.ref, generation: int, key: str, ranks: tuple[int, ...]) -> None:
    """Tell the workers that hold program `key` to drop it, if they are still the runtime's."""
    rt = runtime_ref()
    if rt is None or rt._generation != generation or not ray.is_initialized():
        return
    rt._freeing.extend(a.free.remote(key) for a in rt._group(ranks))
    if len(rt._freeing) > MAX_PENDING_FREES:  # many programs freed and no compile since: keep the unanswered
        _, rt._freeing = ray.wait(rt._freeing, num_returns=len(rt._freeing), timeout=0)


class RayProgram:
    """A program whose shards live on Ray workers; same `potential`/`potential_and_grad` as Program.
    Its workers drop it when it is garbage or freed."""

    def __init__(self, runtime: Ray, key: str, artifact, graph, ranks: tuple[int, ...], load_s: list[float],
                 jitted: dict | None = None):
        self.runtime, self.key, self.artifact, self.ranks = runtime, key, artifact, tuple(ranks)
        self.graph, self.layout, self.load_s = graph, artifact.candidate.layout, load_s
        self.jitted = {} if jitted is None else jitted  # driver-side jits of this graph (see Program.jitted)
        self._params: ParamLayout | None = None
        self._release = weakref.finalize(self, _release, weakref.ref(runtime), runtime._generation, key, self.ranks)
        self._release.atexit = False  # at exit the workers go anyway

    @property
    def split(self) -> tuple[str, ...]:
        return self.artifact.split

    @property
    def params(self) -> ParamLayout:
        """Where each latent site lives in the internal layout (and its conversions to and from the user's)."""
        if self._params is None:
            self._params = param_layout(self.graph, self.artifact.candidate)
        return self._params

    def potential(self, params: Mapping[str, Any]):
        p = ray.put(check_params(self.graph, params))
        return self.runtime._get([a.potential.remote(self.key, p) for a in self.runtime._group(self.ranks)],
                                 "evaluating the potential")[0]

    def potential_and_grad(self, params: Mapping[str, Any]):
        """As Program.potential_and_grad: each worker returns its shards of the gradient; they leave the
        internal layout here."""
        p = ray.put(check_params(self.graph, params))
        value, grad = merge(self.runtime._get([a.potential_and_grad.remote(self.key, p)
                                               for a in self.runtime._group(self.ranks)],
                                              "evaluating the potential and its gradient"))
        return value, self.params.to_user(grad)

    def __repr__(self) -> str:
        return f"<RayProgram split={self.split or '()'} workers={list(self.ranks)}>"


__all__ = ["Ray", "RayProgram", "SetupTimes"]
