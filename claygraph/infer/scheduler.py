"""The chain scheduler: who runs which chain's next segment, and recovery after a lost worker.

It speaks only the Runtime protocol: programs from `compile` / `compile_each` / `grow`, steps
through `run`, `submit`, `wait` and `gather`, `restart` after a loss."""
from __future__ import annotations

import logging
import time

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


def run_chains_local(session, pool, settings, segment, stop, hook, draws: int | None = None, restarted=None,
                     progress=None):
    """Every chain at once on the session's program (one device, or data-parallel over its devices),
    vectorised into one program (`jax.vmap` over chains): warm-up, then segments of `segment` draws
    (the last one shortened to reach exactly `draws` per chain). Chains stuck after warm-up or after
    their first segment are restarted from a healthy chain's adapted state (claygraph.infer.recovery);
    `restarted` collects them (chain id -> why)."""
    restarted = {} if restarted is None else restarted
    graph = session.plan.graph
    t0 = time.perf_counter()
    keys = [_next_key(c) for c in pool]
    starts = [_start(c, graph, k) for c, k in zip(pool, keys)]
    if progress is not None:
        progress.warmup(len(pool), settings.warmup)
    states, params = _with_recovery(session, warmup_chains, keys, starts, settings)
    for c, st, pa in zip(pool, states, params):
        c.state, c.params = st, pa
    _recover(pool, restarted)
    _share(pool, time.perf_counter() - t0, None)
    checked = False
    while True:
        why = stop(pool)
        if why:
            return {0: sum(c.seconds for c in pool)}, why
        n = segment if draws is None else max(1, min(segment, draws - min(c.n for c in pool)))
        t0 = time.perf_counter()
        keys = [_next_key(c) for c in pool]
        out = _with_recovery(session, sample_chains, keys, [c.state for c in pool], [c.params for c in pool], n,
                             settings)
        for c, st, d, sts in zip(pool, *out):
            c.state = st
            c.draws.append(d)
            c.stats.append(sts)
        _share(pool, time.perf_counter() - t0, n)
        if not checked:
            checked = True
            settings = _warm_up_again(session, pool, settings, starts, restarted) or settings
            _recover(pool, restarted)
        for c in pool:
            hook(c.id, c.n)
        if progress is not None:
            progress.update(pool)


def _warm_up_again(session, pool, settings, starts, restarted: dict):
    """When the adapted metric fails (most chains diverge, `adaptation_failed`) and it was not Stan's
    window adaptation: warm every chain up again from its starting point with window adaptation,
    drop the draws, record it per chain in `restarted`, and return the new settings (else None)."""
    from dataclasses import replace

    why = adaptation_failed(pool) if settings.adaptation != "window" else None
    if why is None:
        return None
    log.warning("the %s mass matrix failed (%s): warming up again with window adaptation",
                settings.adaptation, why)
    window = replace(settings, adaptation="window")
    keys = [_next_key(c) for c in pool]
    states, params = _with_recovery(session, warmup_chains, keys, starts, window)
    note = f"the {settings.adaptation} mass matrix failed ({why}): warmed up again with window adaptation"
    for c, st, pa in zip(pool, states, params):
        c.state, c.params, c.draws, c.stats, c.segment_s = st, pa, [], [], []
        restarted[c.id] = note
    return window


def _recover(pool, restarted: dict) -> None:
    for note in recover(pool, restarted):
        log.warning(note)


def _share(pool, seconds: float, draws: int | None) -> None:
    """Vectorised chains share the wall time of each program run equally."""
    for c in pool:
        c.seconds += seconds / len(pool)
        if draws is not None and c.draws:
            c.segment_s.append(seconds / len(pool))


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
