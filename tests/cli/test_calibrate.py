"""`claygraph calibrate`: the profile's structure (never its timings, which depend on the machine)."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from claygraph.cli import calibrate as calibrate_cli
from claygraph.partition.cluster import ClusterSpec, KernelRates, read_profile
from claygraph.runtime import calibration


@pytest.fixture(scope="module")
def quick_profile(tmp_path_factory):
    """One quick calibration (a few seconds, a collectives subprocess on 2 forced host devices)."""
    out = tmp_path_factory.mktemp("calibrated") / "nested" / "profile.json"
    profile = calibrate_cli.calibrate(out=str(out), quick=True, devices=2)
    return out, profile


def test_calibrate_saves_what_it_returns_and_the_spec_reads_it(quick_profile):
    out, profile = quick_profile
    assert json.loads(out.read_text()) == profile
    figures, kernels = read_profile(out)
    spec = ClusterSpec.from_profile(out, devices=2)
    assert spec.flops == pytest.approx(profile["flops"] / 2)
    assert spec.rates == kernels.shared(2)
    assert spec.link(2) == (pytest.approx(profile["bandwidth"]), pytest.approx(profile["latency"]))


def test_every_kernel_family_is_measured_at_several_increasing_sizes(quick_profile):
    _, profile = quick_profile
    assert set(profile["kernels_measured"]) == set(calibration.KERNELS)
    for name, series in profile["kernels_measured"].items():
        work, seconds = series["work"], series["seconds"]
        assert len(work) == len(seconds) >= 3, name
        assert work == sorted(set(work)), name
        assert all(t > 0 and math.isfinite(t) for t in seconds), name
        assert series["unit"] == calibration.KERNELS[name]
    kernels = profile["kernels"]
    assert set(kernels) == {*KernelRates.FAMILIES, "call_s", "kernel_s", "spmd_call_s", "weights", "block_overlap"}
    for family, name in calibration.FAMILY_SERIES.items():
        assert kernels[family]["work"] == profile["kernels_measured"][name]["work"]
    assert kernels["call_s"] > 0 and kernels["kernel_s"] > 0


def test_the_blocked_read_s_overlap_is_measured_and_read_back(quick_profile):
    """The share of a blocked read that hides under the forward kernels comes from the three loops it
    was computed from, within [0, 1], and is what the profile's rates price with."""
    path, profile = quick_profile
    m = profile["block_overlap_measured"]
    assert all(m[k] > 0 and math.isfinite(m[k]) for k in ("read_s", "kernels_s", "both_s"))
    raw = (m["read_s"] + m["kernels_s"] - m["both_s"]) / min(m["read_s"], m["kernels_s"])
    assert m["overlap"] == pytest.approx(min(max(raw, 0.0), 1.0))
    assert ClusterSpec.from_profile(path).rates.block_overlap == pytest.approx(m["overlap"])


def test_transcendental_functions_are_weighed_one_by_one(quick_profile):
    """Every weighed function has a positive weight that the profile's rates read back; the curve's own
    chain (exp, log1p) and functions not weighed count 1."""
    path, profile = quick_profile
    weights = profile["kernels"]["weights"]
    assert set(weights) == set(calibration.WEIGHED)
    assert all(w > 0 and math.isfinite(w) for w in weights.values())
    rates = ClusterSpec.from_profile(path).rates
    assert all(rates.weight(name) == pytest.approx(w) for name, w in weights.items())
    assert rates.weight("exp") == rates.weight("log1p") == rates.weight("zeta") == 1.0


def test_the_products_are_timed_in_a_loop_and_one_call_each(quick_profile):
    """X @ w and r @ X (row-major and feature-major) each have an in-loop curve (a fused row block runs them
    many times) and a one-call curve (an unblocked program runs them once per call), at the same sizes."""
    _, profile = quick_profile
    measured = profile["kernels_measured"]
    for name in ("matvec", "vecmat", "matvec_t", "vecmat_t"):
        assert measured[name]["work"] == measured[name + "_call"]["work"], name
        assert name in calibration.IN_LOOP and name + "_call" not in calibration.IN_LOOP
    for name in ("matvec", "vecmat"):  # and one call each over a wide X of the same bytes
        assert measured[name + "_wide_call"]["work"] == measured[name]["work"], name


