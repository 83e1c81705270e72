"""Data intake: validation in one streaming read (no copies), exact positions of bad values across blocks."""
import numpy as np
import pytest

import claygraph as cg
from claygraph.errors import DataError
from claygraph.frontend import data as data_mod


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    monkeypatch.setattr(data_mod, "BLOCK_BYTES", 1024)  # many blocks even for small test arrays


@pytest.mark.parametrize("shape,pos", [((5000,), (4321,)), ((3000, 7), (2999, 6)), ((40, 30, 5), (17, 3, 2))])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_first_non_finite_value_is_named(shape, pos, bad):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    x[pos] = bad
    with pytest.raises(DataError) as e:
        cg.Data(x=cg.array(x, *[f"d{i}" for i in range(len(shape))]))
    msg = str(e.value)
    assert f"at {pos}" in msg and "(1 such values)" in msg


def test_count_and_first_position_over_many_blocks():
    x = np.zeros((4000, 3), np.float64)
    x[3999, 0] = np.nan
    x[10, 2] = np.inf
    x[2500, 1] = np.nan
    with pytest.raises(DataError, match=r"at \(10, 2\) \(3 such values\)"):
        cg.Data(X=cg.array(x, "row", "feature"))


def test_finite_values_whose_sum_overflows_pass():
    x = np.full((2000, 4), 3e38, np.float32)  # every row sums past float32's range: the exact pass clears it
    y = np.full(2000, 3e38, np.float32)
    d = cg.Data(X=cg.array(x, "row", "feature"), y=cg.array(y, "row"))
    assert d.X is x and d.y is y  # stored as given, not copied


def test_index_range_checked_over_blocks():
    g = np.zeros(10_000, np.int64)
    g[9000] = 7
    g[9500] = -1
    with pytest.raises(DataError, match=r"value 7 at position 9000, outside \[0, 5\).*\(2 such values\)"):
        cg.Data(g=cg.index(g, "row", into="group", size=5))


def test_non_contiguous_arrays_are_checked():
    x = np.ones((3000, 6), np.float32)[:, ::2]
    x[1234, 1] = np.nan
    with pytest.raises(DataError, match=r"at \(1234, 1\)"):
        cg.Data(X=cg.array(x, "row", "feature"))


def test_float32_X_is_not_copied_by_the_estimator(monkeypatch):
    """LogisticRegression hands a float32 X to Data as it is (issue: an 800 MB astype copy per fit).
    Small X is padded to a shared shape (a copy by design); past 2^18 values it goes in as it is."""
    from claygraph.frontend import data as frontend_data

    seen = {}
    real = frontend_data.array

    def spy(values, *dims):
        seen.setdefault(dims, values)
        return real(values, *dims)

    monkeypatch.setattr(frontend_data, "array", spy)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(70_000, 4)).astype(np.float32)
    y = (rng.random(70_000) < 0.5).astype(np.float64)
    cg.glm.LogisticRegression(fit_intercept=False, max_iter=5).fit(X, y)
    assert seen[("row", "feature")] is X
