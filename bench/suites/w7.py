"""W7: many products — W2's model with millions of Zipf-skewed groups (scale in parameters).

Data: bench.workloads.w7_data (seed 0; every product at least one row); model: bench.workloads.w2_model,
whose `z` has one entry per product. Measured, each figure the median over every timed call after a
compiling warm-up (`rounds` rounds of `calls` calls; the configurations of one process take turns
in each round, in balanced orders, so that passing load falls on each alike):

1. One potential-and-gradient evaluation on one device: NumPyro's own potential (`potential_energy`
   of `w2_numpyro_model`, the structure from `initialize_model`; X, g, y passed as arguments of the
   jitted function: a closure would bake the data into the program as constants) and claygraph on
   Local(devices=1), unsplit. Both as `jit(value_and_grad)`, from the zero point (unconstrained).
2. claygraph on Local(devices=2), split ("group",) and ("row",).
3. claygraph on Ray(workers=2), split ("group",) and ("row",).
   claygraph's evaluation is the function inference runs: `Context.internal` (params in the internal
   layout, sharded as the plan splits them) under `jit(value_and_grad)`, timed inside a step
   (`runtime.run(program, step, ...)`: on Ray every worker runs it, SPMD; worker 0's times are kept).
   From the same step: the bytes each collective kind moves per evaluation, read from the compiled
   HLO (the operands' sizes, per device), and the data and parameter bytes each device holds.
4. Every process's peak resident memory (ru_maxrss): each measuring process (the driver of its
   runtime) and each Ray worker after start-up, after the gradients, after MAP and after ADVI.
5. MAP (`cg.infer.map`) and ADVI (`cg.infer.vi`, mean-field, init from the MAP) on Ray(workers=2)
   split by group: wall time, iterations, objective / final ELBO; a failure is recorded as such.

Each device count runs in its own interpreter (XLA reads the forced host device count once, at
start) with a time limit (LIMIT_S; the Ray process LIMIT_S + 2 FIT_LIMIT_S); a process past its limit
is killed (its whole process group) and what it reported before is kept, the unfinished parts marked
"timed out".

Run alone: `python -m bench.suites.w7 [rows groups features]` (default: a small size).
"""
from __future__ import annotations

import json
import os
import re
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np

from bench.sizes import Sizes
from bench.suites import SuiteEnv
from bench.timing import RESULT_MARK, isolated_env, round_orders, timing_of

# Each gradient process's time limit (data, set-up, compiles and timed rounds); the Ray process also
# gets FIT_LIMIT_S for MAP and again for ADVI (which starts with a MAP of its own), all in one limit.
# START_S: the interpreter's start-up on top.
LIMIT_S = 900
FIT_LIMIT_S = 1200
START_S = 60
CALLS = 5  # timed calls per configuration per round (rounds: Sizes.repeats)
VI_DRAWS = 100
PART_MARK = "BENCH-PART "  # what a measuring process has so far (kept if it is killed)

# (name, label, runtime, devices, split) in the order they are reported; split None: NumPyro
CONFIGS = (("numpyro", "NumPyro potential_energy", "numpyro", 1, None),
           ("local1", "claygraph Local(devices=1)", "local", 1, ()),
           ("local2-group", "claygraph Local(devices=2)", "local", 2, ("group",)),
           ("local2-row", "claygraph Local(devices=2)", "local", 2, ("row",)),
           ("ray2-group", "claygraph Ray(workers=2)", "ray", 2, ("group",)),
           ("ray2-row", "claygraph Ray(workers=2)", "ray", 2, ("row",)))
# which process measures which configurations, and with how many (forced host) devices
PROCESSES = {"local1": (1, ("numpyro", "local1")), "local2": (2, ("local2-group", "local2-row")),
             "ray2": (1, ("ray2-group", "ray2-row"))}
# the targets: (key, label, numerator, denominator, at most)
TARGETS = (("local1_over_numpyro", "Local(devices=1) ÷ NumPyro", "local1", "numpyro", 0.8),
           ("local2_group_over_numpyro", "Local(devices=2), split group ÷ NumPyro", "local2-group", "numpyro", 0.5),
           ("ray2_group_over_local2_group", "Ray(workers=2), split group ÷ Local(devices=2), split group",
            "ray2-group", "local2-group", 1.15))
COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
FITS = ("map", "vi")


# -- reading collectives from compiled HLO ----------------------------------------------------------

_DTYPE_BYTES = {"pred": 1, "s8": 1, "u8": 1, "s16": 2, "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4,
                "s64": 8, "u64": 8, "f64": 8, "c64": 8, "c128": 16, "s4": 0.5, "u4": 0.5}
_SHAPE = re.compile(r"\b([a-z]+\d*(?:e\d+m\d+\w*)?)\[([\d,]*)\]")
_INSTR = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*)$")


def shape_bytes(text: str) -> int:
    """Bytes of every array shape in an HLO type (`f32[8]{0}`, a tuple `(f32[], s32[4,2])`, ...)."""
    total = 0.0
    for dtype, dims in _SHAPE.findall(text):
        size = _DTYPE_BYTES.get(dtype, 1 if dtype.startswith("f8") else None)
        if size is None:
            continue
        total += size * int(np.prod([int(d) for d in dims.split(",") if d] or [1]))
    return int(total)


def _split_type(rest: str) -> tuple[str, str]:
    """(the result type, what follows it) of an instruction's right-hand side."""
    if rest.startswith("("):
        depth = 0
        for i, ch in enumerate(rest):
            depth += ch == "("
            depth -= ch == ")"
            if depth == 0:
                return rest[: i + 1], rest[i + 1:].lstrip()
    head, _, tail = rest.partition(" ")
    return head, tail


def _operands(call: str) -> list[str]:
    """The operand texts of `opcode(a, b, ...)...`, split at the top level."""
    start = call.find("(")
    depth, cur, out = 0, [], []
    for ch in call[start + 1:]:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            if depth == 0:
                break
            depth -= 1
        if ch == "," and depth == 0:
            out.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        out.append("".join(cur).strip())
    return out


def collective_bytes(hlo: str) -> dict:
    """Per collective kind, how many there are and the bytes of their operands, from compiled HLO text.

    The program is one device's (SPMD): `bytes` is what each device contributes per evaluation (its
    operands), `result_bytes` what it receives. Async pairs count once (at `-start`); a collective
    inside a loop body counts once."""
    types: dict[str, str] = {}
    found = []
    for line in hlo.splitlines():
        m = _INSTR.match(line)
        if not m:
            continue
        name, rest = m.groups()
        typ, call = _split_type(rest)
        types[name] = typ
        opcode = call.split("(", 1)[0].strip()
        kind = opcode.removesuffix("-start")
        if kind in COLLECTIVES and not opcode.endswith("-done"):
            found.append((kind, typ, _operands(call)))
    out = {k: {"count": 0, "bytes": 0, "result_bytes": 0} for k in COLLECTIVES}
    for kind, typ, ops in found:
        size = 0
        for op in ops:
            if " " in op.strip():  # an older format that types each operand: `f32[8]{0} %x`
                size += shape_bytes(op)
            else:
                size += shape_bytes(types.get(op.strip().lstrip("%"), ""))
        out[kind]["count"] += 1
        out[kind]["bytes"] += size
        out[kind]["result_bytes"] += shape_bytes(typ)
    out["total_bytes"] = sum(out[k]["bytes"] for k in COLLECTIVES)
    return out


# -- steps: run by the runtime on every process of a program (SPMD) --------------------------------

def _value_and_grad(ctx):
    internal = ctx.internal

    def build():
        import jax

        return jax.jit(jax.value_and_grad(internal))

    return ctx.cached(("bench.w7", "value_and_grad"), build)


def _per_shard(tree) -> tuple[int, int]:
    """(bytes one device holds, bytes of the global arrays) of a tree of jax.Arrays."""
    import jax

    shard = total = 0
    for x in jax.tree.leaves(tree):
        itemsize = np.dtype(x.dtype).itemsize
        shard += int(np.prod(x.sharding.shard_shape(x.shape))) * itemsize
        total += int(np.prod(x.shape)) * itemsize
    return shard, total


