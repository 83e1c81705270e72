"""The local runtime: one process, its devices (N host devices on CPU, N GPUs on one node)."""
from __future__ import annotations

import jax

from claygraph.errors import PartitionError


class Local:
    """Run programs in this process on `devices` devices (default 1)."""

    def __init__(self, devices: int = 1):
        self.devices = int(devices)

    def __enter__(self) -> Local:
        return self

    def __exit__(self, *exc) -> None:
        return None

    def close(self) -> None:
        return None

    @property
    def workers(self) -> int:
        return 1

    def compile(self, plan, data=None):
        from claygraph.partition.program import Program

        if plan.devices != self.devices:
            raise PartitionError(f"the plan is for {plan.devices} devices but Local(devices={self.devices}); plan "
                                 f"with cluster=ClusterSpec.local(devices={self.devices})")
        avail = jax.devices()
        return Program(plan, data, avail[: self.devices])

    def __repr__(self) -> str:
        return f"Local(devices={self.devices})"
