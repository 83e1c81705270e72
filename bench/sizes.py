"""Problem sizes per mode: `smoke` (seconds, for the test suite), `quick` (minutes on 2 cores),
`full` (what this 2-core, 24 GB machine holds) and `gpu` (the workloads' nominal sizes).

The nominal sizes are those of ../shared/WORKLOADS.md; every report states the sizes it ran.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

MODES = ("smoke", "quick", "full", "gpu")


@dataclass(frozen=True, slots=True)
class Sizes:
    mode: str
    repeats: int  # timed repeats per measurement; the report gives their median
    solver_repeats: int  # repeats of a whole solve (W1)
    w1_n: int
    w1_d: int
    w2_n: int
    w2_groups: int
    w2_d: int
    w2_chains: int
    w2_warmup: int
    w2_draws: int
    w3_n: int
    w3_groups: int
    w3_d: int
    w6_n: int
    w6_d: int
    layout_rows: tuple[int, ...]
    layout_shards: tuple[int, ...]
    bandwidth_bytes: int  # buffer size of the memory-bandwidth measurement
    w7_n: int  # W7: many products (W2's model, Zipf-skewed groups)
    w7_groups: int
    w7_d: int
    w7_vi_steps: int  # ADVI steps of W7's fit on Ray

    def to_json(self) -> dict:
        return asdict(self)


# The workloads as ../shared/WORKLOADS.md defines them (used by the projection and the GPU mode).
NOMINAL = {
    "W1": {"n": 2_000_000, "d": 100},
    "W2": {"n": 100_000, "groups": 1_000, "d": 10, "chains": 4, "warmup": 500, "draws": 500},
    "W3": {"n": 10_000_000, "groups": 100_000, "d": 10},
    "W6": {"n": 20_000, "d": 50_000},
    "W7": {"n": 10_000_000, "groups": 2_000_000, "d": 8},
}

SMOKE = Sizes("smoke", repeats=3, solver_repeats=1, w1_n=2_000, w1_d=10, w2_n=500, w2_groups=10, w2_d=3,
              w2_chains=2, w2_warmup=20, w2_draws=20, w3_n=2_000, w3_groups=50, w3_d=3, w6_n=200, w6_d=1_000,
              layout_rows=(100_000,), layout_shards=(2,), bandwidth_bytes=20_000_000, w7_n=20_000, w7_groups=5_000,
              w7_d=8, w7_vi_steps=50)
QUICK = Sizes("quick", repeats=7, solver_repeats=3, w1_n=200_000, w1_d=100, w2_n=5_000, w2_groups=50, w2_d=10,
              w2_chains=2, w2_warmup=150, w2_draws=150, w3_n=200_000, w3_groups=2_000, w3_d=10, w6_n=2_000,
              w6_d=10_000, layout_rows=(10_000_000,), layout_shards=(2, 8), bandwidth_bytes=200_000_000,
              w7_n=500_000, w7_groups=100_000, w7_d=8, w7_vi_steps=200)
# Full on this machine: W1 and W2 at their nominal sizes; W3 at 1/5 of its rows and groups and W6
# at 1/5 of its features (their nominal data, 10^7 rows and 4 GB, would leave no room for the
# per-split copies on 24 GB); the layout kernels up to 10^8 rows; W7 at its nominal size (its data,
# 0.4 GB, are smaller than W3's).
FULL = Sizes("full", repeats=10, solver_repeats=3, w1_n=2_000_000, w1_d=100, w2_n=100_000, w2_groups=1_000,
             w2_d=10, w2_chains=4, w2_warmup=500, w2_draws=500, w3_n=2_000_000, w3_groups=20_000, w3_d=10,
             w6_n=20_000, w6_d=10_000, layout_rows=(10_000_000, 100_000_000), layout_shards=(2, 8),
             bandwidth_bytes=400_000_000, w7_n=10_000_000, w7_groups=2_000_000, w7_d=8, w7_vi_steps=1_000)
# A GPU holds the nominal sizes of every workload.
GPU = Sizes("gpu", repeats=20, solver_repeats=3, w1_n=2_000_000, w1_d=100, w2_n=100_000, w2_groups=1_000,
            w2_d=10, w2_chains=4, w2_warmup=500, w2_draws=500, w3_n=10_000_000, w3_groups=100_000, w3_d=10,
            w6_n=20_000, w6_d=50_000, layout_rows=(10_000_000, 100_000_000), layout_shards=(2, 8),
            bandwidth_bytes=400_000_000, w7_n=10_000_000, w7_groups=2_000_000, w7_d=8, w7_vi_steps=1_000)

_BY_MODE = {"smoke": SMOKE, "quick": QUICK, "full": FULL, "gpu": GPU}


def sizes_for(mode: str) -> Sizes:
    """The sizes of a mode; an unknown mode is an error that lists the known ones."""
    try:
        return _BY_MODE[mode]
    except KeyError:
        raise ValueError(f"unknown benchmark mode {mode!r}; known modes: {', '.join(MODES)}") from None


def mode_for(quick: bool, device: str) -> str:
    """The mode a command line asks for: GPU runs use the nominal sizes unless --quick."""
    if quick:
        return "quick"
    return "gpu" if device == "gpu" else "full"
