"""The Runtime protocol: what inference code may ask of a runtime. `Local` and `Ray` implement it.

A program is what `compile` returns (it knows its runtime as `program.runtime`). A step is a
function `fn(context, *args)` (see claygraph.partition.context) that every process of a program
runs (SPMD); `run` waits for it and returns its (replicated) result once, `submit` starts it and
returns one handle per process, `wait` gives the first handle to finish with its value, `gather`
every value. A worker lost during any of these becomes a `claygraph.errors.WorkerError`; after one,
`restart` rebuilds the workers (programs must be compiled again).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol


class Runtime(Protocol):
    @property
    def workers(self) -> int:
        """Processes that can each run a program alone (chain-parallel sampling)."""

    @property
    def devices(self) -> int:
        """Devices a program over every worker spans (what a plan for this runtime is made for)."""

    @property
    def elastic(self) -> bool:
        """Whether workers may join while a run goes on (`grow`)."""

    def compile(self, plan, data=None, ranks: tuple[int, ...] | None = None) -> Any:
        """The split program of `plan` over every worker, or over the workers `ranks`."""

    def compile_each(self, plan, data=None) -> list[Any]:
        """`plan` (for one device) compiled on every worker alone: one program per worker."""

    def grow(self, plan, data=None) -> Any | None:
        """A program of `plan` (one device) on a worker that joined just now, or None."""

    def run(self, program, fn: Callable, *args) -> Any:
        """fn(context, *args) on every process of `program`; the result once."""

    def submit(self, program, fn: Callable, *args) -> list[Any]:
        """Start fn(context, *args) on every process of `program`; one handle per process."""

    def wait(self, handles: Sequence[Any], what: str) -> tuple[Any, Any]:
        """The first of `handles` to finish, and its value."""

    def gather(self, handles: Sequence[Any], what: str) -> list[Any]:
        """Every handle's value, in order."""

    def free(self, program) -> None:
        """Drop `program` and its data wherever they are held."""

    def restart(self) -> None:
        """Rebuild the workers after a loss."""

    def close(self) -> None:
        """Stop whatever the runtime started."""
