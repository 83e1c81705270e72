"""Data from Parquet on Ray(workers=2): each process's peak resident memory against the data it holds.

Per size, one fresh interpreter writes a folder of 8 Parquet files (W3's shape: 10 float32 features, an int32
product id over 100,000 products with Zipf(1.1)-skewed row counts, a price and a 0/1 label), then another
reads it with `cg.Data.from_parquet` and fits W3's hierarchical logistic regression by MAP split by product on
Ray(workers=2): plan, compile (each worker reads its own rows from the files), MAP (`max_iter` iterations).
Reported, phase by phase (each phase's own peak): every worker's and the driver's peak resident memory
(VmHWM); the workers' reading throughput beside a plain `pyarrow.parquet.read_table` of the same columns in a
process of its own; and how soon MAP refuses a model of the same data whose density has no mode. The
smallest size gives the runtime's own baseline (the same processes with almost no data).
"""
from __future__ import annotations

import shutil
import tempfile

from bench.sizes import Sizes
from bench.suites import SuiteEnv
from bench.timing import run_isolated

ROWS = {"smoke": (20_000,), "quick": (20_000, 1_000_000), "full": (40_000, 4_000_000, 20_000_000)}
PRODUCTS, FEATURES, FILES = 100_000, 10, 8
MAX_ITER = {"smoke": 5, "quick": 20, "full": 100}
TIMEOUT_S = 1200


def row_bytes() -> int:
    """Bytes of one row in memory: the features, price and label (float32) and the product id (int32)."""
    return 4 * (FEATURES + 2) + 4


def run(sizes: Sizes, env: SuiteEnv) -> dict:
    cases = []
    max_iter = MAX_ITER.get(sizes.mode, MAX_ITER["full"])
    for rows in ROWS.get(sizes.mode, ROWS["full"]):
        folder = tempfile.mkdtemp(prefix="claygraph-parquet-")
        try:
            env.log(f"  parquet: {rows:,} rows in {FILES} files, Ray(workers=2), split by product, MAP {max_iter} "
                    f"iterations")
            spec = {"folder": folder, "rows": rows, "products": PRODUCTS, "features": FEATURES, "files": FILES,
                    "max_iter": max_iter}
            run_isolated("parquet_write", spec, 1, TIMEOUT_S, env.platform)
            arrow = run_isolated("parquet_arrow", spec, 1, TIMEOUT_S, env.platform)
            res = run_isolated("parquet_memory", spec, 1, TIMEOUT_S, env.platform)
            cases.append({"rows": rows, "data_bytes": rows * row_bytes(), "index_bytes": rows * 4,
                          "arrow": arrow, **res})
        except Exception as exc:  # one failed size is reported, the others still run
            cases.append({"rows": rows, "status": "error", "note": str(exc)[-600:]})
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return {"status": "ok", "products": PRODUCTS, "features": FEATURES, "files": FILES, "max_iter": max_iter,
            "cases": cases}
