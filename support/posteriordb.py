"""Reference posteriors from posteriordb, translated to NumPyro, and a comparison against them.

`POSTERIORS[name](stan_data) -> (model, Data)` holds one NumPyro translation of each posterior's
`model.stan`, with the claygraph `Data` built from its `data.json` (Stan's data format, a dict).
Parameter sites keep Stan's names, so the reference entry `beta[2]` is element 1 of site `beta`.
`load(name)` reads a posterior's files and returns a `Reference`; `compare(reference, draws)`
lines draws up against the reference summaries; `format_table(rows)` prints them.

The files live in `shared/data/posteriordb/` next to the repository (see its README.md); set
`CLAYGRAPH_POSTERIORDB` to read them from elsewhere. Translation notes: docs/posteriordb.md.
"""
from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.distributions import constraints
from numpyro.infer import Predictive

from claygraph.frontend.data import Data, array, index

Model = Callable[[Data], None]
Translation = Callable[[Mapping[str, Any]], tuple[Model, Data]]

F32 = np.float32


def default_root() -> Path:
    """Where the posteriordb folders are: `$CLAYGRAPH_POSTERIORDB`, else `shared/data/posteriordb` in the
    checkout or the nearest folder above it that has one (`<repo>/../shared/...` in this project)."""
    env = os.environ.get("CLAYGRAPH_POSTERIORDB")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent.parent
    for folder in (here, *here.parents):  # the checkout, then each folder above it
        cand = folder / "shared" / "data" / "posteriordb"
        if cand.is_dir():
            return cand
    return here.parent / "shared" / "data" / "posteriordb"


def _f32(x: Any) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).astype(F32)


def _flat(shape: tuple[int, ...] = ()) -> dist.Distribution:
    """Stan's implicit prior on an unconstrained parameter: uniform on the reals (improper)."""
    return dist.ImproperUniform(constraints.real, (), shape)


def _flat_positive() -> dist.Distribution:
    """Stan's implicit prior on `real<lower=0>`: uniform on (0, inf) (improper)."""
    return dist.ImproperUniform(constraints.positive, (), ())


def _rows(**columns: Any) -> Data:
    """Data from float columns along `row`, cast to float32 (arrays with explicit dims pass through)."""
    return Data(**{k: v if not isinstance(v, np.ndarray | list) else array(_f32(v), "row")
                   for k, v in columns.items()})


# -- eight schools, non-centred -------------------------------------------------------------------

def eight_schools_noncentered(d: Mapping[str, Any]) -> tuple[Model, Data]:
    data = Data(y=array(_f32(d["y"]), "school"), sigma=array(_f32(d["sigma"]), "school"))

    def model(data: Data) -> None:
        mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
        tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
        with numpyro.plate("school", data.size("school")):
            theta_trans = numpyro.sample("theta_trans", dist.Normal(0.0, 1.0))
            theta = numpyro.deterministic("theta", theta_trans * tau + mu)
            numpyro.sample("y", dist.Normal(theta, data.sigma), obs=data.y)

    return model, data


# -- simple and multiple linear regressions -------------------------------------------------------

def kilpisjarvi(d: Mapping[str, Any]) -> tuple[Model, Data]:
    # The prior means and sds are data in the Stan model; they are 0-d arrays here (no dims).
    data = Data(x=array(_f32(d["x"]), "row"), y=array(_f32(d["y"]), "row"),
                pmualpha=array(_f32(d["pmualpha"])), psalpha=array(_f32(d["psalpha"])),
                pmubeta=array(_f32(d["pmubeta"])), psbeta=array(_f32(d["psbeta"])))

    def model(data: Data) -> None:
        alpha = numpyro.sample("alpha", dist.Normal(data.pmualpha, data.psalpha))
        beta = numpyro.sample("beta", dist.Normal(data.pmubeta, data.psbeta))
        sigma = numpyro.sample("sigma", _flat_positive())
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("y", dist.Normal(alpha + beta * data.x, sigma), obs=data.y)

    return model, data


