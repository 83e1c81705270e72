"""A refit reuses the compiled MAP loop, but the loop's cache holds no data: once a fit is over and its data
are dropped, none of their arrays stay alive (the user's X, read in place, included)."""
import gc

import jax
import numpy as np

import claygraph as cg
from claygraph.examples import logistic_model

ROWS = 1237  # a row count no other array in the process has


def _fit(seed: int) -> float:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(ROWS, 3)).astype(np.float32)
    y = (rng.random(ROWS) < 0.4).astype(np.float32)
    res = cg.infer.map(logistic_model, cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(y, "row")))
    return res.objective


def _live_rows() -> list:
    gc.collect()
    return [a.shape for a in jax.live_arrays() if ROWS in a.shape]


def test_the_cached_loop_keeps_no_data_alive():
    first = _fit(0)
    assert _live_rows() == []
    second = _fit(1)  # the same shapes: the cached loop runs on the new data, not on the first fit's
    assert second != first
    assert _live_rows() == []
