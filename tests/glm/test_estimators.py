"""The estimators are scikit-learn estimators: its checks, its objective and results, its tools.

Shapes are kept few on purpose: small fits share a compiled program per padded shape (up to 256 rows
pad to 256, up to 4 features to 4).
"""
import pickle
import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.exceptions import DataConversionWarning, NotFittedError
from sklearn.linear_model import GammaRegressor as SkGammaRegressor
from sklearn.linear_model import LogisticRegression as SkLogisticRegression
from sklearn.linear_model import PoissonRegressor as SkPoissonRegressor
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import check_estimator

import claygraph as cg
from claygraph.errors import DataError
from claygraph.glm import _models
from claygraph.glm._base import PROGRAMS, Problem, padded_shape, problem_data

TIGHT = dict(tol=1e-8, max_iter=1000)


def three_classes(n=240, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4)) * np.array([1.0, 2.0, 0.5, 1.0])
    W = np.array([[0.8, -0.5, 0.1, 0.0], [-0.3, 0.4, -0.6, 0.2], [0.0, 0.1, 0.5, -0.4]])
    logits = X @ W.T + np.array([0.2, -0.1, 0.0])
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=pi) for pi in p])
    return X, np.array(["a", "b", "c"])[y], rng.uniform(0.2, 3.0, n)


def counts(n=240, seed=1):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    mu = np.exp(0.3 + X @ np.array([0.4, -0.2, 0.1, 0.0]))
    return X, rng.poisson(mu) * rng.uniform(0.5, 1.5, n), rng.uniform(0.2, 3.0, n)  # real-valued rates


def assert_same_fit(ours, ref, X, atol=1e-4):
    np.testing.assert_allclose(ours.coef_, ref.coef_, atol=atol)
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, atol=atol)
    if hasattr(ref, "predict_proba"):
        np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=atol)
    else:
        np.testing.assert_allclose(ours.predict(X), ref.predict(X), rtol=atol)


# the regressors share GLMBase with LogisticRegression: their checks are long tests (docs/testing.md)
@pytest.mark.parametrize("make", [cg.glm.LogisticRegression,
                                  pytest.param(cg.glm.PoissonRegressor, marks=pytest.mark.long),
                                  pytest.param(cg.glm.GammaRegressor, marks=pytest.mark.long)])
def test_check_estimator_passes(make):
    est = make()
    expected = cg.glm.expected_failed_checks(est)
    results = check_estimator(est, on_fail=None, on_skip=None, expected_failed_checks=expected)
    failed = [(r["check_name"], str(r["exception"])[:300]) for r in results if r["status"] == "failed"]
    assert not failed
    skipped = {r["check_name"] for r in results if r["status"] == "skipped"}
    assert skipped <= {"check_array_api_input", "check_array_api_mixed_inputs", "check_array_api_same_namespace"}
    xfail = {r["check_name"] for r in results if r["status"] == "xfail"}
    assert xfail <= set(expected)
    assert sum(r["status"] == "passed" for r in results) >= 50


@pytest.mark.parametrize("devices,split", [(1, None), (2, ("row",)), (2, ("feature",))])
def test_multinomial_weighted_equals_scikit_learn(devices, split):
    X, y, sw = three_classes()
    cw = {"a": 2.0, "b": 0.5, "c": 1.0}
    ref = SkLogisticRegression(C=0.5, class_weight=cw, tol=1e-10, max_iter=5000).fit(X, y, sample_weight=sw)
    m = cg.glm.LogisticRegression(C=0.5, class_weight=cw, split=split, runtime=cg.runtime.Local(devices=devices),
                                  **TIGHT).fit(X, y, sample_weight=sw)
    assert m.coef_.shape == (3, 4) and m.intercept_.shape == (3,)
    assert m.classes_.tolist() == ["a", "b", "c"]
    assert_same_fit(m, ref, X)
    assert m.fit_summary_.converged
    assert m.fit_summary_.split == (split or ())
    assert (m.predict(X) == ref.predict(X)).mean() > 0.99
    assert m.score(X, y) == pytest.approx(ref.score(X, y), abs=0.01)


