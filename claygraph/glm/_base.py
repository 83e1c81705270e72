"""What every estimator shares: input validation, the weighted objective, the solve on a split program.

An estimator states its objective in scikit-learn's terms,

    sum_i s_i loss_i / sum_i s_i + l2 / 2 * ||coef||^2,

and `GLMBase._solve` hands the program N times that (N the program's row count): row i weighs
N s_i / sum(s), the penalty is N l2, and the gradient tolerance is `tol` N, which is
scikit-learn's `tol` on the gradient of the mean objective. Small data (up to `SMALL` values in X)
are padded to powers of four: rows with weight 0, features with zero columns (whose coefficients
stay exactly 0: their gradient is the penalty's alone), so that fits of nearby shapes
(cross-validation folds, scikit-learn's checks) share one compiled program; larger data go in as
they are, without a copy when X is already float32. Without sample weights (and padding) every row
weighs 1 and the program has no weight array at all; the arrays the estimators make (targets,
weights) are allocated 64-byte aligned, so that XLA's CPU client uses them in place: a fit holds
no full-size copy of anything the user passed.

Fitted state is plain NumPy (`coef_`, `intercept_`, `n_iter_`, `fit_summary_`): an estimator
pickles and clones; plans and compiled programs live in `PROGRAMS`, keyed by model and shapes.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Any
from warnings import warn

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from claygraph.errors import DataError

SMALL = 1 << 18  # values in X up to which rows and features are padded to powers of four
MIN_ROWS, MIN_FEATURES = 256, 4


@dataclass(frozen=True)
class FitSummary:
    """How the solver ended: plain numbers, kept on the estimator as `fit_summary_`."""

    objective: float  # N x scikit-learn's objective, N = rows of the program
    iterations: int
    converged: bool
    grad_max: float
    message: str
    split: tuple[str, ...]
    rows: int  # N: the data's rows plus weight-0 padding


@dataclass(frozen=True)
class Problem:
    """One fit: the model, X, the targets (row dim first), per-row weights, the L2 strength, a start."""

    model: Callable
    X: np.ndarray
    targets: Mapping[str, tuple[np.ndarray, tuple[str, ...]]]  # name -> (values, dims)
    sample_weight: np.ndarray | None  # s_i >= 0, some > 0; None: every row weighs 1
    l2: float
    init: Mapping[str, np.ndarray] | None = None


def padded_shape(n: int, d: int) -> tuple[int, int]:
    """The program's (rows, features) for an n x d X: the next powers of four for small data, else (n, d)."""
    if n * d > SMALL:
        return n, d
    return max(MIN_ROWS, _power_of_four(n)), max(MIN_FEATURES, _power_of_four(d))


def _power_of_four(n: int) -> int:
    """The smallest power of four >= n: few distinct shapes, at most 4x the data (small data only)."""
    bits = (n - 1).bit_length()
    return 1 << (bits + (bits & 1))


ALIGN = 64  # bytes: XLA's CPU client uses host memory in place (no copy) at this alignment


def aligned_zeros(shape: tuple[int, ...], dtype) -> np.ndarray:
    """Zeros whose data start at a multiple of ALIGN bytes (NumPy guarantees 16)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.zeros(n + ALIGN, np.uint8)
    skip = -raw.ctypes.data % ALIGN
    return raw[skip:skip + n].view(dtype).reshape(shape)


def _pad(x: np.ndarray, shape: tuple[int, ...], dtype) -> np.ndarray:
    """x as `dtype` padded with zeros to `shape` (leading axes); no copy when nothing changes."""
    x = np.asarray(x)
    shape = tuple(shape) + x.shape[len(shape):]
    if x.shape == shape and x.dtype == dtype:
        return x
    out = aligned_zeros(shape, dtype)
    out[tuple(slice(0, k) for k in x.shape)] = x
    return out


def _weight(sw: np.ndarray | None, n: int, rows: int) -> np.ndarray | None:
    """Row i's weight N s_i / sum(s) as float32, 0 on padding rows; None when every row weighs 1."""
    if sw is None and rows == n:
        return None
    out = aligned_zeros((rows,), np.float32)
    if sw is None:
        out[:n] = rows / n
    else:
        np.multiply(sw, rows / float(np.sum(sw)), out=out[:n], casting="same_kind")
    return out


