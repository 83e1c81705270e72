"""Where W2's R-hat floor comes from: samplers on an exact 1,000-dimensional standard Gaussian.

W2's z, in the adapted metric's units, behave like independent standard Gaussians: NUTS gives
them a bulk ESS above the draw count and a folded (tail) ESS under half of it, and the largest
rank-normalised R-hat over 1,000 of them lands at 1.013-1.016. This suite reproduces that on the
exact target N(0, I_1000), with W2's shape (4 chains x 500 draws, started at exact draws so no
warm-up is needed) and W2's adapted step size (0.22-0.29 in the suite's runs), for:

- `iid`: independent exact draws (the floor any sampler can reach);
- `nuts`: BlackJAX's multinomial NUTS, as claygraph runs it;
- `gist_half`: BlackJAX's GIST with the no-U-turn length rule (path fraction 0.5, the paper's
  recommendation: L uniform over [U/2, U], U the steps until the distance from the start stops
  growing, about half a period);
- `gist_quarter`: the same GIST construction with a quarter-turn rule (below): L uniform over
  [0.7 Q, 1.3 Q], Q the steps until the momentum turns orthogonal to the starting one (about a
  quarter period), so that a Gaussian coordinate lands near an independent draw rather than near
  minus its start.

Each run reports gradients per draw, the mean acceptance, bulk and folded ESS (min and median over
the 1,000 coordinates) and ArviZ's rank-normalised R-hat (its maximum).

Run: `python -m bench.suites.rhat_floor [seeds]` (about 3 min for 5 seeds): prints a markdown table and
writes bench/results/rhat_floor.json.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np

RESULTS = Path(__file__).resolve().parents[1] / "results" / "rhat_floor.json"
CONFIGS = (("iid", 0.25), ("nuts", 0.25), ("nuts", 0.18), ("nuts", 0.35), ("nuts", 0.45), ("gist_half", 0.25),
           ("gist_quarter", 0.25), ("gist_quarter", 0.18))


class _Info(NamedTuple):
    acceptance_rate: object
    num_integration_steps: object


def _window(q, a: float, b: float, cap: int):
    import jax.numpy as jnp

    lo = jnp.maximum(1, jnp.floor(a * q).astype(jnp.int32))
    return lo, jnp.maximum(lo, jnp.minimum(cap, jnp.floor(b * q).astype(jnp.int32)))


def quarter_turn_gist(a: float = 0.7, b: float = 1.3, cap: int = 64, divergence: float = 1000.0):
    """A GIST transition (Bou-Rabee, Carpenter and Marsden 2024) whose length L is uniform over
    [a Q, b Q], Q(x, p) the first leapfrog step whose momentum has a negative inner product with
    the starting velocity. The forward states are kept, so the reverse rule Q(x_L, -p_L) re-reads
    them and integrates past the start only when it has not fired by then. Accepts with the energy
    change times |window(Q)| / |window(Q_reverse)|, or rejects when L is outside the reverse window.
    A bench prototype for a flat position (not a claygraph kernel)."""
    import jax
    import jax.numpy as jnp
    from blackjax.mcmc import integrators, metrics
    from blackjax.mcmc.hmc import HMCState

    def step(key, state, logdensity_fn, step_size, inverse_mass_matrix):
        metric = metrics.default_metric(inverse_mass_matrix)
        leapfrog = integrators.velocity_verlet(logdensity_fn, metric.kinetic_energy)
        k_momentum, k_length, k_accept = jax.random.split(key, 3)
        p0 = metric.sample_momentum(k_momentum, state.position)
        h0 = -state.logdensity + metric.kinetic_energy(p0)
        velocity = jax.grad(metric.kinetic_energy)
        v0 = velocity(p0)
        start = integrators.IntegratorState(state.position, p0, state.logdensity, state.logdensity_grad)

        def fired(s, v):
            h = -s.logdensity + metric.kinetic_energy(s.momentum)
            bad = ~jnp.isfinite(h) | (h - h0 > divergence)
            return (jnp.dot(s.momentum, v) < 0) | bad

        buf = jax.tree.map(lambda x: jnp.zeros((cap,) + x.shape, x.dtype), start)

        def more(c):
            k, _, q, _ = c
            return (k < cap) & ((q < 0) | (k < _window(q, a, b, cap)[1]))

        def forward(c):
            k, s, q, buf = c
            s = leapfrog(s, step_size)
            buf = jax.tree.map(lambda B, x: B.at[k].set(x), buf, s)
            return k + 1, s, jnp.where((q < 0) & fired(s, v0), k + 1, q), buf

        filled, _, q, buf = jax.lax.while_loop(more, forward, (jnp.int32(0), start, jnp.int32(-1), buf))
        q = jnp.where(q < 0, cap, q)
        lo, hi = _window(q, a, b, cap)
        n = jax.random.randint(k_length, (), lo, hi + 1)
        proposal = jax.tree.map(lambda B: B[n - 1], buf)
        v_n = velocity(proposal.momentum)
        # the reverse rule's k-th step retraces forward state n - k (momentum negated)
        momenta = jnp.concatenate([p0[None], buf.momentum], 0)
        ks = jnp.arange(1, cap + 1)
        j = n - ks
        hit = (j >= 0) & (momenta[jnp.clip(j, 0, cap)] @ v_n < 0)
        retraced = jnp.min(jnp.where(hit, ks, cap + 1))
        # past the start: integrate from (x0, -p0) until the rule fires or L is surely below the window
        k_stop = jnp.minimum(cap, jnp.ceil((n + 1) / a).astype(jnp.int32))
        back = start._replace(momentum=-p0)

        def more_back(c):
            k, _, q = c
            return (q < 0) & (k < k_stop)

        def backward(c):
            k, s, q = c
            s = leapfrog(s, step_size)
            return k + 1, s, jnp.where(fired(s, -v_n), k + 1, q)

        past = retraced > n
        k_back, _, q_back = jax.lax.cond(
            past, lambda: jax.lax.while_loop(more_back, backward, (n, back, jnp.int32(-1))),
            lambda: (n, back, jnp.int32(-1)))
        unfired = jnp.where(k_back >= cap, cap, 2 * cap + 2)  # capped like the forward rule, else above L's window
        q_rev = jnp.where(past, jnp.where(q_back < 0, unfired, q_back), retraced)
        lo_rev, hi_rev = _window(q_rev, a, b, cap)
        h1 = -proposal.logdensity + metric.kinetic_energy(proposal.momentum)
        log_ratio = h0 - h1 + jnp.log((hi - lo + 1) / (hi_rev - lo_rev + 1))
        ok = (n >= lo_rev) & (n <= hi_rev) & (n <= filled) & jnp.isfinite(log_ratio)
        accept = jnp.where(ok, jnp.exp(jnp.minimum(0.0, log_ratio)), 0.0)
        take = jax.random.uniform(k_accept) < accept
        new = HMCState(*(jnp.where(take, x, y) for x, y in zip(
            (proposal.position, proposal.logdensity, proposal.logdensity_grad),
            (state.position, state.logdensity, state.logdensity_grad))))
        return new, _Info(accept, filled + jnp.where(past, k_back - n, 0))

    return step


def _chain_draws(kind: str, step_size: float, d: int, draws: int):
    import blackjax
    import jax
    import jax.numpy as jnp
    from blackjax.mcmc.hmc import init as hmc_init

    def logdensity(x):
        return -0.5 * jnp.sum(x * x)

    identity = jnp.ones(d)
    if kind == "nuts":
        algo = blackjax.nuts(logdensity, step_size=step_size, inverse_mass_matrix=identity)
        init, step = algo.init, algo.step
    elif kind == "gist_half":
        algo = blackjax.gist_trajectory_length(logdensity, identity, step_size, max_num_steps=64)
        init, step = algo.init, algo.step
    else:
        kernel = quarter_turn_gist()

        def init(x):
            return hmc_init(x, logdensity)

        def step(k, s):
            return kernel(k, s, logdensity, step_size, identity)

    def chain(key):
        k0, k1 = jax.random.split(key)

        def one(s, k):
            s, info = step(k, s)
            return s, (s.position, info.num_integration_steps, info.acceptance_rate)

        _, out = jax.lax.scan(one, init(jax.random.normal(k0, (d,))), jax.random.split(k1, draws))
        return out

    return jax.jit(jax.vmap(chain))


def run(kind: str, step_size: float, seed: int, d: int = 1000, chains: int = 4, draws: int = 500) -> dict:
    import arviz as az
    import jax

    t0 = time.perf_counter()
    key = jax.random.key(seed)
    if kind == "iid":
        x = np.asarray(jax.random.normal(key, (chains, draws, d)))
        steps, accept = np.zeros(1), np.ones(1)
    else:
        out = _chain_draws(kind, step_size, d, draws)(jax.random.split(key, chains))
        x, steps, accept = (np.asarray(a) for a in out)
    post = az.from_dict(posterior={"z": x})
    bulk = np.asarray(az.ess(post, method="bulk")["z"].values)
    folded = np.asarray(az.ess(post, method="folded")["z"].values)
    return {"kind": kind, "step_size": step_size, "seed": seed, "draws": chains * draws,
            "gradients_per_draw": round(float(steps.mean()), 2), "acceptance": round(float(accept.mean()), 3),
            "bulk_min": round(float(bulk.min())), "bulk_median": round(float(np.median(bulk))),
            "folded_min": round(float(folded.min())), "folded_median": round(float(np.median(folded))),
            "max_rhat": round(float(np.asarray(az.rhat(post)["z"].values).max()), 4),
            "seconds": round(time.perf_counter() - t0, 1)}


def table(rows: list[dict]) -> str:
    out = ["| sampler | step | seeds | gradients / draw | acceptance | bulk ESS min / median | folded ESS min / median "
           "| max R-hat: range over seeds | seeds with max R-hat <= 1.01 |",
           "|---|---|---|---|---|---|---|---|---|"]
    for kind, step in CONFIGS:
        rs = [r for r in rows if r["kind"] == kind and r["step_size"] == step]
        if not rs:
            continue
        med = {k: round(float(np.median([r[k] for r in rs])), 2) for k in rs[0] if isinstance(rs[0][k], (int, float))}
        rh = [r["max_rhat"] for r in rs]
        out.append(f"| {kind} | {'—' if kind == 'iid' else step} | {len(rs)} | {med['gradients_per_draw']:g} | "
                   f"{med['acceptance']:g} | {med['bulk_min']:g} / {med['bulk_median']:g} | "
                   f"{med['folded_min']:g} / {med['folded_median']:g} | {min(rh):.4f}-{max(rh):.4f} | "
                   f"{sum(r <= 1.01 for r in rh)} of {len(rh)} |")
    return "\n".join(out)


def main(seeds: int = 5) -> None:
    rows = []
    for kind, step in CONFIGS:
        for seed in range(seeds):
            r = run(kind, step, seed)
            print(json.dumps(r), flush=True)
            rows.append(r)
    commit = subprocess.run(["git", "rev-parse", "--short=10", "HEAD"], capture_output=True, text=True).stdout.strip()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"commit": commit, "rows": rows}, indent=1) + "\n")
    print(f"\n_commit `{commit}`; medians over seeds except the R-hat range._\n\n" + table(rows))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
