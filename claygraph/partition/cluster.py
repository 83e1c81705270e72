"""ClusterSpec: the figures of a cluster that the cost model needs.

A spec holds per-device compute and memory figures and the bandwidth and latency of the two
kinds of link a collective can cross (between devices of one node, between nodes). Presets
carry vendor data-sheet figures for common GPU instances; `ClusterSpec.local` describes this
machine, from the profile that `claygraph calibrate` writes or from measured defaults.
See docs/cluster.md for every figure's source and the collective formulas.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from pathlib import Path

import numpy as np

from claygraph.errors import ClusterError
from claygraph.partition import families

PROFILE_ENV = "CLAYGRAPH_PROFILE"
# a blocked program's read hidden under its forward kernels, on the host of the built-in figures (one device, a
# W1-like loss and gradient over 100 blocks of 10,000 x 100 float32: the read alone 13.4 ms, one block's kernels
# kept in cache 30.6 ms, the distinct blocks 34.9 ms: (13.4 + 30.6 - 34.9) / 13.4)
BLOCK_OVERLAP = 0.68
PROFILE_VERSION = 8  # 3: the vecmat family; 4: the feature-major matvec_t and vecmat_t; 5: curves timed in a loop;
# 6: the matrix-vector products also timed one call each (*_call), transcendental functions weighed one by one;
# 7: gathers, scatter-adds and reductions timed in a loop, and one call each (*_call); products over a wide X;
# 8: block_read, a blocked program's pass over its data, and block_overlap
# The measured figures a profile must hold; all are totals for the host (see `to_profile`).
PROFILE_FIGURES = ("flops", "mem_bandwidth", "mem_capacity", "latency", "bandwidth")
# widths of X in the calibrated products: X @ w (matvec) over 64 columns, r @ X (vecmat) over 512 (wider than
# the widths whose r @ X the emitter writes as a multiply-reduce, kernels.py), both also over a wide X
PRODUCT_COLS = {"matvec": 64, "vecmat": 512}
PRODUCT_WIDE_COLS = 8192

# Defaults for `ClusterSpec.local` without a profile, measured on a 2-core CPU host: a psum between
# two local devices (forced host devices, one process) of 1 to 10^6 float32, fitted to the ring formula
# 2 (S-1) latency + 2 (S-1)/S bytes / bandwidth. (Between two processes over gloo it is slower:
# `claygraph calibrate` keeps that link as the profile's `process_link`.)
LOCAL_LATENCY = 1.95e-05  # s per message
LOCAL_BANDWIDTH = 4.4e9  # bytes/s
# Between two processes on this host (Ray workers, gloo over loopback TCP): an all-reduce between two
# Ray workers measured 90.7 us for 1 float and 3.3 ms for 10^6 floats (W5 in BENCHMARKS.md), fitted
# to the same ring formula (2 latencies and one message of the bytes for S = 2).
PROCESS_LATENCY = 4.5e-05
PROCESS_BANDWIDTH = 1.25e9
LINKS = ("devices", "processes")
DEVICE_KINDS = ("cpu", "gpu")


@dataclasses.dataclass(frozen=True, slots=True)
class Curve:
    """Seconds one kernel of a family takes against its work (bytes, FLOPs or elements), measured at a
    few sizes. Between them the time is interpolated on log-log axes (cache effects show as a bend);
    beyond them it scales with the work at the throughput of the nearest measured size."""

    work: tuple[float, ...]
    seconds: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.work) != len(self.seconds) or not self.work:
            raise ClusterError(f"Curve: {len(self.work)} work sizes for {len(self.seconds)} times")
        for w, t in zip(self.work, self.seconds):
            _check_figure("work", w, where="Curve")
            _check_figure("seconds", t, where="Curve")
        if list(self.work) != sorted(set(self.work)):
            raise ClusterError(f"Curve: work sizes must increase, got {self.work}")

    @classmethod
    def line(cls, rate: float) -> Curve:
        """A constant throughput (a data-sheet figure)."""
        return cls((1.0,), (1.0 / rate,))

    def time(self, work: float) -> float:
        if work <= 0:
            return 0.0
        w, t = self.work, self.seconds
        if work <= w[0]:
            return t[0] * work / w[0]
        if work >= w[-1]:
            return t[-1] * work / w[-1]
        return float(np.exp(np.interp(np.log(work), np.log(w), np.log(t))))

    def rate(self) -> float:
        """Throughput at the largest measured size."""
        return self.work[-1] / self.seconds[-1]

    def to_json(self) -> dict[str, list[float]]:
        return {"work": list(self.work), "seconds": list(self.seconds)}


@dataclasses.dataclass(frozen=True, slots=True)
class KernelRates:
    """How long a kernel of each family takes on one device, and the fixed costs of running kernels.

    One `Curve` per family of claygraph.partition.families (`rates.matvec` is the matvec family's curve;
    the table says what each family measures, its unit and its data-sheet line). `claygraph calibrate`
    measures the curves on the host; for a preset they are lines through the data-sheet FLOP rate and
    memory bandwidth (`KernelRates.nominal`). A host split into `share` local devices runs `share`
    kernels at once on its cores, caches and memory bus: one of them with work w takes as long as the
    host takes for `share` x w. The cost model uses `time` per node. Build one with `KernelRates.of`.
    """

    curves: tuple[tuple[str, Curve], ...]  # (family, curve) for every family, in the table's order
    # s per call of a program on one device, on top of its kernels (calibrate: `potential_and_grad` of a claygraph
    # program with almost no work: the params' transfer and checks, the dispatch, the gradients returned)
    call_s: float
    kernel_s: float  # s per kernel launched inside a program
    share: int = 1
    spmd_call_s: float | None = None  # the same over several devices, without collectives (None: call_s)
    # (function, weight): elements of the transcendental curve one element of the function costs (the curve's
    # own chain, exp then log1p, weighs 1 per function; a function not listed weighs 1)
    weights: tuple[tuple[str, float], ...] = ()
    # how much of a blocked program's data read hides under its blocks' forward kernels (0: none, the two add
    # up; 1: all, the slower of the two): calibrate times the read, the kernels and both (cost.gradient_compute)
    block_overlap: float = BLOCK_OVERLAP

    FAMILIES = families.NAMES

    def __post_init__(self) -> None:
        names = [name for name, _ in self.curves]
        if names != list(families.NAMES):
            missing = sorted(set(families.NAMES) - set(names))
            extra = sorted(set(names) - set(families.NAMES))
            raise ClusterError(f"KernelRates: one curve per kernel family in the table's order "
                               f"(missing {missing}, unknown {extra})")
        _check_figure("call_s", self.call_s, where="KernelRates")
        _check_figure("kernel_s", self.kernel_s, where="KernelRates")
        if self.spmd_call_s is not None:
            _check_figure("spmd_call_s", self.spmd_call_s, where="KernelRates")
        _check_count("share", self.share)
        for name, w in self.weights:
            _check_figure(f"weight of {name}", w, where="KernelRates")
        if not 0.0 <= self.block_overlap <= 1.0:
            raise ClusterError(f"KernelRates: block_overlap must lie in [0, 1], got {self.block_overlap!r}")

    @classmethod
    def of(cls, *, call_s: float, kernel_s: float, share: int = 1, spmd_call_s: float | None = None,
           weights: tuple[tuple[str, float], ...] = (), block_overlap: float | None = None,
           **curves: Curve) -> KernelRates:
        """Rates from one keyword per family (`matmul=Curve(...)`, ...) and the fixed costs."""
        unknown = sorted(set(curves) - set(families.NAMES))
        if unknown:
            raise ClusterError(f"KernelRates: unknown kernel families {unknown}; known: {', '.join(families.NAMES)}")
        return cls(tuple((name, curves[name]) for name in families.NAMES if name in curves), call_s, kernel_s,
                   share, spmd_call_s, weights, BLOCK_OVERLAP if block_overlap is None else block_overlap)

    def __getattr__(self, name: str) -> Curve:
        for family, curve in object.__getattribute__(self, "curves"):
            if family == name:
                return curve
        raise AttributeError(f"KernelRates has no kernel family or field {name!r}")

    def curve(self, family: str) -> Curve:
        return getattr(self, family)

    def with_curves(self, **curves: Curve) -> KernelRates:
        """These rates with some families' curves replaced (`rates.with_curves(matvec=Curve.line(1e9))`)."""
        unknown = sorted(set(curves) - set(families.NAMES))
        if unknown:
            raise ClusterError(f"KernelRates: unknown kernel families {unknown}; known: {', '.join(families.NAMES)}")
        return dataclasses.replace(self, curves=tuple((f, curves.get(f, c)) for f, c in self.curves))

    def weight(self, function: str) -> float:
        """Elements of the transcendental curve that one element of `function` costs (1 where unmeasured)."""
        return next((w for name, w in self.weights if name == function), 1.0)

    @classmethod
    def nominal(cls, flops: float, mem_bandwidth: float, kernel_s: float = 5e-6) -> KernelRates:
        """Lines from a FLOP rate and a memory bandwidth alone, each family at its table entry's fraction of
        one of them (a gather at half the bandwidth, a scatter-add at a quarter, one transcendental
        function 10 FLOPs)."""
        base = {"flops": flops, "bandwidth": mem_bandwidth}
        return cls.of(**{f.name: Curve.line(base[f.nominal[0]] * f.nominal[1]) for f in families.FAMILIES},
                      call_s=20 * kernel_s, kernel_s=kernel_s)

    def call(self, devices: int) -> float:
        """Fixed seconds of one call of a program over `devices` devices: several devices start
        together and meet at the collectives."""
        return self.spmd_call_s if devices > 1 and self.spmd_call_s is not None else self.call_s

    def time(self, family: str, work: float, working_set: float = 0.0) -> float:
        """Seconds of one kernel of `family` with `work` units on one device, at the throughput the
        family reaches on a working set of `working_set` bytes (the program's values: where they
        outgrow the caches, every kernel streams from memory)."""
        curve, w = self.curve(family), work * self.share
        big = working_set * self.share
        if big <= w or w <= 0:
            return curve.time(w)
        return w * curve.time(big) / big

    def shared(self, devices: int) -> KernelRates:
        """One of `devices` local devices cut from this host."""
        return dataclasses.replace(self, share=self.share * devices)

    def host(self, devices: int) -> KernelRates:
        """The curves of a host of `devices` such devices (the inverse of `shared`)."""
        factor = devices / self.share
        scaled = tuple((f, Curve(c.work, tuple(t / factor for t in c.seconds))) for f, c in self.curves)
        return dataclasses.replace(self, curves=scaled, share=1)

    def to_json(self) -> dict:
        return {**{f: c.to_json() for f, c in self.curves}, "call_s": self.call_s,
                "kernel_s": self.kernel_s, "weights": dict(self.weights), "block_overlap": self.block_overlap} | \
            ({} if self.spmd_call_s is None else {"spmd_call_s": self.spmd_call_s})

    @classmethod
    def from_json(cls, doc: dict, where: str) -> KernelRates:
        try:
            curves = {f: Curve(tuple(map(float, doc[f]["work"])), tuple(map(float, doc[f]["seconds"])))
                      for f in families.NAMES}
            spmd = doc.get("spmd_call_s")
            weights = tuple(sorted((str(k), float(v)) for k, v in doc.get("weights", {}).items()))
            return cls.of(**curves, call_s=float(doc["call_s"]), kernel_s=float(doc["kernel_s"]),
                          spmd_call_s=None if spmd is None else float(spmd), weights=weights,
                          block_overlap=float(doc.get("block_overlap", BLOCK_OVERLAP)))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ClusterError(f"{where}: kernel rates unreadable ({exc!r}); rerun `claygraph calibrate`") from exc