def diamonds(d: Mapping[str, Any]) -> tuple[Model, Data]:
    # transformed data: drop the intercept column and centre the other K - 1 columns
    X = np.asarray(d["X"], dtype=np.float64)[:, 1:]
    Xc = X - X.mean(axis=0)
    data = Data(Xc=array(Xc.astype(F32), "row", "feature"), Y=array(_f32(d["Y"]), "row"))

    def model(data: Data) -> None:
        b = numpyro.sample("b", dist.Normal(0.0, 1.0).expand([data.size("feature")]).to_event(1))
        intercept = numpyro.sample("Intercept", dist.StudentT(3.0, 8.0, 10.0))
        # student_t(3, 0, 10) truncated to sigma > 0 (the lccdf term is a constant)
        sigma = numpyro.sample("sigma", dist.TruncatedDistribution(dist.StudentT(3.0, 0.0, 10.0), low=0.0))
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("Y", dist.Normal(intercept + data.Xc @ b, sigma), obs=data.Y)

    return model, data


def blr(d: Mapping[str, Any]) -> tuple[Model, Data]:
    data = Data(X=array(_f32(d["X"]), "row", "feature"), y=array(_f32(d["y"]), "row"))

    def model(data: Data) -> None:
        beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([data.size("feature")]).to_event(1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(10.0))
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("y", dist.Normal(data.X @ beta, sigma), obs=data.y)

    return model, data


def ark(d: Mapping[str, Any]) -> tuple[Model, Data]:
    K = int(d["K"])
    data = Data(y=array(_f32(d["y"]), "time"))

    def model(data: Data) -> None:
        T = data.size("time")
        alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
        beta = numpyro.sample("beta", dist.Normal(0.0, 10.0).expand([K]).to_event(1))
        sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
        y = data.y
        # mu[t] = alpha + sum_k beta[k] * y[t - k] for t = K+1..T (1-based): lagged slices of y
        lags = jnp.stack([y[K - k:T - k] for k in range(1, K + 1)], axis=-1)
        mu = alpha + lags @ beta
        # the likelihood covers T - K points, which is no data dim, so it has no plate
        numpyro.sample("y", dist.Normal(mu, sigma).to_event(1), obs=y[K:])

    return model, data


def _linear(obs: str, terms: Sequence[str], sigma_prior: Callable[[], dist.Distribution] = _flat_positive,
            ) -> Callable[[Data], None]:
    """`obs ~ normal(beta[1] + beta[2] * terms[0] + ..., sigma)` with flat beta, as written in Stan."""

    def model(data: Data) -> None:
        beta = numpyro.sample("beta", _flat((len(terms) + 1,)))
        sigma = numpyro.sample("sigma", sigma_prior())
        with numpyro.plate("row", data.size("row")):
            mu = beta[0]
            for k, term in enumerate(terms, start=1):
                mu = mu + beta[k] * getattr(data, term)
            numpyro.sample(obs, dist.Normal(mu, sigma), obs=getattr(data, obs))

    return model


def _half_cauchy_2_5() -> dist.Distribution:
    return dist.HalfCauchy(2.5)


def kidscore_momiq(d: Mapping[str, Any]) -> tuple[Model, Data]:
    data = _rows(kid_score=d["kid_score"], mom_iq=d["mom_iq"])
    return _linear("kid_score", ["mom_iq"], _half_cauchy_2_5), data


def kidscore_interaction(d: Mapping[str, Any]) -> tuple[Model, Data]:
    mom_hs, mom_iq = np.asarray(d["mom_hs"], np.float64), np.asarray(d["mom_iq"], np.float64)
    data = _rows(kid_score=d["kid_score"], mom_hs=mom_hs, mom_iq=mom_iq, inter=mom_hs * mom_iq)
    return _linear("kid_score", ["mom_hs", "mom_iq", "inter"], _half_cauchy_2_5), data