def test_binary_balanced_and_weighted_equals_scikit_learn():
    X, y, sw = three_classes(seed=3)
    y = np.where(y == "a", 1, -1)  # unbalanced, labels not 0/1
    ref = SkLogisticRegression(class_weight="balanced", tol=1e-10, max_iter=5000).fit(X, y, sample_weight=sw)
    m = cg.glm.LogisticRegression(class_weight="balanced", **TIGHT).fit(X, y, sample_weight=sw)
    assert m.coef_.shape == (1, 4)
    assert_same_fit(m, ref, X)
    np.testing.assert_allclose(m.decision_function(X), ref.decision_function(X), atol=1e-4)


@pytest.mark.parametrize("ours,theirs", [(cg.glm.PoissonRegressor, SkPoissonRegressor),
                                         (cg.glm.GammaRegressor, SkGammaRegressor)])
def test_log_link_regressors_with_real_targets_and_weights_equal_scikit_learn(ours, theirs):
    X, y, sw = counts()
    y = y + 0.1  # > 0 for Gamma
    assert np.any(y != np.round(y))
    for alpha in (1.0, 0.01):
        ref = theirs(alpha=alpha, tol=1e-10, max_iter=1000).fit(X, y, sample_weight=sw)
        m = ours(alpha=alpha, **TIGHT).fit(X, y, sample_weight=sw)
        assert_same_fit(m, ref, X)
        assert m.score(X, y, sample_weight=sw) == pytest.approx(ref.score(X, y, sample_weight=sw), abs=1e-5)
    with pytest.raises(DataError, match="needs y"):
        ours().fit(X, -y)
    with pytest.raises(TypeError):
        ours(C=1.0)


def test_weights_equal_repeated_and_removed_rows():
    """What check_sample_weight_equivalence asks, at the float32 program's precision."""
    X, y, _ = three_classes(n=30, seed=5)
    sw = np.random.default_rng(0).integers(0, 4, len(y))
    assert padded_shape(*np.repeat(X, sw, axis=0).shape) == padded_shape(*X.shape)  # one program for both
    weighted = cg.glm.LogisticRegression(**TIGHT).fit(X, y, sample_weight=sw)
    repeated = cg.glm.LogisticRegression(**TIGHT).fit(np.repeat(X, sw, axis=0), np.repeat(y, sw))
    np.testing.assert_allclose(weighted.predict_proba(X), repeated.predict_proba(X), atol=1e-5)
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, atol=1e-4)


def test_pickle_and_clone_round_trip():
    X, y, sw = three_classes()
    m = cg.glm.LogisticRegression(C=0.5, runtime=cg.runtime.Local(devices=2), split=("row",))
    m.fit(X, y, sample_weight=sw)
    back = pickle.loads(pickle.dumps(m))
    np.testing.assert_array_equal(back.predict_proba(X), m.predict_proba(X))
    assert back.fit_summary_ == m.fit_summary_
    assert back.get_params()["runtime"].devices == 2
    fresh = clone(m)
    assert fresh.get_params()["C"] == 0.5 and fresh.get_params()["runtime"].devices == 2
    assert not hasattr(fresh, "coef_")
    refit = pickle.loads(pickle.dumps(fresh)).fit(X, y, sample_weight=sw)  # an unpickled estimator fits again
    np.testing.assert_allclose(refit.coef_, m.coef_, atol=1e-6)
    Xp, yp, _ = counts()
    p = cg.glm.PoissonRegressor().fit(Xp, yp)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(p)).predict(Xp), p.predict(Xp))