_FIGURES = (
    "flops",
    "mem_bandwidth",
    "mem_capacity",
    "intra_bandwidth",
    "intra_latency",
    "inter_bandwidth",
    "inter_latency",
)


@dataclasses.dataclass(frozen=True, slots=True)
class ClusterSpec:
    """A homogeneous cluster: `nodes` machines of `devices_per_node` devices each (SI units)."""

    devices_per_node: int
    nodes: int
    flops: float  # float32 FLOP/s per device, dense
    mem_bandwidth: float  # bytes/s per device
    mem_capacity: float  # bytes per device
    intra_bandwidth: float  # bytes/s per device to a device of the same node, one direction
    intra_latency: float  # s per message inside a node
    inter_bandwidth: float  # bytes/s per node to other nodes, one direction
    inter_latency: float  # s per message between nodes
    name: str = "custom"
    kernels: KernelRates | None = None  # per-family rates; None: nominal ones from flops and mem_bandwidth
    # what the devices are: "cpu" (costed with kernel curves and cache-sized row blocks, ring collectives
    # as gloo and XLA's CPU runtime run them) or "gpu" (a roofline per kernel plus launches, claygraph.partition.gpu;
    # collectives as NCCL runs them: ring or tree, hierarchical across nodes)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.device not in DEVICE_KINDS:
            raise ClusterError(f"ClusterSpec: device must be one of {DEVICE_KINDS}, got {self.device!r}")
        for field in ("devices_per_node", "nodes"):
            _check_count(field, getattr(self, field))
        for field in _FIGURES:
            _check_figure(field, getattr(self, field))

    @property
    def devices(self) -> int:
        return self.devices_per_node * self.nodes

    @property
    def rates(self) -> KernelRates:
        """The per-family kernel rates of one device: measured, or nominal from the data sheet."""
        return self.kernels if self.kernels is not None else KernelRates.nominal(self.flops, self.mem_bandwidth)

    @classmethod
    def preset(cls, name: str, nodes: int = 1) -> ClusterSpec:
        """A preset instance type (`p4d`, `p5`, `g5`) times `nodes`."""
        if name not in _PRESETS:
            raise ClusterError(
                f"unknown cluster preset {name!r}; known presets: {', '.join(sorted(_PRESETS))}. "
                "For another cluster, build a ClusterSpec(...) with its figures."
            )
        return dataclasses.replace(_PRESETS[name], nodes=nodes)

    @classmethod
    def local(cls, devices: int = 1, link: str = "devices") -> ClusterSpec:
        """This machine split into `devices` CPU devices: calibrated if a profile exists.

        With `devices > 1` (a split to choose) and no profile yet, the machine is measured once (a quick
        calibration, about 15 s, announced on stderr) and the profile saved where `claygraph calibrate`
        saves it; CLAYGRAPH_AUTO_CALIBRATE=0 keeps the built-in figures instead (docs/cluster.md).

        `link`: what a collective crosses: "devices" (devices of one process, the Local runtime) or
        "processes" (one process per device talking over loopback, the Ray runtime): the profile's
        `process_link`, else PROCESS_LATENCY and PROCESS_BANDWIDTH."""
        if link not in LINKS:
            raise ClusterError(f"ClusterSpec.local: link must be one of {LINKS}, got {link!r}")
        path = default_profile_path()
        if devices > 1 and not path.is_file():  # a split to choose and nothing measured: measure once
            _calibrate_once(path)
        version = _profile_version(path) if path.is_file() else None
        # another claygraph's profile in the cache is measured again; one the user named ($CLAYGRAPH_PROFILE) is theirs
        if isinstance(version, int) and version != PROFILE_VERSION and devices > 1 and not os.environ.get(PROFILE_ENV):
            _calibrate_once(path, stale=version)
            version = _profile_version(path) if path.is_file() else None
        if isinstance(version, int) and version != PROFILE_VERSION:
            # another claygraph's profile lacks (or names differently) curves this cost model reads
            warnings.warn(f"profile {path} was written by another claygraph version (profile version {version}, "
                          f"this one reads {PROFILE_VERSION}): using built-in figures; rerun `claygraph calibrate`",
                          stacklevel=2)
        elif path.is_file():  # this version's profile, or one that cannot be read (a clear error)
            return cls.from_profile(path, devices, link)
        return cls.built_in(devices, link)

    @classmethod
    def built_in(cls, devices: int = 1, link: str = "devices") -> ClusterSpec:
        """This machine split into `devices` CPU devices with the built-in figures (no profile read:
        `claygraph calibrate` itself uses it, whatever profile it is about to replace)."""
        if link not in LINKS:
            raise ClusterError(f"ClusterSpec.built_in: link must be one of {LINKS}, got {link!r}")
        latency, bandwidth = (LOCAL_LATENCY, LOCAL_BANDWIDTH) if link == "devices" else \
            (PROCESS_LATENCY, PROCESS_BANDWIDTH)
        return local_spec(
            flops=LOCAL_KERNELS.matmul.rate(),
            mem_bandwidth=LOCAL_KERNELS.matvec.rate(),
            mem_capacity=total_memory(),
            latency=latency,
            bandwidth=bandwidth,
            devices=devices,
            kernels=LOCAL_KERNELS,
            name="local" if link == "devices" else "local-processes",
        )

    @classmethod
    def from_profile(cls, path: str | os.PathLike[str], devices: int = 1, link: str = "devices") -> ClusterSpec:
        """The host described by a profile JSON file, split into `devices` devices (`link`: see `local`)."""
        figures, kernels = read_profile(path)
        name = "local-calibrated"
        if link == "processes":
            process = read_process_link(path)
            if process is not None:
                figures = figures | process
            else:  # a profile without the process link: the defaults
                figures = figures | {"latency": PROCESS_LATENCY, "bandwidth": PROCESS_BANDWIDTH}
            name = "local-calibrated-processes"
        return local_spec(**figures, devices=devices, kernels=kernels, name=name)

    def to_profile(self) -> dict:
        """The figures of one node as a profile: host totals and its intra-node link."""
        n = self.devices_per_node
        host = self.rates.host(n)
        return {
            "version": PROFILE_VERSION,
            "flops": self.flops * n,
            "mem_bandwidth": self.mem_bandwidth * n,
            "mem_capacity": self.mem_capacity * n,
            "latency": self.intra_latency,
            "bandwidth": self.intra_bandwidth,
            "kernels": host.to_json(),
        }

    def save_profile(self, path: str | os.PathLike[str]) -> Path:
        return write_profile(path, self.to_profile())

    def link(self, group: int) -> tuple[float, float]:
        """(bandwidth, latency) of the slowest link crossed by a collective over `group` devices, as a
        flat ring sees it."""
        self._check_group(group)
        if group <= self.devices_per_node:
            return self.intra_bandwidth, self.intra_latency
        # A ring that crosses nodes pushes every local device's traffic through the node's
        # network at once, so each device gets an equal share of it.
        return self.inter_bandwidth / self.devices_per_node, self.inter_latency

    def allreduce_time(self, nbytes: float, group: int) -> float:
        """All-reduce of `nbytes` per device over `group` devices (see docs/cluster.md): on CPU devices a
        ring (reduce-scatter then all-gather, 2(S-1) steps); on GPUs NCCL's choice, the faster of a ring
        and a tree, hierarchical where the group spans nodes."""
        if group <= 1:
            return 0.0
        if self.device == "gpu":
            return self._nccl("all_reduce", nbytes, group)
        bandwidth, latency = self.link(group)
        return 2 * (group - 1) * latency + 2 * (group - 1) / group * nbytes / bandwidth

    def allgather_time(self, nbytes_total: float, group: int) -> float:
        """All-gather of a result of `nbytes_total` bytes, `1/group` of it on each device (a ring; on
        GPUs hierarchical where the group spans nodes). A reduce-scatter of the same bytes costs the same."""
        if group <= 1:
            return 0.0
        if self.device == "gpu":
            return self._nccl("all_gather", nbytes_total, group)
        bandwidth, latency = self.link(group)
        return (group - 1) * latency + (group - 1) / group * nbytes_total / bandwidth

    def _nccl(self, kind: str, nbytes: float, group: int) -> float:
        """NCCL's algorithms on this cluster's links. Inside a node a collective is one ring or tree over
        the intra-node link. Across nodes it is hierarchical: a reduce-scatter (or, for an all-gather,
        nothing) inside each node, the node-level collective on each device's 1/d of the bytes over the
        network, whose bandwidth the node's d devices share, then an all-gather inside each node."""
        self._check_group(group)
        d = min(group, self.devices_per_node)
        nodes = math.ceil(group / d)
        one = _ring_or_tree if kind == "all_reduce" else _ring_gather
        if nodes == 1:
            return one(nbytes, d, self.intra_bandwidth, self.intra_latency)
        inside = _ring_gather(nbytes, d, self.intra_bandwidth, self.intra_latency) if d > 1 else 0.0
        # each device's share of the bytes crosses the network at its share of the node's bandwidth
        across = one(nbytes / d, nodes, self.inter_bandwidth / d, self.inter_latency)
        return across + (2 * inside if kind == "all_reduce" else inside)

    def describe(self) -> str:
        """One line: shape of the cluster, per-device figures, both links."""
        return (
            f"{self.name}: {self.nodes} node(s) x {self.devices_per_node} {self.device.upper()}(s); per device "
            f"{_si(self.flops, 'FLOP/s')}, {_si(self.mem_bandwidth, 'B/s')} memory, "
            f"{_si(self.mem_capacity, 'B')}; intra-node {_si(self.intra_bandwidth, 'B/s')} "
            f"+ {_seconds(self.intra_latency)}; inter-node {_si(self.inter_bandwidth, 'B/s')} "
            f"per node + {_seconds(self.inter_latency)}"
        )

    def __str__(self) -> str:
        return self.describe()

    def _check_group(self, group: int) -> None:
        if not 1 <= group <= self.devices:
            raise ClusterError(
                f"a collective over {group} devices does not fit cluster {self.name!r} of "
                f"{self.devices} devices; use a group size from 1 to {self.devices}"
            )


