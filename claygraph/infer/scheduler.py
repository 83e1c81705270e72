"""The chain scheduler: who runs which chain's next segment, and recovery after a lost worker.

It speaks only the Runtime protocol: programs from `compile` / `compile_each` / `grow`, steps
through `run`, `submit`, `wait` and `gather`, `restart` after a loss."""
from __future__ import annotations

import logging
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import jax
import numpy as np

from claygraph.errors import WorkerError
from claygraph.infer.chains import Chain, initial_position, sample_chains, sample_segment, warmup_chain, warmup_chains
from claygraph.infer.common import run_spmd
from claygraph.infer.recovery import adaptation_failed, recover

log = logging.getLogger("claygraph.infer")
MAX_RESTARTS = 2


def _next_key(chain: Chain) -> np.ndarray:
    use, keep = jax.random.split(chain.key)
    chain.key = np.asarray(keep)
    return np.asarray(use)


def _start(chain: Chain, graph, key) -> dict:
    """The chain's checked starting point (a restarted chain draws a fresh one)."""
    return chain.init if chain.init is not None else initial_position(graph, key)


def _segment_len(chain: Chain, segment: int, draws: int | None) -> int:
    return segment if draws is None else max(0, min(segment, draws - chain.n))


def _with_recovery(session, fn, *args):
    for attempt in range(MAX_RESTARTS + 1):
        try:
            return run_spmd(session.program, fn, *args)
        except WorkerError as e:
            if attempt == MAX_RESTARTS:
                raise
            log.warning("lost a worker (%s); rebuilding and resuming the chain from its last state", e)
            session.rebuild()


@dataclass(frozen=True)
class Layout:
    """How one process runs its chains: `batch` chains vectorised (`jax.vmap`) into one program,
    up to `threads` such programs at once in threads (chains of different threads are not in lockstep)."""

    batch: int
    threads: int

    def groups(self, chains: int) -> list[list[int]]:
        """The chains (by position) of each program: consecutive runs of `batch`."""
        return [list(range(i, min(i + self.batch, chains))) for i in range(0, chains, self.batch)]

    def describe(self, chains: int, devices: int) -> str:
        """How the chains ran, in words (results and the bench report show it)."""
        on = f"{devices} device{'s' if devices > 1 else ''}"
        groups = len(self.groups(chains))
        if groups == 1:
            return f"{chains} chain{'s vectorised' if chains > 1 else ''} on {on}"
        each = "one chain" if self.batch == 1 else f"{self.batch} chains vectorised"
        at_once = min(self.threads, groups)
        how = "one after another" if at_once == 1 else f"{at_once} threads at once"
        return f"{chains} chains on {on}: {groups} programs of {each}, {how}"


@dataclass(frozen=True)
class ChainCosts:
    """What the layout choice weighs (measured figures; docs/inference.md):
    batch_marginal: the cost of one more chain in a vectorised gradient, as a share of one chain's
    (1: batching saves nothing; near 0: the chains ride along for free);
    depth_spread: the inflation of a vectorised NUTS step per doubling of the batch (each step of the
    batch lasts as long as its deepest tree: the expected deepest of b trees over the mean tree is
    taken as 1 + depth_spread * log2(b));
    concurrency: how many programs run at once without slowing each other (free cores)."""

    batch_marginal: float
    depth_spread: float
    concurrency: int

    def seconds(self, layout: Layout, chains: int, gradient_s: float = 1.0) -> float:
        """Predicted time of one NUTS step of every chain: rounds of programs (at most `threads` at
        once, and no more than `concurrency` at full speed) x the batch's gradient x its inflation."""
        programs = len(layout.groups(chains))
        rounds = max(math.ceil(programs / layout.threads), programs / self.concurrency)
        batch = 1 + self.batch_marginal * (layout.batch - 1)
        deepest = 1 + self.depth_spread * math.log2(layout.batch)
        return rounds * gradient_s * batch * deepest


# Measured on W2 (docs/inference.md): on CPU a vectorised gradient costs about as much per chain as
# one chain's; accelerators are assumed to batch nearly for free (not measured here).
BATCH_MARGINAL = {"cpu": 0.9}
BATCH_MARGINAL_ACCELERATOR = 0.1
DEPTH_SPREAD = 0.1


