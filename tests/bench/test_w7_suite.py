"""The W7 suite ("many products") at a tiny size: every figure it reports is there, in the report's shape."""
from __future__ import annotations

import json

import numpy as np
import pytest

from claygraph.cli import bench as cli

cli._import_bench()  # the bench/ folder of this checkout, on sys.path

from bench import report, sizes  # noqa: E402
from bench.suites import SUITES, load, w7  # noqa: E402
from bench.workloads import w7_arrays  # noqa: E402

# pytest-xdist: the tests that start a Ray cluster (or a process that does) run one after another on one worker
# (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("ray")

N, G, D = 20_000, 5_000, 8

HLO = """\
HloModule jit_potential, entry_computation_layout={(f32[5000]{0})->f32[]}

ENTRY %main.1 (p0: f32[5000]) -> f32[] {
  %p0 = f32[5000]{0} parameter(0)
  %s = f32[] constant(0)
  %w = f32[8]{0} constant({1, 2, 3, 4, 5, 6, 7, 8})
  %all-reduce = (f32[], f32[5000]{0}, f32[8]{0}) all-reduce(%s, %p0, %w), channel_id=1, replica_groups={{0,1}}
  %all-gather = f32[10000]{0} all-gather(%p0), channel_id=2, replica_groups={{0,1}}, dimensions={0}
  %cp = f32[8]{0} collective-permute-start(%w), channel_id=3, source_target_pairs={{0,1},{1,0}}
  %cpd = f32[8]{0} collective-permute-done(%cp)
  ROOT %r = f32[] add(%s, %s)
}
"""


def test_registered_with_sizes_for_every_mode():
    assert "w7" in SUITES and load("w7") is w7
    assert (sizes.FULL.w7_n, sizes.FULL.w7_groups, sizes.FULL.w7_d) == (10_000_000, 2_000_000, 8)
    assert sizes.NOMINAL["W7"] == {"n": 10_000_000, "groups": 2_000_000, "d": 8}
    for mode in ("smoke", "quick"):
        s = sizes.sizes_for(mode)
        assert s.w7_groups <= s.w7_n and s.w7_n * 10 <= sizes.FULL.w7_n


def test_w7_data_every_product_has_a_row():
    a = w7_arrays(3_000, 1_000, 4)
    counts = np.bincount(a["g"], minlength=1_000)
    assert counts.min() >= 1 and counts.sum() == 3_000 and counts.max() > 50  # Zipf: one product holds many rows
    assert a["X"].dtype == np.float32 and a["X"].shape == (3_000, 4) and set(np.unique(a["y"])) <= {0.0, 1.0}
    assert np.array_equal(w7_arrays(3_000, 1_000, 4)["g"], a["g"])  # seeded
    with pytest.raises(ValueError, match="at least one row per group"):
        w7_arrays(10, 20, 2)


def test_collective_bytes_from_hlo_text():
    c = w7.collective_bytes(HLO)
    assert c["all-reduce"] == {"count": 1, "bytes": 4 + 20_000 + 32, "result_bytes": 4 + 20_000 + 32}
    assert c["all-gather"] == {"count": 1, "bytes": 20_000, "result_bytes": 40_000}
    assert c["collective-permute"]["count"] == 1 and c["collective-permute"]["bytes"] == 32  # the -done not again
    assert c["reduce-scatter"]["count"] == 0 and c["total_bytes"] == 20_036 + 20_000 + 32


