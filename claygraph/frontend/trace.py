"""Tracing a NumPyro model: its latent sites, plates, and potential energy as a function of data."""
from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
import numpyro
from numpyro.distributions.transforms import biject_to
from numpyro.infer import init_to_uniform
from numpyro.infer.util import constrain_fn, log_density, potential_energy

from claygraph.errors import ModelError
from claygraph.frontend.data import Data


@dataclass(frozen=True, slots=True)
class Site:
    """A latent sample site, as the potential sees it: unconstrained shape, plate dims per axis."""

    name: str
    shape: tuple[int, ...]  # unconstrained
    dtype: np.dtype
    constrained_shape: tuple[int, ...]
    plate_dims: tuple[str | None, ...]  # one per unconstrained axis; None where no plate names it
    support: str


@dataclass(frozen=True, slots=True)
class ModelInfo:
    sites: tuple[Site, ...]
    plates: tuple[tuple[str, int], ...]
    observed: tuple[str, ...]
    observed_plates: frozenset[str] = frozenset()  # plates that have observed sites under them

    def site(self, name: str) -> Site:
        return next(s for s in self.sites if s.name == name)


def user_line(model: Callable, exc: BaseException | None = None) -> str:
    """The deepest frame of the model's own file in a traceback, as 'file:line: code'."""
    target = getattr(getattr(model, "__code__", None), "co_filename", None)
    frames = traceback.extract_tb(exc.__traceback__) if exc is not None else []
    own = [f for f in frames if f.filename == target]
    if not own:
        return f"{target or '<model>'}"
    f = own[-1]
    return f"{f.filename}:{f.lineno}: {(f.line or '').strip()}"


def _model_error(model: Callable, exc: Exception, what: str) -> ModelError:
    name = getattr(model, "__name__", "model")
    return ModelError(f"{what} model {name!r} failed at {user_line(model, exc)}\n  {type(exc).__name__}: {exc}")


def _plate_dims(site: Mapping[str, Any], ndim_unconstrained: int) -> tuple[str | None, ...]:
    batch = len(site["fn"].batch_shape)
    dims: list[str | None] = [None] * ndim_unconstrained
    for frame in site["cond_indep_stack"]:
        axis = batch + frame.dim
        if 0 <= axis < ndim_unconstrained:
            dims[axis] = frame.name
    return tuple(dims)


def _site_info(site: Mapping[str, Any]) -> Site:
    fn = site["fn"]
    if fn.support.is_discrete:
        raise ModelError(f"latent site {site['name']!r} is discrete ({type(fn).__name__}); claygraph needs "
                         f"continuous latent sites: marginalise it out or observe it")
    value = site["value"]
    z = biject_to(fn.support).inv(value)
    return Site(site["name"], tuple(z.shape), np.dtype(z.dtype), tuple(value.shape),
                _plate_dims(site, len(z.shape)), _support_name(fn.support))


def _support_name(support: Any) -> str:
    while hasattr(support, "base_constraint"):  # independent(real, 1) is shown as its base, Real
        support = support.base_constraint
    return type(support).__name__.lstrip("_")


def model_info(model: Callable, data: Data) -> ModelInfo:
    """Sites and plates of `model(data)`, found by tracing with abstract data (no data touched)."""
    found: dict[str, Any] = {}

    def run(values):
        view = data.with_values(values)
        # substitute like NumPyro's initialize_model, so that improper priors need no sampler
        seeded = numpyro.handlers.substitute(numpyro.handlers.seed(model, 0), substitute_fn=init_to_uniform)
        tr = numpyro.handlers.trace(seeded).get_trace(view)
        sites, plates, observed, over_obs = [], {}, [], set()
        for name, site in tr.items():
            if site["type"] == "plate":
                plates[name] = int(site["args"][0])
            elif site["type"] == "sample" and site.get("is_observed"):
                observed.append(name)
                over_obs.update(f.name for f in site["cond_indep_stack"])
            elif site["type"] == "sample":
                sites.append(_site_info(site))
        found["info"] = ModelInfo(tuple(sites), tuple(plates.items()), tuple(observed), frozenset(over_obs))
        return 0.0

    abstract = {k: jax.ShapeDtypeStruct(a.shape, a.dtype) for k, a in data.arrays.items()}
    try:
        jax.eval_shape(run, abstract)
    except ModelError:
        raise
    except Exception as e:  # the user's model raised: say where in *their* code
        raise _model_error(model, e, "tracing") from e
    info = found["info"]
    _check_plates(model, info, data)
    return info


def _check_plates(model: Callable, info: ModelInfo, data: Data) -> None:
    known = data.dims
    for name, size in info.plates:
        # a plate that is not a data dim defines a latent dim of its own size (basis functions,
        # years of a random walk, latent factors); over observations it must name the data's dim
        if name not in known and name in info.observed_plates:
            raise ModelError(f"plate {name!r} in model {getattr(model, '__name__', 'model')!r} has observed sites "
                             f"under it but is not a dim of the data (dims: {sorted(known)}); name plates over "
                             f"observations after data dims, e.g. numpyro.plate('row', data.size('row')). (A plate "
                             f"over latent sites only may have any name: it defines a latent dim.)")
        if name in known and size != known[name]:
            raise ModelError(f"plate {name!r} has size {size} but dim {name!r} of the data has size "
                             f"{known[name]}; use numpyro.plate({name!r}, data.size({name!r}))")


def potential_fn(model: Callable, data: Data,
                 jacobian: bool = True) -> Callable[[Mapping[str, Any], Mapping[str, Any]], Any]:
    """(unconstrained params, data values) -> NumPyro's potential energy of `model`.

    With jacobian=False the log-Jacobian of the constraining transforms is left out: the
    minimum is then the mode of the density in the constrained space.
    """

    def fn(params, values):
        view = data.with_values(values)
        if jacobian:
            return potential_energy(model, (view,), {}, dict(params))
        constrained = constrain_fn(model, (view,), {}, dict(params))
        return -log_density(model, (view,), {}, constrained)[0]

    return fn


def constrain(model: Callable, data: Data, params: Mapping[str, Any]) -> dict[str, Any]:
    """Unconstrained params -> the model's constrained latent values (site by site)."""
    return constrain_fn(model, (data,), {}, dict(params))


