"""`claygraph calibrate`: measure this machine and save the profile that ClusterSpec.local reads.

Three measurements, each the best (compute, memory) or median (messages) of a few repeats:
  - float32 FLOP rate of a jitted matmul on the host CPU (all cores, as XLA uses them);
  - memory bandwidth: bytes copied per second by one large NumPy copy;
  - message latency and bandwidth between two local processes: round trips of a 1-float and
    a 1,000,000-float buffer over a loopback TCP socket, the transport gloo uses between two
    local workers.
"""

from __future__ import annotations

import argparse
import dataclasses
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from claygraph.partition.cluster import (
    ClusterSpec,
    default_profile_path,
    local_spec,
    total_memory,
    write_profile,
)

LARGE_MESSAGE_FLOATS = 1_000_000
_HEADER = struct.Struct("<qq")  # (message bytes, round trips); (0, 0) ends the echo process


@dataclasses.dataclass(frozen=True, slots=True)
class Budget:
    """How much to measure: the full budget stays under ~20 s, the quick one under ~5 s."""

    matmul_n: int
    matmul_reps: int
    copy_bytes: int
    copy_reps: int
    small_trips: int
    large_trips: int


FULL = Budget(
    matmul_n=2048, matmul_reps=5, copy_bytes=400_000_000, copy_reps=5, small_trips=400, large_trips=20
)
QUICK = Budget(
    matmul_n=1024, matmul_reps=3, copy_bytes=40_000_000, copy_reps=3, small_trips=100, large_trips=5
)

# The other process of the message test: a stdlib-only echo loop started with `python -I -S -c`,
# so that it starts in tens of milliseconds. (A multiprocessing "spawn" child would re-import
# claygraph and JAX, seconds; "fork" after JAX has started its threads can deadlock.)
_ECHO = r"""
import socket, struct, sys
sock = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
def recv_into(view):
    while len(view):
        n = sock.recv_into(view)
        if n == 0:
            sys.exit(0)
        view = view[n:]
header = bytearray(16)
while True:
    recv_into(memoryview(header))
    size, trips = struct.unpack("<qq", header)
    if size == 0:
        break
    buf = memoryview(bytearray(size))
    for _ in range(trips):
        recv_into(buf)
        sock.sendall(buf)
"""


def calibrate(out: str | None = None, quick: bool = False) -> dict:
    """Measure this machine, save the profile JSON (default: $CLAYGRAPH_PROFILE or
    ~/.cache/claygraph/profile.json), print a summary and return the profile."""
    budget = QUICK if quick else FULL
    flops = measure_flops(budget.matmul_n, budget.matmul_reps)
    mem_bandwidth = measure_copy_bandwidth(budget.copy_bytes, budget.copy_reps)
    small, large = measure_round_trips(budget.small_trips, budget.large_trips)
    latency, bandwidth = fit_link(small, large, 4 * LARGE_MESSAGE_FLOATS)
    spec = local_spec(
        flops=flops,
        mem_bandwidth=mem_bandwidth,
        mem_capacity=total_memory(),
        latency=latency,
        bandwidth=bandwidth,
        devices=1,
        name="local-calibrated",
    )
    raw = {"round_trip_1_float_s": small, "round_trip_1e6_floats_s": large, "matmul_n": budget.matmul_n}
    profile = spec.to_profile() | {
        "quick": quick,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "raw": raw,
    }
    path = write_profile(out if out is not None else default_profile_path(), profile)
    print(summary(spec, path))
    return profile


def measure_flops(n: int, reps: int) -> float:
    """FLOP/s of a jitted float32 n x n matmul on the host CPU."""
    import jax
    import jax.numpy as jnp

    a = jax.device_put(np.ones((n, n), np.float32), jax.devices("cpu")[0])
    matmul = jax.jit(jnp.matmul)
    matmul(a, a).block_until_ready()  # compile and warm up outside the timing
    return 2 * n**3 / _best_time(lambda: matmul(a, a).block_until_ready(), reps)


