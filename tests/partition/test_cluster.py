"""ClusterSpec presets, the alpha-beta collective costs, local profiles and calibration."""

import json
import math

import pytest

from claygraph.cli import calibrate as calibrate_cli
from claygraph.errors import ClaygraphError, ClusterError
from claygraph.partition.cluster import ClusterSpec

# Data-sheet figures (docs/cluster.md): per device, SI units; NVLink figures one direction.
PRESET_FIGURES = {
    "p4d": dict(
        devices_per_node=8,
        flops=19.5e12,
        mem_bandwidth=1555e9,
        mem_capacity=40e9,
        intra_bandwidth=300e9,
        inter_bandwidth=50e9,
    ),
    "p5": dict(
        devices_per_node=8,
        flops=67e12,
        mem_bandwidth=3.35e12,
        mem_capacity=80e9,
        intra_bandwidth=450e9,
        inter_bandwidth=400e9,
    ),
    "g5": dict(
        devices_per_node=1, flops=31.2e12, mem_bandwidth=600e9, mem_capacity=24e9, inter_bandwidth=25e9 / 8
    ),
}


def small_spec(**changes) -> ClusterSpec:
    figures = dict(
        devices_per_node=4,
        nodes=2,
        flops=1e12,
        mem_bandwidth=1e11,
        mem_capacity=1e10,
        intra_bandwidth=1e10,
        intra_latency=1e-5,
        inter_bandwidth=8e9,
        inter_latency=1e-4,
    )
    return ClusterSpec(**(figures | changes))


@pytest.fixture
def profile_path(tmp_path, monkeypatch):
    path = tmp_path / "profile.json"
    monkeypatch.setenv("CLAYGRAPH_PROFILE", str(path))
    return path


@pytest.mark.parametrize("name", sorted(PRESET_FIGURES))
def test_preset_has_data_sheet_figures(name):
    spec = ClusterSpec.preset(name)
    assert spec.name == name
    assert spec.nodes == 1
    for field, value in PRESET_FIGURES[name].items():
        assert getattr(spec, field) == pytest.approx(value), field


@pytest.mark.parametrize(("name", "nodes", "devices"), [("p4d", 2, 16), ("p5", 4, 32), ("g5", 8, 8)])
def test_preset_device_count(name, nodes, devices):
    assert ClusterSpec.preset(name, nodes=nodes).devices == devices


def test_unknown_preset_lists_known_names():
    with pytest.raises(ClusterError, match="p4d") as info:
        ClusterSpec.preset("tpu-v9")
    message = str(info.value)
    assert all(name in message for name in ("g5", "p4d", "p5"))
    assert "tpu-v9" in message
    assert isinstance(info.value, ClaygraphError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "bad",
    [
        dict(nodes=0),
        dict(devices_per_node=1.5),
        dict(flops=-1.0),
        dict(inter_latency=math.inf),
        dict(mem_capacity=0),
    ],
)
def test_invalid_figures_are_refused(bad):
    with pytest.raises(ClusterError):
        small_spec(**bad)


def test_allreduce_time_by_hand():
    spec = small_spec()
    # Within one node (group 4): 2*3 steps of 10 us + 2*3/4 * 1 MB / 10 GB/s = 60 us + 150 us.
    assert spec.allreduce_time(1e6, 4) == pytest.approx(210e-6)
    # Across nodes (group 8): each device gets 8 GB/s / 4 = 2 GB/s and 100 us per step:
    # 2*7 * 100 us + 2*7/8 * 1 MB / 2 GB/s = 1.4 ms + 0.875 ms.
    assert spec.allreduce_time(1e6, 8) == pytest.approx(2.275e-3)


def test_allgather_time_by_hand():
    # 3 steps of 10 us + 3/4 * 1 MB / 10 GB/s = 30 us + 75 us.
    assert small_spec().allgather_time(1e6, 4) == pytest.approx(105e-6)


@pytest.mark.parametrize("group", [0, 1])
def test_collectives_over_one_device_are_free(group):
    assert small_spec().allreduce_time(1e9, group) == 0.0
    assert small_spec().allgather_time(1e9, group) == 0.0


