"""The gradient suite at a tiny size: claygraph's and NumPyro's W2 gradients for chain batches, timed."""
from __future__ import annotations

from claygraph.cli import bench as cli

cli._import_bench()  # the bench/ folder of this checkout, on sys.path

from bench.suites import gradient  # noqa: E402


def test_leapfrog_costs_report_every_batch_for_both():
    res = gradient.leapfrog_costs(600, 7, 3, batches=(1, 2), rounds=1, calls=2)
    assert res["feature_major"] == ["X"] and [r["chains"] for r in res["rows"]] == [1, 2]
    for r in res["rows"]:
        assert r["claygraph_ms"] > 0 and r["numpyro_ms"] > 0
        assert abs(r["claygraph_per_chain_ms"] * r["chains"] - r["claygraph_ms"]) < 1e-9


def test_widths_time_both_layouts():
    rows = gradient.widths(500, ds=(3,), batches=(1, 2), rounds=1, calls=1)["rows"]
    assert [(r["d"], r["chains"]) for r in rows] == [(3, 1), (3, 2)]
    assert all(r["row_major_ms"] > 0 and r["feature_major_ms"] > 0 for r in rows)
