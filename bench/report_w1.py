"""W1's section of BENCHMARKS.md and its acceptance checks, computed from the stored results (nothing copied by hand).

`checks(res)` states each target of the W1 issue with the measured figure it is judged on; the report
prints them as a table and the README's headline is generated from the same figures.
"""
from __future__ import annotations

from dataclasses import dataclass

GLM4 = "claygraph LogisticRegression tol=1e-4"
GLM8 = "claygraph LogisticRegression tol=1e-8"
MAP = "claygraph infer.map (defaults)"
SK4 = "scikit-learn lbfgs tol=1e-4 (default)"
SK8 = "scikit-learn lbfgs tol=1e-8"
SCIPY = "scipy L-BFGS-B, NumPy gradient (float64 objective)"
ONE_DEVICE = "claygraph Local(devices=1), this process"


def one_device_gradient_s(res: dict) -> tuple[float | None, float | None]:
    """Seconds of claygraph's loss-and-gradient on one device: (in a fresh process of its own, in the bench
    process). The target is judged on the first, as a user's process runs it: in the bench process it
    follows NumPy's BLAS and hand-written JAX, whose thread pools slow it (bench.suites.w1.gradient_times)."""
    here = next((g["timing"]["median_s"] for g in res.get("gradient", []) if g["name"] == ONE_DEVICE), None)
    own = next((c["measured"]["median_s"] for rt in res.get("runtimes", []) if rt.get("devices") == 1
                for c in rt.get("candidates", []) if c.get("measured")), None)
    return own, here


def judged_gradient_s(res: dict) -> tuple[float | None, str, float | None]:
    """(the one-device gradient the target is judged on, where it ran, the bench process's figure when the
    judged one is another)."""
    own, here = one_device_gradient_s(res)
    if own is None:
        return here, "in the bench process", None
    return own, "in a process of its own", here
COMPILE_KEYS = ("compile_s",)  # JAX's backend compile event; on a persistent-cache hit it times the load


@dataclass(frozen=True, slots=True)
class Check:
    target: str
    measured: str
    holds: bool | None  # None: not measured


def solver(res: dict, name: str) -> dict | None:
    r = next((r for r in res.get("solvers", []) if r["name"] == name), None)
    return r if r and r.get("status") == "ok" else None


def median(r: dict | None) -> float | None:
    return r["timing"]["median_s"] if r else None


def compile_share(fit: dict) -> float:
    """Seconds XLA spent compiling (or loading from the persistent cache), over the fit's wall time."""
    return sum(fit.get(k, 0.0) for k in COMPILE_KEYS) / fit["wall_s"]


def trace_share(fit: dict) -> float:
    """Seconds JAX spent tracing to jaxprs and lowering them to XLA's input, over the fit's wall time."""
    return (fit.get("trace_s", 0.0) + fit.get("lower_s", 0.0)) / fit["wall_s"]


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _fresh(res: dict, name: str) -> dict | None:
    f = (res.get("fresh") or {}).get(name)
    return f if f and f.get("status") == "ok" else None


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.3g}×"


def _check(target: str, value: float | None, limit: float, text: str, extra_ok: bool = True) -> Check:
    if value is None:
        return Check(target, "not measured", None)
    return Check(target, text, value <= limit and extra_ok)


def checks(res: dict) -> list[Check]:
    g4, g8, mp = solver(res, GLM4), solver(res, GLM8), solver(res, MAP)
    sk4, sk8, sp = solver(res, SK4), solver(res, SK8), solver(res, SCIPY)
    out = []
    r = _ratio(median(g4), median(sk4))
    out.append(_check("LogisticRegression(tol=1e-4) ≤ 1.0× scikit-learn default", r, 1.0,
                      f"{_x(r)} ({_s(median(g4))} vs {_s(median(sk4))})"))
    r1, r2 = _ratio(median(g8), median(sk8)), _ratio(median(g8), median(sp))
    gap8 = g8["objective_gap"] if g8 else None
    ok8 = gap8 is not None and abs(gap8) <= 1e-3
    out.append(_check("LogisticRegression(tol=1e-8) ≤ 0.3× scikit-learn tol=1e-8, ≤ 0.5× scipy, objective within "
                      "1e-3 of the reference", None if r1 is None or r2 is None else max(r1 / 0.3, r2 / 0.5), 1.0,
                      f"{_x(r1)} scikit-learn, {_x(r2)} scipy; objective − ref {_g(gap8)}", ok8))
    rm = _ratio(median(mp), median(sk8))
    gapm = mp["objective_gap"] if mp else None
    out.append(_check("cg.infer.map defaults: objective within 1e-3 of the reference in ≤ 0.5× scikit-learn "
                      "tol=1e-8", rm, 0.5, f"{_x(rm)}; objective − ref {_g(gapm)}",
                      gapm is not None and abs(gapm) <= 1e-3))
    fl = res.get("floor", {})
    t, where, here = judged_gradient_s(res)
    rg = _ratio(t, fl.get("read_x_once_s"))
    rb = _ratio(t, fl.get("blas_read_x_s"))
    also = (f"; {_x(_ratio(here, fl.get('read_x_once_s')))} in the bench process, after NumPy and JAX ran there"
            if here is not None else "")
    out.append(_check("one loss-and-gradient ≤ 1.3× the single-read floor (copy bandwidth)", rg, 1.3,
                      f"{_x(rg)} {where} ({_x(rb)} a BLAS pass over X){also}"))
    second = (g4 or {}).get("fits", [None, None])[1:2]
    s2 = compile_share(second[0]) if second and second[0] else None
    text = "—" if s2 is None else f"{100 * s2:.2g}% (tracing and lowering {100 * trace_share(second[0]):.2g}%)"
    out.append(_check("second fit in one process: < 5% of its time compiling", s2, 0.05, text))
    warm = _fresh(res, "warm_cache")
    wf = warm["fits"][0] if warm else None
    sw = compile_share(wf) if wf else None
    out.append(_check("fresh process, warm persistent cache: < 15% compiling", sw, 0.15,
                      "—" if sw is None else f"{100 * sw:.2g}% (tracing and lowering {100 * trace_share(wf):.2g}%)"))
    peer = _fresh(res, "sklearn")
    for name, label, limit in (("warm_cache", "warm", 1.0), ("cold_cache", "empty", 2.0)):
        ours = _fresh(res, name)
        r = _ratio(ours["first_s"] if ours else None, peer["first_s"] if peer else None)
        out.append(_check(f"first fit in a fresh process, {label} persistent cache: ≤ {limit:g}× scikit-learn's "
                          "first fit in a fresh process", r, limit,
                          f"{_x(r)} ({_s(ours['first_s'] if ours else None)} vs "
                          f"{_s(peer['first_s'] if peer else None)})"))
    mem = peak_over_x(warm or _fresh(res, "cold_cache"))
    out.append(_check("driver peak memory during a fit ≤ 1.2× X", mem, 1.2, f"{_x(mem)} X (above an idle process "
                      "with JAX started)"))
    loc, ray = _fresh(res, "local2_map"), _fresh(res, "ray2_map")
    rr = _ratio(ray["median_s"] if ray else None, loc["median_s"] if loc else None)
    out.append(_check("Ray(workers=2) fit ≤ 1.2× Local(devices=2)", rr, 1.2,
                      f"{_x(rr)} ({_s(ray['median_s'] if ray else None)} vs {_s(loc['median_s'] if loc else None)})"))
    return out


