"""The public model zoo: models as their authors wrote them in NumPyro's examples and notebooks and
in posteriordb (continuous latents only), each with a data generator at test size.

Every model takes one argument, a `cg.Data`, and is otherwise written the way its source writes it:
the same priors, the same plates, the same indexing, `jax.lax.scan` and NumPyro's contrib `scan`
where the source uses them. Only the data are made here (seeded, small), named with dims.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.control_flow import scan
from numpyro.contrib.hsgp.approximation import hsgp_squared_exponential
from numpyro.infer.reparam import LocScaleReparam

import claygraph as cg


@dataclass(frozen=True)
class Entry:
    """One zoo model: where it comes from, its data maker, and what the zoo test checks of it."""

    name: str
    model: Callable
    data: Callable[[], cg.Data]
    source: str
    dims: dict[str, tuple] | None = None  # expected dims of some parameters
    nuts: bool = False  # one of the models whose short NUTS run is compared with NumPyro's


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _f(x) -> np.ndarray:
    return np.asarray(x, np.float32)


# -- hierarchies -------------------------------------------------------------------------------

def eight_schools(data):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", data.size("school")):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, data.sigma), obs=data.y)


def eight_schools_reparam(data):
    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("school", data.size("school")):
        with numpyro.handlers.reparam(config={"theta": LocScaleReparam(centered=0)}):
            theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, data.sigma), obs=data.y)


def schools_data():
    y = _f([28, 8, -3, 7, -1, 1, 18, 12])
    sigma = _f([15, 10, 16, 11, 9, 11, 10, 18])
    return cg.Data(y=cg.array(y, "school"), sigma=cg.array(sigma, "school"))


def baseball_pooled(data):
    """Partial pooling on the probability scale (Efron and Morris's batting averages)."""
    phi = numpyro.sample("phi", dist.Uniform(0.0, 1.0))
    kappa = numpyro.sample("kappa", dist.Pareto(1.0, 1.5))
    with numpyro.plate("player", data.size("player")):
        theta = numpyro.sample("theta", dist.Beta(phi * kappa, (1.0 - phi) * kappa))
        numpyro.sample("hits", dist.Binomial(data.at_bats, probs=theta), obs=data.hits)


def baseball_logit(data):
    """Partial pooling on the logit scale."""
    loc = numpyro.sample("loc", dist.Normal(-1.0, 1.0))
    scale = numpyro.sample("scale", dist.HalfCauchy(1.0))
    with numpyro.plate("player", data.size("player")):
        alpha = numpyro.sample("alpha", dist.Normal(loc, scale))
        numpyro.sample("hits", dist.Binomial(data.at_bats, logits=alpha), obs=data.hits)


def baseball_data(players: int = 18):
    rng = _rng(1)
    at_bats = np.full(players, 45)
    hits = rng.binomial(at_bats, rng.beta(27, 73, players))
    return cg.Data(at_bats=cg.array(_f(at_bats), "player"), hits=cg.array(_f(hits), "player"))


def ucbadmit(data):
    """Varying intercepts and slopes by department, correlated through an LKJ prior."""
    v_mu = numpyro.sample("v_mu", dist.Normal(0.0, jnp.array([4.0, 1.0])))
    sigma = numpyro.sample("sigma", dist.HalfNormal(jnp.ones(2)))
    L_Rho = numpyro.sample("L_Rho", dist.LKJCholesky(2, concentration=2.0))
    scale_tril = sigma[..., jnp.newaxis] * L_Rho
    with numpyro.plate("dept", data.size("dept")):
        v = numpyro.sample("v", dist.MultivariateNormal(v_mu, scale_tril=scale_tril))
    logits = v[data.dept, 0] + v[data.dept, 1] * data.male
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("admit", dist.Binomial(data.applications, logits=logits), obs=data.admit)


def ucbadmit_data():
    rng = _rng(2)
    dept = np.repeat(np.arange(6), 2).astype(np.int32)
    male = _f(np.tile([1, 0], 6))
    applications = rng.integers(20, 400, 12)
    admit = rng.binomial(applications, 1 / (1 + np.exp(-(rng.normal(0, 1, 6)[dept] - 0.1 * male))))
    return cg.Data(dept=cg.index(dept, "row", into="dept", size=6), male=cg.array(male, "row"),
                   applications=cg.array(_f(applications), "row"), admit=cg.array(_f(admit), "row"))


def fvc_patients(data):
    """The notebook's pulmonary-function model: a line per patient, pooled."""
    mu_a = numpyro.sample("mu_a", dist.Normal(0.0, 500.0))
    sigma_a = numpyro.sample("sigma_a", dist.HalfNormal(100.0))
    mu_b = numpyro.sample("mu_b", dist.Normal(0.0, 3.0))
    sigma_b = numpyro.sample("sigma_b", dist.HalfNormal(3.0))
    with numpyro.plate("patient", data.size("patient")):
        a = numpyro.sample("a", dist.Normal(mu_a, sigma_a))
        b = numpyro.sample("b", dist.Normal(mu_b, sigma_b))
    sigma = numpyro.sample("sigma", dist.HalfNormal(100.0))
    fvc_est = a[data.patient] + b[data.patient] * data.weeks
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("obs", dist.Normal(fvc_est, sigma), obs=data.fvc)


def fvc_data(patients: int = 7, rows: int = 40):
    rng = _rng(3)
    patient = rng.integers(0, patients, rows).astype(np.int32)
    weeks = rng.uniform(0, 60, rows)
    line = rng.normal(2500, 300, patients)[patient] + rng.normal(-5, 2, patients)[patient] * weeks
    fvc = line + rng.normal(0, 80, rows)
    return cg.Data(patient=cg.index(patient, "row", into="patient", size=patients), weeks=cg.array(_f(weeks), "row"),
                   fvc=cg.array(_f(fvc), "row"))


def irt_2pl(data):
    """posteriordb's hierarchical two-parameter IRT: students crossed with items."""
    sigma_theta = numpyro.sample("sigma_theta", dist.HalfCauchy(2.0))
    mu_b = numpyro.sample("mu_b", dist.Normal(0.0, 5.0))
    sigma_b = numpyro.sample("sigma_b", dist.HalfCauchy(2.0))
    sigma_a = numpyro.sample("sigma_a", dist.HalfCauchy(2.0))
    with numpyro.plate("student", data.size("student")):
        theta = numpyro.sample("theta", dist.Normal(0.0, sigma_theta))
    with numpyro.plate("item", data.size("item")):
        a = numpyro.sample("a", dist.LogNormal(0.0, sigma_a))
        b = numpyro.sample("b", dist.Normal(mu_b, sigma_b))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Bernoulli(logits=a[data.item] * (theta[data.student] - b[data.item])), obs=data.y)


