"""The split_choice suite's judgement (pick, spread, prediction) and its report section, on made-up results."""
from __future__ import annotations

import pytest

from claygraph.cli import bench as cli

cli._import_bench()  # the bench/ folder of this checkout, on sys.path

from bench import report  # noqa: E402
from bench.suites import split_choice as sc  # noqa: E402


def cand(split, predicted, median, spread=0.02):
    return {"split": split, "feasible": True, "predicted_s": predicted, "compute_s": predicted, "comm_s": 0.0,
            "measured": {"median_s": median, "min_s": median * 0.9, "max_s": median * 1.3, "repeats": 11,
                         "q1_s": median * (1 - spread), "q3_s": median * (1 + spread)}}


def result(chosen, *cands):
    return {"chosen": chosen, "candidates": list(cands)}


def test_the_fastest_pick_is_right_and_its_prediction_judged():
    j = sc.judge(result(["row"], cand(["row"], 0.010, 0.012), cand(["feature"], 0.02, 0.030), cand([], 0.03, 0.05)))
    assert j["pick_ok"] and j["measured_best"] == ["row"]
    assert j["differ"] == pytest.approx(0.05 / 0.012)
    assert j["chosen_measured_over_predicted"] == pytest.approx(1.2) and j["chosen_within"]
    assert not j["all_within"]  # none: 0.05 measured against 0.03 predicted is 1.67x


def test_the_built_in_figures_are_judged_on_the_split_they_pick():
    r = result(["row"], cand(["row"], 0.010, 0.012), cand([], 0.03, 0.05))
    r["built_in"] = {"chosen": [], "predicted": [[["row"], 0.004], [[], 0.02]]}
    j = sc.judge(r)
    assert j["built_in_chosen"] == [] and j["built_in_measured_over_predicted"] == pytest.approx(2.5)
    assert not j["built_in_within"]  # 0.05 measured against 0.02 predicted: 2.5x, outside 2x
    r["built_in"]["predicted"][1][1] = 0.03
    assert sc.judge(r)["built_in_within"]
    t = sc.totals([{"status": "ok", "judge": sc.judge(r)}])
    assert (t["built_in_within"], t["built_in_predictions"]) == (1, 1)
    r["quick"] = {"chosen": ["row"], "predicted": [[["row"], 0.011], [[], 0.05]]}
    j = sc.judge(r)
    assert j["quick_chosen"] == ["row"] and j["quick_within"]
    assert sc.totals([{"status": "ok", "judge": j}])["quick_within"] == 1


def test_a_slower_pick_is_right_only_within_the_measured_spread():
    close = sc.judge(result(["row"], cand(["row"], 0.01, 0.0104, 0.03), cand(["feature"], 0.02, 0.0100, 0.03)))
    assert close["pick_ok"] and close["chosen_over_best"] == pytest.approx(1.04)
    tight = sc.judge(result(["row"], cand(["row"], 0.01, 0.0104, 0.01), cand(["feature"], 0.02, 0.0100, 0.01)))
    assert not tight["pick_ok"]
    far = sc.judge(result(["row"], cand(["row"], 0.01, 0.04), cand(["feature"], 0.02, 0.01)))
    assert not far["pick_ok"] and not far["chosen_within"]  # 4x the prediction


def test_totals_count_picks_only_where_the_candidates_differ():
    cases = [{"status": "ok", "judge": sc.judge(r)} for r in (
        result(["row"], cand(["row"], 0.01, 0.01), cand([], 0.02, 0.03)),  # differ 3x, right
        result(["row"], cand(["row"], 0.01, 0.03), cand([], 0.02, 0.01)),  # differ 3x, wrong
        result(["row"], cand(["row"], 0.01, 0.011), cand([], 0.02, 0.01)),  # differ 1.1x: no choice to make
    )] + [{"status": "error", "note": "boom"}]
    t = sc.totals(cases)
    assert (t["cases"], t["measured"], t["differ"], t["picks"], t["picks_ok"]) == (4, 3, 2, 2, 1)
    assert (t["predictions"], t["chosen_within"]) == (3, 2)