def measure_copy_bandwidth(nbytes: int, reps: int) -> float:
    """Bytes copied per second by np.copyto over `nbytes`.

    Each byte is counted once although it is read and written: that is the rate at which
    streaming kernels (a loss and gradient pass over the data) were seen to consume their input.
    """
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # first touch maps dst's pages outside the timing
    return src.nbytes / _best_time(lambda: np.copyto(dst, src), reps)


def measure_round_trips(small_trips: int, large_trips: int) -> tuple[float, float]:
    """Median round-trip seconds of a 1-float and a 1,000,000-float buffer to a local echo process."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(30)
        port = server.getsockname()[1]
        echo = subprocess.Popen([sys.executable, "-I", "-S", "-c", _ECHO, str(port)])
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(30)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                small = _round_trip(conn, np.ones(1, np.float32), small_trips)
                large = _round_trip(conn, np.ones(LARGE_MESSAGE_FLOATS, np.float32), large_trips)
                conn.sendall(_HEADER.pack(0, 0))
            echo.wait(timeout=10)
        finally:
            if echo.poll() is None:
                echo.kill()
                echo.wait()
    return small, large


def fit_link(small: float, large: float, nbytes: int) -> tuple[float, float]:
    """(latency, bandwidth) of one message from two round-trip times (alpha-beta model).

    A round trip is two messages, so one message of n bytes takes latency + n / bandwidth =
    round_trip / 2; the 1-float trip gives the latency, the large one the bandwidth.
    """
    latency = small / 2
    transfer = max(large / 2 - latency, 1e-9)  # guards against a noisy large trip
    return latency, nbytes / transfer


def summary(spec: ClusterSpec, path: Path) -> str:
    two = local_spec(
        flops=spec.flops,
        mem_bandwidth=spec.mem_bandwidth,
        mem_capacity=spec.mem_capacity,
        latency=spec.intra_latency,
        bandwidth=spec.intra_bandwidth,
        devices=2,
        name="two local devices",
    )
    return "\n".join(
        [
            f"float32 matmul        {spec.flops / 1e9:8.1f} GFLOP/s (whole host)",
            f"memory copy           {spec.mem_bandwidth / 1e9:8.2f} GB/s (whole host)",
            f"memory                {spec.mem_capacity / 2**30:8.1f} GiB",
            f"message latency       {spec.intra_latency * 1e3:8.3f} ms",
            f"message bandwidth     {spec.intra_bandwidth / 1e9:8.2f} GB/s",
            "predicted all-reduce over 2 processes: "
            f"1 float {two.allreduce_time(4, 2) * 1e3:.3f} ms, "
            f"{LARGE_MESSAGE_FLOATS:,} floats {two.allreduce_time(4 * LARGE_MESSAGE_FLOATS, 2) * 1e3:.2f} ms",
            f"profile saved to {path}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="claygraph calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--out", metavar="PATH", help="where to save the profile JSON")
    parser.add_argument("--quick", action="store_true", help="smaller measurements, about a second")
    args = parser.parse_args(argv)
    calibrate(out=args.out, quick=args.quick)
    return 0


def _round_trip(conn: socket.socket, payload: np.ndarray, trips: int) -> float:
    send = memoryview(payload).cast("B")
    back = memoryview(np.empty_like(payload)).cast("B")
    conn.sendall(_HEADER.pack(send.nbytes, trips))
    times = []
    for _ in range(trips):
        start = time.perf_counter()
        conn.sendall(send)
        _recv_into(conn, back)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _recv_into(conn: socket.socket, view: memoryview) -> None:
    while len(view):
        n = conn.recv_into(view)
        if n == 0:
            raise ConnectionError("the echo process closed its socket during calibration")
        view = view[n:]


def _best_time(run: Callable[[], object], reps: int) -> float:
    """Fastest of `reps` runs: the machine's peak, not its noise."""
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


if __name__ == "__main__":
    sys.exit(main())
