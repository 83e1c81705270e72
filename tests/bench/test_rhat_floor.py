"""The R-hat floor suite's quarter-turn GIST prototype samples its target exactly (the docs quote
its figures), and the suite's rows carry what its table reads."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from blackjax.mcmc.hmc import init

from bench.suites.rhat_floor import quarter_turn_gist, run, table


def _log_gamma_times_normal(v):
    # y = log x with x ~ Gamma(3, 1) (skewed), and z ~ N(0, 3^2)
    return 3.0 * v[0] - jnp.exp(v[0]) - 0.5 * (v[1] / 3.0) ** 2


def test_quarter_turn_gist_is_exact_on_a_skewed_target():
    kernel = quarter_turn_gist()

    def chain(key):
        def one(s, k):
            s, info = kernel(k, s, _log_gamma_times_normal, 0.3, jnp.array([0.4, 9.0]))
            return s, (s.position, info.acceptance_rate)

        start = init(jnp.array([1.0, 0.0]), _log_gamma_times_normal)
        return jax.lax.scan(one, start, jax.random.split(key, 20_000))[1]

    xs, accept = jax.jit(jax.vmap(chain))(jax.random.split(jax.random.key(1), 4))
    xs = np.asarray(xs).reshape(-1, 2)
    x = np.exp(xs[:, 0])
    assert 0.2 < float(accept.mean()) < 1.0  # it moves, and sometimes rejects
    # 80,000 draws, ESS in the tens of thousands: tolerances are several Monte Carlo errors
    assert abs(x.mean() - 3.0) < 0.06
    assert abs(x.var() - 3.0) < 0.25
    assert abs(xs[:, 0].mean() - 0.92278) < 0.02  # digamma(3)
    assert abs(xs[:, 1].std() - 3.0) < 0.1


def test_rows_feed_the_table():
    rows = [run("iid", 0.25, seed, d=50, draws=100) for seed in range(2)]
    assert all(r["gradients_per_draw"] == 0 and r["max_rhat"] > 0.99 for r in rows)
    text = table(rows)
    assert "| iid |" in text and "of 2 |" in text