def peak_over_x(fresh: dict | None) -> float | None:
    """The largest peak resident memory over the fits of a fresh process, above the process before X existed,
    in units of X's size."""
    if not fresh:
        return None
    peaks = [f["peak_rss_bytes"] for f in fresh["fits"] if f.get("peak_rss_bytes")]
    if not peaks:
        return None
    return (max(peaks) - fresh["baseline_rss_bytes"]) / fresh["x_bytes"]


def _s(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x * 1e3:.3g} ms" if x < 1 else f"{x:.3g} s"


def _g(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


def fit_rows(res: dict) -> list[list]:
    """Compile phases and peak memory of single fits: in this process and in fresh ones."""
    rows = []
    g4 = solver(res, GLM4)
    for i, f in enumerate((g4 or {}).get("fits", [])):
        rows.append([f"LogisticRegression(tol=1e-4), bench process, fit {i + 1}", f])
    for name, label in (("cold_cache", "fresh process, empty persistent cache"),
                        ("warm_cache", "fresh process, warm persistent cache")):
        fr = _fresh(res, name)
        for i, f in enumerate((fr or {}).get("fits", [])):
            rows.append([f"LogisticRegression(tol=1e-4), {label}, fit {i + 1}", f,
                         (f["peak_rss_bytes"] - fr["baseline_rss_bytes"]) / fr["x_bytes"]
                         if f.get("peak_rss_bytes") else None])
    peer = _fresh(res, "sklearn")
    for i, f in enumerate((peer or {}).get("fits", [])):
        rows.append([f"scikit-learn LogisticRegression(fit_intercept=False), fresh process, fit {i + 1}", f,
                     (f["peak_rss_bytes"] - peer["baseline_rss_bytes"]) / peer["x_bytes"]
                     if f.get("peak_rss_bytes") else None])
    out = []
    for row in rows:
        label, f = row[0], row[1]
        mem = row[2] if len(row) > 2 else None
        out.append([label, _s(f["wall_s"]), _s(f.get("trace_s")), _s(f.get("lower_s")), _s(f.get("compile_s")),
                    _s(f.get("cache_load_s")), f"{100 * compile_share(f):.2g}%",
                    f"{100 * trace_share(f):.2g}%", _x(mem), _programs(f.get("programs"))])
    return out


def _programs(p: dict | None) -> str:
    """Programs a fit loaded from the store / exported to it (claygraph.runtime.program_store)."""
    return "—" if not p or not any(p.values()) else f"{p.get('loaded', 0)} / {p.get('exported', 0)}"


def runtime_rows(res: dict) -> list[list]:
    rows = []
    mp = solver(res, MAP)
    if mp:
        first = mp["fits"][0]["wall_s"] if mp.get("fits") else None
        rows.append(["Local(devices=1), bench process", ",".join(mp.get("split") or []) or "none",
                     _s(mp["timing"]["median_s"]), _s(first), mp["iterations"],
                     mp.get("reported_objective")])
    for name, label in (("local2_map", "Local(devices=2), fresh process"), ("ray2_map", "Ray(workers=2), fresh "
                                                                                      "driver process")):
        fr = (res.get("fresh") or {}).get(name)
        if not fr:
            continue
        if fr.get("status") != "ok":
            rows.append([label, "—", fr.get("status"), "—", "—", (fr.get("note") or "")[:200]])
            continue
        last = fr["fits"][-1]
        rows.append([label, ",".join(last["split"]) or "none", _s(fr["median_s"]), _s(fr["first_s"]),
                     last["iterations"], last["objective"]])
    return rows
