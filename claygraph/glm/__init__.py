"""scikit-learn estimators on claygraph's split programs."""
from claygraph.glm._base import PROGRAMS, FitSummary, expected_failed_checks
from claygraph.glm.logistic import LogisticRegression
from claygraph.glm.regressors import GammaRegressor, PoissonRegressor

__all__ = ["PROGRAMS", "FitSummary", "GammaRegressor", "LogisticRegression", "PoissonRegressor",
           "expected_failed_checks"]
