"""scikit-learn-style GLM estimators built on cg.infer.map (one solver, not two).

LogisticRegression minimises  sum_i logloss_i + ||w||^2 / (2C)  (the intercept unpenalised), which
is scikit-learn's objective times n; `tol` keeps scikit-learn's meaning (on the mean-loss
gradient), so the solver stops at max|grad| <= tol * n.
"""
from __future__ import annotations

import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints

from claygraph.errors import DataError


def _logistic_model(data, sigma: float, fit_intercept: bool):
    w = numpyro.sample("w", dist.Normal(0.0, sigma).expand([data.X.shape[1]]).to_event(1))
    logits = data.X @ w
    if fit_intercept:
        logits = logits + numpyro.sample("b", dist.ImproperUniform(constraints.real, (), ()))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Bernoulli(logits=logits), obs=data.y)


def _poisson_model(data, sigma: float, fit_intercept: bool):
    w = numpyro.sample("w", dist.Normal(0.0, sigma).expand([data.X.shape[1]]).to_event(1))
    eta = data.X @ w
    if fit_intercept:
        eta = eta + numpyro.sample("b", dist.ImproperUniform(constraints.real, (), ()))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Poisson(rate=_exp(eta)), obs=data.y)


def _exp(x):
    import jax.numpy as jnp

    return jnp.exp(x)


class _GLM:
    _model = None
    _prior_scale_factor = 1.0

    def __init__(self, C: float = 1.0, fit_intercept: bool = True, tol: float = 1e-4, max_iter: int = 1000,
                 runtime=None, cluster=None, split=None):
        self.C, self.fit_intercept, self.tol, self.max_iter = C, fit_intercept, tol, max_iter
        self.runtime, self.cluster, self.split = runtime, cluster, split

    def get_params(self, deep: bool = True) -> dict:
        return {k: getattr(self, k) for k in ("C", "fit_intercept", "tol", "max_iter", "runtime", "cluster", "split")}

    def set_params(self, **params):
        for k, v in params.items():
            if k not in self.get_params():
                raise ValueError(f"invalid parameter {k!r} for {type(self).__name__}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items() if v is not None)
        return f"{type(self).__name__}({args})"

    def _check_X(self, X) -> np.ndarray:
        X = np.asarray(X)
        if X.ndim != 2:
            raise DataError(f"X must be 2-D (n_samples, n_features), got shape {X.shape}")
        if hasattr(self, "n_features_in_") and X.shape[1] != self.n_features_in_:
            raise DataError(f"X has {X.shape[1]} features, but {type(self).__name__} was fitted with "
                            f"{self.n_features_in_}")
        return X if X.dtype == np.float32 else X.astype(np.float32)  # no copy of float32 X

    def _fit_map(self, X: np.ndarray, y: np.ndarray):
        import claygraph as cg

        if not self.C > 0:
            raise ValueError(f"C must be positive, got {self.C}")
        data = cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(np.asarray(y, np.float32), "row"))
        sigma, fi = float(np.sqrt(self.C)), bool(self.fit_intercept)
        model = type(self)._model

        def glm(data):
            return model(data, sigma, fi)

        res = cg.infer.map(glm, data, runtime=self.runtime, cluster=self.cluster, split=self.split,
                           tol=self.tol, scale=X.shape[0], max_iter=self.max_iter)
        self.result_ = res
        self.n_iter_ = np.array([res.iterations])
        self.n_features_in_ = X.shape[1]
        self.coef_ = np.asarray(res.params["w"], dtype=np.float64)[None, :]
        self.intercept_ = np.array([float(res.params["b"])]) if fi else np.zeros(1)
        return self

    def decision_function(self, X) -> np.ndarray:
        X = self._check_X(X)
        return (X.astype(np.float64) @ self.coef_[0] + self.intercept_[0]).astype(np.float64)


class LogisticRegression(_GLM):
    """Binary L2-regularised logistic regression, scikit-learn compatible, on a split program."""

    _model = staticmethod(_logistic_model)

    def fit(self, X, y):
        X = self._check_X(X)
        y = np.asarray(y)
        if y.shape != (X.shape[0],):
            raise DataError(f"y must have shape ({X.shape[0]},), got {y.shape}")
        self.classes_ = np.unique(y)
        if len(self.classes_) != 2:
            raise DataError(f"LogisticRegression here is binary; y has {len(self.classes_)} classes "
                            f"{self.classes_[:5]}")
        return self._fit_map(X, (y == self.classes_[1]).astype(np.float32))

    def predict_proba(self, X) -> np.ndarray:
        p = 1.0 / (1.0 + np.exp(-self.decision_function(X)))
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, X) -> np.ndarray:
        return self.classes_[(self.decision_function(X) > 0).astype(int)]

    def score(self, X, y) -> float:
        return float(np.mean(self.predict(X) == np.asarray(y)))


class PoissonRegressor(_GLM):
    """Poisson regression with a log link and an L2 penalty ||w||^2 / (2C)."""

    _model = staticmethod(_poisson_model)

    def fit(self, X, y):
        X = self._check_X(X)
        y = np.asarray(y, dtype=np.float64)
        if y.shape != (X.shape[0],) or np.any(y < 0):
            raise DataError("y must be a vector of non-negative counts, one per row of X")
        return self._fit_map(X, y)

    def predict(self, X) -> np.ndarray:
        return np.exp(self.decision_function(X))

    def score(self, X, y) -> float:
        """D^2, the fraction of Poisson deviance explained (scikit-learn's PoissonRegressor.score)."""
        y = np.asarray(y, dtype=np.float64)
        mu = self.predict(X)
        dev = 2 * np.sum(np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu), 0) - (y - mu))
        mu0 = np.full_like(y, y.mean())
        dev0 = 2 * np.sum(np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / mu0), 0) - (y - mu0))
        return float(1 - dev / dev0)
