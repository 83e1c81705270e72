"""What a result was measured on: the machine, the libraries and the commit."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

from bench import REPO

LIBRARIES = ("claygraph", "jax", "jaxlib", "numpyro", "numpy", "scipy", "scikit-learn", "ray", "numba", "optax",
             "blackjax", "arviz", "matplotlib", "threadpoolctl", "pytest-benchmark", "dask-ml")


def cores() -> dict:
    """Logical CPUs of the machine and those this process may run on."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"logical": os.cpu_count(), "usable": usable}


def memory() -> dict:
    """Total and available RAM in bytes (from /proc/meminfo where there is one)."""
    total = float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    return {"total_bytes": total, "available_bytes": available_memory()}


def available_memory() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def blas() -> list[dict]:
    """The BLAS/OpenMP libraries NumPy and SciPy loaded, with their kernel and thread count."""
    import numpy  # noqa: F401 - loads the BLAS that threadpoolctl reports
    import scipy.linalg  # noqa: F401
    from threadpoolctl import threadpool_info

    keys = ("user_api", "internal_api", "version", "architecture", "num_threads", "threading_layer")
    return [{k: info.get(k) for k in keys if info.get(k) is not None} for info in threadpool_info()]


def load_average() -> list[float] | None:
    """1, 5 and 15-minute load averages: above the core count, other work competed with the benchmark."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def wait_for_idle(below: float = 0.5, timeout_s: float = 180.0, poll_s: float = 5.0,
                  loadavg=os.getloadavg, sleep=time.sleep) -> tuple[float, float]:
    """Wait until the one-minute load average is below `below` (or `timeout_s` passed): calibration
    curves measured at load come out slower (split_choice on 2 cores: a calibration started at load
    1.6, just after a test run, gave in-loop product curves 1.2-1.7x slower than one started idle).
    Returns (the load it ended at, seconds waited)."""
    waited = 0.0
    load = loadavg()[0]
    while load >= below and waited < timeout_s:
        sleep(poll_s)
        waited += poll_s
        load = loadavg()[0]
    return load, waited


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gpus() -> list[str]:
    """Names of the NVIDIA GPUs present (empty without a driver or a GPU)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()] if out.returncode == 0 else []


def jax_devices() -> dict:
    """JAX's backend and devices as this process sees them."""
    import jax

    return {"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
            "count": jax.device_count(), "xla_flags": os.environ.get("XLA_FLAGS", "")}


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(repo: Path = REPO) -> str | None:
    """HEAD of the repository (read-only), or None outside a git checkout; "+changes" after it when tracked
    files differ from HEAD (the figures then come from code no commit holds)."""
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=20, check=False)
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no", "--",
                                "claygraph", "bench", "pyproject.toml"], capture_output=True, text=True,
                               timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    head = (out.stdout.strip() or None) if out.returncode == 0 else None
    return head + "+changes" if head and dirty.returncode == 0 and dirty.stdout.strip() else head


def detect() -> dict:
    """Everything a result records about where it was measured."""
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": cores(),
        "memory": memory(),
        "blas": blas(),
        "gpus": gpus(),
        "jax": jax_devices(),
        "versions": versions(),
        "commit": git_commit(),
        "load_average": load_average(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def describe_blas(entries: list[dict]) -> str:
    """One line: e.g. 'openblas 0.3.27 SkylakeX, 2 threads'."""
    parts = []
    for e in entries:
        if e.get("user_api") != "blas":
            continue
        arch = f" {e['architecture']}" if e.get("architecture") else ""
        parts.append(f"{e.get('internal_api')} {e.get('version')}{arch}, {e.get('num_threads')} threads")
    return "; ".join(parts) or "unknown"
