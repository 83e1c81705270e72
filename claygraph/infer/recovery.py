"""Stuck-chain recovery: a chain far worse than the others is restarted from a healthy chain's
adapted state (its position, step size and mass matrix) instead of only being reported.

A chain counts as stuck, against the median of the other chains, when
- its adapted step size is under a tenth of theirs (it adapted to a pathological region), or
- over a fifth of its draws diverged and at least five times their share plus 5 points, or
- its mean log density lies more than `LP_GAP_SDS` within-chain standard deviations below theirs
  (it sits in a region the others find far less probable: a minor mode or a plateau).
Each chain is restarted at most once by these rules (a warm-up again under another metric, the
fallback below, does not count); a restarted chain's earlier draws are dropped.

When most chains diverge that often, when the chains' first draws disagree (R-hat over DISAGREE_RHAT)
or when they mix so slowly that their bulk ESS is under COLLAPSED_ESS per draw (`adaptation_failed`),
the adapted metric itself is suspect (the low-rank metric on a posterior with near-singular
correlations, estimated in float32; a metric from gradients on a funnel): the caller repeats warm-up
with Stan's window adaptation instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from claygraph.infer.chains import Chain

STEP_RATIO = 0.1
DIVERGENT_SHARE = 0.2
LP_GAP_SDS = 6.0
# the draws under a metric that works: bulk ESS per draw above this on every coordinate (from the first 100
# draws per chain the low-rank metric gave 0.145-1.5 on W2 and posteriordb's posteriors, 0.012-0.12 on the
# funnels and the weakly identified hierarchy; docs/inference.md), and the chains agree
COLLAPSED_ESS = 0.1
DISAGREE_RHAT = 1.2
STUCK = "stuck"  # how a restart by these rules is recorded (MCMCResult.restarted), so that it happens once
MIN_DRAWS = 50  # fewer draws per chain in the first segment: too few to judge ESS or R-hat
MAX_COLUMNS = 1000  # coordinates the check looks at (evenly spaced over the flattened parameters)


@dataclass(frozen=True, slots=True)
class Health:
    """What the stuck-chain rules look at, for one chain (lp and divergences of its last segment)."""

    step_size: float
    mean_lp: float | None = None
    sd_lp: float | None = None
    divergent: float | None = None


def health(c: Chain) -> Health:
    step = float(np.asarray(c.params["step_size"])) if c.params is not None else float("nan")
    if not c.stats:
        return Health(step)
    last = c.stats[-1]
    lp = np.asarray(last["lp"], dtype=np.float64)
    return Health(step, float(lp.mean()), float(lp.std()), float(np.mean(last["diverging"])))


def why_stuck(me: Health, others: list[Health]) -> str | None:
    """Why a chain with `me` is stuck, judged against `others`; None when it is not."""
    if not others:
        return None
    step = float(np.median([h.step_size for h in others]))
    if me.step_size < STEP_RATIO * step:
        return f"step size {me.step_size:.3g}, under a tenth of the other chains' median {step:.3g}"
    if me.divergent is None or any(h.divergent is None for h in others):
        return None
    div = float(np.median([h.divergent for h in others]))
    if me.divergent > DIVERGENT_SHARE and me.divergent > 5 * div + 0.05:
        return f"{me.divergent:.0%} of its draws diverged, against the other chains' median {div:.0%}"
    lp, sd = float(np.median([h.mean_lp for h in others])), float(np.median([h.sd_lp for h in others]))
    if me.mean_lp < lp - LP_GAP_SDS * max(sd, 1e-3):
        return (f"mean log density {me.mean_lp:.4g}, {(lp - me.mean_lp) / max(sd, 1e-3):.0f} sd below the other "
                f"chains' median {lp:.4g}")
    return None


def recover(pool: list[Chain], restarted: dict[int, str]) -> list[str]:
    """Restart every stuck chain (once each) from the state and adapted parameters of the healthy
    chain with the highest mean log density (the largest step size after warm-up). Records each
    restart in `restarted` (chain id -> why) and returns one note per restart."""
    if len(pool) < 2:
        return []
    hs = {c.id: health(c) for c in pool}
    stuck = {}
    for c in pool:
        why = why_stuck(hs[c.id], [h for k, h in hs.items() if k != c.id])
        if why is not None:
            stuck[c.id] = why
    healthy = [c for c in pool if c.id not in stuck]
    if not stuck or not healthy:  # no chain to copy from: leave it to the diagnostics
        return []
    donor = max(healthy, key=lambda c: (hs[c.id].mean_lp or 0.0, hs[c.id].step_size))
    notes = []
    for c in pool:
        if c.id in stuck and not restarted.get(c.id, "").startswith(STUCK):
            c.state, c.params = donor.state, donor.params
            c.draws, c.stats, c.segment_s = [], [], []
            earlier = f"; before that: {restarted[c.id]}" if c.id in restarted else ""
            restarted[c.id] = f"{STUCK} ({stuck[c.id]}): restarted from chain {donor.id}'s adapted state{earlier}"
            notes.append(f"chain {c.id} was stuck ({stuck[c.id]}): restarted from chain {donor.id}'s adapted "
                         f"state, its earlier draws dropped")
    return notes


def adaptation_failed(pool: list[Chain]) -> str | None:
    """Why the adapted metric is unusable: over DIVERGENT_SHARE of the last segment's draws diverged in
    the median chain, or (`mixing_failed`, on every draw so far) the chains disagree or barely mix;
    None when not."""
    shares = [health(c).divergent for c in pool if c.stats]
    if not shares:
        return None
    share = float(np.median(shares))
    if share > DIVERGENT_SHARE:
        return f"{share:.0%} of the draws diverged in the median chain"
    return mixing_failed([c.draws for c in pool if c.draws])


def _columns(segments: list[dict]) -> np.ndarray:
    """(draws, coordinates) of one chain's segments joined: every coordinate, or MAX_COLUMNS evenly spaced
    over the flattened parameters (picked per segment, so that draws of millions of coordinates are never
    copied whole)."""
    names = sorted(segments[0])
    sizes = np.asarray([int(np.prod(np.shape(segments[0][k])[1:], dtype=np.int64)) for k in names])
    total = int(sizes.sum())
    picks = np.arange(total) if total <= MAX_COLUMNS else np.linspace(0, total - 1, MAX_COLUMNS).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    site = np.searchsorted(starts, picks, side="right") - 1
    rows = []
    for seg in segments:
        flat = [np.asarray(seg[k]).reshape(np.shape(seg[k])[0], -1) for k in names]
        rows.append(np.stack([flat[j][:, i - starts[j]] for j, i in zip(site, picks)], axis=1))
    return np.concatenate(rows).astype(np.float64)


def mixing_failed(chains: list[list[dict]]) -> str | None:
    """Why chains' draws (per chain, its segments: site -> (draws, ...)) show a failed metric: the chains
    disagree (rank-normalised split R-hat over DISAGREE_RHAT) or their bulk ESS is under COLLAPSED_ESS
    per draw on some coordinate; None when neither, or with fewer than two chains or MIN_DRAWS draws."""
    from claygraph.infer.common import arviz

    n = min((sum(len(next(iter(seg.values()))) for seg in segs) for segs in chains), default=0)
    if len(chains) < 2 or n < MIN_DRAWS:
        return None
    az = arviz()
    x = np.stack([_columns(segs)[:n] for segs in chains])  # (chain, draw, coordinate)
    moving = np.ptp(x, axis=(0, 1)) > 0
    if not moving.any():
        return f"no coordinate moved in {n} draws of {len(chains)} chains"
    x = x[:, :, moving]
    ess = np.asarray(az.ess({"x": x}, method="bulk")["x"].values, np.float64)
    rhat = np.asarray(az.rhat({"x": x})["x"].values, np.float64)
    total = len(chains) * n
    if np.nanmax(rhat) > DISAGREE_RHAT:
        return f"the chains disagree: R-hat {np.nanmax(rhat):.2f} over their first {n} draws"
    if np.nanmin(ess) < COLLAPSED_ESS * total:
        return f"bulk ESS {np.nanmin(ess):.0f} from {total} draws (under {COLLAPSED_ESS:g} per draw)"
    return None
