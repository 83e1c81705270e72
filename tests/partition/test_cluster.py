"""ClusterSpec presets, the alpha-beta collective costs, local profiles and calibration."""

import json
import math
import warnings

import pytest

from claygraph.errors import ClaygraphError, ClusterError
from claygraph.partition.cluster import (
    LOCAL_BANDWIDTH,
    LOCAL_KERNELS,
    LOCAL_LATENCY,
    PROCESS_BANDWIDTH,
    PROCESS_LATENCY,
    PROFILE_VERSION,
    ClusterSpec,
    Curve,
    KernelRates,
)

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
    assert "2 node(s) x 8 GPU(s)" in line and "19.5 TFLOP/s" in line


def test_local_defaults_reproduce_measured_psum_between_local_devices(profile_path):
    assert not profile_path.exists()
    spec = ClusterSpec.local(2)
    assert (spec.devices, spec.nodes, spec.name) == (2, 1, "local")
    # the ring formula with the calibrated defaults: 2 latencies for one float on two devices
    assert spec.allreduce_time(4, 2) == pytest.approx(2 * LOCAL_LATENCY + 4 / LOCAL_BANDWIDTH)
    assert spec.flops == pytest.approx(LOCAL_KERNELS.matmul.rate() / 2)
    assert spec.rates == LOCAL_KERNELS.shared(2)


def _profile(**changes) -> dict:
    line = {"work": [1e3, 1e6], "seconds": [1e-5, 1e-3]}
    kernels = {f: line for f in KernelRates.FAMILIES} | {"call_s": 2e-5, "kernel_s": 1e-6}
    return {"version": PROFILE_VERSION, "flops": 8e10, "mem_bandwidth": 2e10, "mem_capacity": 1.6e10,
            "latency": 1e-4, "bandwidth": 2e9, "kernels": kernels, "raw": {"note": "ignored"}} | changes


def test_local_honours_profile(profile_path):
    profile_path.write_text(json.dumps(_profile()))
    spec = ClusterSpec.local(4)
    assert (spec.devices, spec.name) == (4, "local-calibrated")
    assert spec.flops == pytest.approx(2e10)
    assert spec.mem_bandwidth == pytest.approx(5e9)
    assert spec.mem_capacity == pytest.approx(4e9)
    assert spec.link(4) == (2e9, 1e-4)
    # one of 4 local devices with work w takes what the host takes for 4 w
    assert spec.rates.share == 4 and spec.rates.call_s == 2e-5
    assert spec.rates.time("stream", 250.0) == pytest.approx(1e-5)


def test_processes_link_plans_for_ray(profile_path):
    """A runtime of several processes (Ray) plans with the profile's process link, or the defaults."""
    profile_path.write_text(json.dumps(_profile(process_link={"latency": 3e-4, "bandwidth": 1e9})))
    spec = ClusterSpec.local(2, link="processes")
    assert spec.link(2) == (1e9, 3e-4) and spec.name == "local-calibrated-processes"
    assert ClusterSpec.local(2).link(2) == (2e9, 1e-4)  # the devices of one process: the psum fit
    profile_path.write_text(json.dumps(_profile()))
    assert ClusterSpec.local(2, link="processes").link(2) == (PROCESS_BANDWIDTH, PROCESS_LATENCY)
    profile_path.write_text(json.dumps(_profile(process_link={"latency": -1.0, "bandwidth": 1e9})))
    with pytest.raises(ClusterError, match="process_link"):
        ClusterSpec.local(2, link="processes")
    with pytest.raises(ClusterError, match="link must be one of"):
        ClusterSpec.local(2, link="network")


def test_ray_and_local_runtimes_name_their_link():
    from claygraph.runtime.local import Local
    from claygraph.runtime.ray import Ray

    assert (Local.link, Ray.link) == ("devices", "processes")


@pytest.mark.parametrize("old", [{"version": 1, "flops": 1e9}, {"version": 2, "flops": 1e9}])
def test_an_old_profile_named_explicitly_says_to_recalibrate(profile_path, old):
    profile_path.write_text(json.dumps(old))  # before the kernel curves / the vecmat family
    with pytest.raises(ClusterError, match="claygraph calibrate"):
        ClusterSpec.from_profile(profile_path)


@pytest.mark.parametrize("profile", [
    _profile(kernels={"call_s": 1e-5}),
    _profile(kernels=_profile()["kernels"] | {"gather": {"work": [1e6, 1e3], "seconds": [1e-3, 1e-5]}}),
    _profile(kernels=_profile()["kernels"] | {"reduce": {"work": [1e3], "seconds": [-1.0]}}),
])
def test_broken_profile_says_to_recalibrate(profile_path, profile):
    profile_path.write_text(json.dumps(profile))
    with pytest.raises(ClusterError, match="claygraph calibrate|must"):
        ClusterSpec.local()


