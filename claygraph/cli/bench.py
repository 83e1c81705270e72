"""`claygraph bench`: run the benchmark suites side by side with their peers and regenerate BENCHMARKS.md.

    claygraph bench [--suite NAME ...] [--quick] [--out DIR] [--device cpu|gpu] [--report-only]

The suites live in the repository's bench/ folder (see docs/bench.md); this command only finds
them, runs the ones asked for and writes the results (JSON and plots under bench/results/, the
report at the repository root, or both under --out DIR).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _import_bench():
    """The bench package of this checkout (it is not installed with claygraph)."""
    if not (REPO / "bench" / "__init__.py").is_file():
        raise SystemExit(f"claygraph bench: no bench/ folder next to the claygraph package ({REPO}); the "
                         "benchmarks ship with the repository, not the wheel: run from a checkout")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    import bench.report
    import bench.runner
    import bench.suites

    return bench


def parser() -> argparse.ArgumentParser:
    from bench.suites import DESCRIPTIONS, SUITES

    p = argparse.ArgumentParser(prog="claygraph bench", description=__doc__.splitlines()[0],
                                epilog="suites: " + "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items()))
    p.add_argument("--suite", action="append", choices=[*SUITES, "all"], metavar="NAME",
                   help=f"a suite to run (repeatable); default: every suite but smoke. Suites: {', '.join(SUITES)}")
    p.add_argument("--quick", action="store_true", help="scaled-down sizes: a few minutes on a 2-core machine")
    p.add_argument("--out", metavar="DIR", help="write DIR/BENCHMARKS.md and DIR/results/ (default: the "
                                                "repository's BENCHMARKS.md and bench/results/)")
    p.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                   help="gpu: run on the CUDA devices present, sized to fill them (says so where there are none)")
    p.add_argument("--report-only", action="store_true", help="rewrite the report from the stored results")
    return p


def paths(out: str | None) -> tuple[Path, Path]:
    """(report path, results folder)."""
    if out is None:
        return REPO / "BENCHMARKS.md", REPO / "bench" / "results"
    root = Path(out).expanduser().resolve()
    return root / "BENCHMARKS.md", root / "results"


def suites_to_run(asked: list[str] | None) -> list[str]:
    from bench.suites import DEFAULT_SUITES, SUITES

    if not asked:
        return list(DEFAULT_SUITES)
    if "all" in asked:  # every suite this machine can run: the GPU check only when asked by name
        return [s for s in SUITES if s != "gpu" or "gpu" in asked]
    return [s for s in SUITES if s in asked]  # run order, each once


def gpu_problem() -> str | None:
    """Why `--device gpu` cannot run here, or None when it can."""
    from bench.machine import gpus

    if not gpus():
        return "no GPU is present (nvidia-smi lists none)"
    import jax

    try:
        jax.devices("gpu")
    except RuntimeError:
        return "a GPU is present but this JAX has no CUDA backend (install jax[cuda12])"
    return None


def main(argv: list[str] | None = None) -> int:
    _import_bench()
    from bench import report, runner
    from bench.sizes import mode_for
    from bench.suites import SuiteEnv

    args = parser().parse_args(argv)
    md_path, results_dir = paths(args.out)
    if args.report_only:
        print(f"report: {report.write_report(results_dir, md_path)}")
        return 0
    if "gpu" in (args.suite or []):  # the GPU check measures a GPU, and only a GPU
        problem = gpu_problem()
        if problem is not None:
            print(f"claygraph bench --suite gpu: {problem}. The GPU check measures W1, W3 and W6 on a GPU against "
                  "the cost model's GPU roofline and has nothing to measure here; run it on a machine with a "
                  "CUDA GPU and jax[cuda12] (docs/bench.md).", file=sys.stderr)
            return 2
        args.device = "gpu"
    if args.device == "gpu":
        problem = gpu_problem()
        if problem is not None:
            print(f"claygraph bench --device gpu: {problem}; nothing to run. The report says so.")
            runner.write_results(runner.results_path(results_dir, "gpu"), runner.no_gpu_document(problem))
            print(f"report: {report.write_report(results_dir, md_path)}")
            return 0
    suites = suites_to_run(args.suite)
    mode = mode_for(args.quick, args.device)
    env = SuiteEnv(device=args.device, devices=_devices(args.device))
    path = runner.results_path(results_dir, args.device)
    doc = runner.run(suites, mode, env, previous=runner.read_results(path))
    runner.write_results(path, doc)
    print(f"results: {path}")
    print(f"report: {report.write_report(results_dir, md_path)}")
    bad = runner.failed(doc, suites)
    if bad:
        print(f"failed suites: {', '.join(bad)} (see the report)", file=sys.stderr)
        return 1
    return 0


def _devices(device: str) -> int:
    """Devices of the multi-device measurements: every GPU, or two forced host devices on CPU."""
    if device == "gpu":
        from bench.machine import gpus

        return max(1, len(gpus()))
    return 2


if __name__ == "__main__":
    sys.exit(main())