def problem_data(p: Problem):
    """The named-dim data of a problem: X, the targets, `weight` (unless every row weighs 1) and `penalty`
    (see `_models`)."""
    from claygraph.frontend.data import Data, array

    n = p.X.shape[0]
    rows, features = padded_shape(*p.X.shape)
    arrays = {k: array(_pad(v, (rows,), np.float32), *dims) for k, (v, dims) in p.targets.items()}
    arrays.update(X=array(_pad(p.X, (rows, features), np.float32), "row", "feature"),
                  penalty=array(np.float32(rows * p.l2)))
    weight = _weight(p.sample_weight, n, rows)
    if weight is not None:
        arrays["weight"] = array(weight, "row")
    # scikit-learn's validate_data has checked X and y (finite, numeric, consistent lengths) and the
    # weights are ours: Data's own pass over X would read 800 MB again for W1
    sizes = {d: n for a in arrays.values() for d, n in zip(a.dims, a.shape)}
    return Data._unchecked(arrays, sizes)


@dataclass
class _Compiled:
    plan: Any
    nbytes: int  # the data the plan and the first program hold on to


class ProgramCache:
    """Plans of recent fits, least recently used first out. The programs built from them share their
    split functions and everything jitted from those (MAP's loop included) through the partitioner's
    compile cache (`claygraph.partition.cache.COMPILED`), so a refit of the same shapes compiles nothing.

    An entry holds the data of the fit that built it (the plan keeps it), so the cache is bounded in
    entries and in bytes of such data; a fit whose data alone exceed `max_bytes` is planned afresh
    every time (its program still comes from the compile cache).
    """

    def __init__(self, size: int = 32, max_bytes: int = 128 << 20):
        self.size, self.max_bytes = size, max_bytes
        self._entries: OrderedDict[Hashable, _Compiled] = OrderedDict()

    def session(self, model: Callable, data, runtime, cluster, split):
        """A `Session` for `model(data)`: planned and compiled once per model, shapes and runtime."""
        from claygraph.infer.common import Session, setup
        from claygraph.runtime.local import Local

        local = runtime is None or isinstance(runtime, Local)
        key = (model, _shapes(data), ("local", getattr(runtime, "devices", 1)) if local else id(runtime),
               _hashable(cluster), None if split is None else (split,) if isinstance(split, str) else tuple(split))
        hit = self._entries.get(key)
        if hit is None:
            s = setup(model, data, runtime, cluster, split)
            hit = _Compiled(s.plan, sum(a.values.nbytes for a in data.arrays.values()))
            if hit.nbytes <= self.max_bytes:
                self._entries[key] = hit
            while len(self._entries) > self.size or sum(e.nbytes for e in self._entries.values()) > self.max_bytes:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(key)
            s = None
        runtime = runtime if runtime is not None else Local(devices=1)
        program = s.program if s is not None else runtime.compile(hit.plan, data)
        return Session(model, data, hit.plan, program, runtime, split)

    def clear(self) -> None:
        self._entries.clear()


def _shapes(data) -> tuple:
    return tuple((k, a.shape, str(a.dtype)) for k, a in sorted(data.arrays.items()))


def _hashable(x: Any) -> Hashable:
    try:
        hash(x)
        return x
    except TypeError:
        return id(x)


PROGRAMS = ProgramCache()

# scikit-learn's checks that a float32 program cannot pass (why: docs/inference.md, "Estimators")
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data":
        "integer weights and repeated rows give the same optimum, but the program computes in float32: "
        "the two fits agree to about 1e-6, not to the check's rtol=1e-7",
}


def expected_failed_checks(estimator) -> dict[str, str]:
    """For scikit-learn's `check_estimator(est, expected_failed_checks=...)` and `parametrize_with_checks`."""
    return dict(EXPECTED_FAILED_CHECKS)


