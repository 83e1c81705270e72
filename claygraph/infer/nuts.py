"""NUTS and HMC (BlackJAX kernels; window, diagonal-from-gradients or low-rank adaptation) on a split program.

Three ways to use W workers, chosen per run (`parallel=`, `shards_per_chain=`):
- "data": every chain runs on the whole split program: all workers compute each gradient
  together (SPMD). On one worker (Local) the chains are laid out as vectorised batches x threads,
  chosen by `scheduler.choose_layout` (`MCMCResult.layout`, `.ran`).
- "chains": each worker holds the whole data and runs its own chains (chain-parallel).
- "mesh": chains x shards, W/s groups of s workers; each group holds the split program for s
  devices and runs one chain at a time, the groups in parallel.
"auto" lets the cost model choose s (`choose_shards`): the least ceil(chains / (W/s)) x the
predicted gradient time on s devices, among feasible s (the data must fit s devices).

Sampling goes in segments of `segment` draws. After each, the driver updates bulk/tail ESS and
rank-normalised split R-hat over everything drawn. With `target_ess`, a worker whose segment is
done is handed the next segment of its chain at once (no barrier across workers), so no worker
idles while the target is unmet; the run stops when min ESS >= target_ess and max R-hat <=
max_rhat. Every segment returns its chain's state: a lost worker costs at most one segment.
"""
from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from claygraph.errors import ClusterError, PartitionError
from claygraph.infer.chains import DEFAULT_ADAPTATION, Chain, Settings, initial_position
from claygraph.infer.common import arviz, constrain_draws, setup, to_inference_data, valid_initial_points
from claygraph.infer.progress import ChainProgress
from claygraph.infer.scheduler import (
    Layout,
    chain_costs,
    choose_layout,
    group_plan,
    run_chains_local,
    run_chains_parallel,
)

log = logging.getLogger("claygraph.infer")


@dataclass
class MCMCResult:
    inference_data: Any
    plan: Any
    chains: list
    wall_s: float
    parallel: str
    stopped_because: str
    worker_busy_s: dict = field(default_factory=dict)  # per worker ("chains"), group ("mesh") or 0 ("data")
    shards_per_chain: int = 1
    mesh_choice: list = field(default_factory=list)  # the cost model's options, when it chose
    layout: Any = None  # how one process ran its chains ("data" mode): scheduler.Layout
    layout_choice: list = field(default_factory=list)  # the options weighed, when the cost model chose
    ran: str = ""  # how the chains ran, in words
    notes: list = field(default_factory=list)  # chains reported as behind, slow or restarted
    restarted: dict = field(default_factory=dict)  # chain id -> why it was restarted (stuck)
    problems: list = field(default_factory=list)  # failed diagnostics (R-hat, ESS, divergences)
    warmup_steps: list = field(default_factory=list)  # warm-up iterations each chain ran (extensions included)

    @property
    def ok(self) -> bool:
        """Whether the diagnostics passed: R-hat and ESS within bounds, no divergences."""
        return not self.problems

    @property
    def posterior(self):
        return self.inference_data.posterior

    def summary(self):
        az = arviz()

        return az.summary(self.inference_data, kind="all")

    def __repr__(self) -> str:
        return (f"MCMCResult({len(self.chains)} chains, {min(c.n for c in self.chains)}-"
                f"{max(c.n for c in self.chains)} draws each, {self.ran or self.parallel + '-parallel'}"
                f"{f' ({self.shards_per_chain} workers per chain)' if self.parallel == 'mesh' else ''}, "
                f"{self.wall_s:.1f} s; "
                f"{self.stopped_because})"
                f"{''.join(chr(10) + 'PROBLEM: ' + p for p in self.problems)}\n{self.summary()}")


def diagnostics(chains: list[Chain]) -> tuple[float, float]:
    """(min bulk/tail ESS, max R-hat) over all parameters, chains cut into equal-length pieces."""
    az = arviz()

    length = piece_length(chains)
    if length < 4:
        return 0.0, float("inf")
    stacked = _equal_pieces(chains, length)
    ess_b = az.ess(stacked, method="bulk")
    ess_t = az.ess(stacked, method="tail")
    rhat = az.rhat(stacked)
    lo = min(float(np.nanmin(ess_b[k].values)) for k in ess_b.data_vars)
    lo = min(lo, min(float(np.nanmin(ess_t[k].values)) for k in ess_t.data_vars))
    hi = max(float(np.nanmax(rhat[k].values)) for k in rhat.data_vars)
    return lo, hi