def _ring_or_tree(nbytes: float, group: int, bandwidth: float, latency: float) -> float:
    """An all-reduce of `nbytes` per device: the faster of NCCL's ring (2(S-1) steps, each a latency and
    1/S of the bytes: a bus bandwidth of `bandwidth`) and its pipelined double binary tree (2 log2(S)
    latencies up and down, every byte sent up and down once at the link's bandwidth)."""
    ring = 2 * (group - 1) * latency + 2 * (group - 1) / group * nbytes / bandwidth
    tree = 2 * math.ceil(math.log2(group)) * latency + 2 * nbytes / bandwidth
    return min(ring, tree)


def _ring_gather(nbytes_total: float, group: int, bandwidth: float, latency: float) -> float:
    """A ring all-gather (or reduce-scatter) of `nbytes_total` over `group` devices."""
    return (group - 1) * latency + (group - 1) / group * nbytes_total / bandwidth


def local_spec(
    *,
    flops: float,
    mem_bandwidth: float,
    mem_capacity: float,
    latency: float,
    bandwidth: float,
    devices: int,
    name: str,
    kernels: KernelRates | None = None,
) -> ClusterSpec:
    """One host's totals (and kernel rates) shared out over `devices` local devices (one node)."""
    _check_count("devices", devices)
    # Local devices are slices of one host: they share its cores, memory bus and RAM.
    return ClusterSpec(
        devices_per_node=devices,
        nodes=1,
        flops=flops / devices,
        mem_bandwidth=mem_bandwidth / devices,
        mem_capacity=mem_capacity / devices,
        intra_bandwidth=bandwidth,
        intra_latency=latency,
        # Never crossed with one node; set so that its per-device share equals the local link.
        inter_bandwidth=bandwidth * devices,
        inter_latency=latency,
        name=name,
        kernels=kernels.shared(devices) if kernels is not None else None,
    )