def test_unreadable_profile_says_to_recalibrate(profile_path):
    profile_path.write_text("{not json")
    with pytest.raises(ClusterError, match="claygraph calibrate"):
        ClusterSpec.local()


def test_profile_round_trip(tmp_path):
    spec = ClusterSpec.preset("p4d")
    path = spec.save_profile(tmp_path / "nested" / "profile.json")
    again = ClusterSpec.from_profile(path, devices=8)
    for field in ("flops", "mem_bandwidth", "mem_capacity", "intra_bandwidth", "intra_latency"):
        assert getattr(again, field) == pytest.approx(getattr(spec, field)), field
    profile, back = spec.to_profile(), again.to_profile()
    assert {k: v for k, v in back.items() if k != "kernels"} == pytest.approx(
        {k: v for k, v in profile.items() if k != "kernels"})
    assert back["kernels"]["stream"]["seconds"] == pytest.approx(profile["kernels"]["stream"]["seconds"])
    assert again.rates.time("matmul", 1e12) == pytest.approx(spec.rates.time("matmul", 1e12))


# -- kernel curves --------------------------------------------------------------------------------------

def test_curve_interpolates_on_log_log_axes_and_extrapolates_at_the_end_rates():
    c = Curve((1e3, 1e5), (1e-6, 1e-3))  # 1 GB/s at the small end, 0.1 GB/s at the large end
    assert c.time(1e4) == pytest.approx(math.sqrt(1e-6 * 1e-3))  # halfway on both log axes
    assert c.time(1e3) == pytest.approx(1e-6) and c.time(1e5) == pytest.approx(1e-3)
    assert c.time(10.0) == pytest.approx(1e-8)  # below: the smallest size's rate
    assert c.time(1e7) == pytest.approx(1e-1)  # above: the largest size's rate
    assert c.time(0.0) == 0.0 and c.rate() == pytest.approx(1e8)


def test_curve_refuses_bad_points():
    with pytest.raises(ClusterError):
        Curve((1e3, 1e2), (1e-6, 1e-7))
    with pytest.raises(ClusterError):
        Curve((1e3,), (1e-6, 1e-7))


def test_kernel_rates_share_the_host_and_slow_to_the_working_sets_rate():
    c = Curve((1e6, 1e8), (1e-4, 1e-1))  # 10 GB/s in cache, 1 GB/s for 100 MB
    rates = KernelRates.of(**{f: c for f in KernelRates.FAMILIES}, call_s=1e-5, kernel_s=1e-6)
    two = rates.shared(2)
    assert two.time("stream", 5e5) == pytest.approx(1e-4)  # two devices at once: the host's time for 1e6
    # 1 MB of work inside a 100 MB working set streams at the 100 MB rate
    assert rates.time("stream", 1e6, working_set=1e8) == pytest.approx(1e6 / 1e9)
    assert rates.time("stream", 1e6, working_set=1e5) == pytest.approx(1e-4)  # a smaller set changes nothing


def test_nominal_rates_follow_the_data_sheet():
    spec = ClusterSpec.preset("p5")
    r = spec.rates
    assert r.time("matmul", 67e12) == pytest.approx(1.0)
    assert r.time("stream", 3.35e12) == pytest.approx(1.0)
    assert r.time("gather", 3.35e12) == pytest.approx(2.0)


def test_a_program_over_several_devices_pays_the_spmd_call():
    r = KernelRates.nominal(1e12, 1e11)
    assert r.call(1) == r.call(4) == r.call_s
    spmd = KernelRates.of(**{f: getattr(r, f) for f in KernelRates.FAMILIES}, call_s=1e-5, kernel_s=1e-6,
                       spmd_call_s=6e-5)
    assert (spmd.call(1), spmd.call(2)) == (1e-5, 6e-5)
    assert KernelRates.from_json(spmd.to_json(), "test") == spmd


def test_an_older_profile_at_the_default_path_warns_and_uses_built_in_figures(tmp_path, monkeypatch):
    import json

    from claygraph.partition import cluster

    path = tmp_path / "profile.json"
    path.write_text(json.dumps({"version": cluster.PROFILE_VERSION - 1}))
    monkeypatch.setenv(cluster.PROFILE_ENV, str(path))
    with pytest.warns(UserWarning, match="rerun `claygraph calibrate`"):
        spec = cluster.ClusterSpec.local(devices=2)
    assert spec.name == "local"
    path.write_text("{not json")  # unreadable: an error that says so, not a silent fallback
    with pytest.raises(ClusterError, match="cannot read profile"):
        cluster.ClusterSpec.local(devices=2)