def first_step(ctx) -> dict:
    """The first (compiling) evaluation at zero, the potential there, the collectives of the compiled
    program and the bytes each device holds."""
    import jax

    f = _value_and_grad(ctx)
    p = ctx.params_in(None)
    t0 = time.perf_counter()
    value, grad = jax.block_until_ready(f(p, ctx.data))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    hlo = f.lower(p, ctx.data).compile().as_text()
    hlo_s = time.perf_counter() - t0
    data_shard, data_total = _per_shard(ctx.data)
    param_shard, param_total = _per_shard(p)
    finite = all(bool(np.all(np.isfinite(np.asarray(x.addressable_data(0))))) for x in jax.tree.leaves(grad))
    return {"first_s": first, "hlo_s": hlo_s, "value": float(np.asarray(ctx.to_host(value))),
            "grad_finite": finite, "collectives": collective_bytes(hlo),
            "shard": {"data_bytes": data_shard, "param_bytes": param_shard, "data_bytes_global": data_total,
                      "param_bytes_global": param_total}}


def timed_step(ctx, calls: int) -> list[float]:
    """Seconds of `calls` evaluations (each waited for), after one untimed."""
    import jax

    f = _value_and_grad(ctx)
    p = ctx.params_in(None)
    jax.block_until_ready(f(p, ctx.data))
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        jax.block_until_ready(f(p, ctx.data))
        times.append(time.perf_counter() - t0)
    return times


def peak_rss_bytes(worker=None) -> int:
    """This process's peak resident set since start-up (ru_maxrss, KiB on Linux)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def phase_peak_bytes(worker=None, reset: bool = True) -> dict:
    """This process's peak resident set since the last reset (VmHWM) and its current one (VmRSS); then the
    peak is reset (Linux: writing 5 to /proc/self/clear_refs), so that each phase's peak is its own."""
    out = {"peak": _status_bytes("VmHWM"), "current": _status_bytes("VmRSS")}
    if reset:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        except OSError:
            pass
    return out


# -- the measuring processes ------------------------------------------------------------------------

def _emit(out: dict, phase: str) -> None:
    print(PART_MARK + json.dumps(out | {"phase": phase, "driver_peak_rss_bytes": peak_rss_bytes()}, default=float),
          flush=True)


def _error(e: BaseException) -> dict:
    return {"status": "error", "note": f"{type(e).__name__}: {e}"[:1500]}


def _data(spec: dict) -> tuple[dict, object, dict]:
    from bench import workloads as w

    t0 = time.perf_counter()
    arrays = w.w7_arrays(spec["n"], spec["groups"], spec["d"])
    data = w.w7_columns(arrays, spec["groups"])
    counts = np.bincount(arrays["g"], minlength=spec["groups"])
    info = {"generate_s": time.perf_counter() - t0, "bytes": int(sum(a.nbytes for a in arrays.values())),
            "x_bytes": int(arrays["X"].nbytes), "params": 2 + spec["groups"] + spec["d"],
            "param_bytes": 4 * (2 + spec["groups"] + spec["d"]),
            "rows_per_group": {"min": int(counts.min()), "median": float(np.median(counts)), "max": int(counts.max())}}
    return arrays, data, info


def _rounds(fns: dict[str, Callable[[int], list[float]]], rounds: int, calls: int) -> dict[str, list[float]]:
    """Every function timed `calls` times in each of `rounds` rounds, in balanced orders."""
    names = list(fns)
    times: dict[str, list[float]] = {k: [] for k in names}
    for order in round_orders(len(names), rounds):
        for i in order:
            times[names[i]] += list(fns[names[i]](calls))
    return times


def _claygraph_config(cg, model, data, rt, split, devices: int, link: str) -> tuple[object, dict]:
    t0 = time.perf_counter()
    plan = cg.partition(model, data, cluster=cg.ClusterSpec.local(devices=devices, link=link), split=split)
    plan_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    prog = cg.compile(plan, data, runtime=rt)
    build_s = time.perf_counter() - t0
    row = {"status": "ok", "split": list(plan.split), "plan_s": plan_s, "build_s": build_s}
    row |= rt.run(prog, first_step)
    return prog, row


