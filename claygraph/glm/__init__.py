"""scikit-learn estimators on claygraph's split programs."""
from claygraph.glm._base import PROGRAMS, FitSummary, expected_failed_checks
from claygraph.glm.logistic import LogisticRegression
from claygraph.glm.poisson import PoissonRegressor

__all__ = ["PROGRAMS", "FitSummary", "LogisticRegression", "PoissonRegressor", "expected_failed_checks"]