def irt_data(students: int = 12, items: int = 5):
    rng = _rng(4)
    s, i = np.meshgrid(np.arange(students), np.arange(items), indexing="ij")
    s, i = s.ravel().astype(np.int32), i.ravel().astype(np.int32)
    p = 1 / (1 + np.exp(-(rng.normal(0, 1, students)[s] - rng.normal(0, 1, items)[i])))
    return cg.Data(student=cg.index(s, "row", into="student", size=students),
                   item=cg.index(i, "row", into="item", size=items), y=cg.array(_f(rng.random(s.size) < p), "row"))


# -- regressions --------------------------------------------------------------------------------

def divorce(data):
    """Rethinking's divorce rate on marriage rate and median age (the regression notebook)."""
    a = numpyro.sample("a", dist.Normal(0.0, 0.2))
    bM = numpyro.sample("bM", dist.Normal(0.0, 0.5))
    bA = numpyro.sample("bA", dist.Normal(0.0, 0.5))
    sigma = numpyro.sample("sigma", dist.Exponential(1.0))
    mu = a + bM * data.marriage + bA * data.age
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("obs", dist.Normal(mu, sigma), obs=data.divorce)


def divorce_data(rows: int = 50):
    rng = _rng(5)
    marriage, age = rng.normal(size=rows), rng.normal(size=rows)
    divorce_ = -0.6 * age + rng.normal(0, 0.8, rows)
    return cg.Data(marriage=cg.array(_f(marriage), "row"), age=cg.array(_f(age), "row"),
                   divorce=cg.array(_f(divorce_), "row"))