def kidscore_mom_work(d: Mapping[str, Any]) -> tuple[Model, Data]:
    # mom_work (1..4) becomes a 0-based index column into the dim "mom_work"; level 1 is the baseline
    data = Data(kid_score=array(_f32(d["kid_score"]), "row"),
                mom_work=index(np.asarray(d["mom_work"], np.int32) - 1, "row", into="mom_work", size=4))

    def model(data: Data) -> None:
        beta = numpyro.sample("beta", _flat((4,)))
        sigma = numpyro.sample("sigma", _flat_positive())
        # beta[2] * work2 + beta[3] * work3 + beta[4] * work4 == [0, beta[2], beta[3], beta[4]][mom_work]
        level = jnp.concatenate([jnp.zeros((1,), beta.dtype), beta[1:4]])
        with numpyro.plate("row", data.size("row")):
            numpyro.sample("kid_score", dist.Normal(beta[0] + level[data.mom_work], sigma), obs=data.kid_score)

    return model, data


def earn_height(d: Mapping[str, Any]) -> tuple[Model, Data]:
    return _linear("earn", ["height"]), _rows(earn=d["earn"], height=d["height"])


def logearn_logheight_male(d: Mapping[str, Any]) -> tuple[Model, Data]:
    data = _rows(log_earn=np.log(np.asarray(d["earn"], np.float64)),
                 log_height=np.log(np.asarray(d["height"], np.float64)), male=d["male"])
    return _linear("log_earn", ["log_height", "male"]), data


def logearn_interaction_z(d: Mapping[str, Any]) -> tuple[Model, Data]:
    height, male = np.asarray(d["height"], np.float64), np.asarray(d["male"], np.float64)
    z_height = (height - height.mean()) / height.std(ddof=1)  # Stan's sd() divides by N - 1
    data = _rows(log_earn=np.log(np.asarray(d["earn"], np.float64)), z_height=z_height, male=male,
                 inter=z_height * male)
    return _linear("log_earn", ["z_height", "male", "inter"]), data


_MESQUITE = ["diam1", "diam2", "canopy_height", "total_height", "density", "group"]


def mesquite(d: Mapping[str, Any]) -> tuple[Model, Data]:
    data = _rows(weight=d["weight"], **{k: d[k] for k in _MESQUITE})
    return _linear("weight", _MESQUITE), data


def logmesquite_logvash(d: Mapping[str, Any]) -> tuple[Model, Data]:
    v = {k: np.asarray(d[k], np.float64) for k in ("weight", "diam1", "diam2", "canopy_height", "total_height")}
    data = _rows(log_weight=np.log(v["weight"]),
                 log_canopy_volume=np.log(v["diam1"] * v["diam2"] * v["canopy_height"]),
                 log_canopy_area=np.log(v["diam1"] * v["diam2"]),
                 log_canopy_shape=np.log(v["diam1"] / v["diam2"]),
                 log_total_height=np.log(v["total_height"]), group=d["group"])
    terms = ["log_canopy_volume", "log_canopy_area", "log_canopy_shape", "log_total_height", "group"]
    return _linear("log_weight", terms), data


def nes(d: Mapping[str, Any]) -> tuple[Model, Data]:
    # age_discrete (1..4) becomes a 0-based index column into "age"; level 1 (18-29) is the baseline
    cols = ("partyid7", "real_ideo", "race_adj", "educ1", "gender", "income")
    data = Data(**{k: array(_f32(d[k]), "row") for k in cols},
                age_discrete=index(np.asarray(d["age_discrete"], np.int32) - 1, "row", into="age", size=4))

    def model(data: Data) -> None:
        beta = numpyro.sample("beta", _flat((9,)))
        sigma = numpyro.sample("sigma", _flat_positive())
        # beta[4] * age30_44 + beta[5] * age45_64 + beta[6] * age65up == [0, beta[4..6]][age_discrete]
        age = jnp.concatenate([jnp.zeros((1,), beta.dtype), beta[3:6]])
        with numpyro.plate("row", data.size("row")):
            mu = (beta[0] + beta[1] * data.real_ideo + beta[2] * data.race_adj + age[data.age_discrete]
                  + beta[6] * data.educ1 + beta[7] * data.gender + beta[8] * data.income)
            numpyro.sample("partyid7", dist.Normal(mu, sigma), obs=data.partyid7)

    return model, data


