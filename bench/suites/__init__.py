"""The suites `claygraph bench --suite NAME` runs. Each module has `run(sizes, env) -> dict`.

A suite returns JSON-ready figures and a `status`: "ok", or "not available" (a capability that
claygraph does not have yet, or a peer that is not installed), which the report shows instead of
numbers. An exception in a suite is recorded as status "error" by the runner.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field

# In the order they run and appear in the report.
SUITES = ("smoke", "partition", "split_choice", "layout", "setup", "w1", "w2", "gradient", "w7", "posteriordb",
          "adaptation", "hard", "projection", "parquet", "gpu")
DEFAULT_SUITES = ("partition", "split_choice", "layout", "setup", "w1", "w2", "posteriordb", "projection")
DESCRIPTIONS = {
    "smoke": "tiny sizes: one partition choice, one compile and gradient, the layout kernel at 1e5 rows",
    "partition": "W3 and W6: every candidate split's measured time per gradient evaluation vs its prediction",
    "split_choice": "13 models x sizes: the cost model's pick and predicted time against every candidate measured",
    "layout": "numba layout kernels (group_layout, lpt_owner) vs NumPy/Python baselines",
    "setup": "W5: Ray(workers=2) set-up by phase, all-reduce latency, W1 gradient on Ray",
    "w1": "W1: claygraph MAP / LogisticRegression vs scikit-learn and scipy; gradient time per runtime",
    "w2": "W2: claygraph NUTS vs NumPyro NUTS (sequential, parallel): ESS per second",
    "gradient": "W2's potential and gradient for chain batches of 1, 2, 4: claygraph vs NumPyro, per chain",
    "w7": "W7 (2M products): potential-and-gradient time on Local(1), Local(2), Ray(2) per split vs NumPyro; "
          "collective bytes, peak memory, MAP and ADVI on Ray",
    "posteriordb": "every posteriordb reference: claygraph NUTS (held to the tolerance), Laplace and VI (reported)",
    "adaptation": "every posteriordb reference under each mass-matrix adaptation: ESS per gradient vs the baseline",
    "parquet": "a Parquet folder on Ray(workers=2), split by product: every process's peak memory against the data "
               "it holds, 40,000 to 16,000,000 rows",
    "hard": "20 hard posteriors (posteriordb, funnels, weakly identified hierarchies, a horseshoe, W2 small): "
            "claygraph NUTS's defaults against NumPyro's, min bulk ESS, ESS per second, agreement with references",
    "projection": "W1, W3, W6 at nominal sizes on the p5 and g5 presets, by the cost model (projected)",
    "gpu": "the GPU check (a GPU only): W1, W3, W6 per evaluation on one GPU vs the GPU roofline; the GPU model's "
           "figures measured; NCCL all-reduce with several GPUs",
}


@dataclass
class SuiteEnv:
    """Where suites run: the device kind and how many devices a multi-device measurement gets."""

    device: str = "cpu"  # "cpu" or "gpu"
    devices: int = 2  # devices of the multi-device measurements (forced host devices on CPU)
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))

    @property
    def platform(self) -> str:
        return "gpu" if self.device == "gpu" else "cpu"


def not_available(why: str, **extra) -> dict:
    return {"status": "not available", "note": why, **extra}


def load(name: str):
    """The module of suite `name`."""
    import importlib

    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; suites: {', '.join(SUITES)}")
    return importlib.import_module(f"bench.suites.{name}")