def chain_costs(devices: int) -> ChainCosts:
    """The figures for this process: its backend, and its free cores over the devices one program uses."""
    backend = jax.default_backend()
    if backend == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        return ChainCosts(BATCH_MARGINAL["cpu"], DEPTH_SPREAD, max(1, cores // devices))
    return ChainCosts(BATCH_MARGINAL.get(backend, BATCH_MARGINAL_ACCELERATOR), DEPTH_SPREAD, 1)


def choose_layout(chains: int, costs: ChainCosts, gradient_s: float = 1.0) -> tuple[Layout, list[dict]]:
    """The layout of least predicted time (ChainCosts.seconds) among every batch size and thread
    count; ties go to more threads (no chain waits for another's tree), then to smaller batches.
    Returns it and the options weighed."""
    options = []
    for batch in range(1, chains + 1):
        programs = math.ceil(chains / batch)
        for threads in range(1, programs + 1):
            layout = Layout(batch, threads)
            options.append({"batch": batch, "threads": threads,
                            "score_s": costs.seconds(layout, chains, gradient_s)})
    best = min(options, key=lambda o: (round(o["score_s"], 9), -o["threads"], o["batch"]))
    return Layout(best["batch"], best["threads"]), options


def _in_groups(session, layout: Layout, fn, columns: list[list], *shared) -> tuple[list[list], list[float]]:
    """fn(context, *per-chain columns of one group, *shared) for every group of the layout, groups in
    threads; returns fn's outputs per chain (in pool order) and each chain's share of its group's seconds."""
    groups = layout.groups(len(columns[0]))

    def one(idx):
        t0 = time.perf_counter()
        out = _with_recovery(session, fn, *[[col[i] for i in idx] for col in columns], *shared)
        return out, time.perf_counter() - t0

    if layout.threads > 1 and len(groups) > 1:
        with ThreadPoolExecutor(min(layout.threads, len(groups)), thread_name_prefix="claygraph-chain") as ex:
            results = list(ex.map(one, groups))
    else:
        results = [one(idx) for idx in groups]
    outputs = [sum((list(out[k]) for out, _ in results), []) for k in range(len(results[0][0]))]
    seconds = [t / len(idx) for (_, t), idx in zip(results, groups) for _ in idx]
    return outputs, seconds


def run_chains_local(session, pool, settings, segment, stop, hook, draws: int | None = None, restarted=None,
                     progress=None, layout: Layout | None = None):
    """Every chain at once on the session's program (one device, or data-parallel over its devices),
    in `layout`'s groups: each group's chains vectorised into one program (`jax.vmap`), the groups in
    threads (default: all chains vectorised in one group). Warm-up, then segments of `segment` draws
    (the last one shortened to reach exactly `draws` per chain). Chains stuck after warm-up or after
    their first segment are restarted from a healthy chain's adapted state (claygraph.infer.recovery);
    `restarted` collects them (chain id -> why)."""
    restarted = {} if restarted is None else restarted
    layout = layout or Layout(len(pool), 1)
    graph = session.plan.graph
    keys = [_next_key(c) for c in pool]
    starts = [_start(c, graph, k) for c, k in zip(pool, keys)]
    if progress is not None:
        progress.warmup(len(pool), settings.warmup)
    (states, params), seconds = _in_groups(session, layout, warmup_chains, [keys, starts], settings)
    for c, st, pa, t in zip(pool, states, params, seconds):
        c.state, c.params = st, pa
        c.seconds += t
    _recover(pool, restarted)
    checked, late_due = False, None  # the metric's checks: after the first segment, and at LATE_CHECK x its draws
    while True:
        why = stop(pool)
        if why:
            return {0: sum(c.seconds for c in pool)}, why
        n = segment if draws is None else max(1, min(segment, draws - min(c.n for c in pool)))
        keys = [_next_key(c) for c in pool]
        out, seconds = _in_groups(session, layout, sample_chains,
                                  [keys, [c.state for c in pool], [c.params for c in pool]], n, settings)
        for c, st, d, sts, t in zip(pool, *out, seconds):
            c.state = st
            c.draws.append(d)
            c.stats.append(sts)
            c.seconds += t
            c.segment_s.append(t)
        drawn = min(c.n for c in pool)
        late = late_due is not None and drawn >= late_due
        if not checked or late:
            again = _warm_up_again(session, pool, settings, starts, restarted, layout)
            if not checked:  # the first segment (the fallback's own included) gets the stuck-chain check
                late_due = LATE_CHECK * drawn if again is None else None
                _recover(pool, restarted)
            else:
                late_due = None
            checked = again is None
            settings = again or settings
        for c in pool:
            hook(c.id, c.n)
        if progress is not None:
            progress.update(pool)


# the metric is judged again on all draws once the chains have this many times the first segment's: an ESS
# estimated from 100 draws per chain overstates a slowly mixing chain's (docs/inference.md)
LATE_CHECK = 4


def _warm_up_again(session, pool, settings, starts, restarted: dict, layout: Layout):
    """When the adapted metric fails (most chains diverge, disagree or barely mix: `adaptation_failed`) and it
    was not Stan's window adaptation: warm every chain up again from its starting point with window adaptation,
    drop the draws, record it per chain in `restarted`, and return the new settings (else None)."""
    from dataclasses import replace

    why = adaptation_failed(pool) if settings.adaptation != "window" else None
    if why is None:
        return None
    log.warning("the %s mass matrix failed (%s): warming up again with window adaptation", settings.adaptation, why)
    window = replace(settings, adaptation="window")
    keys = [_next_key(c) for c in pool]
    (states, params), _ = _in_groups(session, layout, warmup_chains, [keys, starts], window)
    note = f"the {settings.adaptation} mass matrix failed ({why}): warmed up again with window adaptation"
    for c, st, pa in zip(pool, states, params):
        c.state, c.params, c.draws, c.stats, c.segment_s = st, pa, [], [], []
        restarted[c.id] = note
    return window


def _recover(pool, restarted: dict) -> None:
    for note in recover(pool, restarted):
        log.warning(note)


GROW_EVERY_S = 2.0  # how often a chain-parallel run looks for room for another worker


def run_chains_parallel(session, pool, settings, segment, stop, hook, shards: int = 1, grow: bool = False):
    """Chains over the runtime's workers without barriers: groups of `shards` workers (a chains x
    shards mesh; 1: each worker alone, with the whole data) each run one chain at a time, and a group
    that finishes a segment gets the next job at once (warm-up of a chain not yet started, else the
    next segment of the chain with the fewest draws that no one is running). The programs are freed
    when the run ends. Returns (busy seconds per group, why it stopped)."""
    rt = session.runtime
    graph = session.plan.graph
    groups = [tuple(range(g * shards, (g + 1) * shards)) for g in range(rt.workers // shards)]
    busy = {g: 0.0 for g in range(len(groups))}
    restarts = 0
    while True:
        units = []
        try:
            units = _units(rt, session, groups)
            grower = _grower(rt, session) if grow and shards == 1 else None
            return _schedule(rt, units, graph, pool, settings, segment, stop, busy, hook, grower)
        except WorkerError as e:
            if restarts >= MAX_RESTARTS:
                raise
            restarts += 1
            for c in pool:  # segments in flight are lost; their chains resume from the last state
                c.worker = None
            log.warning("lost a worker (%s); rebuilding the group, chains resume from their last segment", e)
            rt.restart()
        finally:
            for program in units:
                rt.free(program)


def _units(rt, session, groups: list[tuple[int, ...]]) -> list:
    """One program per group: a one-device program over the whole data on every worker, or one
    split program per group of workers (planned for that many devices)."""
    if len(groups[0]) == 1:
        return rt.compile_each(group_plan(session, 1, split=()), session.data)
    plan = group_plan(session, len(groups[0]))
    return [rt.compile(plan, session.data, ranks=g) for g in groups]


def _grower(rt, session):
    """A function that, at most every GROW_EVERY_S, asks the runtime for a worker where the cluster
    has room (a node the autoscaler added) with the one-device program on it: that program, or None."""
    last = [time.perf_counter()]
    plan = group_plan(session, 1, split=())

    def grow():
        if time.perf_counter() - last[0] < GROW_EVERY_S:
            return None
        last[0] = time.perf_counter()
        return rt.grow(plan, session.data)

    return grow


def group_plan(session, shards: int, split=None):
    """The plan of one chain's group of `shards` devices, for the session's model and cluster
    (split: the session's by default)."""
    from claygraph.partition.plan import partition

    return partition(session.plan.graph, session.data, cluster=sub_cluster(session.plan.cluster, shards),
                     split=session.split if split is None else split)


def sub_cluster(cluster, devices: int):
    """The part of `cluster` that a group of `devices` devices spans (packed into nodes)."""
    from dataclasses import replace

    per = min(devices, cluster.devices_per_node)
    return replace(cluster, devices_per_node=per, nodes=-(-devices // per))


def _schedule(rt, units, graph, pool, settings, segment, stop, busy, hook, grower=None):
    running: dict = {}  # first handle -> (unit, chain, started, every handle of the unit)
    idle = list(range(len(units)))

    def job_for(unit: int):
        free = [c for c in pool if c.worker is None]
        if not free:
            return None
        c = next((c for c in free if c.state is None), None) or min(free, key=lambda c: c.n)
        c.worker = unit
        k = _next_key(c)
        if c.state is None:
            handles = rt.submit(units[unit], warmup_chain, k, _start(c, graph, k), settings)
        else:
            handles = rt.submit(units[unit], sample_segment, k, c.state, c.params, segment, settings)
        running[handles[0]] = (unit, c, time.perf_counter(), handles)
        return handles[0]

    why = None
    while True:
        why = why or stop(pool)
        joined = grower() if grower is not None and not why else None
        if joined is not None:  # a worker joined: put it to work at once
            units.append(joined)
            busy[len(units) - 1] = 0.0
            idle.append(len(units) - 1)
        while idle and not why:
            u = idle.pop(0)
            if job_for(u) is None:
                idle.insert(0, u)
                break
        if not running:
            return busy, why or "no chain left to run"
        handle, result = rt.wait(list(running), "sampling a chain segment")
        u, c, t0, handles = running.pop(handle)
        if len(handles) > 1:  # the group's other workers ran the same SPMD step: wait for them too
            rt.gather(handles, "sampling a chain segment")
        busy[u] += time.perf_counter() - t0
        c.seconds += time.perf_counter() - t0
        c.worker = None
        if c.state is None:
            c.state, c.params = result
        else:
            c.state, d, st = result
            c.draws.append(d)
            c.stats.append(st)
            c.segment_s.append(time.perf_counter() - t0)
            hook(c.id, c.n)
        idle.append(u)
