"""Stuck-chain recovery, failed diagnostics and the draw count: a chain far worse than the others is
restarted from a healthy chain's adapted state; a run whose diagnostics fail says so."""
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import claygraph as cg
from claygraph.infer import recovery
from claygraph.infer.chains import Chain
from claygraph.infer.nuts import SamplingWarning
from claygraph.infer.recovery import COLLAPSED_ESS, Health, adaptation_failed, mixing_failed, recover, why_stuck


def _chain(i, step, lp=None, diverging=0.0, n=50):
    c = Chain(i, np.zeros(2, np.uint32), state=f"state{i}", params={"step_size": np.float32(step)})
    if lp is not None:
        c.draws.append({"x": np.random.default_rng(100 + i).normal(size=n)})
        c.stats.append({"lp": np.random.default_rng(i).normal(lp, 1.0, n), "diverging": np.arange(n) < diverging * n})
    return c


def test_rules_flag_tiny_steps_divergences_and_a_far_lower_log_density():
    ok = [Health(0.5, -10.0, 1.0, 0.0), Health(0.6, -10.5, 1.2, 0.02)]
    assert why_stuck(Health(0.45, -11.0, 1.0, 0.04), ok) is None  # within the others' spread
    assert "step size" in why_stuck(Health(0.01), ok)
    assert "diverged" in why_stuck(Health(0.5, -10.0, 1.0, 0.6), ok)
    assert "below" in why_stuck(Health(0.5, -30.0, 1.0, 0.0), ok)
    assert why_stuck(Health(0.01), []) is None  # one chain alone: nothing to compare with


def test_a_metric_under_which_most_chains_diverge_has_failed():
    assert adaptation_failed([_chain(i, 0.5, lp=-10.0, diverging=0.6) for i in range(3)]).startswith("60%")
    assert adaptation_failed([_chain(i, 0.5, lp=-10.0, diverging=0.6 * (i == 0)) for i in range(3)]) is None
    assert recover([_chain(i, 0.5, lp=-10.0, diverging=0.6) for i in range(3)], {}) == []  # no healthy donor


