"""The GPU check (`claygraph bench --suite gpu`, bench/gpu_check.py): a clear stop without a GPU, and its
measuring and reporting code run end to end on CPU devices with a named GPU's figures (the figures then
describe no GPU: this checks the structure, not the numbers)."""
import os
import subprocess
import sys

import pytest

from bench import gpu_check, report
from bench.sizes import SMOKE
from bench.suites import SuiteEnv
from bench.suites import gpu as gpu_suite
from claygraph.cli.bench import gpu_problem

NO_GPU = gpu_problem() is not None


@pytest.mark.skipif(not NO_GPU, reason="a GPU is present: the check would run, not stop")
def test_without_a_gpu_the_check_stops_clearly():
    claygraph = os.path.join(os.path.dirname(sys.executable), "claygraph")
    r = subprocess.run([claygraph, "bench", "--suite", "gpu", "--out", "unused-never-written"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2
    assert "claygraph bench --suite gpu:" in r.stderr and "nothing to measure here" in r.stderr
    assert not os.path.exists("unused-never-written")
    res = gpu_suite.run(SMOKE, SuiteEnv())
    assert res["status"] == "not available" and "measures a GPU" in res["note"]


@pytest.mark.parametrize("name, bandwidth", [("NVIDIA H100 80GB HBM3", 3.35e12), ("NVIDIA H100 PCIe", 2.0e12),
                                             ("NVIDIA H200", 4.8e12), ("NVIDIA A100-SXM4-40GB", 1.555e12),
                                             ("NVIDIA A100-SXM4-80GB", 2.039e12), ("NVIDIA A10G", 600e9),
                                             ("NVIDIA L40S", 864e9), ("NVIDIA L4", 300e9),
                                             ("NVIDIA H100 NVL", 3.9e12)])
def test_gpu_figures_by_name(name, bandwidth):
    spec = gpu_check.spec_for(name, 2)
    assert spec.device == "gpu" and spec.mem_bandwidth == bandwidth and spec.devices == 2


def test_unknown_gpu_is_named():
    with pytest.raises(gpu_check.UnknownGPU, match="no data-sheet figures for GPU 'Quantum 9000'"):
        gpu_check.spec_for("Quantum 9000", 1)


def test_check_runs_end_to_end_and_reports():
    result = gpu_check.measure({"sizes": SMOKE.to_json(), "platform": "cpu", "gpu": "NVIDIA H100 80GB HBM3",
                                "elements": 200_000})
    assert [w["workload"] for w in result["workloads"]] == ["W1", "W3", "W6"]
    for w in result["workloads"]:
        assert w["measured"]["median_s"] > 0 and w["predicted_s"] > 0
        assert set(w["terms"]) == {"flops", "memory", "launch", "collectives"}
        assert w["ratio"] == pytest.approx(w["predicted_s"] / w["measured"]["median_s"])
    a = result["assumptions"]
    assert {"call", "stream", "gather_sorted", "gather_random", "scatter_sorted", "scatter_random"} == set(a)
    assert a["stream"]["bandwidth"] > 0 and all(a[k]["efficiency"] > 0 for k in a if k.startswith(("g", "sc")))
    if result["devices"] > 1:
        assert [r["bytes"] for r in result["allreduce"]] == list(gpu_check.ALLREDUCE_BYTES)
    doc = {"suites": {"gpu": {"status": "ok", "commit": "abcdef0", "measured_at": "now", **result}}}
    text = "\n".join(report.gpu_check_section(doc))
    for word in ("### The GPU check", "NVIDIA H100 80GB HBM3", "| W1 |", "| W3 |", "| W6 |", "HBM stream",
                 "gather random indices", "model assumes 0.25"):
        assert word in text
    missing = {"suites": {"gpu": {"status": "not available", "note": "no GPU"}}}
    assert "**not available**: no GPU" in "\n".join(report.gpu_check_section(missing))
