"""The local runtime: one process, its devices (N host devices on CPU, N GPUs on one node)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax

from claygraph.errors import PartitionError
from claygraph.partition.program import Program, compile_artifact


@dataclass(frozen=True, slots=True)
class Done:
    """A handle of a step that `Local.submit` ran at once."""

    value: Any


class Local:
    """Run programs in this process on `devices` devices (default 1). One worker: steps run at once."""

    link = "devices"  # what its collectives cross: ClusterSpec.local(link=...) plans for it

    def __init__(self, devices: int = 1):
        self._devices = int(devices)

    def __enter__(self) -> Local:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def workers(self) -> int:
        return 1

    @property
    def devices(self) -> int:
        return self._devices

    @property
    def elastic(self) -> bool:
        return False

    def compile(self, plan, data=None, ranks: tuple[int, ...] | None = None) -> Program:
        if ranks not in (None, (0,)):
            raise PartitionError(f"Local has one worker; ranks {ranks} name others")
        if plan.devices != self._devices:
            raise PartitionError(f"the plan is for {plan.devices} devices but Local(devices={self._devices}); plan "
                                 f"with cluster=ClusterSpec.local(devices={self._devices})")
        data = data if data is not None else plan.data
        compiled = compile_artifact(plan, data.load() if data is not None else None)
        return Program(compiled, jax.devices()[: self._devices], graph=plan.graph, runtime=self)

    def compile_each(self, plan, data=None) -> list[Program]:
        return [self.compile(plan, data)]

    def grow(self, plan, data=None) -> None:
        return None

    def run(self, program: Program, fn: Callable, *args) -> Any:
        return fn(program.context(), *args)

    def submit(self, program: Program, fn: Callable, *args) -> list[Done]:
        return [Done(self.run(program, fn, *args))]

    def wait(self, handles: Sequence[Done], what: str) -> tuple[Done, Any]:
        return handles[0], handles[0].value

    def gather(self, handles: Sequence[Done], what: str) -> list[Any]:
        return [h.value for h in handles]

    def free(self, program: Program) -> None:
        return None  # the program's arrays go with the last reference to it

    def restart(self) -> None:
        return None

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"Local(devices={self._devices})"


def compile(plan, data=None, runtime=None):  # noqa: A001 - the public name
    """Build the split program for `plan` on `runtime` (Local or Ray; default: this process's devices)."""
    runtime = runtime if runtime is not None else Local(devices=plan.devices)
    return runtime.compile(plan, data)