def _time_configs(fns: dict, rows: dict, rounds: int, calls: int) -> None:
    if not fns:
        return
    for name, times in _rounds(fns, rounds, calls).items():
        rows[name]["timing"] = timing_of(times).to_json()


def child_local1(spec: dict) -> dict:
    """NumPyro's potential and claygraph unsplit on Local(devices=1)."""
    import jax
    import jax.numpy as jnp
    from numpyro.infer.util import initialize_model, potential_energy

    import claygraph as cg
    from bench import workloads as w

    arrays, data, info = _data(spec)
    out: dict = {"data": info, "configs": {}}
    _emit(out, "numpyro")
    groups = spec["groups"]
    fns = {}
    try:
        t0 = time.perf_counter()
        init = initialize_model(jax.random.PRNGKey(0), w.w2_numpyro_model,
                                model_args=(arrays["X"], arrays["g"], arrays["y"], groups))
        p_np = {k: jnp.zeros(np.shape(v), jnp.float32) for k, v in init.param_info.z.items()}
        cols = tuple(jnp.asarray(arrays[k]) for k in ("X", "g", "y"))

        def potential(params, X, g, y):
            return potential_energy(w.w2_numpyro_model, (X, g, y, groups), {}, params)

        f_np = jax.jit(jax.value_and_grad(potential))
        setup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        value, grad = jax.block_until_ready(f_np(p_np, *cols))
        row = {"status": "ok", "plan_s": setup_s, "first_s": time.perf_counter() - t0, "value": float(value),
               "grad_finite": all(bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(grad)),
               "shard": {"data_bytes": int(sum(c.nbytes for c in cols)), "param_bytes": 4 * info["params"]}}

        def time_numpyro(calls: int) -> list[float]:  # as timed_step: one untimed call first
            jax.block_until_ready(f_np(p_np, *cols))
            times = []
            for _ in range(calls):
                t0 = time.perf_counter()
                jax.block_until_ready(f_np(p_np, *cols))
                times.append(time.perf_counter() - t0)
            return times

        out["configs"]["numpyro"] = row
        fns["numpyro"] = time_numpyro
    except Exception as e:  # a failure is a finding
        out["configs"]["numpyro"] = _error(e)
    _emit(out, "claygraph Local(devices=1)")
    rt = cg.runtime.Local(devices=1)
    try:
        prog, row = _claygraph_config(cg, w.w2_model, data, rt, (), 1, "devices")
        out["configs"]["local1"] = row
        fns["local1"] = lambda calls: rt.run(prog, timed_step, calls)
    except Exception as e:
        out["configs"]["local1"] = _error(e)
    _emit(out, "timing")
    _time_configs(fns, out["configs"], spec["rounds"], spec["calls"])
    return out


def child_local2(spec: dict) -> dict:
    """claygraph on Local(devices=2), split by group and by row."""
    import claygraph as cg
    from bench import workloads as w

    _, data, info = _data(spec)
    out: dict = {"data": info, "configs": {}}
    rt = cg.runtime.Local(devices=2)
    fns = {}
    for name, split in (("local2-group", ("group",)), ("local2-row", ("row",))):
        _emit(out, name)
        try:
            prog, out["configs"][name] = _claygraph_config(cg, w.w2_model, data, rt, split, 2, "devices")
            fns[name] = lambda calls, prog=prog: rt.run(prog, timed_step, calls)
        except Exception as e:
            out["configs"][name] = _error(e)
    _emit(out, "timing")
    _time_configs(fns, out["configs"], spec["rounds"], spec["calls"])
    return out


