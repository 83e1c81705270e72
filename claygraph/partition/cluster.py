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
from pathlib import Path

from claygraph.errors import ClusterError

PROFILE_ENV = "CLAYGRAPH_PROFILE"
PROFILE_VERSION = 1
# The measured figures a profile must hold; all are totals for the host (see `to_profile`).
PROFILE_FIGURES = ("flops", "mem_bandwidth", "mem_capacity", "latency", "bandwidth")

# Defaults for `ClusterSpec.local` without a profile, measured on a 2-core CPU host.
LOCAL_FLOPS = 50e9  # FLOP/s of the whole host, jitted float32 matmul
LOCAL_MEM_BANDWIDTH = 11.7e9  # bytes/s of the whole host, bytes copied by one large copy
# A gloo all-reduce between two local JAX processes took 0.3 ms for one float32 and 6.2 ms for
# 1,000,000. A ring over two devices costs 2 * latency + nbytes / bandwidth, which fits both:
LOCAL_LATENCY = 0.15e-3  # s per message
LOCAL_BANDWIDTH = 4e6 / 5.9e-3  # ≈ 0.68e9 bytes/s

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

    def __post_init__(self) -> None:
        for field in ("devices_per_node", "nodes"):
            _check_count(field, getattr(self, field))
        for field in _FIGURES:
            _check_figure(field, getattr(self, field))

    @property
    def devices(self) -> int:
        return self.devices_per_node * self.nodes

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
    def local(cls, devices: int = 1) -> ClusterSpec:
        """This machine split into `devices` CPU devices: calibrated if a profile exists."""
        path = default_profile_path()
        if path.is_file():
            return cls.from_profile(path, devices)
        return local_spec(
            flops=LOCAL_FLOPS,
            mem_bandwidth=LOCAL_MEM_BANDWIDTH,
            mem_capacity=total_memory(),
            latency=LOCAL_LATENCY,
            bandwidth=LOCAL_BANDWIDTH,
            devices=devices,
            name="local",
        )

    @classmethod
    def from_profile(cls, path: str | os.PathLike[str], devices: int = 1) -> ClusterSpec:
        """The host described by a profile JSON file, split into `devices` devices."""
        figures = read_profile(path)
        return local_spec(**figures, devices=devices, name="local-calibrated")

    def to_profile(self) -> dict[str, float]:
        """The figures of one node as a profile: host totals and its intra-node link."""
        return {
            "version": PROFILE_VERSION,
            "flops": self.flops * self.devices_per_node,
            "mem_bandwidth": self.mem_bandwidth * self.devices_per_node,
            "mem_capacity": self.mem_capacity * self.devices_per_node,
            "latency": self.intra_latency,
            "bandwidth": self.intra_bandwidth,
        }

    def save_profile(self, path: str | os.PathLike[str]) -> Path:
        return write_profile(path, self.to_profile())

    def link(self, group: int) -> tuple[float, float]:
        """(bandwidth, latency) of the slowest link crossed by a collective over `group` devices."""
        self._check_group(group)
        if group <= self.devices_per_node:
            return self.intra_bandwidth, self.intra_latency
        # A ring that crosses nodes pushes every local device's traffic through the node's
        # network at once, so each device gets an equal share of it.
        return self.inter_bandwidth / self.devices_per_node, self.inter_latency

    def allreduce_time(self, nbytes: float, group: int) -> float:
        """Ring all-reduce of `nbytes` per device: reduce-scatter then all-gather, 2(S-1) steps."""
        if group <= 1:
            return 0.0
        bandwidth, latency = self.link(group)
        return 2 * (group - 1) * latency + 2 * (group - 1) / group * nbytes / bandwidth

    def allgather_time(self, nbytes_total: float, group: int) -> float:
        """Ring all-gather of a result of `nbytes_total` bytes, `1/group` of it on each device."""
        if group <= 1:
            return 0.0
        bandwidth, latency = self.link(group)
        return (group - 1) * latency + (group - 1) / group * nbytes_total / bandwidth

    def describe(self) -> str:
        """One line: shape of the cluster, per-device figures, both links."""
        return (
            f"{self.name}: {self.nodes} node(s) x {self.devices_per_node} device(s); per device "
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


def local_spec(
    *,
    flops: float,
    mem_bandwidth: float,
    mem_capacity: float,
    latency: float,
    bandwidth: float,
    devices: int,
    name: str,
) -> ClusterSpec:
    """One host's totals shared out over `devices` local devices (one node)."""
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
    )


def default_profile_path() -> Path:
    """$CLAYGRAPH_PROFILE, else ~/.cache/claygraph/profile.json."""
    override = os.environ.get(PROFILE_ENV)
    if override:
        return Path(override).expanduser()
    return Path.home() / ".cache" / "claygraph" / "profile.json"


def total_memory() -> float:
    """Physical RAM of this machine in bytes."""
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def read_profile(path: str | os.PathLike[str]) -> dict[str, float]:
    """The measured figures of a profile file, checked; extra keys (raw timings) are ignored."""
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
    return {key: float(profile[key]) for key in PROFILE_FIGURES}


def write_profile(path: str | os.PathLike[str], profile: dict[str, object]) -> Path:
    """Write a profile as sorted, indented JSON, creating its folder."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(profile, indent=2, sort_keys=True) + "\n")
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
    ),
}
