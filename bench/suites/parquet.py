"""Data from Parquet on Ray(workers=2): each process's peak resident memory against the data it holds.

Per size, one fresh interpreter writes a folder of 8 Parquet files (10 float32 features, an int32 product
id over 100,000 products, a price and a 0/1 label: W3's model, issue 28's table at smaller sizes), then
another reads it with `cg.Data.from_parquet` and runs the hierarchical logistic regression split by
product on Ray(workers=2): plan, compile (each worker reads its own rows from the files), one potential
and gradient. Reported: every worker's peak resident memory (VmHWM) after the runtime starts, after its
data are loaded, and through the first evaluation; the driver's peak; each worker's share of the data.
The smallest size gives the runtime's own baseline (almost no data); a worker's peak above that baseline,
over its share of the data, is what the streamed reader is judged by.
"""
from __future__ import annotations

import shutil
import tempfile

from bench.sizes import Sizes
from bench.suites import SuiteEnv
from bench.timing import run_isolated

ROWS = {"smoke": (20_000,), "quick": (20_000, 1_000_000), "full": (40_000, 4_000_000, 16_000_000)}
PRODUCTS, FEATURES, FILES = 100_000, 10, 8
TIMEOUT_S = 900


def row_bytes() -> int:
    """Bytes of one row in memory: the features, price and label (float32) and the product id (int32)."""
    return 4 * (FEATURES + 2) + 4


def run(sizes: Sizes, env: SuiteEnv) -> dict:
    cases = []
    for rows in ROWS.get(sizes.mode, ROWS["full"]):
        folder = tempfile.mkdtemp(prefix="claygraph-parquet-")
        try:
            env.log(f"  parquet: {rows:,} rows in {FILES} files, Ray(workers=2), split by product")
            spec = {"folder": folder, "rows": rows, "products": PRODUCTS, "features": FEATURES, "files": FILES}
            run_isolated("parquet_write", spec, 1, TIMEOUT_S, env.platform)
            res = run_isolated("parquet_memory", spec, 1, TIMEOUT_S, env.platform)
            cases.append({"rows": rows, "data_bytes": rows * row_bytes(), "shard_bytes": rows * row_bytes() / 2,
                          **res})
        except Exception as exc:  # one failed size is reported, the others still run
            cases.append({"rows": rows, "status": "error", "note": str(exc)[-600:]})
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return {"status": "ok", "products": PRODUCTS, "features": FEATURES, "files": FILES, "cases": cases}
