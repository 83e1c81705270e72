"""Run suites and keep their results: one JSON document per device kind (results-cpu.json, results-gpu.json).

A run replaces the suites it ran and keeps the others from earlier runs, each suite with its own
mode, commit and time, so that `--suite NAME` refreshes one section of the report.
"""
from __future__ import annotations

import json
import time
import traceback
from pathlib import Path

from bench import machine
from bench.sizes import sizes_for
from bench.suites import SuiteEnv, load

SCHEMA = 1


def results_path(results_dir: Path, device: str) -> Path:
    return Path(results_dir) / f"results-{device}.json"


def read_results(path: Path) -> dict | None:
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and doc.get("schema") == SCHEMA else None


def write_results(path: Path, doc: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, sort_keys=True, default=float) + "\n")
    return path


def run_suite(name: str, mode: str, env: SuiteEnv, commit: str | None) -> dict:
    """One suite's result, with how long it took and how loaded the machine was; never raises."""
    env.log(f"suite {name} ({mode})")
    t0 = time.perf_counter()
    load_before = machine.load_average()
    try:
        result = load(name).run(sizes_for(mode), env)
    except Exception as e:
        result = {"status": "error", "note": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()[-4000:]}
    result.update(elapsed_s=time.perf_counter() - t0, mode=mode, commit=commit,
                  measured_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                  load_average={"before": load_before, "after": machine.load_average()})
    env.log(f"suite {name}: {result['status']} in {result['elapsed_s']:.1f} s")
    return result


def run(suites: list[str], mode: str, env: SuiteEnv, previous: dict | None = None) -> dict:
    """Run `suites`; returns the merged document (previous results of other suites kept)."""
    info = machine.detect()
    doc = {"schema": SCHEMA, "device": env.device, "status": "ok", "machine": info, "mode": mode,
           "sizes": sizes_for(mode).to_json(), "suites": dict((previous or {}).get("suites", {})),
           "last_run": {"suites": list(suites), "mode": mode, "started_at": info["measured_at"]}}
    t0 = time.perf_counter()
    for name in suites:
        doc["suites"][name] = run_suite(name, mode, env, info["commit"])
    doc["last_run"]["elapsed_s"] = time.perf_counter() - t0
    return doc


def no_gpu_document(note: str) -> dict:
    """What a `--device gpu` run records where no GPU is present."""
    return {"schema": SCHEMA, "device": "gpu", "status": "no GPU present", "note": note, "machine": machine.detect(),
            "suites": {}}


def failed(doc: dict, suites: list[str]) -> list[str]:
    return [s for s in suites if doc["suites"].get(s, {}).get("status") == "error"]