POSTERIORS: dict[str, Translation] = {
    "arK-arK": ark,
    "diamonds-diamonds": diamonds,
    "earnings-earn_height": earn_height,
    "earnings-logearn_interaction_z": logearn_interaction_z,
    "earnings-logearn_logheight_male": logearn_logheight_male,
    "eight_schools-eight_schools_noncentered": eight_schools_noncentered,
    "kidiq-kidscore_interaction": kidscore_interaction,
    "kidiq-kidscore_momiq": kidscore_momiq,
    "kidiq_with_mom_work-kidscore_mom_work": kidscore_mom_work,
    "kilpisjarvi_mod-kilpisjarvi": kilpisjarvi,
    "mesquite-logmesquite_logvash": logmesquite_logvash,
    "mesquite-mesquite": mesquite,
    "nes2000-nes": nes,
    "sblrc-blr": blr,
}


# -- loading --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Reference:
    """A posterior's model and data, and its reference summaries under Stan's 1-based names."""

    name: str
    model: Model
    data: Data
    reference: dict[str, dict[str, float]]  # stan name -> mean, sd, mcse_mean, q05, q50, q95
    parameters: list[str]  # stan names, in reference.json's order
    info: dict[str, Any] | None = None  # info.json, as shipped


_STATS = ("mean", "sd", "mcse_mean", "q05", "q50", "q95")


def load(name: str, root: str | os.PathLike | None = None) -> Reference:
    """Read `<root>/<name>/{data,reference,info}.json` and build the model and its Data."""
    if name not in POSTERIORS:
        raise KeyError(f"no translation for posterior {name!r}; known: {sorted(POSTERIORS)}")
    folder = Path(root) if root is not None else default_root()
    folder = folder / name
    if not folder.is_dir():
        raise FileNotFoundError(f"posterior folder {folder} not found; set CLAYGRAPH_POSTERIORDB or pass root=")
    stan_data = json.loads((folder / "data.json").read_text())
    ref = json.loads((folder / "reference.json").read_text())["parameters"]
    info_path = folder / "info.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else None
    model, data = POSTERIORS[name](stan_data)
    return Reference(name=name, model=model, data=data, reference=summaries(ref), parameters=list(ref), info=info)