def covtype(data):
    """The covtype example's logistic regression (no intercept, a unit normal on every weight)."""
    dim = data.X.shape[1]
    coefs = numpyro.sample("coefs", dist.Normal(jnp.zeros(dim), jnp.ones(dim)))
    logits = jnp.dot(data.X, coefs)
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("obs", dist.Bernoulli(logits=logits), obs=data.y)


def covtype_data(rows: int = 60, features: int = 5):
    rng = _rng(6)
    X = rng.normal(size=(rows, features))
    y = rng.random(rows) < 1 / (1 + np.exp(-X @ rng.normal(size=features)))
    return cg.Data(X=cg.array(_f(X), "row", "feature"), y=cg.array(_f(y), "row"))


def horseshoe(data):
    """Sparse regression with a horseshoe prior (the horseshoe regression example)."""
    D = data.X.shape[1]
    lambdas = numpyro.sample("lambdas", dist.HalfCauchy(jnp.ones(D)))
    tau = numpyro.sample("tau", dist.HalfCauchy(jnp.ones(1)))
    unscaled_betas = numpyro.sample("unscaled_betas", dist.Normal(0.0, jnp.ones(D)))
    scaled_betas = numpyro.deterministic("betas", tau * lambdas * unscaled_betas)
    mean_function = jnp.dot(data.X, scaled_betas)
    prec_obs = numpyro.sample("prec_obs", dist.Gamma(3.0, 1.0))
    sigma_obs = 1.0 / jnp.sqrt(prec_obs)
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("Y", dist.Normal(mean_function, sigma_obs), obs=data.y)


def horseshoe_data(rows: int = 40, features: int = 6):
    rng = _rng(7)
    X = rng.normal(size=(rows, features))
    y = X[:, 0] * 1.5 - X[:, 1] + rng.normal(0, 0.5, rows)
    return cg.Data(X=cg.array(_f(X), "row", "feature"), y=cg.array(_f(y), "row"))


def bnn(data):
    """The BNN example: two tanh hidden layers, Normal weights, a Gamma prior on the precision."""
    D_X, D_H = data.X.shape[1], 4
    w1 = numpyro.sample("w1", dist.Normal(jnp.zeros((D_X, D_H)), jnp.ones((D_X, D_H))))
    z1 = jnp.tanh(jnp.matmul(data.X, w1))
    w2 = numpyro.sample("w2", dist.Normal(jnp.zeros((D_H, D_H)), jnp.ones((D_H, D_H))))
    z2 = jnp.tanh(jnp.matmul(z1, w2))
    w3 = numpyro.sample("w3", dist.Normal(jnp.zeros((D_H, 1)), jnp.ones((D_H, 1))))
    z3 = jnp.matmul(z2, w3)
    prec_obs = numpyro.sample("prec_obs", dist.Gamma(3.0, 1.0))
    sigma_obs = 1.0 / jnp.sqrt(prec_obs)
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("Y", dist.Normal(z3, sigma_obs).to_event(1), obs=data.Y)


def bnn_data(rows: int = 30, features: int = 3):
    rng = _rng(8)
    X = rng.normal(size=(rows, features))
    Y = np.sin(X[:, :1] * 2) + rng.normal(0, 0.1, (rows, 1))
    return cg.Data(X=cg.array(_f(X), "row", "feature"), Y=cg.array(_f(Y), "row", "out"))


def kidiq_interaction(data):
    """posteriordb kidiq-kidscore_interaction: flat coefficients, as Stan writes it."""
    beta = numpyro.sample("beta", dist.ImproperUniform(dist.constraints.real, (), (4,)))
    sigma = numpyro.sample("sigma", dist.ImproperUniform(dist.constraints.positive, (), ()))
    mu = beta[0] + beta[1] * data.mom_hs + beta[2] * data.mom_iq + beta[3] * data.mom_hs * data.mom_iq
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("kid_score", dist.Normal(mu, sigma), obs=data.kid_score)