def _ar1(rho, chains=4, n=100, d=3, shift=0.0, seed=0, segments=1):
    """Chains of an AR(1) process with autocorrelation rho (bulk ESS per draw about (1 - rho) / (1 + rho)),
    chain 0 shifted by `shift` sds; each chain's draws cut into `segments` segments."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(chains):
        x = np.zeros((n, d))
        x[0] = rng.normal(size=d)
        for t in range(1, n):
            x[t] = rho * x[t - 1] + np.sqrt(1 - rho ** 2) * rng.normal(size=d)
        x = x + (shift if c == 0 else 0.0)
        out.append([{"theta": part} for part in np.array_split(x, segments)])
    return out


def test_a_metric_whose_chains_barely_mix_or_disagree_has_failed():
    # independent draws (ESS per draw about 1) and a sticky chain (rho = 0.3: about 0.54, the level of the
    # low-rank metric on eight schools) pass; rho = 0.98 (about 0.01 per draw, what the low-rank metric gave
    # on the funnels of docs/inference.md) fails
    for seed in range(5):
        assert mixing_failed(_ar1(0.0, seed=seed)) is None
        assert mixing_failed(_ar1(0.3, seed=seed)) is None
        why = mixing_failed(_ar1(0.98, seed=seed))
        assert why is not None and ("ESS" in why or "disagree" in why), why
        # the late check joins the segments: 400 draws per chain of rho = 0.95 (about 0.026 per draw)
        why = mixing_failed(_ar1(0.95, n=400, segments=4, seed=seed))
        assert why is not None and ("ESS" in why or "disagree" in why), why
    assert "disagree" in mixing_failed(_ar1(0.0, shift=3.0))  # one chain elsewhere: R-hat
    assert "no coordinate moved" in mixing_failed([[{"theta": np.ones((60, 2))}]] * 3)
    assert mixing_failed(_ar1(0.98, n=30)) is None  # too few draws to judge
    assert mixing_failed(_ar1(0.98, chains=1)) is None  # one chain: no comparison
    assert 0 < COLLAPSED_ESS < 0.54


def test_the_check_picks_columns_of_a_large_model_without_joining_whole_draws():
    big = [[{"a": np.arange(60 * 3000, dtype=np.float32).reshape(60, 3000) + k, "b": np.ones((60, 2))}
            for k in range(2)] for _ in range(2)]
    x = recovery._columns(big[0])
    assert x.shape == (120, recovery.MAX_COLUMNS)
    np.testing.assert_array_equal(x[60:, 0], x[:60, 0] + 1)  # the second segment follows the first


def test_recover_restarts_a_stuck_chain_from_the_best_healthy_one_once():
    pool = [_chain(0, 0.5, lp=-10.0), _chain(1, 0.55, lp=-9.0), _chain(2, 0.5, lp=-80.0)]
    restarted = {}
    notes = recover(pool, restarted)
    assert list(restarted) == [2] and "below" in restarted[2] and len(notes) == 1
    assert pool[2].state == "state1" and pool[2].params is pool[1].params  # chain 1 has the highest lp
    assert pool[2].draws == [] and pool[2].stats == []  # its stuck draws are dropped
    pool[2].params = {"step_size": np.float32(1e-4)}  # stuck again: not restarted a second time
    assert recover(pool, restarted) == [] and pool[2].params["step_size"] < 1e-3


def test_a_chain_warmed_up_again_under_the_fallback_metric_is_still_restarted_once_when_stuck():
    fallback = "the window_low_rank mass matrix failed (bulk ESS 9 from 400 draws): warmed up again with window"
    restarted = {i: fallback for i in range(3)}
    pool = [_chain(0, 0.5, lp=-10.0), _chain(1, 0.55, lp=-9.0), _chain(2, 0.5, lp=-80.0)]
    assert len(recover(pool, restarted)) == 1
    assert restarted[2].startswith("stuck") and restarted[2].endswith("before that: " + fallback)
    assert restarted[0] == fallback and pool[2].state == "state1"
    pool[2] = _chain(2, 0.5, lp=-80.0)  # stuck again: once is all
    assert recover(pool, restarted) == []


def conjugate_model(data):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(data.X @ beta, 1.0), obs=data.y)


def _data(n=100):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 2)).astype(np.float32)
    y = (X @ np.array([1.0, -0.5]) + rng.normal(0, 1.0, n)).astype(np.float32)
    return cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(y, "row"))


@pytest.mark.parametrize("batch", [3, 1])  # chains vectorised in one program; one program per chain
def test_a_chain_stuck_after_warmup_is_restarted_and_the_result_says_so(monkeypatch, batch):
    from claygraph.infer import scheduler

    real = scheduler.warmup_chains
    seen = []

    def one_chain_stuck(ctx, keys, positions, settings):  # chain 1 adapts to a uselessly small step
        states, params = real(ctx, keys, positions, settings)
        first = len(seen)
        seen.extend(keys)
        if first <= 1 < len(seen):
            params[1 - first] = {**params[1 - first], "step_size": params[1 - first]["step_size"] * 1e-4}
        return states, params

    monkeypatch.setattr(scheduler, "warmup_chains", one_chain_stuck)
    with pytest.warns(SamplingWarning):  # 3 x 40 draws: too few for the ESS bound, which it says
        res = cg.infer.nuts(conjugate_model, _data(), chains=3, warmup=60, draws=40, seed=0, progress=False,
                            batch=batch, threads=1)
    assert list(res.restarted) == [1] and "step size" in res.restarted[1]
    assert any("chain 1 was restarted" in n for n in res.notes)
    assert res.posterior["beta"].shape == (3, 40, 2)
    steps = [float(c.params["step_size"]) for c in res.chains]
    assert steps[1] in (steps[0], steps[2])  # it took a healthy chain's adapted step size


@pytest.mark.parametrize("draws, segment", [(30, 100), (130, 100)])
def test_exactly_the_requested_draws(draws, segment):
    res = cg.infer.nuts(conjugate_model, _data(), chains=2, warmup=30, draws=draws, segment=segment, seed=1,
                        progress=False)
    assert res.posterior["beta"].shape == (2, draws, 2)
    assert res.inference_data.sample_stats["diverging"].shape == (2, draws)
    assert [c.n for c in res.chains] == [draws, draws]  # no draws beyond the request


def test_failed_diagnostics_warn_and_are_in_the_result():
    with pytest.warns(SamplingWarning, match="ESS"):
        res = cg.infer.nuts(conjugate_model, _data(), chains=2, warmup=30, draws=20, seed=1, progress=False)
    assert not res.ok and any("ESS" in p for p in res.problems)
    assert "PROBLEM" in repr(res)