def vi_chunk(steps: int) -> int:
    """ADVI's steps per chunk: its ELBO trace is one mean per chunk, so the last chunk's mean, over the
    last tenth of the steps (at most 250), stands for the final ELBO."""
    return max(1, min(250, steps // 10))


def _workers_peak(rt) -> list[dict]:
    """Each worker's peak resident set over the phase that just ended (and its current one); resets it."""
    return rt.on_workers(phase_peak_bytes, what="reading the workers' peak memory")


def child_ray2(spec: dict) -> dict:
    """claygraph on Ray(workers=2) split by group and by row; then MAP and ADVI split by group."""
    from ray import cloudpickle

    import claygraph as cg
    from bench import workloads as w

    _, data, info = _data(spec)
    # the driver's own phases start here: the data generation's temporaries are not the runtime's
    out: dict = {"data": info, "configs": {}, "fits": {}, "workers_peak_rss_bytes": {},
                 "driver_phase_peak_bytes": {"data made": phase_peak_bytes()}}
    me = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(me)  # the steps are this module's: workers may not import bench
    _emit(out, "Ray start-up")
    t0 = time.perf_counter()
    with cg.runtime.Ray(workers=2) as rt:
        out["ray_start_s"] = time.perf_counter() - t0
        out["workers_peak_rss_bytes"]["started"] = _workers_peak(rt)
        out["driver_phase_peak_bytes"]["started"] = phase_peak_bytes()
        progs, fns = [], {}
        for name, split in (("ray2-group", ("group",)), ("ray2-row", ("row",))):
            _emit(out, name)
            try:
                prog, out["configs"][name] = _claygraph_config(cg, w.w2_model, data, rt, split, 2, rt.link)
                progs.append(prog)
                fns[name] = lambda calls, prog=prog: rt.run(prog, timed_step, calls)
            except Exception as e:
                out["configs"][name] = _error(e)
        _emit(out, "timing")
        _time_configs(fns, out["configs"], spec["rounds"], spec["calls"])
        out["workers_peak_rss_bytes"]["gradients"] = _workers_peak(rt)
        out["driver_phase_peak_bytes"]["gradients"] = phase_peak_bytes()
        for prog in progs:  # their shards leave the workers before MAP sends its own
            rt.free(prog)
        del progs, fns
        def run_map() -> dict:
            m = cg.infer.map(w.w2_model, data, runtime=rt, split=("group",), progress=False,
                             **({} if spec.get("map_max_iter") is None else {"max_iter": spec["map_max_iter"]}))
            return {"iterations": int(m.iterations), "objective": float(m.objective), "converged": bool(m.converged),
                    "grad_max": float(m.grad_max), "message": m.message, "stop": m.stop, "split": list(m.plan.split)}

        def run_vi() -> dict:
            chunk = vi_chunk(spec["vi_steps"])
            v = cg.infer.vi(w.w2_model, data, runtime=rt, split=("group",), guide="meanfield",
                            steps=spec["vi_steps"], draws=spec["vi_draws"], init=spec.get("vi_init", "map"),
                            chunk=chunk, progress=False)
            return {"steps": spec["vi_steps"], "draws": spec["vi_draws"], "init": spec.get("vi_init", "map"),
                    "chunk": chunk, "elbo": float(v.elbo[-1]), "elbo_trace": [float(e) for e in v.elbo],
                    "map_iterations": None if v.map is None else int(v.map.iterations), "split": list(v.plan.split)}

        for key, phase, fit in (("map", "MAP", run_map), ("vi", "ADVI", run_vi)):
            out["fits"][key] = {"status": "timed out", "note": "running when its process was killed"}
            _emit(out, phase)
            t0 = time.perf_counter()
            try:
                out["fits"][key] = {"status": "ok", "wall_s": None} | fit()
                out["fits"][key]["wall_s"] = time.perf_counter() - t0
            except Exception as e:
                out["fits"][key] = _error(e) | {"wall_s": time.perf_counter() - t0}
            out["workers_peak_rss_bytes"][key] = _workers_peak(rt)
            out["driver_phase_peak_bytes"][key] = phase_peak_bytes()
    cloudpickle.unregister_pickle_by_value(me)
    return out


CHILDREN = {"local1": child_local1, "local2": child_local2, "ray2": child_ray2}


def child_main(name: str, spec: dict) -> int:
    out = CHILDREN[name](spec)
    out["driver_peak_rss_bytes"] = peak_rss_bytes()
    print(RESULT_MARK + json.dumps(out, default=float), flush=True)
    return 0


# -- the suite (driver side) ------------------------------------------------------------------------

def _last(text: str, mark: str) -> dict | None:
    for line in reversed(text.splitlines()):
        if line.startswith(mark):
            return json.loads(line[len(mark):])
    return None


def run_child(name: str, spec: dict, limit_s: float, platform: str = "cpu") -> dict:
    """Measuring process `name` in a fresh interpreter with its device count; never raises. Past
    `limit_s` its process group is killed and what it reported so far is returned, status "timed out"."""
    from bench import REPO

    devices = PROCESSES[name][0]
    cmd = [sys.executable, "-m", "bench.suites.w7", "--child", name, json.dumps(spec)]
    timed_out = False
    with tempfile.TemporaryDirectory(prefix="bench-w7-") as tmp:
        out_path, err_path = os.path.join(tmp, "stdout"), os.path.join(tmp, "stderr")
        with open(out_path, "w") as fo, open(err_path, "w") as fe:
            t0 = time.perf_counter()
            # files, not pipes: a process it leaves behind cannot hold the reading end open; a session
            # of its own: on a time-out its whole process group goes
            proc = subprocess.Popen(cmd, cwd=REPO, env=isolated_env(devices, platform), stdout=fo, stderr=fe,
                                    start_new_session=True)
            try:
                rc = proc.wait(timeout=limit_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                rc = proc.wait()
            elapsed = time.perf_counter() - t0
        with open(out_path) as f:
            stdout = f.read()
        with open(err_path) as f:
            stderr = f.read()
    final = _last(stdout, RESULT_MARK)
    if final is not None and not timed_out:
        return final | {"status": "ok", "process_s": elapsed}
    part = _last(stdout, PART_MARK) or {}
    phase = part.pop("phase", "start-up")
    if timed_out:
        note = f"killed after its {limit_s:.0f} s limit, during {phase}"
    else:
        note = f"exited {rc} during {phase}: " + (stdout + stderr)[-1500:]
    return part | {"status": "timed out" if timed_out else "error", "note": note, "phase": phase,
                   "process_s": elapsed}


def _median(configs: dict, name: str) -> float | None:
    c = configs.get(name) or {}
    return (c.get("timing") or {}).get("median_s") if c.get("status") == "ok" else None


def ratios(configs: dict) -> list[dict]:
    """The issue's ratios of medians, each with its target (at most) and whether it is met."""
    rows = []
    for key, label, num, den, target in TARGETS:
        a, b = _median(configs, num), _median(configs, den)
        value = a / b if a and b else None
        rows.append({"name": key, "label": label, "numerator": num, "denominator": den, "value": value,
                     "target": target, "met": None if value is None else bool(value <= target)})
    return rows


def measure(n: int, groups: int, d: int, rounds: int = 5, calls: int = CALLS, vi_steps: int = 1000,
            vi_draws: int = VI_DRAWS, vi_init: str = "map", map_max_iter: int | None = None, platform: str = "cpu",
            limit_s: float = LIMIT_S, fit_limit_s: float = FIT_LIMIT_S,
            log: Callable[[str], None] = lambda _: None) -> dict:
    """Every W7 figure at size (n, groups, d): see the module docstring. map_max_iter (None: MAP's
    default) and vi_init="zero" shorten the fits (the structural test); the suite runs the defaults."""
    spec = {"n": n, "groups": groups, "d": d, "rounds": rounds, "calls": calls, "vi_steps": vi_steps,
            "vi_draws": vi_draws, "vi_init": vi_init, "map_max_iter": map_max_iter}
    configs: dict = {}
    processes: dict = {}
    data = fits = workers = driver_phases = None
    for name, (devices, names) in PROCESSES.items():
        limit = limit_s + START_S + (2 * fit_limit_s if name == "ray2" else 0)
        log(f"  w7: {name} ({', '.join(names)}) on {devices} device(s), limit {limit:.0f} s")
        res = run_child(name, spec, limit, platform)
        data = data or res.get("data")
        processes[name] = {"status": res["status"], "process_s": res["process_s"], "note": res.get("note"),
                           "driver_peak_rss_bytes": res.get("driver_peak_rss_bytes"),
                           "ray_start_s": res.get("ray_start_s")}
        got = res.get("configs", {})
        for c in names:
            row = got.get(c) or {"status": res["status"] if res["status"] != "ok" else "error",
                                 "note": res.get("note") or "not reported"}
            if row.get("status") == "ok" and "timing" not in row:  # built, but the process ended before timing
                row = row | {"status": res["status"] if res["status"] != "ok" else "error",
                             "note": res.get("note") or "not timed"}
            configs[c] = row
        if name == "ray2":
            fits = {k: (res.get("fits") or {}).get(k) or {"status": "not run", "note": res.get("note")}
                    for k in FITS}
            if res["status"] != "ok":  # a fit still marked "timed out" was the one running when it stopped
                for k in FITS:
                    if fits[k].get("status") == "timed out" and res["status"] != "timed out":
                        fits[k] = {"status": res["status"], "note": res.get("note")}
            workers = res.get("workers_peak_rss_bytes") or {}
            driver_phases = res.get("driver_phase_peak_bytes") or {}
    for name, label, runtime, devices, split in CONFIGS:
        configs[name] |= {"label": label, "runtime": runtime, "devices": devices,
                          "split": None if split is None else list(split)}
    ref = (configs.get("numpyro") or {}).get("value")
    for name, c in configs.items():
        if name != "numpyro" and ref is not None and c.get("value") is not None:
            c["value_rel_diff"] = abs(c["value"] - ref) / max(abs(ref), 1e-30)
    return {"status": "ok", "sizes": {"n": n, "groups": groups, "d": d}, "rounds": rounds, "calls": calls,
            "fit_settings": {"vi_steps": vi_steps, "vi_draws": vi_draws, "vi_init": vi_init,
                             "map_max_iter": map_max_iter},
            "data": data, "configs": configs, "processes": processes, "workers_peak_rss_bytes": workers,
            "driver_phase_peak_bytes": driver_phases, "fits": fits, "ratios": ratios(configs),
            "limits_s": {"gradient": limit_s, "fit": fit_limit_s},
            "load_average_end": list(os.getloadavg())}


def run(sizes: Sizes, env: SuiteEnv) -> dict:
    env.log(f"w7: n={sizes.w7_n:,} groups={sizes.w7_groups:,} d={sizes.w7_d}, {sizes.repeats} rounds x {CALLS} "
            f"calls, ADVI {sizes.w7_vi_steps} steps")
    return measure(sizes.w7_n, sizes.w7_groups, sizes.w7_d, rounds=sizes.repeats, calls=CALLS,
                   vi_steps=sizes.w7_vi_steps, platform=env.platform, log=env.log)


def _print(res: dict) -> None:
    s = res["sizes"]
    print(f"W7 n={s['n']:,} groups={s['groups']:,} d={s['d']}, {res['rounds']} rounds x {res['calls']} calls, "
          f"load {res['load_average_end'][0]:.2f}")
    for name, *_ in CONFIGS:
        c = res["configs"][name]
        if c.get("status") != "ok":
            print(f"{name:14s} {c.get('status')}: {c.get('note')}")
            continue
        coll = c.get("collectives") or {}
        print(f"{name:14s} {1e3 * c['timing']['median_s']:9.3f} ms  first {c['first_s']:7.2f} s  "
              f"value {c['value']:.6g}  collectives {coll.get('total_bytes', 0):,} B  "
              f"data/shard {c['shard']['data_bytes']:,} B")
    for r in res["ratios"]:
        v = "—" if r["value"] is None else f"{r['value']:.3f}"
        print(f"{r['label']}: {v} (target <= {r['target']}, met: {r['met']})")
    for k, f in (res["fits"] or {}).items():
        print(f"{k}: {json.dumps(f, default=float)}")
    for k, p in res["processes"].items():
        print(f"process {k}: {p['status']}, {p['process_s']:.1f} s, peak {p['driver_peak_rss_bytes']}")
    print(f"Ray workers' peak: {res['workers_peak_rss_bytes']}")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--child"]:
        return child_main(argv[1], json.loads(argv[2]))
    n, groups, d = (int(a) for a in argv[:3]) if len(argv) >= 3 else (200_000, 40_000, 8)
    res = measure(n, groups, d, rounds=3, vi_steps=200, log=lambda m: print(m, file=sys.stderr, flush=True))
    _print(res)
    return 0


if __name__ == "__main__":
    from bench.suites import w7

    sys.exit(w7.main(sys.argv[1:]))
