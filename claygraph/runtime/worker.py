"""The Ray actor body: one JAX process of the multi-process group. JAX is imported inside methods,
after the environment is set, so that each actor initialises its own backend."""
from __future__ import annotations

import os
import re
import socket
import time
from collections.abc import Mapping
from typing import Any

_FORCE = re.compile(r"--xla_force_host_platform_device_count=\d+")


class Worker:
    def __init__(self, rank: int, world: int, platform: str):
        # forced host devices and CPU collectives crash together: each actor is one device
        os.environ["XLA_FLAGS"] = _FORCE.sub("", os.environ.get("XLA_FLAGS", "")).strip()
        if platform == "cpu":
            os.environ["JAX_PLATFORMS"] = "cpu"
        self.rank, self.world, self.platform = rank, world, platform
        self.programs: dict[str, Any] = {}
        self.contexts: dict[str, Any] = {}
        self.locals: dict[str, Any] = {}
        self.delay = 0.0  # test hook: seconds added to every evaluation
        self.mesh = None

    def address(self) -> str:
        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return f"{ray.util.get_node_ip_address()}:{port}"

    def pid(self) -> int:
        return os.getpid()

    def init(self, coordinator: str) -> dict:
        t0 = time.perf_counter()
        import jax
        import numpy as np
        from jax.sharding import Mesh

        if self.platform == "cpu":
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=self.world,
                                   process_id=self.rank, local_device_ids=[0], initialization_timeout=120)
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
        self.mesh = Mesh(np.array(devices), ("shards",))
        return {"devices": len(devices), "process": jax.process_index(), "init_s": time.perf_counter() - t0}

    def submesh(self, ranks: tuple[int, ...] | None):
        """The mesh over the devices of workers `ranks` (a chain's group), or over every worker."""
        if ranks is None or tuple(ranks) == tuple(range(self.world)):
            return self.mesh
        import numpy as np
        from jax.sharding import Mesh

        devices = {d.process_index: d for d in self.mesh.devices.flat}
        return Mesh(np.array([devices[r] for r in ranks]), ("shards",))

    def load(self, key: str, model, abstract_data, split, layout, cluster, devices: int,
             blocks: Mapping[str, Any], global_shapes: Mapping[str, tuple], jacobian: bool = True,
             ranks: tuple[int, ...] | None = None) -> float:
        """Build the split function from the same plan inputs as the driver, and place this shard's
        data; `ranks`: the workers whose devices the program spans, in shard order (default all)."""
        t0 = time.perf_counter()
        import jax
        from jax.sharding import NamedSharding

        from claygraph.ir.lower import lower
        from claygraph.partition.cache import COMPILED, key_for
        from claygraph.partition.plan import candidate_with_layout
        from claygraph.partition.program import SplitFunction

        graph = lower(model, abstract_data, jacobian)
        cand = candidate_with_layout(graph, split, layout, cluster, devices)
        mesh = self.submesh(ranks)
        ranks = tuple(ranks) if ranks is not None else tuple(range(self.world))
        # a refit of the same graph, split, layout and mesh reuses the split function and its jits
        fn = COMPILED.get(key_for(graph, cand, mesh), lambda: SplitFunction(graph, cand, mesh))
        blocks = {k: self._read(graph, cand, fn.data_specs[k], k, b, ranks.index(self.rank), len(ranks))
                  for k, b in blocks.items()}
        data = {k: jax.make_array_from_process_local_data(NamedSharding(mesh, fn.data_specs[k]), blocks[k],
                                                          tuple(global_shapes[k]))
                for k in blocks}
        self.programs[key] = (fn, data, fn.potential, fn.value_and_grad)
        return time.perf_counter() - t0

    def _read(self, graph, cand, spec, name: str, block, shard: int, shards: int):
        """A block as sent, or this worker's rows of a file-backed array, read here."""
        from claygraph.frontend.parquet import ParquetSource, read_block

        if not isinstance(block, ParquetSource):
            return block
        vid = graph.inputs.data[name]
        axis = next((i for i, a in enumerate(spec) if a is not None), None)
        remapped = cand.propagation.remapped.get(vid)
        remap = cand.layout[remapped].inverse() if remapped is not None else None
        return read_block(block, graph.value(vid).dims, cand.layout, axis, shard, shards, remap)

    def _params(self, params: Mapping[str, Any], mesh):
        import jax
        from jax.sharding import NamedSharding
        from jax.sharding import PartitionSpec as P

        rep = NamedSharding(mesh, P())
        return {k: jax.make_array_from_process_local_data(rep, v) for k, v in params.items()}

    def potential(self, key: str, params: Mapping[str, Any]):
        import numpy as np

        fn, data, pot, _ = self.programs[key]
        time.sleep(self.delay)
        return np.asarray(pot(self._params(params, fn.mesh), data).addressable_data(0))

    def potential_and_grad(self, key: str, params: Mapping[str, Any]):
        import numpy as np

        fn, data, _, vg = self.programs[key]
        time.sleep(self.delay)
        v, g = vg(self._params(params, fn.mesh), data)
        return np.asarray(v.addressable_data(0)), {k: np.asarray(x.addressable_data(0)) for k, x in g.items()}

    def load_local(self, key: str, model, data, jacobian: bool = True) -> float:
        """A one-device program over the whole data, on this worker alone (chain-parallel sampling)."""
        t0 = time.perf_counter()
        import jax

        from claygraph.ir.lower import lower
        from claygraph.partition.cluster import ClusterSpec
        from claygraph.partition.plan import partition
        from claygraph.partition.program import Program

        graph = lower(model, data, jacobian)
        plan = partition(graph, data, cluster=ClusterSpec.local(devices=1), split=())
        self.locals[key] = Program(plan, data, devices=jax.local_devices()[:1])
        return time.perf_counter() - t0

    def context(self, key: str):
        from claygraph.runtime.spmd import Context

        if key in self.locals:
            return self.locals[key].context()
        fn, data, _, _ = self.programs[key]
        ctx = self.contexts.get(key)
        if ctx is None:
            ctx = self.contexts[key] = Context(fn.fn, data, fn.mesh, multiprocess=True, cache=fn.jitted)
        return ctx

    def run(self, fn, *args, **kwargs):
        """Run `fn(worker, *args)` here: the SPMD entry for inference loops (every worker runs the same)."""
        return fn(self, *args, **kwargs)

    def set_delay(self, seconds: float) -> None:
        self.delay = float(seconds)

    def ping(self) -> int:
        return self.rank