def kidiq_data(rows: int = 60):
    rng = _rng(9)
    hs = _f(rng.random(rows) < 0.8)
    iq = rng.normal(1.0, 0.15, rows)  # in hundreds: keeps the flat-prior posterior well scaled
    score = 20 + 30 * hs + 50 * iq - 20 * hs * iq + rng.normal(0, 18, rows)
    return cg.Data(mom_hs=cg.array(hs, "row"), mom_iq=cg.array(_f(iq), "row"), kid_score=cg.array(_f(score), "row"))


def roaches_negbin(data):
    """posteriordb roaches-roaches_negbinomial: log exposure as an offset, overdispersed counts."""
    beta = numpyro.sample("beta", dist.Normal(0.0, 2.5).expand([data.X.shape[1]]).to_event(1))
    phi = numpyro.sample("phi", dist.HalfCauchy(5.0))
    eta = jnp.log(data.exposure) + data.X @ beta
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.NegativeBinomial2(jnp.exp(eta), phi), obs=data.y)


def roaches_data(rows: int = 50):
    rng = _rng(10)
    X = np.column_stack([np.ones(rows), rng.normal(size=(rows, 3))])
    exposure = rng.uniform(0.5, 1.5, rows)
    y = rng.poisson(exposure * np.exp(X @ np.array([1.0, 0.5, -0.3, 0.0]) + rng.gamma(2, 0.5, rows) - 1))
    return cg.Data(X=cg.array(_f(X), "row", "feature"), exposure=cg.array(_f(exposure), "row"),
                   y=cg.array(_f(y), "row"))


def gauss_mix(data):
    """posteriordb low_dim_gauss_mix: two normals, mixed by theta (ordered means via the data's
    clear separation)."""
    mu = numpyro.sample("mu", dist.Normal(0.0, 2.0).expand([2]).to_event(1))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0).expand([2]).to_event(1))
    theta = numpyro.sample("theta", dist.Beta(5.0, 5.0))
    mix = dist.MixtureSameFamily(dist.Categorical(probs=jnp.stack([theta, 1.0 - theta])), dist.Normal(mu, sigma))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", mix, obs=data.y)


def gauss_mix_data(rows: int = 60):
    rng = _rng(11)
    y = np.where(rng.random(rows) < 0.4, rng.normal(-2.5, 1.0, rows), rng.normal(2.5, 1.0, rows))
    return cg.Data(y=cg.array(_f(y), "row"))


# -- latent dims --------------------------------------------------------------------------------

def ppca(data):
    """Probabilistic PCA: the latent factors' plate names no data dim."""
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
    with numpyro.plate("factor", 2):
        with numpyro.plate("feature", data.size("feature"), dim=-2):
            W = numpyro.sample("W", dist.Normal(0.0, 1.0))
        with numpyro.plate("row", data.size("row"), dim=-2):
            z = numpyro.sample("z", dist.Normal(0.0, 1.0))
    with numpyro.plate("feature", data.size("feature"), dim=-1):
        with numpyro.plate("row", data.size("row"), dim=-2):
            numpyro.sample("X", dist.Normal(z @ W.T, sigma), obs=data.X)


def ppca_data(rows: int = 20, features: int = 4):
    rng = _rng(12)
    X = rng.normal(size=(rows, 2)) @ rng.normal(size=(2, features)) + rng.normal(0, 0.3, (rows, features))
    return cg.Data(X=cg.array(_f(X), "row", "feature"))


def hsgp(data):
    """The HSGP example: numpyro.contrib.hsgp's approximation (its own plate over 'basis')."""
    alpha = numpyro.sample("alpha", dist.InverseGamma(5.0, 5.0))
    length = numpyro.sample("length", dist.InverseGamma(5.0, 1.0))
    noise = numpyro.sample("noise", dist.InverseGamma(5.0, 1.0))
    f = hsgp_squared_exponential(x=data.x, alpha=alpha, length=length, ell=1.3, m=8)
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(f, noise), obs=data.y)


