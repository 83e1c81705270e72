"""Warm-up that adapts its own length, and the guard on the default metric (docs/inference.md,
"Warm-up length and the metric's guard"): a window's metric that still moves beyond its noise extends
warm-up, up to Settings.max_warmup; a settled one does not."""
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from blackjax.mcmc.metrics import LowRankInverseMassMatrix

import claygraph as cg
from claygraph.infer import metric
from claygraph.infer.chains import EXTEND_CAP, Settings, extension_length

# these runs are short on purpose: what they check is the warm-up, not the draws
quiet = pytest.mark.filterwarnings("ignore::claygraph.infer.nuts.SamplingWarning")


def test_settle_ratio_is_infinite_without_an_earlier_window_and_small_for_the_same_metric():
    v = jnp.asarray([1.0, 4.0, 0.01])
    assert float(metric.settle_ratio(v, v, jnp.int32(0), jnp.int32(100))) == np.inf
    assert float(metric.settle_ratio(v, v * 1.1, jnp.int32(100), jnp.int32(200))) < 0.2


def test_settle_ratio_flags_one_coordinate_whose_scale_moved_far_beyond_the_noise():
    old = jnp.ones(50)
    moved = old.at[7].set(100.0)  # one scale 10x wider
    assert float(metric.settle_ratio(old, moved, jnp.int32(80), jnp.int32(160))) > 1.0
    # windows of 10 and 20 draws can disagree by much more (a 10x scale is within their noise), not by 30x
    assert float(metric.settle_ratio(old, moved, jnp.int32(10), jnp.int32(20))) < 1.0
    assert float(metric.settle_ratio(old, old.at[7].set(900.0), jnp.int32(10), jnp.int32(20))) > 1.0
    # a 1.5x scale is within what two windows of 40 and 80 draws can disagree by
    assert float(metric.settle_ratio(old, old.at[7].set(2.25), jnp.int32(40), jnp.int32(80))) < 1.0


@pytest.mark.parametrize("seed", range(10))
def test_windows_of_the_same_gaussian_count_as_settled(seed):
    """Two windows' variance estimates of one Gaussian (d = 200, 80 and 160 independent draws): the ratio
    stays under 1 (each log-scale deviation would have to exceed log 2 + (sqrt(2 log d) + 2) of its
    noise sd; false-failure rate far below 1e-6 per seed)."""
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.uniform(-3, 3, 200))
    a, b = (np.var(rng.normal(size=(n, 200)) * scale, axis=0, ddof=1) for n in (80, 160))
    assert float(metric.settle_ratio(jnp.asarray(a), jnp.asarray(b), jnp.int32(80), jnp.int32(160))) < 1.0


def test_variances_of_a_low_rank_metric_include_its_correction():
    u = jnp.zeros((3, 1)).at[0, 0].set(1.0)
    imm = LowRankInverseMassMatrix(sigma=jnp.asarray([2.0, 1.0, 1.0]), U=u, lam=jnp.asarray([9.0]))
    np.testing.assert_allclose(np.asarray(metric.variances(imm)), [36.0, 1.0, 1.0])


def wide(data):
    """One coordinate 300x wider than the unit metric warm-up starts from: short windows cannot learn it."""
    numpyro.sample("x", dist.Normal(0.0, 300.0))
    numpyro.sample("y", dist.Normal(0.0, 1.0))


def narrow(data):
    numpyro.sample("x", dist.Normal(0.0, 1.0).expand([2]).to_event(1))


@quiet
@pytest.mark.parametrize("adaptation", ["window_low_rank", "window"])
def test_a_warm_up_whose_metric_still_moves_is_extended_up_to_its_cap(adaptation):
    res = cg.infer.nuts(wide, cg.Data(), chains=2, warmup=60, draws=50, seed=0, adaptation=adaptation,
                        progress=False)
    s = Settings(warmup=60, adaptation=adaptation)
    assert all(60 < w <= EXTEND_CAP * 60 for w in res.warmup_steps), res.warmup_steps
    assert all((w - 60) % extension_length(s) == 0 for w in res.warmup_steps)
    assert any("warm-up extended" in n for n in res.notes)
    fixed = cg.infer.nuts(wide, cg.Data(), chains=2, warmup=60, draws=50, seed=0, adaptation=adaptation,
                          max_warmup=60, progress=False)
    assert fixed.warmup_steps == [60, 60] and not any("extended" in n for n in fixed.notes)


@quiet
def test_an_easy_posterior_keeps_the_warm_up_it_asked_for():
    res = cg.infer.nuts(narrow, cg.Data(), chains=2, warmup=300, draws=100, seed=0, progress=False)
    assert res.warmup_steps == [300, 300]
    assert not res.restarted  # the guard leaves a metric that works alone