def summaries(parameters: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """A reference file's `parameters` (name -> statistics) as floats, the statistics the checks read."""
    return {p: {k: float(v[k]) for k in _STATS} for p, v in parameters.items()}


# -- comparison -----------------------------------------------------------------------------------

_NAME = re.compile(r"^\s*([A-Za-z_]\w*)\s*(?:\[\s*(\d+(?:\s*,\s*\d+)*)\s*\])?\s*$")


def parse_name(stan_name: str) -> tuple[str, tuple[int, ...]]:
    """`beta[2]` -> ("beta", (1,)), `x[1,2]` -> ("x", (0, 1)), `sigma` -> ("sigma", ())."""
    m = _NAME.match(stan_name)
    if not m:
        raise ValueError(f"cannot parse parameter name {stan_name!r}")
    idx = () if m.group(2) is None else tuple(int(i) - 1 for i in m.group(2).split(","))
    if any(i < 0 for i in idx):
        raise ValueError(f"parameter name {stan_name!r} is not 1-based")
    return m.group(1), idx


def _column(values: np.ndarray, idx: tuple[int, ...], stan_name: str) -> np.ndarray:
    """The draws of one element: `values` has a leading sample axis, `idx` indexes the rest."""
    values = np.asarray(values)
    event = values.shape[1:]
    if not idx:
        if math.prod(event) != 1:
            raise ValueError(f"{stan_name!r} is a scalar in the reference but its draws have event shape {event}")
        return values.reshape(values.shape[0])
    if len(idx) != len(event):
        if len(idx) == 1 and idx[0] < math.prod(event) and sum(s != 1 for s in event) <= 1:
            return values.reshape(values.shape[0], -1)[:, idx[0]]
        raise ValueError(f"{stan_name!r} has {len(idx)} indices but its draws have event shape {event}")
    if any(i >= s for i, s in zip(idx, event)):
        raise ValueError(f"{stan_name!r} is out of range for draws with event shape {event}")
    return values[(slice(None),) + idx]


@dataclass(frozen=True)
class Row:
    """One parameter: draws' mean and sd against the reference's."""

    param: str
    mean: float
    sd: float
    ref_mean: float
    ref_sd: float
    z: float  # |mean - ref_mean| / ref_sd
    sd_ratio: float  # sd / ref_sd
    ref_mcse: float = float("nan")  # the reference's mcse_mean
    q05: float = float("nan")
    q95: float = float("nan")
    ref_q05: float = float("nan")
    ref_q95: float = float("nan")
    n: int = 0  # number of draws


def _deterministic_draws(reference: Reference, draws: Mapping[str, np.ndarray], sites: set[str]) -> dict:
    """Deterministic sites of the model (e.g. eight schools' theta) computed from the latent draws."""
    samples = {k: np.asarray(v) for k, v in draws.items()}
    pred = Predictive(reference.model, posterior_samples=samples, return_sites=sorted(sites))
    out = pred(jax.random.PRNGKey(0), reference.data)
    return {k: np.asarray(v) for k, v in out.items()}


def _deterministic_sites(reference: Reference) -> set[str]:
    tr = handlers.trace(handlers.seed(reference.model, jax.random.PRNGKey(0))).get_trace(reference.data)
    return {k for k, s in tr.items() if s["type"] == "deterministic"}


def with_derived(reference: Reference, draws: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """`draws` plus the reference parameters that the model records with `numpyro.deterministic`
    and `draws` lacks (eight schools' `theta`), computed from the draws (leading sample axis)."""
    draws = dict(draws)
    absent = {parse_name(p)[0] for p in reference.parameters} - set(draws)
    derivable = absent & _deterministic_sites(reference) if absent else set()
    if derivable:
        draws.update(_deterministic_draws(reference, draws, derivable))
    return draws


def compare(reference: Reference, draws: Mapping[str, np.ndarray], missing: str = "derive") -> list[Row]:
    """One Row per reference parameter; `draws` maps a site name to draws with a leading sample axis.

    A reference parameter whose site is not in `draws` is, with `missing="derive"` (default),
    computed from the draws when the model records it with `numpyro.deterministic` (eight
    schools' `theta`) and otherwise raises KeyError; `missing="skip"` leaves such rows out and
    `missing="raise"` always raises.
    """
    if missing not in ("derive", "skip", "raise"):
        raise ValueError(f"missing must be 'derive', 'skip' or 'raise', not {missing!r}")
    draws = with_derived(reference, draws) if missing == "derive" else dict(draws)
    absent = {parse_name(p)[0] for p in reference.parameters} - set(draws)
    if absent and missing != "skip":
        raise KeyError(f"draws have no site for {sorted(absent)} (sites given: {sorted(draws)})")
    rows = []
    for p in reference.parameters:
        base, idx = parse_name(p)
        if base not in draws:
            continue
        x = _column(draws[base], idx, p).astype(np.float64)
        ref = reference.reference[p]
        mean, sd = float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else float("nan")
        q05, q95 = (float(q) for q in np.quantile(x, [0.05, 0.95]))
        rows.append(Row(param=p, mean=mean, sd=sd, ref_mean=ref["mean"], ref_sd=ref["sd"],
                        z=abs(mean - ref["mean"]) / ref["sd"], sd_ratio=sd / ref["sd"], ref_mcse=ref["mcse_mean"],
                        q05=q05, q95=q95, ref_q05=ref["q05"], ref_q95=ref["q95"], n=int(x.size)))
    return rows


@dataclass(frozen=True)
class Check:
    """MCMC draws against the reference: the rows, and the parameters outside the tolerance."""

    rows: list[Row]
    failures: list[str]
    table: str
    ratios: list[tuple[str, float]] = ()  # (check, its statistic / its bound): above 1 fails (the seed study)

    @property
    def ok(self) -> bool:
        return not self.failures


def check_mcmc(reference: Reference, posterior: Mapping[str, Any], mean_tol: float = 0.1, sd_tol: float = 0.1,
               alpha: float = 1e-4, z: float | None = None, sd_additive: bool = False) -> Check:
    """Every parameter's mean within `mean_tol` reference sd plus z Monte Carlo standard errors (ours
    from the element's bulk ESS, combined with the reference's mcse), and its sd within the larger of
    `sd_tol` and z standard errors of the sd ratio (`sd_additive`: their sum; ours from the kurtosis and
    the ESS of the squared deviations, combined with the reference's from its draws, `info["draws"]` or
    posteriordb's 10,000): z for a false-failure rate of `alpha` over all the checks (support/stats.py)
    unless given. `posterior`: site -> (chain, draw, ...) arrays or xarray DataArrays (an ArviZ
    posterior group)."""
    from support import stats

    arrays = {k: np.asarray(getattr(v, "values", v)) for k, v in posterior.items()}
    chains, n = next(iter(arrays.values())).shape[:2]
    flat = with_derived(reference, {k: v.reshape((-1,) + v.shape[2:]) for k, v in arrays.items()})
    rows = compare(reference, flat)
    z = stats.z_bound(alpha / (2 * max(len(rows), 1))) if z is None else z
    ref_draws = float((reference.info or {}).get("draws", stats.REFERENCE_DRAWS))
    failures, ratios = [], []
    for r in rows:
        base, idx = parse_name(r.param)
        column = _column(flat[base], idx, r.param).reshape(chains, n)
        mcse = math.hypot(r.ref_mcse, stats.mean_mcse(column))
        sd_se = math.hypot(stats.sd_relative_se(column), math.sqrt(0.5 / ref_draws))
        mean_r = abs(r.mean - r.ref_mean) / (mean_tol * r.ref_sd + z * mcse)
        sd_r = abs(r.sd_ratio - 1) / (sd_tol + z * sd_se if sd_additive else max(sd_tol, z * sd_se))
        ratios += [(f"mean {r.param}", mean_r), (f"sd {r.param}", sd_r)]
        if mean_r >= 1 or sd_r >= 1:
            failures.append(f"{r.param}: mean {r.mean:.4g} vs {r.ref_mean:.4g} (mcse {mcse:.2g}), "
                            f"sd ratio {r.sd_ratio:.3f} (se {sd_se:.3f}, z {z:.2f})")
    return Check(rows, failures, format_table(rows, title=reference.name), ratios)


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return str(v)
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        return f"{v:.4g}"
    return f"{v:.4f}"


def format_table(rows: Sequence[Row], title: str | None = None) -> str:
    """A plain-text table: param, mean, ref mean, sd, ref sd, z, sd ratio."""
    header = ("param", "mean", "ref_mean", "sd", "ref_sd", "z", "sd_ratio")
    body = [(r.param, _fmt(r.mean), _fmt(r.ref_mean), _fmt(r.sd), _fmt(r.ref_sd), f"{r.z:.3f}", f"{r.sd_ratio:.3f}")
            for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(header)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [title] if title else []
    out += [line(header), "  ".join("-" * w for w in widths)] + [line(b) for b in body]
    if rows:
        out.append(f"max z = {max(r.z for r in rows):.3f}, sd_ratio in "
                   f"[{min(r.sd_ratio for r in rows):.3f}, {max(r.sd_ratio for r in rows):.3f}]")
    return "\n".join(out)


__all__ = ["POSTERIORS", "Reference", "Row", "compare", "default_root", "format_table", "load", "parse_name"]