def test_link_is_inter_node_beyond_one_node():
    spec = ClusterSpec.preset("p4d", nodes=2)
    assert spec.link(8) == (300e9, 5e-6)
    assert spec.link(9) == (50e9 / 8, 20e-6)
    assert spec.link(16) == (50e9 / 8, 20e-6)
    with pytest.raises(ClusterError, match="17 devices"):
        spec.link(17)


def test_describe_is_one_line():
    line = ClusterSpec.preset("p4d", nodes=2).describe()
    assert "\n" not in line and line == str(ClusterSpec.preset("p4d", nodes=2))
    assert "2 node(s) x 8 device(s)" in line and "19.5 TFLOP/s" in line


def test_local_defaults_reproduce_measured_gloo_allreduce(profile_path):
    assert not profile_path.exists()
    spec = ClusterSpec.local(2)
    assert (spec.devices, spec.nodes, spec.name) == (2, 1, "local")
    # Measured between two local JAX processes: 0.3 ms for one float32, 6.2 ms for 1,000,000.
    assert spec.allreduce_time(4, 2) == pytest.approx(0.3e-3, rel=0.05)
    assert spec.allreduce_time(4e6, 2) == pytest.approx(6.2e-3, rel=0.05)
    assert spec.flops == pytest.approx(50e9 / 2)


def test_local_honours_profile(profile_path):
    figures = dict(flops=8e10, mem_bandwidth=2e10, mem_capacity=1.6e10, latency=1e-4, bandwidth=2e9)
    profile_path.write_text(json.dumps({"version": 1, **figures, "raw": {"note": "ignored"}}))
    spec = ClusterSpec.local(4)
    assert (spec.devices, spec.name) == (4, "local-calibrated")
    assert spec.flops == pytest.approx(2e10)
    assert spec.mem_bandwidth == pytest.approx(5e9)
    assert spec.mem_capacity == pytest.approx(4e9)
    assert spec.link(4) == (2e9, 1e-4)


def test_broken_profile_says_to_recalibrate(profile_path):
    profile_path.write_text(json.dumps({"version": 1, "flops": 1e9}))
    with pytest.raises(ClusterError, match="claygraph calibrate"):
        ClusterSpec.local()
    profile_path.write_text("{not json")
    with pytest.raises(ClusterError, match="claygraph calibrate"):
        ClusterSpec.local()


def test_profile_round_trip(tmp_path):
    spec = ClusterSpec.preset("p4d")
    path = spec.save_profile(tmp_path / "nested" / "profile.json")
    again = ClusterSpec.from_profile(path, devices=8)
    for field in ("flops", "mem_bandwidth", "mem_capacity", "intra_bandwidth", "intra_latency"):
        assert getattr(again, field) == pytest.approx(getattr(spec, field)), field
    assert again.to_profile() == pytest.approx(spec.to_profile())


def test_calibrate_quick_measures_and_saves(tmp_path, capsys):
    out = tmp_path / "calibrated" / "profile.json"
    profile = calibrate_cli.calibrate(out=str(out), quick=True)
    for key in ("flops", "mem_bandwidth", "mem_capacity", "latency", "bandwidth"):
        assert profile[key] > 0, key
    assert json.loads(out.read_text()) == profile
    assert ClusterSpec.from_profile(out).flops == pytest.approx(profile["flops"])
    assert "GFLOP/s" in capsys.readouterr().out


def test_calibrate_main_parses_arguments(monkeypatch):
    calls = []
    monkeypatch.setattr(calibrate_cli, "calibrate", lambda out, quick: calls.append((out, quick)) or {})
    assert calibrate_cli.main(["--quick", "--out", "p.json"]) == 0
    assert calibrate_cli.main([]) == 0
    assert calls == [("p.json", True), (None, False)]


def test_fit_link_inverts_round_trips():
    # One message: 50 us + n / 1 GB/s; a round trip is two messages.
    latency, bandwidth = calibrate_cli.fit_link(2 * (50e-6 + 4 / 1e9), 2 * (50e-6 + 4e6 / 1e9), 4_000_000)
    assert latency == pytest.approx(50e-6, rel=1e-3)
    assert bandwidth == pytest.approx(1e9, rel=1e-3)
