"""The Ray actor body: one JAX process of the multi-process group. JAX is imported inside methods,
after the environment is set, so that each actor initialises its own backend."""
from __future__ import annotations

import gc
import os
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_FORCE = re.compile(r"--xla_force_host_platform_device_count=\d+")


@dataclass(frozen=True, slots=True)
class Loaded:
    """A program as one worker holds it: the split function, this worker's data, the jitted potential."""

    fn: Any
    data: Mapping[str, Any]
    potential: Any
    multiprocess: bool


class Worker:
    def __init__(self, rank: int, world: int, platform: str):
        # forced host devices and CPU collectives crash together: each actor is one device
        os.environ["XLA_FLAGS"] = _FORCE.sub("", os.environ.get("XLA_FLAGS", "")).strip()
        if platform == "cpu":
            os.environ["JAX_PLATFORMS"] = "cpu"
        self.rank, self.world, self.platform = rank, world, platform
        self.programs: dict[str, Loaded] = {}
        self.contexts: dict[str, Any] = {}
        self.delay = 0.0  # seconds added to every step and evaluation (set only by tests)
        self.mesh = None
        self._port: socket.socket | None = None

    # -- joining the JAX group -----------------------------------------------------------------
    def node(self) -> tuple[str, str]:
        """(Ray node id, node address) of this worker."""
        import ray

        return ray.get_runtime_context().get_node_id(), ray.util.get_node_ip_address()

    def reserve_port(self, host: str) -> int:
        """A free port on `host`, held until the coordinator listens on it. The socket is bound with
        SO_REUSEPORT and never listens: gRPC (which sets SO_REUSEPORT) can bind beside it, any
        other process (and any other user's) is refused, and no connection is ever queued on it."""
        self.release_port()
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind((host, 0))
        self._port = s
        return s.getsockname()[1]

    def release_port(self) -> None:
        if self._port is not None:
            self._port.close()
            self._port = None

    def pid(self) -> int:
        return os.getpid()

    def init(self, coordinator: str) -> dict:
        """Join the group; worker 0's coordination service binds to `coordinator` (never a wildcard)."""
        t0 = time.perf_counter()
        import jax
        import numpy as np
        from jax.sharding import Mesh

        if self.platform == "cpu":
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        try:
            jax.distributed.initialize(coordinator_address=coordinator, num_processes=self.world,
                                       process_id=self.rank, local_device_ids=[0], initialization_timeout=120,
                                       coordinator_bind_address=coordinator if self.rank == 0 else None)
        finally:
            self.release_port()
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
        self.mesh = Mesh(np.array(devices), ("shards",))
        return {"devices": len(devices), "process": jax.process_index(), "init_s": time.perf_counter() - t0}

    def submesh(self, ranks: tuple[int, ...]):
        """The mesh over the devices of workers `ranks` (a chain's group), over every worker, or over
        this worker's own device when it runs a program alone (also a worker outside the group)."""
        import jax
        import numpy as np
        from jax.sharding import Mesh

        if ranks == (self.rank,):
            return Mesh(np.array(jax.local_devices()[:1]), ("shards",))
        if ranks == tuple(range(self.world)):
            return self.mesh
        devices = {d.process_index: d for d in self.mesh.devices.flat}
        return Mesh(np.array([devices[r] for r in ranks]), ("shards",))

    # -- programs --------------------------------------------------------------------------------
    def load(self, key: str, artifact, blocks: Mapping[str, Any], ranks: tuple[int, ...]) -> tuple[float, bool]:
        """Run the driver's compiled artifact: lower the model, refuse it unless the graph is the
        driver's, and place this shard's data; `ranks`: the workers the program spans, in shard order.
        Returns (seconds, whether the split function was built afresh: its first call compiles)."""
        t0 = time.perf_counter()
        import jax
        from jax.sharding import NamedSharding

        from claygraph.frontend.parquet import ParquetSource, forget_row_plans
        from claygraph.partition.cache import COMPILED, key_for
        from claygraph.partition.program import SplitFunction
        from claygraph.partition.storage import key as stored_key

        graph = artifact.graph()  # PartitionError when this worker's graph is not the driver's
        ranks = tuple(ranks)
        mesh = self.submesh(ranks)
        # a refit of the same graph, split, layout and mesh reuses the split function and its jits
        cand = artifact.candidate
        misses = COMPILED.misses
        fn = COMPILED.get(key_for(graph, cand, mesh), lambda: SplitFunction(graph, cand, mesh))
        shard = ranks.index(self.rank)
        data = {}
        try:
            for k, b in blocks.items():
                # a file-backed array the program holds feature-major is read feature-major: no row-major copy
                name = stored_key(k) if isinstance(b, ParquetSource) and k in cand.feature_major else k
                block = self._read(graph, artifact, fn.placed_specs.get(k), k, b, shard, len(ranks), name != k)
                data[name] = jax.make_array_from_process_local_data(NamedSharding(mesh, self._spec(fn, name)),
                                                                    block, self._shape(artifact, name))
                del block
        finally:
            forget_row_plans()  # (kept while this shard's arrays of one dim were read)
        # arrays held feature-major and sent row-major (a one-device program's block): transposed here, on the
        # devices
        data = fn.place(data, artifact.shapes)
        self.programs[key] = Loaded(fn, data, fn.potential, len(ranks) > 1)
        return time.perf_counter() - t0, COMPILED.misses > misses

    @staticmethod
    def _spec(fn, name: str):
        """How block `name` is sharded: a row-major array as laid out, one sent feature-major as read."""
        return fn.placed_specs[name] if name in fn.placed_specs else fn.data_specs[name]

    @staticmethod
    def _shape(artifact, name: str) -> tuple[int, ...]:
        """The global shape of block `name` (one sent feature-major: the transposed array's)."""
        if name in artifact.shapes:
            return tuple(artifact.shapes[name])
        from claygraph.partition.storage import key as stored_key

        row_major = next(k for k in artifact.shapes if stored_key(k) == name)
        return tuple(artifact.shapes[row_major])[::-1]

    def _read(self, graph, artifact, spec, name: str, block, shard: int, shards: int, transposed: bool = False):
        """A block as sent, or this worker's rows of a file-backed array, read here (`transposed`: feature-major)."""
        from claygraph.frontend.parquet import ParquetSource, read_block

        if not isinstance(block, ParquetSource):
            return block
        cand = artifact.candidate
        vid = graph.inputs.data[name]
        axis = next((i for i, a in enumerate(spec) if a is not None), None)
        remapped = cand.propagation.remapped.get(vid)
        remap = cand.layout[remapped].inverse() if remapped is not None else None
        return read_block(block, graph.value(vid).dims, cand.layout, axis, shard, shards, remap, transposed)

    def free(self, key: str) -> None:
        self.programs.pop(key, None)
        self.contexts.pop(key, None)
        # XLA hands host buffers it used in place (the shard, read from the object store without a copy)
        # back to Python only at JAX's next garbage callback: run one now, so that the object store can
        # reuse the shard's memory for the next program instead of faulting in fresh pages
        gc.collect(0)

    def held(self) -> list[str]:
        """Keys of the programs this worker holds."""
        return sorted(self.programs)

    def _params(self, params: Mapping[str, Any], prog: Loaded):
        import jax
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        rep = NamedSharding(prog.fn.mesh, P())
        return {k: jax.make_array_from_process_local_data(rep, v) for k, v in params.items()}

    def potential(self, key: str, params: Mapping[str, Any]):
        import numpy as np

        prog = self.programs[key]
        time.sleep(self.delay)
        return np.asarray(prog.potential(self._params(params, prog), prog.data).addressable_data(0))

    def potential_and_grad(self, key: str, params: Mapping[str, Any]):
        """(value, gradient in the internal layout: this worker's pieces of a sharded site's)."""
        time.sleep(self.delay)
        return self.context(key).value_and_grad(params)

    def context(self, key: str):
        from claygraph.partition.context import Context

        ctx = self.contexts.get(key)
        if ctx is None:
            prog = self.programs[key]
            # the jitted steps (MAP's loop, NUTS's kernels) live with the split function: a refit reuses them
            ctx = self.contexts[key] = Context.of(prog.fn, prog.data, prog.multiprocess)
        return ctx

    def step(self, key: str, fn, *args):
        """`fn(context, *args)` on program `key`: an SPMD step of an inference loop."""
        time.sleep(self.delay)
        return fn(self.context(key), *args)

    def run(self, fn, *args, **kwargs):
        """Run `fn(worker, *args)` here (diagnostics and measurements that need the worker itself)."""
        return fn(self, *args, **kwargs)

    def set_delay(self, seconds: float) -> None:
        self.delay = float(seconds)

    def ping(self) -> int:
        return self.rank
