"""claygraph's benchmark harness: every workload of ../shared/WORKLOADS.md next to its peers, in one run.

`claygraph bench` (claygraph/cli/bench.py) runs the suites in `bench.suites`, stores their results
as JSON and regenerates BENCHMARKS.md with tables and plots (`bench.report`). See docs/bench.md.
"""
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