def test_model_selection_and_pipelines_have_finite_scores():
    X, y, _ = three_classes()
    PROGRAMS.clear()
    scores = cross_val_score(cg.glm.LogisticRegression(), X, y, cv=3)
    assert np.all(np.isfinite(scores)) and scores.mean() > 0.5
    grid = GridSearchCV(make_pipeline(StandardScaler(), cg.glm.LogisticRegression()),
                        {"logisticregression__C": [1e-4, 1.0]}, cv=3).fit(X, y)
    means = grid.cv_results_["mean_test_score"]
    assert np.all(np.isfinite(means)) and means[1] > means[0]  # C=1e-4 shrinks every coefficient to ~0
    assert grid.best_params_ == {"logisticregression__C": 1.0}
    assert np.isfinite(grid.score(X, y))
    # 3 folds x 2 values of C and the refit: one compiled program (160 and 240 rows pad to 256; C is data)
    assert [k[1][0][1] for k in PROGRAMS._entries] == [(256, 4)]
    Xp, yp, _ = counts()
    assert np.all(np.isfinite(cross_val_score(make_pipeline(StandardScaler(), cg.glm.PoissonRegressor()), Xp, yp,
                                              cv=3)))


def test_input_is_validated_like_scikit_learn():
    X, y, _ = three_classes(n=40, seed=2)
    m = cg.glm.LogisticRegression()
    with pytest.raises(NotFittedError):
        m.predict(X)
    with pytest.raises(TypeError, match="dense data is required"):
        m.fit(sp.csr_matrix(X), y)
    with pytest.raises(ValueError, match="Complex data not supported"):
        m.fit(X + 1j, y)
    with pytest.raises(ValueError, match="Unknown label type"):
        m.fit(X, np.linspace(0, 1, len(y)))
    with pytest.raises(ValueError, match="only one class"):
        m.fit(X, np.zeros(len(y)))
    with pytest.raises(ValueError, match="C=-1"):
        cg.glm.LogisticRegression(C=-1).fit(X, y)
    frame = pd.DataFrame(X, columns=["a", "b", "c", "d"])
    m.fit(frame, y)
    assert m.feature_names_in_.tolist() == ["a", "b", "c", "d"] and m.n_features_in_ == 4
    with pytest.raises(ValueError, match="NaN"):
        m.predict(np.where(np.eye(40, 4) > 0, np.nan, X))
    with pytest.raises(ValueError, match="expecting 4 features"):
        m.predict(X[:, :3])
    with pytest.warns(DataConversionWarning):
        cg.glm.PoissonRegressor().fit(X, np.abs(X[:, :1]))


def test_intake_keeps_float32_and_float64_without_copies(monkeypatch):
    X, y, _ = three_classes(n=40, seed=2)
    m = cg.glm.LogisticRegression()
    for dtype in (np.float32, np.float64):
        Xd = np.ascontiguousarray(X, dtype=dtype)
        checked, _, _ = m._validate_fit(Xd, y, None)
        assert checked is Xd
    big = np.zeros((4000, 100), np.float32)  # above the padding size: the program takes X as it is
    assert padded_shape(*big.shape) == big.shape
    # the compiled-program cache holds its first fit's data: past its byte budget, nothing is kept
    PROGRAMS.clear()
    monkeypatch.setattr(PROGRAMS, "max_bytes", 1000)
    m.fit(X, y)
    assert not PROGRAMS._entries


def test_warm_start_continues_from_the_last_solution():
    X, y, _ = three_classes()
    cold = cg.glm.LogisticRegression().fit(X, y)
    m = cg.glm.LogisticRegression(warm_start=True).fit(X, y)
    assert m.n_iter_[0] == cold.n_iter_[0]  # nothing to start from yet
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # converged again, no ConvergenceWarning
        m.fit(X, y)
    assert m.n_iter_[0] < cold.n_iter_[0] / 2
    np.testing.assert_allclose(m.coef_, cold.coef_, atol=1e-3)
    m.fit(X[:, :3], y)  # another shape: starts afresh
    assert m.coef_.shape == (3, 3)


