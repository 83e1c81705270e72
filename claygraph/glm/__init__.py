"""scikit-learn-style estimators on claygraph's split programs."""
from claygraph.glm.logistic import LogisticRegression, PoissonRegressor

__all__ = ["LogisticRegression", "PoissonRegressor"]
