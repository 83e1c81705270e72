"""Test-session set-up: four host CPU devices for split programs, and the hypothesis "ci" profile.

The XLA flag must be in the environment before jax is first imported, so it is set here, at the
top of the root conftest, which pytest imports before any test module.
"""
import os

_DEVICES_FLAG = "--xla_force_host_platform_device_count"
_flags = os.environ.get("XLA_FLAGS", "")
if _DEVICES_FLAG not in _flags:
    os.environ["XLA_FLAGS"] = f"{_flags} {_DEVICES_FLAG}=4".strip()
# every candidate plan is verified against the partitioner's invariants as it is built
os.environ.setdefault("CLAYGRAPH_CHECKS", "1")

from hypothesis import HealthCheck, settings  # noqa: E402 - after the XLA flag on purpose

# Deterministic and quick: the same examples on every run, no per-example deadline (compiling a
# split program takes about a second). Select another profile with HYPOTHESIS_PROFILE=<name>.
settings.register_profile(
    "ci",
    deadline=None,
    derandomize=True,
    max_examples=10,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile("dev", deadline=None, max_examples=50)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_terminal_summary(terminalreporter):
    """Say how many (primitive, placements) pairs the rule harness verified in this run."""
    import sys

    harness = sys.modules.get("rule_harness")
    if harness is not None and harness.COVERED:
        prims = {p for p, _ in harness.COVERED}
        terminalreporter.write_line(f"rule harness: {len(harness.COVERED)} (primitive, placements) pairs over "
                                    f"{len(prims)} primitives verified against the unsplit op")
