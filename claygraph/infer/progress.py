"""A one-line progress display for long runs, on stderr, only where someone watches it.

`progress=None` (the default of every method) shows it when stderr is a terminal or the code runs
in a notebook kernel, and stays silent in scripts whose output goes to a file or a pipe, in tests
and on CI. The line is rewritten in place (carriage return), which terminals and notebooks both
render; one final newline ends it.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from typing import TextIO

import numpy as np


def interactive(stream: TextIO | None = None) -> bool:
    stream = stream or sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)()) or "ipykernel" in sys.modules


class Line:
    """Rewrites one line on `stream`; does nothing when not shown."""

    def __init__(self, show: bool | None = None, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.show = interactive(self.stream) if show is None else bool(show)
        self.t0 = time.perf_counter()
        self._width = 0

    def write(self, text: str) -> None:
        if not self.show:
            return
        self.stream.write("\r" + text.ljust(self._width))
        self.stream.flush()
        self._width = len(text)

    def close(self) -> None:
        if self.show and self._width:
            self.stream.write("\n")
            self.stream.flush()
            self._width = 0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.t0


class ChainProgress(Line):
    """NUTS/HMC: draws per chain, divergences, step sizes, elapsed time and ETA."""

    def __init__(self, draws: int | None, show: bool | None = None, stream: TextIO | None = None):
        super().__init__(show, stream)
        self.draws = draws
        self._sampling_t0: float | None = None
        self._drawn0 = 0

    def warmup(self, chains: int, steps: int) -> None:
        self.write(f"warm-up: {chains} chains x {steps} steps (adapting step size and mass matrix) ...")

    def update(self, pool: Sequence) -> None:
        if not self.show:
            return
        n = [c.n for c in pool]
        if self._sampling_t0 is None:  # the first segment includes compiling: time the ETA from its end
            self._sampling_t0, self._drawn0 = time.perf_counter(), min(n)
        div = sum(int(np.sum(s["diverging"])) for c in pool for s in c.stats)
        steps = ", ".join(f"{float(np.asarray(c.params['step_size'])):.2g}" for c in pool)
        total = f"/{self.draws}" if self.draws else ""
        self.write(f"sampling: draws per chain {min(n)}{total} | divergences {div} | step size {steps} | "
                   f"{self.elapsed:.0f} s{self._eta(min(n))}")

    def _eta(self, done: int) -> str:
        if not self.draws or self._sampling_t0 is None or done <= self._drawn0:
            return ""
        rate = (time.perf_counter() - self._sampling_t0) / (done - self._drawn0)
        return f", about {rate * max(self.draws - done, 0):.0f} s left"


class OptimProgress(Line):
    """MAP and VI: iteration, objective and gradient norm."""

    def __init__(self, what: str, show: bool | None = None, stream: TextIO | None = None, every_s: float = 0.2):
        super().__init__(show, stream)
        self.what, self.every_s, self._last = what, every_s, -1.0

    def update(self, iteration: int, objective: float, grad_norm: float | None = None) -> None:
        if not self.show or self.elapsed - self._last < self.every_s:
            return
        self._last = self.elapsed
        g = f" | grad norm {grad_norm:.3g}" if grad_norm is not None else ""
        self.write(f"{self.what}: iteration {iteration} | objective {objective:.6g}{g} | {self.elapsed:.0f} s")