@pytest.mark.parametrize("loss", ["binary_logistic", "multinomial_logistic", "poisson", "gamma"])
def test_weighted_objective_is_the_same_on_every_split(loss):
    """The program's weighted objective (weight-0 padding rows included) and its gradient, on every split
    and device count, equal NumPy's scikit-learn objective times the program's rows."""
    rng = np.random.default_rng(7)
    n, d, k = 45, 3, 3
    X = rng.normal(size=(n, d))
    codes = rng.integers(0, k, n)
    targets = {"binary_logistic": {"y": ((codes == 1).astype(float), ("row",))},
               "multinomial_logistic": {"Y": (np.eye(k)[codes], ("row", "class"))},
               "poisson": {"y": (rng.poisson(2.0, n) * 0.5, ("row",))},
               "gamma": {"y": (rng.gamma(2.0, 1.0, n), ("row",))}}[loss]
    sw = rng.uniform(0.0, 2.0, n)
    model = _models.GLMModel(getattr(_models, loss), True)
    data = problem_data(Problem(model, X, targets, sw, 0.3))
    rows, features = data.size("row"), data.size("feature")
    multi = loss == "multinomial_logistic"
    coef = rng.normal(size=(features, k) if multi else (features,)) * 0.3
    coef[d:] = 0.0  # the padding features' coefficients
    params = {"coef": coef.astype(np.float32),
              "intercept": (rng.normal(size=k) if multi else np.asarray(0.2)).astype(np.float32)}
    eta = X @ coef[:d] + params["intercept"]
    (t, _), = targets.values()
    per_row = {"binary_logistic": lambda: np.logaddexp(0, eta) - t * eta,
               "multinomial_logistic": lambda: np.log(np.exp(eta).sum(1)) - (t * eta).sum(1),
               "poisson": lambda: np.exp(eta) - t * eta,
               "gamma": lambda: eta + t * np.exp(-eta)}[loss]()
    want = rows * (np.sum(sw * per_row) / sw.sum() + 0.15 * np.sum(coef ** 2))
    plans = [cg.partition(model, data, split=s, cluster=cg.ClusterSpec.local(devices=dev))
             for dev, s in [(1, ()), (2, ("row",)), (3, ("row",)), (2, ("feature",))]]
    ref_value, ref_grad = cg.compile(plans[0], data).potential_and_grad(params)
    assert float(ref_value) == pytest.approx(want, rel=1e-5)
    for plan in plans[1:]:
        value, grad = cg.compile(plan, data, runtime=cg.runtime.Local(devices=plan.devices)).potential_and_grad(params)
        assert float(value) == pytest.approx(float(ref_value), rel=1e-5)
        for key in ref_grad:
            np.testing.assert_allclose(grad[key], ref_grad[key], rtol=1e-4, atol=1e-4)


def test_large_unweighted_fit_copies_nothing_and_equals_scikit_learn():
    """Above the padding size and without sample weights, the program takes the user's X and float32 0/1 y
    as they are, has no weight array, and a fit makes no temporary as large as y; the result is scikit-learn's
    and the weighted program's with unit weights."""
    import tracemalloc

    rng = np.random.default_rng(3)
    n, d = 70_000, 4
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (rng.random(n) < 1 / (1 + np.exp(-(X @ np.array([0.5, -1.0, 0.3, 0.0]) + 0.2)))).astype(np.float32)
    assert padded_shape(n, d) == (n, d)
    model = _models.GLMModel(_models.binary_logistic, True)
    data = problem_data(Problem(model, X, {"y": (y, ("row",))}, None, 0.1))
    assert "weight" not in data.names and data.X is X and data.y is y
    _, targets = cg.glm.logistic._targets(np.where(y > 0, 7, 3), np.array([3, 7]))
    coded = targets["y"][0]  # labels other than float32 0/1: one float32 copy, 64-byte aligned (used in place)
    assert coded.dtype == np.float32 and coded.ctypes.data % 64 == 0 and np.array_equal(coded, y)

    m = cg.glm.LogisticRegression(**TIGHT).fit(X, y)
    ref = SkLogisticRegression(tol=1e-10, max_iter=5000).fit(X, y)
    assert_same_fit(m, ref, X)
    tracemalloc.start()
    try:
        m.fit(X, y)  # compiled already: what remains is intake, planning and the solve
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < y.nbytes, peak  # (before: float64 weights and int64 codes, each twice y's size)
    weighted = cg.glm.LogisticRegression(**TIGHT).fit(X, y, sample_weight=np.ones(n))
    np.testing.assert_allclose(weighted.coef_, m.coef_, atol=1e-6)
    np.testing.assert_allclose(weighted.intercept_, m.intercept_, atol=1e-6)
