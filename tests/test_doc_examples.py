"""Every Python example in README.md and docs/ runs as written, so that the documentation cannot drift
from the API. Each file's ```python blocks run in order in one namespace (a later block continues an
earlier one), in a temporary folder holding a small `sales/` Parquet table; names an example takes
from the reader (their `X`, `y`, ...) are given small stand-ins first, and nothing in a block is edited."""
import re
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```$", re.S | re.M)

def blocks(path: Path) -> list[str]:
    return BLOCK.findall(path.read_text())


def documents() -> list[str]:
    return [str(p.relative_to(ROOT)) for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
            if blocks(p)]


def sales(folder: Path, rows: int = 4_000, products: int = 40) -> None:
    """A Parquet table in two files with the columns the examples read."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    folder.mkdir()
    for part in range(2):
        n = rows // 2
        pq.write_table(pa.table({
            **{f"x{j}": rng.normal(size=n).astype(np.float32) for j in range(3)},
            "price": rng.lognormal(size=n).astype(np.float32),
            "y": (rng.random(n) < 0.3).astype(np.float32),
            "sold": (rng.random(n) < 0.5).astype(np.float32),
            "product_id": np.append(rng.integers(0, products, n - 1), products - 1).astype(np.int32),
        }), folder / f"part-{part}.parquet")


def stand_ins() -> dict:
    """What the examples take from their reader: the usual imports (`cg` for claygraph) and arrays of the
    sizes their comments show."""
    import numpyro
    import numpyro.distributions as dist

    import claygraph as cg

    rng = np.random.default_rng(1)
    rows = 4_000
    X = rng.normal(size=(rows, 3)).astype(np.float32)
    y = (X[:, 0] + rng.normal(size=rows) > 0).astype(np.float32)
    return {"cg": cg, "numpyro": numpyro, "dist": dist, "np": np, "X": X, "y": y,
            "price": rng.lognormal(size=rows).astype(np.float32), "g": rng.integers(0, 50, rows)}


def test_every_document_with_examples_is_checked():
    assert {"README.md", "docs/frontend.md", "docs/runtime.md"} <= set(documents())


# README's example starts a Ray runtime: it runs in the Ray tests' xdist group (one Ray cluster at a time)
@pytest.mark.parametrize("document", [pytest.param(d, marks=pytest.mark.xdist_group("ray")) if d == "README.md" else d
                                      for d in documents()])
def test_examples_run_as_written(document, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sales(tmp_path / "sales")
    namespace = stand_ins()
    for i, source in enumerate(blocks(ROOT / document)):
        exec(compile(source, f"{document}, example {i + 1}", "exec"), namespace)  # noqa: S102
    if document == "README.md":  # what its comments say it prints
        assert namespace["graph"].param_dims == {"a": ("product",), "w": ("feature",)}
        assert namespace["data"].size("product") == 40  # the largest product id + 1, read from the column