AUTO_CALIBRATE_ENV = "CLAYGRAPH_AUTO_CALIBRATE"
# Set by claygraph.runtime.calibration when it is imported (claygraph's package imports it): measuring runs
# programs, which this layer may not import. Takes the profile's path and writes it there.
_auto_calibrate: list = []
_tried: list = []  # profile paths this process already tried to calibrate into


def register_auto_calibration(measure) -> None:
    _auto_calibrate[:] = [measure]


def auto_calibration_enabled() -> bool:
    return os.environ.get(AUTO_CALIBRATE_ENV, "1").strip().lower() not in ("0", "false", "no", "off")


def _calibrate_once(path: Path, stale: int | None = None) -> None:
    """The quick calibration of a machine that has no profile (or, `stale`, one of another profile version,
    which it replaces), once; where it cannot run, the built-in figures (with a warning that says how to
    calibrate)."""
    if not (_auto_calibrate and auto_calibration_enabled()) or _tried:
        return
    _tried.append(path)  # one attempt per process: a failed one is not repeated on every plan
    import sys
    import time

    why = "has no calibration profile" if stale is None else \
        f"has a calibration profile of another claygraph (profile version {stale}, this one reads {PROFILE_VERSION})"
    print(f"claygraph: this machine {why}; measuring it once for the split choice (about 15 s), saved to "
          f"{path}. `claygraph calibrate` measures it in full; {AUTO_CALIBRATE_ENV}=0 keeps the built-in figures.",
          file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    try:
        _auto_calibrate[0](path)
    except Exception as exc:  # never the user's fit's failure: plan with the built-in figures
        warnings.warn(f"claygraph: the automatic calibration failed ({type(exc).__name__}: {exc}); using the "
                      "built-in figures. Run `claygraph calibrate` to measure this machine.", stacklevel=3)
        return
    print(f"claygraph: calibrated in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)


def default_profile_path() -> Path:
    """$CLAYGRAPH_PROFILE, else $XDG_CACHE_HOME/claygraph/profile.json (default ~/.cache/claygraph/...),
    beside JAX's compilation cache (claygraph.runtime.jax_cache)."""
    override = os.environ.get(PROFILE_ENV)
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "claygraph" / "profile.json"


def total_memory() -> float:
    """Physical RAM of this machine in bytes."""
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def read_profile(path: str | os.PathLike[str]) -> tuple[dict[str, float], KernelRates]:
    """The measured figures and kernel rates of a profile file, checked; extra keys (raw timings)
    are ignored."""
    try:
        profile = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ClusterError(f"cannot read profile {path}: {exc}; rerun `claygraph calibrate`") from exc
    if not isinstance(profile, dict) or profile.get("version") != PROFILE_VERSION:
        raise ClusterError(
            f"profile {path} is not a version-{PROFILE_VERSION} claygraph profile; "
            "rerun `claygraph calibrate`"
        )
    missing = [key for key in PROFILE_FIGURES if key not in profile]
    if missing:
        raise ClusterError(f"profile {path} lacks {', '.join(missing)}; rerun `claygraph calibrate`")
    for key in PROFILE_FIGURES:
        _check_figure(key, profile[key], where=f"profile {path}")
    kernels = profile.get("kernels")
    if not isinstance(kernels, dict):
        raise ClusterError(f"profile {path} lacks kernel rates; rerun `claygraph calibrate`")
    return {key: float(profile[key]) for key in PROFILE_FIGURES}, KernelRates.from_json(kernels, f"profile {path}")


def _profile_version(path: Path) -> object:
    """The version a profile file says it has (None where it cannot be read or says none)."""
    try:
        profile = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return profile.get("version") if isinstance(profile, dict) else None


def read_process_link(path: str | os.PathLike[str]) -> dict[str, float] | None:
    """The profile's link between two local processes ({"latency", "bandwidth"}), or None without one."""
    link = json.loads(Path(path).read_text()).get("process_link")
    if not isinstance(link, dict):
        return None
    for key in ("latency", "bandwidth"):
        _check_figure(key, link.get(key), where=f"profile {path}: process_link")
    return {"latency": float(link["latency"]), "bandwidth": float(link["bandwidth"])}


def write_profile(path: str | os.PathLike[str], profile: dict[str, object]) -> Path:
    """Write a profile as sorted, indented JSON, creating its folder; atomically (a process that reads it
    while another calibrates finds the old profile or the new one, never half of one)."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(profile, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def _check_count(field: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ClusterError(f"ClusterSpec: {field} must be a whole number >= 1, got {value!r}")


def _check_figure(field: str, value: object, where: str = "ClusterSpec") -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(value) or value <= 0:
        raise ClusterError(f"{where}: {field} must be a positive finite number (SI units), got {value!r}")


def _si(value: float, unit: str) -> str:
    for scale, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g} {prefix}{unit}"
    return f"{value:.3g} {unit}"


def _seconds(value: float) -> str:
    if value >= 1e-3:
        return f"{value * 1e3:.3g} ms"
    return f"{value * 1e6:.3g} us"


# Vendor data-sheet figures; latencies are assumptions. Sources and reasoning: docs/cluster.md.
_PRESETS = {
    # p4d.24xlarge: 8 x A100-40GB SXM4. NVLink 600 GB/s is both directions -> 300 GB/s one way.
    # EFA 400 Gb/s per instance = 50 GB/s each way. Latency: NVLink 5 us, EFA 20 us (assumed).
    "p4d": ClusterSpec(
        devices_per_node=8,
        nodes=1,
        flops=19.5e12,
        mem_bandwidth=1555e9,
        mem_capacity=40e9,
        intra_bandwidth=300e9,
        intra_latency=5e-6,
        inter_bandwidth=50e9,
        inter_latency=20e-6,
        name="p4d",
        device="gpu",
    ),
    # p5.48xlarge: 8 x H100-80GB SXM5. NVLink 900 GB/s both directions -> 450 GB/s one way.
    # EFA 3200 Gb/s per instance = 400 GB/s each way. Latency as p4d (assumed).
    "p5": ClusterSpec(
        devices_per_node=8,
        nodes=1,
        flops=67e12,
        mem_bandwidth=3.35e12,
        mem_capacity=80e9,
        intra_bandwidth=450e9,
        intra_latency=5e-6,
        inter_bandwidth=400e9,
        inter_latency=20e-6,
        name="p5",
        device="gpu",
    ),
    # g5.8xlarge / g5.16xlarge: 1 x A10G-24GB (A10 data-sheet figures), 25 Gb/s Ethernet.
    # One device per node, so the intra-node link (PCIe Gen4 x16, 32 GB/s one way) carries
    # nothing; any collective crosses the 25 Gb/s network. Latency: TCP 50 us (assumed).
    "g5": ClusterSpec(
        devices_per_node=1,
        nodes=1,
        flops=31.2e12,
        mem_bandwidth=600e9,
        mem_capacity=24e9,
        intra_bandwidth=32e9,
        intra_latency=5e-6,
        inter_bandwidth=25e9 / 8,
        inter_latency=50e-6,
        name="g5",
        device="gpu",
    ),
}

# Defaults for `ClusterSpec.local` without a profile: `claygraph calibrate` (profile version 7: the stream,
# transcendental, matrix-vector, gather, scatter-add and reduction curves timed in a loop, the products, gathers,
# scatter-adds and reductions also one call each, the products one call over a wide X, transcendental functions
# weighed one by one; three passes, each point their median, made non-decreasing; the calls a claygraph program's)
# on a 2-core CPU host (2026-12-01, load average 1.3):
# seconds per kernel against its work, whole host.
LOCAL_KERNELS = KernelRates.of(
    matmul=Curve((4.19e+06, 3.36e+07, 2.68e+08, 2.15e+09),
                 (9.26e-05, 0.000317, 0.00149, 0.0105)),
    matvec=Curve((2.62e+05, 1.05e+06, 4.19e+06, 8.39e+06, 1.68e+07, 3.36e+07, 6.71e+07, 1.34e+08),
                 (3.62e-06, 1.34e-05, 3.74e-05, 0.000121, 0.000405, 0.00151, 0.00308, 0.00519)),
    vecmat=Curve((2.62e+05, 1.05e+06, 4.19e+06, 8.39e+06, 1.68e+07, 3.36e+07, 6.71e+07, 1.34e+08),
                 (3.86e-06, 1.23e-05, 5.2e-05, 0.00014, 0.000539, 0.00224, 0.00428, 0.00929)),
    matvec_t=Curve((2.62e+05, 1.05e+06, 4.19e+06, 8.39e+06, 1.68e+07, 3.36e+07, 6.71e+07, 1.34e+08),
                   (4.26e-06, 1.68e-05, 5.58e-05, 0.000165, 0.000413, 0.00101, 0.00259, 0.00503)),
    vecmat_t=Curve((2.62e+05, 1.05e+06, 4.19e+06, 8.39e+06, 1.68e+07, 3.36e+07, 6.71e+07, 1.34e+08),
                   (4.91e-06, 1.55e-05, 9.18e-05, 0.000199, 0.00049, 0.00146, 0.00314, 0.00593)),
    matvec_call=Curve((2.62e+05, 1.05e+06, 4.19e+06, 8.39e+06, 1.68e+07, 3.36e+07, 6.71e+07, 1.34e+08),
                      (5.48e-06, 6.79e-05, 0.00014, 0.000217, 0.000549, 0.00154, 0.00279, 0.00522)),
    vecmat_call=Curve((2.62e+05, 1.05e+06, 4.19e+06, 8.39e+06, 1.68e+07, 3.36e+07, 6.71e+07, 1.34e+08),
                      (7.09e-06, 6.36e-05, 0.000208, 0.000394, 0.000686, 0.00213, 0.00388, 0.00777)),
    matvec_t_call=Curve((2.62e+05, 1.05e+06, 4.19e+06, 8.39e+06, 1.68e+07, 3.36e+07, 6.71e+07, 1.34e+08),
                        (9.96e-06, 5.49e-05, 0.000164, 0.000213, 0.000494, 0.000879, 0.00235, 0.00434)),
    vecmat_t_call=Curve((2.62e+05, 1.05e+06, 4.19e+06, 8.39e+06, 1.68e+07, 3.36e+07, 6.71e+07, 1.34e+08),
                        (8.2e-06, 5.27e-05, 0.000115, 0.000223, 0.000559, 0.00125, 0.00253, 0.00546)),
    matvec_wide_call=Curve((2.62e+05, 1.05e+06, 4.19e+06, 8.39e+06, 1.68e+07, 3.36e+07, 6.71e+07, 1.34e+08),
                           (1.03e-05, 4.82e-05, 0.000139, 0.000268, 0.000486, 0.00119, 0.0017, 0.00427)),
    vecmat_wide_call=Curve((2.62e+05, 1.05e+06, 4.19e+06, 8.39e+06, 1.68e+07, 3.36e+07, 6.71e+07, 1.34e+08),
                           (8.18e-06, 4.92e-05, 0.000163, 0.000204, 0.00056, 0.00131, 0.0021, 0.0043)),
    # (not measured on that host: its matvec curve, what the cost model read for a blocked pass before)
    block_read=Curve((2.62e+05, 1.05e+06, 4.19e+06, 8.39e+06, 1.68e+07, 3.36e+07, 6.71e+07, 1.34e+08),
                     (3.62e-06, 1.34e-05, 3.74e-05, 0.000121, 0.000405, 0.00151, 0.00308, 0.00519)),
    stream=Curve((1.31e+05, 5.24e+05, 2.1e+06, 8.39e+06, 3.36e+07, 6.71e+07, 2.68e+08),
                 (1.86e-06, 5.75e-06, 1.59e-05, 6.44e-05, 0.000597, 0.0071, 0.031)),
    transcendental=Curve((3.28e+04, 1.31e+05, 5.24e+05, 2.1e+06, 8.39e+06, 1.68e+07, 6.71e+07),
                         (3.71e-05, 7.97e-05, 0.000317, 0.00125, 0.00503, 0.0142, 0.0634)),
    gather=Curve((1.31e+05, 5.24e+05, 2.1e+06, 8.39e+06, 3.36e+07, 6.71e+07, 2.68e+08),
                 (6.79e-06, 2.14e-05, 8.79e-05, 0.000464, 0.004, 0.0189, 0.0753)),
    scatter=Curve((1.31e+05, 5.24e+05, 2.1e+06, 8.39e+06, 3.36e+07, 6.71e+07, 2.68e+08),
                  (1.19e-05, 5.45e-05, 0.000217, 0.00115, 0.014, 0.0272, 0.147)),
    reduce=Curve((6.55e+04, 2.62e+05, 1.05e+06, 4.19e+06, 1.68e+07, 3.36e+07, 1.34e+08),
                 (2.98e-06, 1.13e-05, 2.71e-05, 0.000101, 0.000625, 0.00145, 0.00827)),
    gather_call=Curve((1.31e+05, 5.24e+05, 2.1e+06, 8.39e+06, 3.36e+07),
                      (3.04e-05, 0.000117, 0.000117, 0.000756, 0.00255)),
    scatter_call=Curve((1.31e+05, 5.24e+05, 2.1e+06, 8.39e+06, 3.36e+07, 6.71e+07, 2.68e+08),
                       (6.83e-05, 0.000129, 0.000305, 0.00109, 0.0062, 0.0263, 0.144)),
    reduce_call=Curve((6.55e+04, 2.62e+05, 1.05e+06, 4.19e+06, 1.68e+07, 3.36e+07, 1.34e+08),
                      (3.76e-06, 8.19e-05, 0.000118, 0.00016, 0.000444, 0.00103, 0.00565)),
    call_s=2.82e-05, kernel_s=1e-09, spmd_call_s=0.000105,
    weights=(("cos", 4.49), ("digamma", 7.68), ("erf", 0.25), ("expm1", 0.529), ("lgamma", 7.14), ("log", 0.262),
             ("logistic", 0.256), ("rsqrt", 0.116), ("sin", 4.52), ("sqrt", 0.0779), ("tanh", 0.226)))
