"""The chain scheduler: who runs which chain's next segment, and recovery after a lost worker."""
from __future__ import annotations

import logging
import time

import jax
import numpy as np

from claygraph.errors import WorkerError
from claygraph.infer.nuts import Chain, initial_position, sample_segment, warmup_chain
from claygraph.runtime.spmd import run_spmd

log = logging.getLogger("claygraph.infer")
MAX_RESTARTS = 2


def _next_key(chain: Chain) -> np.ndarray:
    use, keep = jax.random.split(chain.key)
    chain.key = np.asarray(keep)
    return np.asarray(use)


def _segment_len(chain: Chain, segment: int, draws: int | None) -> int:
    return segment if draws is None else max(0, min(segment, draws - chain.n))


def _with_recovery(session, fn, *args):
    for attempt in range(MAX_RESTARTS + 1):
        try:
            return run_spmd(session.program, fn, *args)
        except WorkerError as e:
            if attempt == MAX_RESTARTS or not hasattr(session.runtime, "restart"):
                raise
            log.warning("lost a worker (%s); rebuilding and resuming the chain from its last state", e)
            session.rebuild()


def run_chains_local(session, pool, settings, segment, stop, slow, hook):
    """Chains one after another on the session's program (one device, or data-parallel over workers)."""
    graph = session.plan.graph
    for c in pool:
        t0 = time.perf_counter()
        key = _next_key(c)
        c.state, c.params = _with_recovery(session, warmup_chain, key, initial_position(graph, key), settings)
        c.seconds += time.perf_counter() - t0
    while True:
        why = stop(pool)
        if why:
            return {0: sum(c.seconds for c in pool)}, why
        for c in sorted(pool, key=lambda c: c.n):
            t0 = time.perf_counter()
            c.state, d, st = _with_recovery(session, sample_segment, _next_key(c), c.state, c.params, segment,
                                            settings, slow.get(0, 0.0))
            c.draws.append(d)
            c.stats.append(st)
            c.seconds += time.perf_counter() - t0
            hook(c.id, c.n)


def run_chains_parallel(session, pool, settings, segment, stop, slow, hook):
    """Chain-parallel over Ray workers, without barriers: a worker that finishes a segment gets the
    next job at once (warm-up of a chain not yet started, else the next segment of the chain with
    the fewest draws that no one is running). Returns (busy seconds per worker, why it stopped)."""
    rt = session.runtime
    graph = session.plan.graph
    busy = {w: 0.0 for w in range(rt.workers)}
    restarts = 0
    while True:
        try:
            return _schedule(rt, session, graph, pool, settings, segment, stop, slow, busy, hook)
        except WorkerError as e:
            if restarts >= MAX_RESTARTS:
                raise
            restarts += 1
            for c in pool:  # segments in flight are lost; their chains resume from the last state
                c.worker = None
            log.warning("lost a worker (%s); rebuilding the group, chains resume from their last segment", e)
            rt.restart()


def _schedule(rt, session, graph, pool, settings, segment, stop, slow, busy, hook):
    key = rt.load_local(session.model, session.data, session.plan.graph.meta.jacobian)
    running: dict = {}  # ref -> (worker, chain, started)
    idle = list(range(rt.workers))

    def job_for(worker: int):
        free = [c for c in pool if c.worker is None]
        if not free:
            return None
        c = next((c for c in free if c.state is None), None) or min(free, key=lambda c: c.n)
        c.worker = worker
        k = _next_key(c)
        if c.state is None:
            ref = rt.submit(worker, key, warmup_chain, k, initial_position(graph, k), settings)
        else:
            ref = rt.submit(worker, key, sample_segment, k, c.state, c.params, segment, settings,
                            slow.get(worker, 0.0))
        running[ref] = (worker, c, time.perf_counter())
        return ref

    why = None
    while True:
        why = why or stop(pool)
        while idle and not why:
            w = idle.pop(0)
            if job_for(w) is None:
                idle.insert(0, w)
                break
        if not running:
            return busy, why or "no chain left to run"
        ref, result = rt.wait_one(list(running), "sampling a chain segment")
        w, c, t0 = running.pop(ref)
        busy[w] += time.perf_counter() - t0
        c.seconds += time.perf_counter() - t0
        c.worker = None
        if c.state is None:
            c.state, c.params = result
        else:
            c.state, d, st = result
            c.draws.append(d)
            c.stats.append(st)
            hook(c.id, c.n)
        idle.append(w)
