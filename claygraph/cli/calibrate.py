"""`claygraph calibrate`: measure this machine and save the profile that ClusterSpec.local reads.

The measuring is claygraph.runtime.calibration's (what it measures and how: its docstring and
docs/cluster.md); this command parses its arguments and prints what was measured. The whole run takes
about two minutes (three passes over the kernels); `--quick` a few seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from claygraph.partition.cluster import ClusterSpec
from claygraph.runtime import calibration


def calibrate(out: str | None = None, quick: bool = False, devices: int = 2) -> dict:
    """Measure this machine, save the profile JSON (default: $CLAYGRAPH_PROFILE or
    ~/.cache/claygraph/profile.json), print a summary and return the profile."""
    spec, profile, path = calibration.calibrate(out, quick, devices)
    print(summary(spec, profile, path))
    return profile


# -- report ---------------------------------------------------------------------------------------------

def summary(spec: ClusterSpec, profile: dict, path: Path) -> str:
    k = spec.rates
    rate = {f: getattr(k, f).rate() for f in k.FAMILIES}
    coll = profile["collectives"]
    two = dataclasses.replace(spec, devices_per_node=coll["devices"])
    return "\n".join([
        f"device kind           {profile['device_kind']}",
        "throughput at the largest size measured (the profile holds every size):",
        f"matmul (GEMM)         {rate['matmul'] / 1e9:8.1f} GFLOP/s",
        f"matvec (X @ w)        {rate['matvec'] / 1e9:8.2f} GB/s",
        f"vecmat (r @ X)        {rate['vecmat'] / 1e9:8.2f} GB/s",
        f"feature-major X @ w   {rate['matvec_t'] / 1e9:8.2f} GB/s (r @ X {rate['vecmat_t'] / 1e9:.2f} GB/s)",
        f"elementwise (fused)   {rate['stream'] / 1e9:8.2f} GB/s",
        f"transcendental        {rate['transcendental'] / 1e9:8.3f} G elements/s",
        f"gather / scatter-add  {rate['gather'] / 1e9:8.2f} / {rate['scatter'] / 1e9:.2f} GB/s",
        f"reduction             {rate['reduce'] / 1e9:8.2f} GB/s",
        f"call / kernel         {k.call_s * 1e6:8.1f} / {k.kernel_s * 1e6:.1f} us "
        f"({coll['devices']} devices: {k.call(coll['devices']) * 1e6:.0f} us per call)",
        f"memory                {spec.mem_capacity / 2**30:8.1f} GiB",
        f"collectives over {coll['devices']} local devices: latency {spec.intra_latency * 1e6:.1f} us, "
        f"bandwidth {spec.intra_bandwidth / 1e9:.2f} GB/s; psum of 1 float "
        f"{two.allreduce_time(4, coll['devices']) * 1e6:.0f} us predicted",
        f"two processes (loopback TCP): latency {profile['process_link']['latency'] * 1e6:.0f} us, "
        f"bandwidth {profile['process_link']['bandwidth'] / 1e9:.2f} GB/s",
        f"measured in {profile['calibrate_s']:.1f} s (load average {profile['load_average'][0]:.2f}); "
        f"profile saved to {path}",
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="claygraph calibrate", description=__doc__.splitlines()[0])
    parser.add_argument("--out", metavar="PATH", help="where to save the profile JSON")
    parser.add_argument("--quick", action="store_true", help="smaller measurements, a few seconds")
    parser.add_argument("--devices", type=int, default=2, help="local devices of the collectives measurement")
    args = parser.parse_args(argv)
    if args.devices < 2:
        parser.error("--devices must be at least 2 (a collective needs two devices)")
    calibrate(out=args.out, quick=args.quick, devices=args.devices)
    return 0


if __name__ == "__main__":
    sys.exit(main())
