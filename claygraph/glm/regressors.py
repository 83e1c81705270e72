"""PoissonRegressor and GammaRegressor: scikit-learn's estimators (log link, L2, lbfgs's objective),
solved by cg.infer.map on a split program.

The objective is scikit-learn's: the weighted mean of half the deviance plus alpha / 2 ||coef||^2
(the intercept unpenalised), for any real y in the family's range (y >= 0 for Poisson: rates, not
only counts; y > 0 for Gamma).
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.metrics import d2_tweedie_score

from claygraph.errors import DataError
from claygraph.glm import _models
from claygraph.glm._base import GLMBase, Problem, _real


class _LogLinkRegressor(RegressorMixin, GLMBase):
    """A GLM with a log link: predict exp(X coef + intercept); score is D^2 for the family's deviance."""

    _loss: Callable  # the model's loss (glm/_models.py)
    _power: int  # the Tweedie power of the family's deviance
    _y_range: tuple[Callable[[np.ndarray], np.ndarray], str]  # (which y are valid, what y must be)

    _parameter_checks = {
        **GLMBase._parameter_checks,
        "alpha": (lambda v: _real(v) and v >= 0, "a number >= 0"),
    }

    def __init__(self, *, alpha: float = 1.0, fit_intercept: bool = True, tol: float = 1e-4, max_iter: int = 100,
                 warm_start: bool = False, runtime=None, cluster=None, split=None):
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.warm_start = warm_start
        self.runtime = runtime
        self.cluster = cluster
        self.split = split

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.positive_only = True
        return tags

    def fit(self, X, y, sample_weight=None):
        X, y, sw = self._validate_fit(X, y, sample_weight, y_numeric=True)
        y = np.asarray(y, dtype=np.float64)
        valid, what = self._y_range
        if not np.all(valid(y)):
            i = int(np.flatnonzero(~valid(y))[0])
            raise DataError(f"{type(self).__name__} needs y {what}; y has {y[i]} at row {i}")
        shapes = {"coef": (X.shape[1],)}
        if self.fit_intercept:
            shapes["intercept"] = ()
        init = self._warm(shapes)
        if init is None and self.fit_intercept:
            # scikit-learn's start: the intercept that fits the weighted mean of y
            mean = float(np.average(y, weights=sw))
            init = {"coef": np.zeros(X.shape[1]), "intercept": np.asarray(np.log(mean) if mean > 0 else 0.0)}
        model = _models.GLMModel(type(self)._loss, bool(self.fit_intercept))
        params = self._solve(Problem(model, X, {"y": (y, ("row",))}, sw, float(self.alpha), init=init))
        self.coef_ = params["coef"]
        self.intercept_ = float(params["intercept"]) if self.fit_intercept else 0.0
        self.n_iter_ = self.fit_summary_.iterations
        return self

    def _solution(self) -> dict[str, np.ndarray]:
        return {"coef": self.coef_, "intercept": np.asarray(self.intercept_)}

    def _linear(self, X) -> np.ndarray:
        X = self._validate_X(X)
        return X @ self.coef_ + self.intercept_

    def predict(self, X) -> np.ndarray:
        """The expected value exp(X coef + intercept)."""
        return np.exp(self._linear(X))

    def score(self, X, y, sample_weight=None) -> float:
        """D^2, the fraction of deviance explained (scikit-learn's score for these estimators)."""
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        return float(d2_tweedie_score(y, self.predict(X), sample_weight=sample_weight, power=self._power))


class PoissonRegressor(_LogLinkRegressor):
    """Poisson regression with a log link and an L2 penalty alpha / 2 ||coef||^2; any real y >= 0.

    `runtime=`, `cluster=` and `split=` choose where and how the program runs (as in cg.infer.map).
    Dense input only: scipy sparse X is refused with scikit-learn's TypeError.
    """

    _loss = staticmethod(_models.poisson)
    _power = 1
    _y_range = (lambda y: y >= 0, ">= 0 (counts or rates)")


class GammaRegressor(_LogLinkRegressor):
    """Gamma regression with a log link and an L2 penalty alpha / 2 ||coef||^2; y > 0.

    `runtime=`, `cluster=` and `split=` choose where and how the program runs (as in cg.infer.map).
    Dense input only: scipy sparse X is refused with scikit-learn's TypeError.
    """

    _loss = staticmethod(_models.gamma)
    _power = 2
    _y_range = (lambda y: y > 0, "> 0")
