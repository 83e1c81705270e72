"""LogisticRegression: scikit-learn's estimator (lbfgs, L2), solved by cg.infer.map on a split program.

Two classes: one coefficient vector, log-loss. More classes: multinomial (softmax cross-entropy),
one coefficient row per class, as scikit-learn's lbfgs solver does. The objective is scikit-learn's,

    sum_i s_i loss_i + ||coef||^2 / (2 C)        (divided by sum_i s_i; the intercept unpenalised),

with s_i = sample_weight_i times the class weight of row i's class.
"""
from __future__ import annotations

import inspect

import numpy as np
from scipy.special import expit, softmax
from sklearn.base import ClassifierMixin
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets

from claygraph.errors import DataError
from claygraph.glm import _models
from claygraph.glm._base import GLMBase, Problem, _real, aligned_zeros

BLOCK = 1 << 20  # labels per block of the passes over y: no temporary of y's length


def _few_values(y: np.ndarray, limit: int = 64) -> np.ndarray | None:
    """The distinct values of y, sorted, when there are at most `limit`, else None; where np.unique sorts
    all of y (0.36 s for 2M labels). Two labels (the usual case) take one pass in blocks, no copy."""
    lo, hi = y.min(), y.max()
    if lo == hi:
        return np.asarray([lo], dtype=y.dtype)
    if sum(np.count_nonzero(b == lo) + np.count_nonzero(b == hi) for b in _blocks(y)) == y.size:
        return np.asarray([lo, hi], dtype=y.dtype)
    seen, rest = [], y  # more labels: one masked pass per value
    while rest.size:
        if len(seen) == limit:
            return None
        seen.append(rest[0])
        rest = rest[rest != rest[0]]
    return np.sort(np.asarray(seen, dtype=y.dtype))


def _blocks(y: np.ndarray):
    return (y[i:i + BLOCK] for i in range(0, y.size, BLOCK))


def _classes(y: np.ndarray) -> np.ndarray:
    """The classes (sorted distinct labels), with scikit-learn's checks of the target type."""
    few = _few_values(y) if y.dtype.kind in "biuf" else None
    if few is None or (y.dtype.kind == "f" and not np.all(few == np.floor(few))):
        check_classification_targets(y)  # scikit-learn's errors for continuous and other targets
        return np.unique(y)
    return few


class LogisticRegression(ClassifierMixin, GLMBase):
    """L2-regularised logistic regression (binary or multinomial) with scikit-learn's API and objective.

    `runtime=`, `cluster=` and `split=` choose where and how the program runs (as in cg.infer.map).
    Dense input only: scipy sparse X is refused with scikit-learn's TypeError.
    """

    _parameter_checks = {
        **GLMBase._parameter_checks,
        "C": (lambda v: _real(v) and v > 0, "a positive number"),
    }

    def __init__(self, C: float = 1.0, *, fit_intercept: bool = True, class_weight=None, tol: float = 1e-4,
                 max_iter: int = 100, warm_start: bool = False, runtime=None, cluster=None, split=None):
        self.C = C
        self.fit_intercept = fit_intercept
        self.class_weight = class_weight
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start
        self.runtime = runtime
        self.cluster = cluster
        self.split = split

    def fit(self, X, y, sample_weight=None):
        X, y, sw = self._validate_fit(X, y, sample_weight)
        classes = _classes(y)
        if len(classes) < 2:
            raise DataError(f"LogisticRegression needs samples of at least 2 classes in the data, but the data "
                            f"contains only one class: {classes[0]!r}")
        if self.class_weight is not None:
            cw = _class_weight(self.class_weight, classes, y, sw)[np.searchsorted(classes, y)]
            sw = cw if sw is None else sw * cw
            if not np.any(sw > 0):
                raise DataError("class_weight and sample_weight give every sample zero weight")
        self.classes_ = classes
        binary = len(classes) == 2
        loss, targets = _targets(y, classes)
        shapes = {"coef": (X.shape[1],) if binary else (X.shape[1], len(classes))}
        if self.fit_intercept:
            shapes["intercept"] = () if binary else (len(classes),)
        model = _models.GLMModel(loss, bool(self.fit_intercept))
        total = float(y.shape[0] if sw is None else sw.sum())
        params = self._solve(Problem(model, X, targets, sw, 1.0 / (float(self.C) * total), self._warm(shapes)))
        coef = params["coef"]
        self.coef_ = coef[None, :] if binary else np.ascontiguousarray(coef.T)
        intercept = params.get("intercept", np.zeros(1 if binary else len(classes)))
        # multinomial intercepts are defined up to a common shift: scikit-learn's have mean zero
        self.intercept_ = np.atleast_1d(intercept if binary else intercept - intercept.mean())
        self.n_iter_ = np.array([self.fit_summary_.iterations], dtype=np.int32)
        return self

    def _solution(self) -> dict[str, np.ndarray]:
        if len(self.classes_) == 2:
            return {"coef": self.coef_[0], "intercept": np.asarray(self.intercept_[0])}
        return {"coef": self.coef_.T, "intercept": self.intercept_}

    def decision_function(self, X) -> np.ndarray:
        """The logits: shape (n,) for two classes (the second class's), (n, classes) otherwise."""
        scores = self._linear(X)
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict_proba(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = expit(scores)
            return np.stack([1.0 - p, p], axis=1)
        return softmax(scores, axis=1)

    def predict_log_proba(self, X) -> np.ndarray:
        return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        scores = self.decision_function(X)
        best = (scores > 0).astype(int) if scores.ndim == 1 else np.argmax(scores, axis=1)
        return self.classes_[best]


def _targets(y: np.ndarray, classes: np.ndarray):
    """The loss and its target: y in {0, 1} for two classes (the user's y itself when it is float32 0/1),
    one-hot Y (row, class) for more."""
    if len(classes) == 2:
        if y.dtype == np.float32 and classes[0] == 0 and classes[1] == 1:
            return _models.binary_logistic, {"y": (y, ("row",))}
        target = aligned_zeros(y.shape, np.float32)
        for i in range(0, y.size, BLOCK):  # labels compared in blocks: no boolean copy of y
            np.equal(y[i:i + BLOCK], classes[1], out=target[i:i + BLOCK], casting="unsafe")
        return _models.binary_logistic, {"y": (target, ("row",))}
    codes = np.searchsorted(classes, y)
    return _models.multinomial_logistic, {"Y": (np.eye(len(classes), dtype=np.float32)[codes], ("row", "class"))}


def _class_weight(class_weight, classes: np.ndarray, y: np.ndarray, sw: np.ndarray) -> np.ndarray:
    """scikit-learn's class weights; with sample weights where its version takes them (as its own fit does)."""
    if "sample_weight" in inspect.signature(compute_class_weight).parameters:
        return compute_class_weight(class_weight, classes=classes, y=y, sample_weight=sw)
    return compute_class_weight(class_weight, classes=classes, y=y)
