"""Test-session set-up: four host CPU devices for split programs, a hermetic environment, and the
hypothesis "ci" profile.

The XLA flag must be in the environment before jax is first imported, so it is set here, at the
top of the root conftest, which pytest imports before any test module.

Hermetic: what a user calibrated or cached cannot change what the suite checks. claygraph's cache
folder (XDG_CACHE_HOME), its cost profile (CLAYGRAPH_PROFILE: a path with no file, and no first-use
calibration, so the built-in figures) and JAX's persistent compilation cache (CLAYGRAPH_JAX_CACHE) all
point into one temporary folder made for this run and removed after it; a cache folder given to JAX
directly is dropped; Ray's authentication token is made for the run. Ray workers the tests start
inherit this environment.
"""
import atexit
import os
import shutil
import tempfile
import uuid

_DEVICES_FLAG = "--xla_force_host_platform_device_count"
_flags = os.environ.get("XLA_FLAGS", "")
if _DEVICES_FLAG not in _flags:
    os.environ["XLA_FLAGS"] = f"{_flags} {_DEVICES_FLAG}=4".strip()
HERMETIC_ROOT = tempfile.mkdtemp(prefix="claygraph-tests-")
atexit.register(shutil.rmtree, HERMETIC_ROOT, ignore_errors=True)
os.environ["XDG_CACHE_HOME"] = os.path.join(HERMETIC_ROOT, "cache")
os.environ["CLAYGRAPH_PROFILE"] = os.path.join(HERMETIC_ROOT, "no-profile", "profile.json")
os.environ["CLAYGRAPH_JAX_CACHE"] = os.path.join(HERMETIC_ROOT, "jax")
# the built-in figures, not a calibration of whatever machine runs the suite (tests/partition/test_cluster.py
# turns the first-use calibration on where it tests it)
os.environ["CLAYGRAPH_AUTO_CALIBRATE"] = "0"
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
# the local Ray clusters the tests start use token authentication (as claygraph's runtime asks of Ray) with
# a token made for this run: Ray neither reads nor writes the user's ~/.ray/auth_token
os.environ["RAY_AUTH_MODE"] = "token"
os.environ["RAY_AUTH_TOKEN"] = uuid.uuid4().hex + uuid.uuid4().hex
os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
# every candidate plan is verified against the partitioner's invariants as it is built
os.environ.setdefault("CLAYGRAPH_CHECKS", "1")

import pytest  # noqa: E402
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


_COVERED_BY_WORKERS: set = set()


def _covered() -> set:
    import sys

    harness = sys.modules.get("rule_harness")
    return set(harness.COVERED) if harness is not None else set()


# Under pytest-xdist (`make test` runs a worker per core) the files that start a Ray cluster, or a process
# that does, mark themselves `xdist_group("ray")`: they run one after another on one worker, as two local
# clusters started at once would find each other; test_rule_harness.py runs whole on one worker


def pytest_sessionfinish(session):
    """On a pytest-xdist worker: hand the rule harness's coverage to the controller."""
    out = getattr(session.config, "workeroutput", None)
    if out is not None:
        out["rule_harness_covered"] = sorted(_covered())


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook
def pytest_testnodedown(node, error):
    """On the pytest-xdist controller: collect what each worker's rule harness covered."""
    for prim, placements in getattr(node, "workeroutput", {}).get("rule_harness_covered", []):
        _COVERED_BY_WORKERS.add((prim, tuple(placements)))


def pytest_terminal_summary(terminalreporter):
    """Say how many (primitive, placements) pairs the rule harness verified in this run."""
    covered = _covered() | _COVERED_BY_WORKERS
    if covered:
        prims = {p for p, _ in covered}
        terminalreporter.write_line(f"rule harness: {len(covered)} (primitive, placements) pairs over "
                                    f"{len(prims)} primitives verified against the unsplit op")