@pytest.mark.long  # docs/testing.md: the bench harness end to end; W7's programs are tested in tests/partition
def test_w7_suite_at_a_tiny_size():
    res = w7.measure(N, G, D, rounds=1, calls=2, vi_steps=20, vi_init="zero", map_max_iter=20)
    json.dumps(res)  # JSON-ready
    assert res["status"] == "ok" and res["sizes"] == {"n": N, "groups": G, "d": D}
    assert res["data"]["params"] == 2 + G + D and res["data"]["rows_per_group"]["min"] >= 1
    for name, *_ in w7.CONFIGS:
        c = res["configs"][name]
        assert c["status"] == "ok", (name, c.get("note"))
        t = c["timing"]
        assert t["repeats"] == 2 and 0 < t["min_s"] <= t["median_s"] <= t["max_s"]
        assert c["first_s"] > 0 and c["grad_finite"]
        assert c["shard"]["data_bytes"] > 0 and c["shard"]["param_bytes"] > 0
        if name != "numpyro":
            assert c["value_rel_diff"] < 1e-4, (name, c["value"], res["configs"]["numpyro"]["value"])
            assert set(w7.COLLECTIVES) <= set(c["collectives"])
    cfg = res["configs"]
    assert cfg["local1"]["collectives"]["total_bytes"] == 0  # one device: nothing to exchange
    for name in ("local2-group", "local2-row", "ray2-group", "ray2-row"):
        assert cfg[name]["devices"] == 2 and cfg[name]["collectives"]["all-reduce"]["count"] >= 1
        assert cfg[name]["shard"]["data_bytes"] < cfg["local1"]["shard"]["data_bytes"]  # each device holds a part
    # split by row, each device all-reduces z's gradient (G floats); split by group, it holds its own
    assert cfg["local2-row"]["collectives"]["total_bytes"] >= 4 * G > cfg["local2-group"]["collectives"]["total_bytes"]
    assert cfg["local2-group"]["shard"]["param_bytes"] < cfg["local2-row"]["shard"]["param_bytes"]
    assert [r["name"] for r in res["ratios"]] == [t[0] for t in w7.TARGETS]
    for r in res["ratios"]:
        assert r["value"] > 0 and r["met"] == (r["value"] <= r["target"])
    for name, p in res["processes"].items():
        assert p["status"] == "ok", (name, p["note"])
        assert p["driver_peak_rss_bytes"] > 50e6 and p["process_s"] > 0
    workers = res["workers_peak_rss_bytes"]
    assert set(workers) == {"started", "gradients", "map", "vi"}
    # each stage's own peak (reset between stages) and the resident set at its end
    assert all(len(v) == 2 and all(w["peak"] > 50e6 and w["peak"] >= w["current"] for w in v)
               for v in workers.values())
    assert set(res["driver_phase_peak_bytes"]) == {"data made", "started", "gradients", "map", "vi"}
    m, v = res["fits"]["map"], res["fits"]["vi"]
    assert m["status"] == "ok", m.get("note")
    assert 1 <= m["iterations"] <= 20 and np.isfinite(m["objective"]) and m["split"] == ["group"]
    assert v["status"] == "ok", v.get("note")
    assert np.isfinite(v["elbo"]) and v["steps"] == 20 and v["draws"] == w7.VI_DRAWS and v["split"] == ["group"]
    # the report's section from this result
    doc = {"suites": {"w7": res | {"mode": "smoke", "commit": "abc", "measured_at": "now", "elapsed_s": 1.0}}}
    md = "\n".join(report.w7_section(doc, {}, str))
    assert "## W7 — many products" in md and "Local(devices=1) ÷ NumPyro" in md and "≤ 0.8×" in md
    assert "claygraph Ray(workers=2), split group" in md and "| all-reduce |" in md and "Ray worker 1" in md
    assert "MAP (`cg.infer.map`, defaults) | ok" in md and "ADVI" in md


def test_a_failed_or_killed_process_is_reported_not_raised(monkeypatch):
    def fake(name, spec, limit_s, platform="cpu"):
        if name == "ray2":
            return {"status": "timed out", "note": "killed after its 1 s limit, during MAP", "process_s": 1.0,
                    "configs": {}, "fits": {"map": {"status": "timed out", "note": "no result"}}}
        return {"status": "error", "note": "exited 1 during numpyro: boom", "process_s": 0.5}

    monkeypatch.setattr(w7, "run_child", fake)
    res = w7.measure(100, 10, 2)
    assert {c["status"] for c in res["configs"].values()} == {"error", "timed out"}
    assert res["fits"]["map"]["status"] == "timed out" and res["fits"]["vi"]["status"] == "not run"
    assert all(r["value"] is None and r["met"] is None for r in res["ratios"])
    md = "\n".join(report.w7_section({"suites": {"w7": res | {"mode": "smoke"}}}, {}, str))
    assert "boom" in md and "| not measured | — |" in md