def hsgp_data(rows: int = 30):
    rng = _rng(13)
    x = np.sort(rng.uniform(-1, 1, rows))
    return cg.Data(x=cg.array(_f(x), "row"), y=cg.array(_f(np.sin(3 * x) + rng.normal(0, 0.2, rows)), "row"))


def mortality(data):
    """The mortality example: age and area effects, age drifts, a padded random walk over years,
    gathered by three index columns from one age x area x year rate tensor."""
    A, S, T = data.size("age_groups"), data.size("space"), data.size("time")
    alpha = numpyro.sample("alpha", dist.Normal(0.0, 10.0))
    sigma_age = numpyro.sample("sigma_age", dist.HalfNormal(1.0))
    sigma_space = numpyro.sample("sigma_space", dist.HalfNormal(1.0))
    sigma_rw = numpyro.sample("sigma_rw", dist.HalfNormal(1.0))
    with numpyro.plate("age_groups", A):
        alpha_age = numpyro.sample("alpha_age", dist.Normal(0.0, sigma_age))
        beta_age = numpyro.sample("beta_age", dist.Normal(0.0, 0.1))
    with numpyro.plate("space", S):
        alpha_space = numpyro.sample("alpha_space", dist.Normal(0.0, sigma_space))
    with numpyro.plate("time_inc", T - 1):
        pi_drift = numpyro.sample("pi_drift", dist.Normal(0.0, sigma_rw))
    pi = jnp.pad(jnp.cumsum(pi_drift), (1, 0))
    years = jnp.arange(T)
    rate = (alpha + alpha_age[:, None, None] + alpha_space[None, :, None]
            + beta_age[:, None, None] * years[None, None, :] + pi[None, None, :])
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("deaths", dist.Binomial(data.population, logits=rate[data.age, data.space, data.time]),
                       obs=data.deaths)


def mortality_data(rows: int = 48, ages: int = 4, areas: int = 3, years: int = 5):
    rng = _rng(14)
    age, space, time = (rng.integers(0, k, rows).astype(np.int32) for k in (ages, areas, years))
    population = rng.integers(100, 1000, rows)
    logit = -4 + 0.5 * age - 0.1 * time + rng.normal(0, 0.3, areas)[space]
    deaths = rng.binomial(population, 1 / (1 + np.exp(-logit)))
    return cg.Data(age=cg.index(age, "row", into="age_groups", size=ages),
                   space=cg.index(space, "row", into="space", size=areas),
                   time=cg.index(time, "row", into="time", size=years),
                   population=cg.array(_f(population), "row"), deaths=cg.array(_f(deaths), "row"))


def gp_dense(data):
    """The GP example: a squared-exponential kernel over the inputs, a dense MVN likelihood."""
    var = numpyro.sample("kernel_var", dist.LogNormal(0.0, 10.0))
    length = numpyro.sample("kernel_length", dist.LogNormal(0.0, 10.0))
    noise = numpyro.sample("kernel_noise", dist.LogNormal(0.0, 10.0))
    deltaXsq = jnp.power((data.X[:, None] - data.X) / length, 2.0)
    k = var * jnp.exp(-0.5 * deltaXsq) + (noise + 1.0e-6) * jnp.eye(data.X.shape[0])
    numpyro.sample("Y", dist.MultivariateNormal(loc=jnp.zeros(data.X.shape[0]), covariance_matrix=k), obs=data.Y)


def gp_data(rows: int = 40):  # 13 points (the example's) leave the length-scale on its prior's tails
    rng = _rng(15)
    X = np.linspace(-1, 1, rows)
    return cg.Data(X=cg.array(_f(X), "row"), Y=cg.array(_f(np.sin(4 * X) + rng.normal(0, 0.2, rows)), "row"))


# -- time series --------------------------------------------------------------------------------