class GLMBase(BaseEstimator):
    """Validation, the solve and prediction helpers shared by the claygraph estimators.

    Subclasses set `_parameter_checks` (name -> (test, what it must be)) and call `_solve`.
    """

    _parameter_checks: dict[str, tuple[Callable[[Any], bool], str]] = {
        "tol": (lambda v: _real(v) and v > 0, "a positive number"),
        "max_iter": (lambda v: _integer(v) and v >= 1, "an integer >= 1"),
        "fit_intercept": (lambda v: isinstance(v, (bool, np.bool_)), "True or False"),
        "warm_start": (lambda v: isinstance(v, (bool, np.bool_)), "True or False"),
    }

    def _check_parameters(self) -> None:
        for name, (ok, what) in self._parameter_checks.items():
            value = getattr(self, name)
            if not ok(value):
                raise ValueError(f"{type(self).__name__}: parameter {name}={value!r} must be {what}")

    def _validate_fit(self, X, y, sample_weight, **y_args) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """X (float32 or float64, kept without a copy when already one of them), y, and weights (None: all 1)."""
        self._check_parameters()
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], **y_args)
        return X, y, _sample_weight(sample_weight, X)

    def _validate_X(self, X) -> np.ndarray:
        check_is_fitted(self)
        return validate_data(self, X, dtype=[np.float64, np.float32], reset=False)

    def _linear(self, X) -> np.ndarray:
        """X @ coef_.T + intercept_, one column per row of coef_."""
        X = self._validate_X(X)
        return X @ self.coef_.T + self.intercept_

    def _warm(self, shapes: Mapping[str, tuple[int, ...]]) -> dict[str, np.ndarray] | None:
        """The previous solution as a starting point, when warm_start is on and the shapes still fit."""
        if not self.warm_start or not hasattr(self, "coef_"):
            return None
        previous = self._solution()
        if any(k not in previous or previous[k].shape != s for k, s in shapes.items()):
            return None
        return {k: previous[k] for k in shapes}

    def _solve(self, p: Problem) -> dict[str, np.ndarray]:
        """Minimise the problem's objective on the split program; record the summary; return the params."""
        from claygraph.infer.map import map as fit_map

        data = problem_data(p)
        rows, features = data.size("row"), data.size("feature")
        # coef's first axis is the feature axis, padded like X's columns
        init = None if p.init is None else {k: _pad(v, (features,), np.float32) if k == "coef" else v
                                            for k, v in p.init.items()}
        session = PROGRAMS.session(p.model, data, self.runtime, self.cluster, self.split)
        res = fit_map(p.model, data, runtime=session.runtime, session=session, tol=float(self.tol) * rows, scale=1.0,
                      max_iter=int(self.max_iter), init=init)
        self.fit_summary_ = FitSummary(float(res.objective), int(res.iterations), bool(res.converged),
                                       float(res.grad_max), res.message, tuple(res.plan.split), rows)
        if not res.converged:
            warn(f"{type(self).__name__} did not converge: {res.message}. Increase max_iter or tol, or scale "
                 f"the features.", ConvergenceWarning, stacklevel=3)
        params = {k: np.asarray(v, dtype=np.float64) for k, v in res.params.items()}
        params["coef"] = params["coef"][: p.X.shape[1]]
        return params


def _real(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) \
        and np.isfinite(v)


def _integer(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def _sample_weight(sample_weight, X: np.ndarray) -> np.ndarray | None:
    """scikit-learn's checks (shape, finite values), then non-negative with some weight > 0; None stays
    None (every row weighs 1: no array of ones)."""
    if sample_weight is None:
        return None
    sw = np.array(_check_sample_weight(sample_weight, X, dtype=np.float64), dtype=np.float64)
    if np.any(sw < 0):
        i = int(np.flatnonzero(sw < 0)[0])
        raise DataError(f"sample_weight must be non-negative; it has {sw[i]} at row {i}")
    if not np.any(sw > 0):
        raise DataError("Sample weights must contain at least one non-zero number: every sample_weight is zero")
    return sw
