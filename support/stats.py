"""Tolerances for statistical tests, derived from the Monte Carlo error of what they check.

A statistical test compares draws with a known answer; its tolerance must come from the sampling
distribution of the statistic, so that a sampler that works fails the test with a stated, small
probability (its false-failure rate) on any machine and any seed, not by one seed's luck. Every bound
here takes `alpha`, the false-failure rate of one check, under the normal (or chi-square) approximation
stated; a test making `k` checks passes alpha / k to each (Bonferroni), so that the test as a whole
fails a working sampler with probability at most its stated rate. docs/testing.md gives the derivations
and the seed study that checks them.

- mean: (mean - truth) / MCSE ~ N(0, 1), MCSE = sd / sqrt(bulk ESS), the reference's own MCSE added in
  quadrature;
- sd: sd_hat / sd - 1 ~ N(0, se^2), se^2 = (kurtosis - 1) / (4 ESS_2), ESS_2 the effective sample size
  of the squared deviations (the second moment's own autocorrelation), kurtosis estimated from the draws;
- split R-hat: with M split chains of n_e effective draws each, B / W ~ chi2(M - 1) / ((M - 1) n_e), so
  R-hat^2 <= 1 + chi2_{1-alpha}(M - 1) / ((M - 1) n_e); ArviZ's rank-normalised R-hat takes the worse of
  the bulk and the folded (tail) R-hat, so n_e comes from the smaller of the bulk and tail ESS.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats

from claygraph.infer.common import arviz

# posteriordb's reference posteriors: 10 chains x 1,000 draws after thinning, checked for ESS (their
# README); their sds are known to about 1 / sqrt(2 x 10,000) relative
REFERENCE_DRAWS = 10_000


def z_bound(alpha: float) -> float:
    """The two-sided standard normal quantile: |Z| > z_bound(alpha) with probability alpha."""
    return float(stats.norm.isf(alpha / 2))


def ess(draws: np.ndarray) -> float:
    """Bulk ESS (ArviZ's rank-normalised estimate) of (chain, draw) draws."""
    az = arviz()
    return float(az.ess(np.asarray(draws, np.float64), method="bulk"))


def ess_tail(draws: np.ndarray) -> float:
    az = arviz()
    return float(az.ess(np.asarray(draws, np.float64), method="tail"))


def mean_mcse(draws: np.ndarray) -> float:
    """Monte Carlo standard error of the mean of (chain, draw) draws: sd / sqrt(bulk ESS)."""
    x = np.asarray(draws, np.float64)
    return float(x.std(ddof=1) / math.sqrt(ess(x)))


def sd_relative_se(draws: np.ndarray) -> float:
    """Standard error of sd_hat / sd for (chain, draw) draws: sqrt((kurtosis - 1) / (4 ESS_2))."""
    x = np.asarray(draws, np.float64)
    dev2 = (x - x.mean()) ** 2
    kurt = float(np.mean(dev2 ** 2) / np.mean(dev2) ** 2)
    az = arviz()
    ess2 = float(az.ess(dev2, method="mean"))
    return math.sqrt(max(kurt - 1.0, 0.0) / (4.0 * max(ess2, 1.0)))


def mean_ok(draws: np.ndarray, truth: float, alpha: float, truth_mcse: float = 0.0) -> tuple[bool, float, float]:
    """(passed, |mean - truth| / MCSE, the bound) for the mean of (chain, draw) draws."""
    se = math.hypot(mean_mcse(draws), truth_mcse)
    z = abs(float(np.mean(draws)) - truth) / se
    return z <= z_bound(alpha), z, z_bound(alpha)


def sd_ok(draws: np.ndarray, truth: float, alpha: float, truth_draws: float | None = None) -> tuple[bool, float, float]:
    """(passed, |sd_hat / truth - 1|, the bound) for the sd of (chain, draw) draws; `truth_draws`: the
    number of independent draws the true sd was estimated from (None: known exactly)."""
    x = np.asarray(draws, np.float64)
    se = sd_relative_se(x)
    if truth_draws:
        se = math.hypot(se, math.sqrt(0.5 / truth_draws))
    err = abs(float(x.std(ddof=1)) / truth - 1.0)
    return err <= z_bound(alpha) * se, err, z_bound(alpha) * se


def rhat_bound(chains: int, ess_total: float, alpha: float) -> float:
    """The largest split R-hat a mixing sampler shows with probability 1 - alpha, for `chains` chains
    (each split in two) and `ess_total` effective draws over all of them (the smaller of bulk and tail)."""
    pieces = 2 * chains
    n_e = max(ess_total / pieces, 1.0)
    q = float(stats.chi2.isf(alpha / 2, pieces - 1))  # alpha / 2 each for the bulk and the folded R-hat
    return math.sqrt(1.0 + q / ((pieces - 1) * n_e))


def rhat_ok(draws: np.ndarray, alpha: float) -> tuple[bool, float, float]:
    """(passed, ArviZ's R-hat, the bound) for (chain, draw) draws of one scalar."""
    az = arviz()
    x = np.asarray(draws, np.float64)
    r = float(az.rhat(x))
    bound = rhat_bound(x.shape[0], min(ess(x), ess_tail(x)), alpha)
    return r <= bound, r, bound