def ar2_scan(data):
    """The AR(2) example, scan version: the observed site lives inside NumPyro's contrib scan."""
    y = data.y
    alpha_1 = numpyro.sample("alpha_1", dist.Normal(0.0, 1.0))
    alpha_2 = numpyro.sample("alpha_2", dist.Normal(0.0, 1.0))
    const = numpyro.sample("const", dist.Normal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))

    def transition(carry, _):
        y_prev, y_prev_prev = carry
        m_t = const + alpha_1 * y_prev + alpha_2 * y_prev_prev
        y_t = numpyro.sample("y", dist.Normal(m_t, sigma))
        return (y_t, y_prev), m_t

    timesteps = jnp.arange(y.shape[0] - 2)
    with numpyro.handlers.condition(data={"y": y[2:]}):
        scan(transition, (y[1], y[0]), timesteps)


def ar2_lax_scan(data):
    """AR(2) with jax.lax.scan computing the means, the likelihood vectorised after it."""
    y = data.y
    alpha_1 = numpyro.sample("alpha_1", dist.Normal(0.0, 1.0))
    alpha_2 = numpyro.sample("alpha_2", dist.Normal(0.0, 1.0))
    const = numpyro.sample("const", dist.Normal(0.0, 1.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))

    def transition(carry, y_t):
        y_prev, y_prev_prev = carry
        return (y_t, y_prev), const + alpha_1 * y_prev + alpha_2 * y_prev_prev

    _, mu = jax.lax.scan(transition, (y[1], y[0]), y[2:])
    numpyro.sample("obs", dist.Normal(mu, sigma), obs=y[2:])


def ar2_data(steps: int = 40):
    rng = _rng(16)
    y = np.zeros(steps)
    for t in range(2, steps):
        y[t] = 0.3 + 0.6 * y[t - 1] - 0.3 * y[t - 2] + rng.normal(0, 0.5)
    return cg.Data(y=cg.array(_f(y), "time"))


def stochastic_volatility(data):
    """The stochastic volatility example: a Gaussian random walk of log-volatilities."""
    step_size = numpyro.sample("sigma", dist.Exponential(50.0))
    s = numpyro.sample("s", dist.GaussianRandomWalk(scale=step_size, num_steps=data.size("time")))
    nu = numpyro.sample("nu", dist.Exponential(0.1))
    numpyro.sample("r", dist.StudentT(df=nu, loc=0.0, scale=jnp.exp(s)), obs=data.returns)


def sv_data(steps: int = 30):
    rng = _rng(17)
    s = np.cumsum(rng.normal(0, 0.05, steps)) - 4
    return cg.Data(returns=cg.array(_f(rng.standard_t(8, steps) * np.exp(s)), "time"))


def arma11(data):
    """posteriordb arma-arma11: the errors' recursion as a scan."""
    y = data.y
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    phi = numpyro.sample("phi", dist.Normal(0.0, 2.0))
    theta = numpyro.sample("theta", dist.Normal(0.0, 2.0))
    sigma = numpyro.sample("sigma", dist.HalfCauchy(2.5))
    err_1 = y[0] - (mu + phi * mu)

    def step(err_prev, ys):
        y_prev, y_t = ys
        err_t = y_t - (mu + phi * y_prev + theta * err_prev)
        return err_t, err_t

    _, err = jax.lax.scan(step, err_1, (y[:-1], y[1:]))
    numpyro.sample("err", dist.Normal(0.0, sigma), obs=jnp.concatenate([err_1[None], err]))


def garch11(data):
    """posteriordb garch-garch11: the conditional variance's recursion as a scan."""
    y = data.y
    mu = numpyro.sample("mu", dist.ImproperUniform(dist.constraints.real, (), ()))
    alpha0 = numpyro.sample("alpha0", dist.ImproperUniform(dist.constraints.positive, (), ()))
    alpha1 = numpyro.sample("alpha1", dist.Uniform(0.0, 1.0))
    beta1 = numpyro.sample("beta1", dist.Uniform(0.0, 1.0 - alpha1))

    def step(sigma_prev, ys):
        y_prev = ys
        sigma_t = jnp.sqrt(alpha0 + alpha1 * (y_prev - mu) ** 2 + beta1 * sigma_prev ** 2)
        return sigma_t, sigma_t

    _, sigma = jax.lax.scan(step, data.sigma1, y[:-1])
    numpyro.sample("y0", dist.Normal(mu, data.sigma1), obs=y[0])
    numpyro.sample("y", dist.Normal(mu, sigma), obs=y[1:])