def piece_length(chains: list[Chain]) -> int:
    """The length the chains are cut to for R-hat, ESS and the InferenceData: the shortest chain's,
    unless that is under half the median, when chains shorter than half the median are left out
    (a chain on a slow worker would otherwise cut every other into pieces too short for R-hat,
    which then overstates the between-piece variance). Every draw stays in `MCMCResult.chains`."""
    lengths = sorted(c.n for c in chains)
    return max(lengths[0], lengths[len(lengths) // 2] // 2)


def _equal_pieces(chains: list[Chain], length: int) -> dict:
    """Chains of `length` draws or more, cut into pieces of that length (as split R-hat does)."""
    pieces: dict[str, list] = {}
    for c in chains:
        if c.n < length or length == 0:
            continue
        d = _concat(c.draws)
        for j in range(c.n // length):
            for k, v in d.items():
                pieces.setdefault(k, []).append(v[j * length:(j + 1) * length])
    return {k: np.stack(v) for k, v in pieces.items()}


def _concat(parts: list) -> dict:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _workers(session) -> int:
    return session.runtime.workers


def choose_shards(session, chains: int) -> tuple[int, list[dict]]:
    """Workers per chain for a chains x shards mesh, by the cost model: every divisor s of the
    worker count gives W/s groups running ceil(chains / (W/s)) waves of chains, each gradient taking
    the predicted time of the best split over s devices; the least total wins (ties: fewer shards).
    Returns s and the table of options (what `MCMCResult.mesh_choice` shows)."""
    w = _workers(session)
    options = []
    for s in [d for d in range(1, w + 1) if w % d == 0]:
        waves = -(-chains // (w // s))
        try:
            plan = session.plan if s == w else group_plan(session, s)
        except PartitionError as e:  # no split of the data fits s devices
            options.append({"shards": s, "groups": w // s, "split": None, "feasible": False,
                            "gradient_s": float("inf"), "waves": waves, "score_s": float("inf"), "reason": str(e)})
            continue
        cost = plan.chosen.cost
        options.append({"shards": s, "groups": w // s, "split": plan.split, "feasible": cost.feasible,
                        "gradient_s": cost.predicted_s, "waves": waves, "score_s": waves * cost.predicted_s})
    feasible = [o for o in options if o["feasible"]] or options[-1:]
    return min(feasible, key=lambda o: (o["score_s"], o["shards"]))["shards"], options


def _mode(parallel: str, session, chains: int, shards: int | None) -> tuple[str, int, list[dict]]:
    """("data" | "chains" | "mesh", workers per chain, the cost model's options when it chose)."""
    w = _workers(session)
    if parallel not in ("auto", "data", "chains", "mesh"):
        raise ValueError(f"parallel must be 'auto', 'data', 'chains' or 'mesh', not {parallel!r}")
    if shards is not None and (shards < 1 or w % shards):
        raise ValueError(f"shards_per_chain={shards} must divide the {w} workers")
    options: list[dict] = []
    if parallel == "data" or w == 1:
        s = w
    elif parallel == "chains":
        s = 1
    elif shards is not None:
        s = shards
    else:
        s, options = choose_shards(session, chains)
        if parallel == "mesh" and s in (1, w):  # asked for a mesh: the best proper one
            proper = [o for o in options if 1 < o["shards"] < w and o["feasible"]]
            if not proper:
                raise ValueError(f"no chains x shards mesh over {w} workers (a prime number?)")
            s = min(proper, key=lambda o: (o["score_s"], o["shards"]))["shards"]
    return ("data" if s == w else "chains" if s == 1 else "mesh"), s, options


def local_layout(session, chains: int, batch: int | None = None,
                 threads: int | None = None) -> tuple[Layout, list[dict]]:
    """How a "data"-mode run lays out its chains: the user's `batch` / `threads`, else the cost
    model's choice (`scheduler.choose_layout`, on the plan's predicted gradient time). Threads only
    on one worker: on Ray every worker must run the same SPMD programs in the same order."""
    for name, v in (("batch", batch), ("threads", threads)):
        if v is not None and (not isinstance(v, int) or v < 1):
            raise ValueError(f"{name} must be a positive int, not {v!r}")
    if _workers(session) > 1:
        if threads not in (None, 1):
            raise ClusterError(f"threads={threads} needs one worker (Local): on a runtime with {_workers(session)} "
                               f"workers every worker must run the same programs in the same order")
        return Layout(min(batch or chains, chains), 1), []
    if batch is not None or threads is not None:
        b = min(batch or -(-chains // (threads or 1)), chains)
        return Layout(b, threads or -(-chains // b)), []
    layout, options = choose_layout(chains, chain_costs(session.plan.devices), session.plan.chosen.cost.predicted_s)
    return layout, options


def mcmc(model: Callable, data, chains: int = 4, warmup: int = 500, draws: int = 500, runtime=None, cluster=None,
         split=None, seed: int = 0, target_ess: float | None = None, max_rhat: float = 1.01, segment: int = 100,
         max_draws: int | None = None, parallel: str = "auto", settings: Settings | None = None,
         on_segment: Callable | None = None, shards_per_chain: int | None = None,
         grow: bool | None = None, progress: bool | None = None, batch: int | None = None,
         threads: int | None = None) -> MCMCResult:
    """Run `chains` chains; see the module docstring for the modes and the stop rule.

    shards_per_chain: workers that compute one chain's gradient together (a chains x shards mesh);
    by default the cost model chooses (`choose_shards`).
    grow: in chain-parallel runs, start extra workers where the cluster gains room while sampling
    (nodes an autoscaler adds) and give them chains; default: when the runtime connected to an
    existing cluster (`Ray(address=...)`).
    batch, threads: on one worker (`Local`), chains vectorised (`jax.vmap`) per program and programs
    run at once in threads; by default the cost model chooses (`local_layout`, docs/inference.md).
    on_segment(chain_id, draws_of_that_chain) is called after every segment (progress, test hooks).
    progress: show a progress line (None: when stderr is a terminal or in a notebook).
    On one worker (`Local`) a chain stuck after warm-up or
    its first segment is restarted from a healthy chain's adapted state (`MCMCResult.restarted`).
    A run whose diagnostics fail warns (`SamplingWarning`) and lists why in `MCMCResult.problems`.
    """
    settings = settings or Settings(warmup=warmup)
    t0 = time.perf_counter()
    session = setup(model, data, runtime, cluster, split)
    mode, shards, options = _mode(parallel, session, chains, shards_per_chain)
    keys = jax.random.split(jax.random.PRNGKey(seed), chains)
    inits = valid_initial_points(session, lambda k: initial_position(session.plan.graph, k), keys)
    pool = [Chain(i, np.asarray(keys[i]), init=inits[i]) for i in range(chains)]
    budget = max_draws or (draws if target_ess is None else 10 * draws)
    stop = _stop_rule(draws, target_ess, max_rhat, budget)
    hook = on_segment or (lambda chain, n: None)
    if target_ess is None:
        segment = min(segment, draws)  # a short run samples what it was asked for, not a whole segment
    restarted: dict[int, str] = {}
    layout, layout_options = None, []
    if mode == "data":
        layout, layout_options = local_layout(session, chains, batch, threads)
        bar = ChainProgress(draws if target_ess is None else None, show=progress)
        try:
            busy, why = run_chains_local(session, pool, settings, segment, stop, hook,
                                         draws if target_ess is None else None, restarted, bar, layout)
        finally:
            bar.close()
    else:
        grow = session.runtime.elastic if grow is None else grow
        busy, why = run_chains_parallel(session, pool, settings, segment, stop, hook, shards, grow)
    wall = time.perf_counter() - t0
    res = _result(model, data, session, pool, wall, mode, why, busy, draws if target_ess is None else None)
    res.shards_per_chain, res.mesh_choice = shards, options
    res.layout, res.layout_choice = layout, layout_options
    res.ran = (layout.describe(chains, session.plan.devices) if layout is not None
               else f"{mode}-parallel over {_workers(session)} workers")
    res.notes = chain_notes(pool, pieces=target_ess is not None)
    res.restarted = restarted
    res.notes += [f"chain {k} was restarted: {why}"
                  for k, why in sorted(restarted.items())]
    for note in res.notes:
        log.warning(note)
    res.warmup_steps = [int(np.asarray(c.params["warmup_steps"])) for c in pool
                        if c.params is not None and "warmup_steps" in c.params]
    if res.warmup_steps and max(res.warmup_steps) > settings.warmup:
        res.notes.append(f"warm-up extended to {max(res.warmup_steps)} iterations (asked for {settings.warmup}): "
                         f"the mass matrix was still changing (Settings.max_warmup caps it)")
        log.info(res.notes[-1])
    res.problems = problems(res.inference_data, max_rhat)
    if res.problems:
        warnings.warn("NUTS diagnostics failed; do not trust these draws as they are: " + "; ".join(res.problems),
                      SamplingWarning, stacklevel=3)
    return res


class SamplingWarning(UserWarning):
    """The draws of a run failed their diagnostics (see `MCMCResult.problems`)."""


MIN_ESS = 100  # ArviZ's and Stan's rule of thumb for reliable R-hat and Monte Carlo errors


def problems(idata, max_rhat: float) -> list[str]:
    """What is wrong with the draws: R-hat over `max_rhat` (with 2 or more chains), bulk or tail
    ESS under MIN_ESS, divergent transitions."""
    az = arviz()

    out = []
    post = idata.posterior
    if post.sizes.get("chain", 1) > 1 and post.sizes.get("draw", 0) >= 4:
        rhat = az.rhat(post)
        worst = max(((float(np.nanmax(rhat[k].values)), k) for k in rhat.data_vars), default=(0.0, ""))
        if worst[0] > max_rhat:
            out.append(f"max R-hat {worst[0]:.3f} > {max_rhat} (site {worst[1]!r}): the chains disagree")
    if post.sizes.get("draw", 0) >= 4:
        for method in ("bulk", "tail"):
            ess = az.ess(post, method=method)
            low = min(((float(np.nanmin(ess[k].values)), k) for k in ess.data_vars), default=(np.inf, ""))
            if low[0] < MIN_ESS:
                out.append(f"min {method} ESS {low[0]:.0f} < {MIN_ESS} (site {low[1]!r}): draw more")
    stats = getattr(idata, "sample_stats", None)
    if stats is not None and "diverging" in stats.data_vars:
        n = int(stats["diverging"].values.sum())
        if n:
            out.append(f"{n} divergent transitions after warm-up: the sampler missed part of the posterior; "
                       f"raise target_accept or reparameterise")
    return out


def _seconds_per_draw(c: Chain) -> float:
    """Sampling time per draw, leaving out the first segment (it may include compiling) when there
    are others."""
    sizes = [len(jax.tree.leaves(d)[0]) for d in c.draws]
    times = list(c.segment_s) or [c.seconds]
    if len(times) == len(sizes) and len(times) > 1:
        times, sizes = times[1:], sizes[1:]
    return sum(times) / max(sum(sizes), 1)


def chain_notes(pool: list[Chain], slow_factor: float = 3.0, pieces: bool = True) -> list[str]:
    """Chains left out of the diagnostics (far behind the others; only when the results are cut
    into pieces, i.e. with a target ESS), and chains far slower per draw than the others' median
    (a stuck or badly adapted chain, or a slow worker)."""
    notes = []
    length = piece_length(pool) if pieces else 0
    for c in pool:
        if c.n < length:
            notes.append(f"chain {c.id} has {c.n} draws, under half the median chain's: left out of the "
                         f"diagnostics and the InferenceData (its draws are in MCMCResult.chains)")
    per_draw = {c.id: _seconds_per_draw(c) for c in pool if c.n}
    for cid, t in per_draw.items():
        others = [u for k, u in per_draw.items() if k != cid]
        if others and t > slow_factor * float(np.median(others)):
            notes.append(f"chain {cid} took {t * 1e3:.3g} ms per draw, {t / float(np.median(others)):.1f}x the "
                         f"other chains' median (stuck, badly adapted, or on a slow worker)")
    return notes


def _stop_rule(draws: int, target_ess: float | None, max_rhat: float, budget: int):
    def stop(pool: list[Chain]) -> str | None:
        n = [c.n for c in pool]
        if target_ess is None:
            return f"{draws} draws per chain" if min(n) >= draws else None
        if sum(n) >= budget * len(pool):
            return f"draw budget ({budget} per chain) spent before reaching the target"
        ess, rhat = diagnostics(pool)
        if ess >= target_ess and rhat <= max_rhat:
            return f"min ESS {ess:.0f} >= {target_ess:g} and max R-hat {rhat:.3f} <= {max_rhat}"
        return None

    return stop


def _result(model, data, session, pool, wall, mode, why, busy, draws: int | None) -> MCMCResult:
    """Draws per chain: exactly `draws` when given (every chain has at least that many), else the
    chains cut to equal pieces for the target-ESS stop rule."""
    equal = draws is not None
    n = min(min(c.n for c in pool), draws) if equal else piece_length(pool)
    if equal:
        stacked = {k: np.stack([_concat(c.draws)[k][:n] for c in pool]) for k in pool[0].draws[0]}
        stats = {k: np.stack([_concat(c.stats)[k][:n] for c in pool]) for k in pool[0].stats[0]}
    else:
        stacked, stats = _equal_pieces(pool, n), {}
    flat = {k: v.reshape((-1,) + v.shape[2:]) for k, v in stacked.items()}
    constrained = constrain_draws(model, data, flat)
    lead = next(iter(stacked.values())).shape[:2]
    post = {k: v.reshape(lead + v.shape[1:]) for k, v in constrained.items()}
    idata = to_inference_data(session.plan.graph, post, stats)
    return MCMCResult(idata, session.plan, pool, wall, mode, why, busy)


def nuts(model: Callable, data, chains: int = 4, warmup: int = 500, draws: int = 500, runtime=None, cluster=None,
         split=None, seed: int = 0, target_accept: float = 0.8, max_tree_depth: int = 10,
         adaptation: str = DEFAULT_ADAPTATION, max_warmup: int | None = None, **kwargs) -> MCMCResult:
    """NUTS; results as ArviZ InferenceData (`.posterior`). max_warmup: the longest warm-up when the
    mass matrix is still changing at its end (`Settings.max_warmup`; default 4 x warmup; `warmup`: never
    extended; `MCMCResult.warmup_steps` says what ran). adaptation: how warm-up learns the mass
    matrix: "window_low_rank" (the default: a low-rank + diagonal metric from draws and gradients,
    learnt in Stan's windows, `claygraph.infer.metric`), "window" (Stan's, diagonal from draws),
    "low_rank" (nutpie's metric in nutpie's growing windows: a slower warm-up) or "fisher" (diagonal
    from draws and gradients). docs/inference.md measures them."""
    s = Settings("nuts", target_accept, max_tree_depth, warmup=warmup, adaptation=adaptation, max_warmup=max_warmup)
    return mcmc(model, data, chains, warmup, draws, runtime, cluster, split, seed, settings=s, **kwargs)


def hmc(model: Callable, data, chains: int = 4, warmup: int = 500, draws: int = 500, runtime=None, cluster=None,
        split=None, seed: int = 0, num_integration_steps: int = 16, target_accept: float = 0.8,
        adaptation: str = "window", step_size_jitter: float = 0.0, **kwargs) -> MCMCResult:
    """Static HMC with adaptation of step size and mass matrix (as `nuts`; Stan's window by default).
    step_size_jitter: after warm-up each draw's step size is the adapted one times a uniform factor in
    [1 - jitter, 1 + jitter] (Stan's stepsize_jitter; 0, the default, keeps it fixed), so that the path
    length varies and cannot resonate with a period of the posterior."""
    if not 0.0 <= step_size_jitter < 1.0:
        raise ValueError(f"step_size_jitter must be in [0, 1), got {step_size_jitter}")
    # Stan's first windows: a static path costs the same per iteration whatever the metric, so the
    # early metric that saves NUTS its deep early trees saves HMC nothing
    s = Settings("hmc", target_accept, 10, num_integration_steps, warmup=warmup, adaptation=adaptation,
                 window_start=(75, 25), step_size_jitter=float(step_size_jitter))
    return mcmc(model, data, chains, warmup, draws, runtime, cluster, split, seed, settings=s, **kwargs)

