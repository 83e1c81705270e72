"""`make demo` is the first thing a new user runs: in a fresh process it ends well, prints no warning (no
fork after JAX started, no Ray notice, no failing NUTS diagnostics) and its NUTS passes its own checks."""
import subprocess
import sys

import pytest

# pytest-xdist: the tests that start a Ray cluster (or a process that does) run one after another on one worker
# (tests/conftest.py)
pytestmark = pytest.mark.xdist_group("ray")


@pytest.mark.long  # docs/testing.md: `make demo` is the demo itself
def test_the_demo_runs_clean_in_a_fresh_process():
    proc = subprocess.run([sys.executable, "-m", "claygraph.demo"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout + proc.stderr
    assert "Warning" not in out and "WARNING" not in out, out[-3000:]
    assert "diagnostics passed" in proc.stdout
    assert "demo done" in proc.stdout