def test_gathers_scatters_and_reductions_are_timed_in_a_loop_and_one_call_each(quick_profile):
    """A blocked program runs them in its loop, an unblocked one once per call; the one-call gather stops
    at GATHER_MAX (a larger fresh output times page faults), the in-loop one (its output reused) does not."""
    _, profile = quick_profile
    measured = profile["kernels_measured"]
    sizes = calibration.QUICK.elements
    for name in ("gather", "scatter_add", "reduce"):
        assert name in calibration.IN_LOOP and name + "_call" not in calibration.IN_LOOP
        per_element = 4.0 if name == "reduce" else 8.0
        assert measured[name]["work"] == [per_element * n for n in sizes], name
        assert measured[name + "_call"]["work"] == [per_element * n for n in sizes
                                                    if name != "gather" or n <= calibration.GATHER_MAX], name
    # the cost model's families read the series of their own kind
    assert [calibration.FAMILY_SERIES[f] for f in ("gather", "scatter", "reduce", "gather_call", "scatter_call",
                                                     "reduce_call")] == \
        ["gather", "scatter_add", "reduce", "gather_call", "scatter_add_call", "reduce_call"]


def test_a_loop_step_of_each_streaming_family_depends_on_the_last_and_runs_in_place():
    import jax
    import jax.numpy as jnp

    n = 4096
    x = jnp.linspace(0.0, 1.0, n, dtype=jnp.float32)
    idx = jnp.arange(n, dtype=jnp.int32) % (n // 16)
    table = jnp.ones((n // 16,), jnp.float32)
    for family, (fn, args, _) in calibration._streaming(x, idx, table).items():
        step, carry, consts = calibration._loop_step(family, fn, args)
        out, tangent = jax.jvp(lambda c, f=step, k=consts: f(c, *k), (carry,), (jax.tree.map(jnp.ones_like, carry),))
        assert jax.tree.map(jnp.shape, out) == jax.tree.map(jnp.shape, carry), family
        assert any(jnp.any(t != 0) for t in jax.tree.leaves(tangent)), family  # XLA cannot hoist it out of the loop
        # and the compiled loop runs the kernel in place: no copy of a computed n-sized result per step (the
        # copies of the arguments into the loop's buffers come before it)
        loop = jax.jit(lambda c, *k, f=step: jax.lax.fori_loop(0, 4, lambda i, v: f(v, *k), c))
        hlo = loop.lower(carry, *consts).compile().as_text()
        copied = [ln for ln in hlo.splitlines()
                  if f"[{n}]" in ln and " copy(" in ln and "fusion" in ln.split(" copy(")[1]]
        assert not copied, (family, copied)


def test_collectives_are_measured_by_message_size_between_local_devices(quick_profile):
    _, profile = quick_profile
    coll = profile["collectives"]
    assert coll["devices"] == 2
    assert coll["bytes"] == [4 * n for n in calibration.QUICK.message_floats]
    assert len(coll["seconds"]) == len(coll["bytes"]) and all(t > 0 for t in coll["seconds"])
    assert (profile["latency"], profile["bandwidth"]) == (coll["latency"], coll["bandwidth"])
    # a call of a claygraph program over the devices, measured on its own path (more than a bare jitted call)
    assert profile["kernels"]["spmd_call_s"] == coll["program_call_s"] > 0 and coll["call_s"] > 0
    link = profile["process_link"]
    assert link["latency"] > 0 and link["bandwidth"] > 0
    assert profile["device_kind"].startswith("cpu") and len(profile["load_average"]) == 3


def test_fit_ring_inverts_the_ring_formula():
    latency, bandwidth, s = 30e-6, 5e9, 4
    nbytes = [4.0, 4e3, 4e5, 4e6]
    seconds = [2 * (s - 1) * latency + 2 * (s - 1) / s * n / bandwidth for n in nbytes]
    fit = calibration.fit_ring(nbytes, seconds, s)
    assert fit == (pytest.approx(latency, rel=1e-6), pytest.approx(bandwidth, rel=1e-6))


def test_fit_link_inverts_round_trips():
    # One message: 50 us + n / 1 GB/s; a round trip is two messages.
    latency, bandwidth = calibration.fit_link(2 * (50e-6 + 4 / 1e9), 2 * (50e-6 + 4e6 / 1e9), 4_000_000)
    assert latency == pytest.approx(50e-6, rel=1e-3)
    assert bandwidth == pytest.approx(1e9, rel=1e-3)


def test_curves_are_the_series_less_the_call_overhead():
    series = {name: calibration.Series(name, unit, (1e3, 1e6), (2e-5, 1e-3))
              for name, unit in calibration.KERNELS.items()}
    rates = calibration.kernel_rates(series, call_s=1e-5, kernel_s=2e-6)
    assert rates.reduce_call.seconds == rates.matvec_wide_call.seconds == pytest.approx((1e-5, 1e-3 - 1e-5))
    # timed inside a loop: one iteration's seconds, already without the call
    assert rates.stream.seconds == rates.matvec.seconds == rates.reduce.seconds == pytest.approx((2e-5, 1e-3))
    assert (rates.call_s, rates.kernel_s) == (1e-5, 2e-6)
    assert np.isclose(series["matmul"].intercept(), 2e-5 - 1e3 * (1e-3 - 2e-5) / (1e6 - 1e3))


def test_main_parses_arguments(monkeypatch):
    calls = []
    monkeypatch.setattr(calibrate_cli, "calibrate", lambda out, quick, devices: calls.append((out, quick, devices)))
    assert calibrate_cli.main(["--quick", "--out", "p.json"]) == 0
    assert calibrate_cli.main(["--devices", "4"]) == 0
    assert calls == [("p.json", True, 2), (None, False, 4)]
    with pytest.raises(SystemExit):
        calibrate_cli.main(["--devices", "1"])


def test_a_kernel_timed_in_a_loop_counts_each_iteration_once():
    import jax.numpy as jnp

    calls = []

    def step(v, m):
        calls.append(v.shape)  # traced once: one iteration's kernel
        return v + 1e-9 * jnp.sum(m @ v)

    x, w = jnp.ones((256, 8), jnp.float32), jnp.ones((8,), jnp.float32)
    t = calibration._loop_time(step, w, 4.0 * x.size, 3, x)
    assert calls == [(8,)]
    assert 0 < t < 1.0
    assert calibration.IN_LOOP <= set(calibration.KERNELS)


def test_a_curve_never_takes_less_time_for_more_work():
    """Measured points below a smaller one are pooled with it (least squares, non-decreasing)."""
    assert calibration.monotone((1.0, 3.0, 2.0, 4.0)) == pytest.approx((1.0, 2.5, 2.5, 4.0))
    assert calibration.monotone((5.0, 1.0, 0.0)) == pytest.approx((2.0, 2.0, 2.0))
    assert calibration.monotone((1.0, 2.0, 3.0)) == (1.0, 2.0, 3.0)
    series = {name: calibration.Series(name, unit, (1e3, 1e4, 1e5), (2e-4, 1e-4, 1e-3))
              for name, unit in calibration.KERNELS.items()}
    rates = calibration.kernel_rates(series, call_s=0.0, kernel_s=0.0)
    assert rates.stream.seconds == pytest.approx((1.5e-4, 1.5e-4, 1e-3))


def test_each_point_is_the_median_of_its_passes(monkeypatch):
    """A pass that met passing load is outvoted by the others, point by point."""
    passes = iter([(1.0, 9.0), (2.0, 2.0), (3.0, 1.0)])

    def one_pass(budget):
        a, b = next(passes)
        return {"reduce": calibration.Series("reduce", "bytes/s", (1e3, 1e6), (a, b))}

    monkeypatch.setattr(calibration, "_measure_pass", one_pass)
    out = calibration.measure_kernels(dataclasses.replace(calibration.QUICK, passes=3))
    assert out["reduce"].seconds == (2.0, 2.0) and out["reduce"].work == (1e3, 1e6)


def test_the_program_call_is_measured_without_reading_the_profile_it_replaces(tmp_path, monkeypatch):
    """`claygraph calibrate` is the fix for an unreadable profile: it must not need one to plan its
    timed program (ClusterSpec.local would raise on this file)."""
    from claygraph.errors import ClusterError
    from claygraph.partition.cluster import PROFILE_ENV

    bad = tmp_path / "profile.json"
    bad.write_text("{not json")
    monkeypatch.setenv(PROFILE_ENV, str(bad))
    with pytest.raises(ClusterError):
        ClusterSpec.local()
    assert calibration.measure_program_call(1, 2) > 0
