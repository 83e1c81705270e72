"""The seed study of the statistical tests (docs/testing.md): each test's checks run on many seeds once,
outside CI, to show that its tolerances (support/stats.py) hold on seeds other than the one CI uses.

    python -m support.seed_study [seeds] [test ...]     (default: 20 seeds, every test)

For each test: seeds passed, and over all seeds and checks the largest statistic / bound (below 1
passes; a check's bound is set for its share of the test's nominal rate, 1e-6), with the check
and seed where it was reached. Printed as a Markdown table.
"""
from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _module(path: str):
    spec = importlib.util.spec_from_file_location(Path(path).stem, ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _exact(algorithm: str):
    def run(seed: int) -> list[tuple[str, float]]:
        mod = _module("tests/infer/test_nuts.py")
        return [(what, stat / bound if "R-hat" not in what else (stat - 1) / (bound - 1))
                for what, _, stat, bound in mod.exact_posterior_checks(algorithm, seed)]
    return run


def _reference(name: str):
    def run(seed: int) -> list[tuple[str, float]]:
        return _module("tests/infer/test_nuts_references.py").reference_check(name, seed)[0]
    return run


def _hard(name: str):
    def run(seed: int) -> list[tuple[str, float]]:
        return _module("tests/infer/test_hard_posteriors.py").hard_check(name, seed)[0]
    return run


TESTS = {
    "test_nuts.py::test_recovers_the_exact_posterior[nuts]": _exact("nuts"),
    "test_nuts.py::test_recovers_the_exact_posterior[hmc]": _exact("hmc"),
    "test_nuts_references.py[sblrc-blr]": _reference("sblrc-blr"),
    "test_nuts_references.py[kidiq-kidscore_momiq]": _reference("kidiq-kidscore_momiq"),
    "test_nuts_references.py[eight_schools_noncentered]": _reference("eight_schools-eight_schools_noncentered"),
    "test_hard_posteriors.py[eight_schools_centered]": _hard("eight_schools_centered"),
    "test_hard_posteriors.py[radon_centered]": _hard("radon_centered"),
    "test_hard_posteriors.py[glmm_poisson_centered]": _hard("glmm_poisson_centered"),
}


def main(argv: list[str]) -> None:
    seeds = int(argv[0]) if argv else 20
    names = [n for n in TESTS if not argv[1:] or any(a in n for a in argv[1:])]
    print("| test | seeds passed | largest statistic / bound (check, seed) | wall |")
    print("|---|---|---|---|")
    for name in names:
        t0 = time.perf_counter()
        worst, passed = (0.0, "", -1), 0
        for seed in range(seeds):
            ratios = TESTS[name](seed)
            passed += all(r <= 1 for _, r in ratios)
            w = max(ratios, key=lambda c: c[1])
            if w[1] > worst[0]:
                worst = (w[1], w[0], seed)
        print(f"| {name} | {passed} / {seeds} | {worst[0]:.2f} ({worst[1]}, seed {worst[2]}) | "
              f"{time.perf_counter() - t0:.0f} s |", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
