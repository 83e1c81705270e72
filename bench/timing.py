"""Timing helpers: medians over repeats in this process, and measurements isolated in a subprocess.

A subprocess is how a measurement gets its own device count: XLA reads
`--xla_force_host_platform_device_count` once, when JAX starts, so every local multi-device
figure comes from a fresh interpreter started with that flag (`run_isolated`).
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from bench import REPO

RESULT_MARK = "BENCH-RESULT "


@dataclass(frozen=True, slots=True)
class Timing:
    """Wall-clock seconds of `repeats` runs after `warmup` untimed ones."""

    median_s: float
    min_s: float
    max_s: float
    repeats: int
    first_s: float | None = None  # the first (warm-up) call, which includes compilation where there is one
    q1_s: float | None = None  # first and third quartiles of the repeats: the measured spread
    q3_s: float | None = None

    def to_json(self) -> dict:
        return asdict(self)


def measure(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> Timing:
    """Time `fn()` (which must block until its result is ready) `repeats` times after `warmup` calls."""
    first = None
    for i in range(warmup):
        t0 = time.perf_counter()
        fn()
        if i == 0:
            first = time.perf_counter() - t0
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return _timing(times, first)


def round_orders(n: int, rounds: int) -> list[list[int]]:
    """The order of each round of `measure_together`: a Williams design, in which every function
    follows every other equally often (over n rounds, 2n where n is odd). Rotating one fixed order
    only changes where a round starts: each function still follows the same one in every round."""
    base, lo, hi = [0], 1, n - 1
    while len(base) < n:
        base.append(lo)
        lo += 1
        if len(base) < n:
            base.append(hi)
            hi -= 1
    squares = [[(b + r) % n for b in base] for r in range(n)]
    if n % 2:
        squares += [order[::-1] for order in squares]
    return [squares[r % len(squares)] for r in range(rounds)]


def measure_together(fns: list[Callable[[], Any]], repeats: int, warmup: int = 1, settle: int = 0) -> list[Timing]:
    """`measure` for several functions in turns: round r times each function once, so that load that
    comes and goes on a shared machine falls on all of them alike (no function is timed in a quiet
    minute and another in a busy one). The rounds' orders are balanced (`round_orders`): a function
    timed right after a slow one that evicts the caches runs slower, and the split_choice suite once
    rotated a single order, so that the candidate predicted cheapest always ran right after the
    unsplit program: W3's group split measured 21.9 ms there and 15.3 ms as the second of the order,
    the row split 21.1 ms when it came first (load average about 1). `settle`: untimed calls of the
    same function right before each timed one (its caches warm, as in a loop of its own)."""
    first = []
    for fn in fns:
        t0 = time.perf_counter()
        fn()
        first.append(time.perf_counter() - t0)
        for _ in range(warmup - 1):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for order in round_orders(len(fns), max(1, repeats)):
        for k in order:
            for _ in range(settle):
                fns[k]()
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return [_timing(t, f) for t, f in zip(times, first)]


def timing_of(times: list[float]) -> Timing:
    """The Timing of seconds measured elsewhere (no first call set apart)."""
    return _timing(list(times), None)


def _timing(times: list[float], first: float | None) -> Timing:
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else (times[0],) * 3
    return Timing(statistics.median(times), min(times), max(times), len(times), first, q1, q3)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(result, seconds) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


class IsolatedError(RuntimeError):
    """A subprocess measurement failed; the message carries the tail of its output."""


def isolated_env(devices: int, platform: str = "cpu") -> dict[str, str]:
    """Environment of a measurement subprocess: `devices` forced host devices on CPU."""
    env = dict(os.environ)
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    if platform == "cpu":
        flags.append(f"--xla_force_host_platform_device_count={devices}")
        env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = " ".join(flags)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def run_isolated(task: str, spec: dict, devices: int, timeout_s: float, platform: str = "cpu",
                 extra_env: dict[str, str] | None = None) -> dict:
    """Run `bench.measure` task `task` with `spec` in a fresh interpreter with `devices` devices.

    Returns the task's JSON result plus `process_s`, the subprocess's wall time (start-up included).
    """
    cmd = [sys.executable, "-m", "bench.measure", task, json.dumps(spec)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=REPO, env=isolated_env(devices, platform) | dict(extra_env or {}),
                              capture_output=True, text=True,
                              timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as e:
        raise IsolatedError(f"{task} on {devices} device(s) ran past {timeout_s:.0f} s") from e
    elapsed = time.perf_counter() - t0
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):]) | {"process_s": elapsed}
    tail = (proc.stdout + proc.stderr)[-2000:]
    raise IsolatedError(f"{task} on {devices} device(s) exited {proc.returncode} without a result:\n{tail}")