def test_report_section_states_the_totals_and_every_case(tmp_path):
    cases = [{"name": "W1", "workload": "W1", "sizes": {"n": 10, "d": 2}, "status": "ok",
              "result": result(["row"], cand(["row"], 0.01, 0.012), cand([], 0.03, 0.05))},
             {"name": "broken", "workload": "W3", "sizes": {"n": 5}, "status": "error", "note": "RuntimeError: x"}]
    for c in cases[:1]:
        c["judge"] = sc.judge(c["result"])
    res = {"status": "ok", "mode": "full", "commit": "abcdef123456", "measured_at": "2026-01-01T00:00:00",
           "elapsed_s": 60.0, "devices": 2, "repeats": 11, "differ": 1.5, "within": 1.5,
           "profile": {"calibrate_s": 12.0, "load_average": [1.0, 1.0, 1.0]},
           "load_average_cases": {"before": [1.5, 1, 1], "after": [2.0, 1, 1]}, "cases": cases,
           "totals": sc.totals(cases)}
    doc = {"suites": {"split_choice": res}}
    path = tmp_path / "predicted_vs_measured.png"
    assert report.plot_splits(doc, path) and path.stat().st_size > 1000
    md = "\n".join(report.split_choice_section(doc, {"splits": path}, str))
    assert "commit `abcdef1234`" in md and "**1 of 1** cases" in md
    assert "W1 row predicted 10 ms, measured 12 ms (1.20x)" in md
    assert "error: RuntimeError: x" in md and "predicted_vs_measured.png" in md
    assert any(line.startswith("- **Split choice**") for line in report.headline(doc))


def test_candidates_are_timed_in_turns():
    """measure_together: a warm-up call each, then rounds that call every function once."""
    from bench.timing import measure_together

    calls = []
    timings = measure_together([lambda i=i: calls.append(i) for i in range(3)], repeats=4, warmup=1)
    assert calls[:3] == [0, 1, 2]
    rounds = [calls[3 + 3 * r:6 + 3 * r] for r in range(4)]
    assert all(sorted(r) == [0, 1, 2] for r in rounds)
    assert [t.repeats for t in timings] == [4, 4, 4]
    assert all(t.min_s <= t.q1_s <= t.median_s <= t.q3_s <= t.max_s for t in timings)


def test_each_timed_call_follows_an_untimed_call_of_the_same_function():
    """settle=1: in every round each function runs twice in a row, and only the second call is timed (a
    solver's loop calls one program over and over; after another candidate its caches are cold)."""
    import time

    from bench.timing import measure_together

    calls = []

    def fn(i):
        def run():
            calls.append(i)
            if len(calls) > 3 and calls[-2] != i:  # the first call of a pair: slow, and must not be timed
                time.sleep(0.02)
        return run

    timings = measure_together([fn(i) for i in range(3)], repeats=4, warmup=1, settle=1)
    pairs = calls[3:]
    assert len(pairs) == 2 * 3 * 4 and all(pairs[k] == pairs[k + 1] for k in range(0, len(pairs), 2))
    assert all(t.max_s < 0.01 for t in timings)


@pytest.mark.parametrize("n", [2, 3, 4, 5, 6])
def test_every_function_follows_every_other_equally_often(n):
    """Within the rounds of a full design (n rounds, 2n where n is odd), each ordered pair (a right
    before b) occurs equally often: no candidate always runs after the slowest."""
    from collections import Counter

    from bench.timing import round_orders

    full = n if n % 2 == 0 else 2 * n
    orders = round_orders(n, full)
    assert all(sorted(o) == list(range(n)) for o in orders)
    pairs = Counter((o[i], o[i + 1]) for o in orders for i in range(n - 1))
    assert set(pairs) == {(a, b) for a in range(n) for b in range(n) if a != b}
    assert len(set(pairs.values())) == 1


@pytest.mark.parametrize("existing", [None, 5, "current"])
def test_the_partition_suite_predicts_with_the_split_choice_profile_calibrating_it_when_stale(
        tmp_path, monkeypatch, existing):
    """W3 and W6 appear in both suites: the partition suite reads the profile split_choice calibrated, and
    calibrates it first where there is none of this claygraph's version (never the built-in figures)."""
    import json

    from bench.sizes import sizes_for
    from bench.suites import SuiteEnv
    from bench.suites import partition as part
    from claygraph.partition.cluster import PROFILE_VERSION

    path = tmp_path / "profile-cpu.json"
    if existing is not None:
        path.write_text(json.dumps({"version": PROFILE_VERSION if existing == "current" else existing}))
    calls = []
    monkeypatch.setattr(sc, "profile_path", lambda env: path)
    monkeypatch.setattr(sc, "calibrate", lambda env, quick: calls.append(quick))
    assert part.profile_env(SuiteEnv(), sizes_for("smoke")) == {"CLAYGRAPH_PROFILE": str(path)}
    assert calls == ([] if existing == "current" else [True])


def test_calibration_waits_for_an_idle_host_and_gives_up_after_its_timeout():
    """The wait polls the one-minute load until it falls below the bar, and stops at the timeout."""
    from bench.machine import wait_for_idle

    loads = iter([2.0, 1.2, 0.4, 0.1])
    slept = []
    load, waited = wait_for_idle(0.5, 60.0, 5.0, loadavg=lambda: (next(loads), 0, 0), sleep=slept.append)
    assert (load, waited, slept) == (0.4, 10.0, [5.0, 5.0])
    load, waited = wait_for_idle(0.5, 12.0, 5.0, loadavg=lambda: (3.0, 0, 0), sleep=lambda s: None)
    assert (load, waited) == (3.0, 15.0)