def test_one_table_entry_per_kernel_family():
    """Every family of the table has its curve in the rates, its nominal line at its stated fraction, and its
    calibration series with the unit; a rates object missing a family or naming an unknown one is refused."""
    from claygraph.partition import families
    from claygraph.runtime import calibration

    assert LOCAL_KERNELS.FAMILIES == families.NAMES == tuple(name for name, _ in LOCAL_KERNELS.curves)
    nominal = KernelRates.nominal(2e12, 1e11)
    for f in families.FAMILIES:
        base = 2e12 if f.nominal[0] == "flops" else 1e11
        assert nominal.curve(f.name).rate() == pytest.approx(base * f.nominal[1])
        assert calibration.FAMILY_SERIES[f.name] == f.series and calibration.KERNELS[f.series] == f.unit
    with pytest.raises(ClusterError, match="missing \\['vecmat'\\]"):
        KernelRates(tuple((n, c) for n, c in LOCAL_KERNELS.curves if n != "vecmat"), 1e-5, 1e-6)
    with pytest.raises(ClusterError, match="unknown kernel families \\['warp'\\]"):
        LOCAL_KERNELS.with_curves(warp=Curve.line(1.0))
    with pytest.raises(AttributeError, match="no kernel family or field 'warp'"):
        LOCAL_KERNELS.warp  # noqa: B018


def test_a_machine_without_a_profile_is_calibrated_once_on_first_multi_device_use(tmp_path, monkeypatch, capsys):
    """ClusterSpec.local(devices > 1) with no profile measures the machine once (announced), saves the
    profile and reads it; one device (nothing to choose) and the opt-out keep the built-in figures; a
    calibration that fails warns and keeps them too."""
    from claygraph.partition import cluster

    path = tmp_path / "profile.json"
    monkeypatch.setenv("CLAYGRAPH_PROFILE", str(path))
    calls = []

    def measure(where):
        calls.append(where)
        ClusterSpec.built_in(1).save_profile(where)

    monkeypatch.setattr(cluster, "_auto_calibrate", [measure])
    monkeypatch.setattr(cluster, "_tried", [])
    monkeypatch.setenv("CLAYGRAPH_AUTO_CALIBRATE", "0")
    assert ClusterSpec.local(2).name == "local" and calls == [] and not path.exists()
    monkeypatch.setenv("CLAYGRAPH_AUTO_CALIBRATE", "1")
    assert ClusterSpec.local(1).name == "local" and calls == []  # one device: no split to choose
    assert ClusterSpec.local(2).name == "local-calibrated" and calls == [path]
    err = capsys.readouterr().err
    assert "no calibration profile" in err and str(path) in err and "CLAYGRAPH_AUTO_CALIBRATE=0" in err
    assert ClusterSpec.local(4).name == "local-calibrated" and calls == [path]  # once
    # a profile another claygraph wrote (another profile version) is measured again, once, and replaced
    import json

    # (one the user named with CLAYGRAPH_PROFILE is theirs: warned about, never overwritten)
    path.write_text(json.dumps({"version": cluster.PROFILE_VERSION - 1}))
    monkeypatch.setattr(cluster, "_tried", [])
    with pytest.warns(UserWarning, match="rerun `claygraph calibrate`"):
        assert ClusterSpec.local(2).name == "local" and calls == [path]
    assert json.loads(path.read_text())["version"] == cluster.PROFILE_VERSION - 1
    monkeypatch.delenv("CLAYGRAPH_PROFILE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    cached = tmp_path / "claygraph" / "profile.json"
    cached.parent.mkdir()
    cached.write_text(json.dumps({"version": cluster.PROFILE_VERSION - 1}))
    assert ClusterSpec.local(2).name == "local-calibrated" and calls == [path, cached]
    assert "profile version" in capsys.readouterr().err and json.loads(cached.read_text())["version"] == \
        cluster.PROFILE_VERSION
    monkeypatch.setenv("CLAYGRAPH_PROFILE", str(path))
    path.unlink()

    def broken(where):
        raise RuntimeError("no collectives here")

    monkeypatch.setattr(cluster, "_auto_calibrate", [broken])
    monkeypatch.setattr(cluster, "_tried", [])
    with pytest.warns(UserWarning, match="automatic calibration failed .*no collectives here"):
        assert ClusterSpec.local(2).name == "local"
    with warnings.catch_warnings():  # tried once per process: a later plan does not measure (or warn) again
        warnings.simplefilter("error")
        assert ClusterSpec.local(2).name == "local"


def test_the_runtime_registers_the_first_use_calibration():
    from claygraph.partition import cluster
    from claygraph.runtime import calibration

    assert cluster._auto_calibrate == [calibration._auto]
