"""The GLMs as NumPyro models whose potential is scikit-learn's objective (times the row count).

Every model reads the same data fields: `X` (row, feature), `weight` (row: each row's share of the
loss, zero on padding rows; absent when every row weighs 1), `penalty` (a scalar: the L2 strength)
and a target. The coefficients have flat (improper uniform) priors; the loss and the penalty enter
as `numpyro.factor` terms, so

    potential = sum_i weight_i * loss_i + penalty / 2 * ||coef||^2      (the intercept unpenalised)

Strengths and weights are data, not constants of the model: a refit with another `C` or other
weights is the same program, compiled once.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.distributions import constraints


def _flat(*shape: int):
    return dist.ImproperUniform(constraints.real_vector if shape else constraints.real, (), shape)


def _linear(data, fit_intercept: bool, classes: int | None = None):
    """X @ coef (+ intercept), with the L2 penalty on coef."""
    d = data.X.shape[1]
    coef = numpyro.sample("coef", _flat(d) if classes is None else _flat(d, classes))
    eta = data.X @ coef
    if fit_intercept:
        eta = eta + numpyro.sample("intercept", _flat() if classes is None else _flat(classes))
    numpyro.factor("penalty", -0.5 * data.penalty * jnp.sum(coef * coef))
    return eta


def _total(data, loss):
    """sum_i weight_i loss_i, or sum_i loss_i when the data have no weights (every row weighs 1)."""
    return jnp.sum(data.weight * loss) if "weight" in data.names else jnp.sum(loss)


def binary_logistic(data, fit_intercept: bool = True):
    """Log-loss: softplus(eta) - y eta, written stably as max(eta, 0) + log1p(exp(-|eta|)) - y eta."""
    eta = _linear(data, fit_intercept)
    loss = jnp.maximum(eta, 0.0) + jnp.log1p(jnp.exp(-jnp.abs(eta))) - data.y * eta
    numpyro.factor("loss", -_total(data, loss))


def multinomial_logistic(data, fit_intercept: bool = True):
    """Softmax cross-entropy with one-hot targets Y (row, class): logsumexp(eta) - <Y, eta>."""
    eta = _linear(data, fit_intercept, classes=data.Y.shape[1])
    top = jnp.max(eta, axis=1, keepdims=True)  # exact for any shift: the gradient is still the softmax
    lse = top[:, 0] + jnp.log(jnp.sum(jnp.exp(eta - top), axis=1))
    loss = lse - jnp.sum(data.Y * eta, axis=1)
    numpyro.factor("loss", -_total(data, loss))


def poisson(data, fit_intercept: bool = True):
    """Half the Poisson deviance with a log link, up to a constant in y: exp(eta) - y eta."""
    eta = _linear(data, fit_intercept)
    numpyro.factor("loss", -_total(data, jnp.exp(eta) - data.y * eta))


def gamma(data, fit_intercept: bool = True):
    """Half the Gamma deviance with a log link, up to a constant in y: eta + y exp(-eta)."""
    eta = _linear(data, fit_intercept)
    numpyro.factor("loss", -_total(data, eta + data.y * jnp.exp(-eta)))


@dataclass(frozen=True)
class GLMModel:
    """`loss` with or without an intercept, as a model `model(data)`. Equal by value, so compiled programs
    (cached by model) are found again; importable by reference on every worker."""

    loss: Callable
    fit_intercept: bool

    @property
    def __name__(self) -> str:
        return self.loss.__name__

    def __call__(self, data) -> None:
        self.loss(data, fit_intercept=self.fit_intercept)