def arma_data(steps: int = 40):
    rng = _rng(18)
    e = rng.normal(0, 0.5, steps)
    y = np.zeros(steps)
    for t in range(1, steps):
        y[t] = 0.2 + 0.5 * y[t - 1] + 0.3 * e[t - 1] + e[t]
    return cg.Data(y=cg.array(_f(y), "time"), sigma1=cg.array(_f(0.5)))


ZOO: tuple[Entry, ...] = (
    Entry("eight_schools", eight_schools, schools_data, "NumPyro README", {"theta": ("school",)}),
    Entry("eight_schools_reparam", eight_schools_reparam, schools_data, "NumPyro README (LocScaleReparam)",
          {"theta_decentered": ("school",)}),
    Entry("baseball_pooled", baseball_pooled, baseball_data, "NumPyro examples/baseball.py", {"theta": ("player",)}),
    Entry("baseball_logit", baseball_logit, baseball_data, "NumPyro examples/baseball.py", {"alpha": ("player",)}),
    Entry("ucbadmit", ucbadmit, ucbadmit_data, "NumPyro examples/ucbadmit.py", {"v": ("dept", None)}),
    Entry("fvc_patients", fvc_patients, fvc_data, "NumPyro notebook: Bayesian hierarchical linear regression",
          {"a": ("patient",), "b": ("patient",)}),
    Entry("irt_2pl", irt_2pl, irt_data, "posteriordb hierarchical_irt_2pl",
          {"theta": ("student",), "a": ("item",), "b": ("item",)}),
    Entry("divorce", divorce, divorce_data, "NumPyro notebook: Bayesian regression"),
    Entry("covtype", covtype, covtype_data, "NumPyro examples/covtype.py", {"coefs": ("feature",)}),
    Entry("horseshoe", horseshoe, horseshoe_data, "NumPyro examples/horseshoe_regression.py",
          {"lambdas": ("feature",), "unscaled_betas": ("feature",)}),
    Entry("bnn", bnn, bnn_data, "NumPyro examples/bnn.py", {"w1": ("feature", None)}),
    Entry("kidiq_interaction", kidiq_interaction, kidiq_data, "posteriordb kidiq-kidscore_interaction"),
    Entry("roaches_negbin", roaches_negbin, roaches_data, "posteriordb roaches-roaches_negbinomial",
          {"beta": ("feature",)}),
    Entry("gauss_mix", gauss_mix, gauss_mix_data, "posteriordb low_dim_gauss_mix"),
    Entry("ppca", ppca, ppca_data, "probabilistic PCA (latent factors' plate)",
          {"W": ("feature", "factor"), "z": ("row", "factor")}),
    Entry("hsgp", hsgp, hsgp_data, "NumPyro examples/hsgp.py (numpyro.contrib.hsgp)", {"beta": ("basis",)},
          nuts=True),
    Entry("mortality", mortality, mortality_data, "NumPyro examples/mortality.py",
          {"alpha_age": ("age_groups",), "alpha_space": ("space",), "pi_drift": ("time_inc",)}, nuts=True),
    Entry("gp_dense", gp_dense, gp_data, "NumPyro examples/gp.py", nuts=True),
    Entry("ar2_scan", ar2_scan, ar2_data, "NumPyro examples/ar2.py (contrib scan)", nuts=True),
    Entry("ar2_lax_scan", ar2_lax_scan, ar2_data, "NumPyro examples/ar2.py (lax.scan)"),
    Entry("stochastic_volatility", stochastic_volatility, sv_data, "NumPyro examples/stochastic_volatility.py",
          {"s": ("time",)}),
    Entry("arma11", arma11, arma_data, "posteriordb arma-arma11"),
    Entry("garch11", garch11, arma_data, "posteriordb garch-garch11"),
)
