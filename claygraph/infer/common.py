"""What every inference method shares: plan + program set-up, constraining, recovery after a lost worker."""
from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

from claygraph.errors import WorkerError
from claygraph.runtime.protocol import Runtime

log = logging.getLogger("claygraph.infer")


@dataclass
class Session:
    """A plan compiled on a runtime, rebuildable after a worker loss."""

    model: Callable
    data: Any
    plan: Any
    program: Any
    runtime: Any
    split: Any = None  # the split the user asked for (None: the cost model's choice)

    def rebuild(self) -> None:
        self.runtime.restart()
        self.program = self.runtime.compile(self.plan, self.data)


def setup(model: Callable, data, runtime: Runtime | None = None, cluster=None, split=None,
          jacobian: bool = True) -> Session:
    from claygraph.partition.cluster import ClusterSpec
    from claygraph.partition.plan import partition
    from claygraph.runtime.local import Local

    runtime = runtime if runtime is not None else Local(devices=1)
    devices = runtime.devices
    if cluster is None:  # a runtime of several processes (Ray) crosses the process link
        cluster = ClusterSpec.local(devices=devices, link=getattr(runtime, "link", "devices"))
    elif cluster.devices != devices:
        raise ValueError(f"cluster has {cluster.devices} devices but the runtime has {devices}")
    plan = partition(model, data, cluster=cluster, split=split, jacobian=jacobian)
    if not plan.graph.inputs.params:
        from claygraph.errors import ModelError

        raise ModelError(f"model {getattr(model, '__name__', 'model')!r} has no latent sample sites (every "
                         f"numpyro.sample has obs=): there is nothing to infer. Add a latent site, or evaluate the "
                         f"log density with cg.compile(cg.partition(model, data)).potential({{}})")
    return Session(model, data, plan, runtime.compile(plan, data), runtime, split)


class Continue(NamedTuple):
    """Run the next chunk of fit `fit` from the state the workers hold for it (Context.resident, keyed by
    the fit: two fits on one program never continue each other's state)."""

    fit: str


def new_fit() -> str:
    """A key for one fit's state on the workers."""
    import uuid

    return uuid.uuid4().hex[:12]


def drop_resident(ctx, key) -> None:
    """Drop a fit's state on the workers (a step: run it with run_spmd)."""
    ctx.resident.pop(key, None)


def release(session: Session, key) -> None:
    """Drop a fit's state on the workers after it ended, however it ended (its memory is several times the
    params); a lost worker took it with it already."""
    try:
        run_spmd(session.program, drop_resident, key)
    except Exception:  # the caller's error (if any) stands
        pass


def run_spmd(program, fn: Callable, *args) -> Any:
    """fn(context, *args) on every process of `program`, through its runtime; the result once."""
    return program.runtime.run(program, fn, *args)


def hvp(grad: Callable, x, v):
    """The Hessian-vector product H v of the function whose gradient is `grad`, at `x`, by reverse mode
    over reverse mode: the split programs' kernels (claygraph.partition.kernels) define their gradients
    with custom_vjp, which JAX cannot differentiate in forward mode (jax.jvp, jax.hessian)."""
    import jax
    import jax.numpy as jnp

    return jax.grad(lambda y: sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(grad(y)), jax.tree.leaves(v))))(x)


def kept(ctx, key: Any, fn: Callable, donate_argnums=()) -> Callable:
    """`jax.jit(fn, donate_argnums=...)` kept across processes (claygraph.runtime.program_store): `key` says
    what `fn` computes from the context's potential (an inference loop and its settings), beside the split
    function's own key; build it inside `ctx.cached` so that a process wraps it once."""
    from claygraph.runtime.program_store import Stored

    return Stored(fn, (ctx.key, key), donate_argnums)


def like_sites(mesh, sites: Mapping[str, Any]) -> Callable:
    """x -> x constrained (inside jit) to the sharding of the latent site whose internal shape it has, or that
    shape after a leading axis (L-BFGS's memory) or before a trailing one (a low-rank factor); any other array
    as it is. For an optimiser's state made of zeros, to which XLA gives no sharding of its own: a replicated
    first state holds every device's whole state and makes the loop's next call compile again. A shape two
    sites with different shardings share is left alone."""
    import jax
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    specs: dict[tuple, set] = {}
    for site in sites.values():
        specs.setdefault(tuple(site.internal_shape), set()).add(tuple(site.spec))
    sharded = {shape: next(iter(v)) for shape, v in specs.items()
               if len(v) == 1 and any(a is not None for a in next(iter(v)))}

    def place(x):
        spec = (sharded.get(x.shape) or (x.ndim and sharded.get(x.shape[1:]) and (None, *sharded[x.shape[1:]]))
                or (x.ndim and sharded.get(x.shape[:-1]) and (*sharded[x.shape[:-1]], None)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, P(*spec))) if spec else x

    return place


def zeros_like_params(graph) -> dict[str, np.ndarray]:
    return {k: np.zeros(s, graph.value(graph.inputs.params[k]).dtype) for k, s in graph.param_shapes.items()}


def run_resumable(session: Session, step: Callable[[Any, Any], tuple[Any, bool]], state: Any,
                  max_restarts: int = 2) -> Any:
    """Call `step(program, state) -> (state, done)` until done; after a lost worker, rebuild the
    group and resume from the last state returned (the checkpoint)."""
    restarts = 0
    while True:
        try:
            state, done = step(session.program, state)
        except WorkerError as e:
            if restarts >= max_restarts:
                raise
            restarts += 1
            log.warning("lost a worker (%s); rebuilding the group and resuming from the checkpoint", e)
            session.rebuild()
            continue
        if done:
            return state


def constrain(model: Callable, data, params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Unconstrained `params` -> the model's constrained sites."""
    from numpyro.infer.util import constrain_fn

    if data.has_sources:
        batch = {k: np.asarray(v)[None] for k, v in params.items()}
        return {k: v[0] for k, v in constrain_draws(model, data, batch).items()}
    return {k: np.asarray(v) for k, v in constrain_fn(model, (data,), {}, dict(params)).items()}


def constrain_draws(model: Callable, data, draws: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Constrain a batch of unconstrained draws (leading axis) with one jitted vmap, and compute the
    model's `numpyro.deterministic` sites from them, as NumPyro's MCMC returns them.

    The data go in as an argument, never captured: a model that indexes its arrays with traced
    values (`X[idx]`) traces, and file-backed data go in as zero-stride stand-ins for the files'
    arrays, which jit prunes when the constraints do not use them (the table is neither read nor
    copied to a device).
    """
    import jax
    from numpyro.infer.util import constrain_fn

    order: list[str] = []

    def constrained(z, d):
        out = constrain_fn(model, (d,), {}, z, return_deterministic=True)
        order[:] = list(out)
        # a site whose constraint is the identity (Real) comes back as its input: not returned (and copied) again
        return {k: v for k, v in out.items() if not (k in z and v is z[k])}

    fn = jax.jit(jax.vmap(constrained, in_axes=(0, None)))
    stand = data.stand_in() if data.has_sources else data
    out = fn(dict(draws), stand)
    skip = _on_files(constrained, draws, data, stand) if data.has_sources else {}
    for site, arrays in skip.items():
        warnings.warn(f"deterministic site {site!r} depends on data in files ({', '.join(sorted(arrays))}), "
                      f"which the driver does not read: it is left out of the result; compute it from the "
                      f"draws and your data", stacklevel=3)
    return {k: np.asarray(out[k]) if k in out else np.asarray(draws[k]) for k in order if k not in skip}


def _on_files(constrained: Callable, draws: Mapping[str, np.ndarray], data, stand) -> dict[str, set[str]]:
    """The outputs of `constrained(z, data)` that depend on a file-backed array (there a zero-stride stand-in,
    whose values would be wrong), with the arrays they depend on: a dependence pass over its jaxpr (an
    equation with a dependent input makes all its outputs dependent: conservative for inner calls)."""
    import jax
    from jax.extend.core import Literal

    one = {k: np.asarray(v)[0] for k, v in draws.items()}
    closed, shape = jax.make_jaxpr(constrained, return_shape=True)(one, stand)
    jaxpr = closed.jaxpr
    z_leaves = len(jax.tree_util.tree_leaves(one))
    keys = data.names  # (Data flattens to its arrays' values, in its names' order)
    from_files = {v: {k} for v, k in zip(jaxpr.invars[z_leaves:], keys) if data.arrays[k].source is not None}
    for eqn in jaxpr.eqns:
        hit = set().union(*(from_files.get(v, set()) for v in eqn.invars if not isinstance(v, Literal)))
        if hit:
            for v in eqn.outvars:
                from_files[v] = from_files.get(v, set()) | hit
    leaves, _ = jax.tree_util.tree_flatten_with_path(shape)
    out = {}
    for (path, _), v in zip(leaves, jaxpr.outvars):
        arrays = from_files.get(v) if not isinstance(v, Literal) else None
        if arrays:
            out[path[0].key] = arrays
    return out


def arviz():
    """The arviz module, imported without its once-a-day notice about its coming refactor (a
    FutureWarning at import that says nothing about the user's draws). Every claygraph use of
    arviz goes through here so that the notice is handled once."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"\s*ArviZ is undergoing a major refactor", category=FutureWarning)
        import arviz as az
    return az


def to_inference_data(graph, samples: Mapping[str, np.ndarray], sample_stats: Mapping[str, np.ndarray] | None = None):
    """ArviZ InferenceData with the model's site names, dims and coordinates. samples: (chain, draw, ...)."""
    az = arviz()

    dims, coords = {}, {}
    shapes = {s.name: s for s in graph.meta.info.sites}
    for k, v in samples.items():
        site = shapes.get(k)
        pd = graph.param_dims.get(k)
        if site is not None and pd is not None and tuple(v.shape[2:]) == tuple(site.constrained_shape) \
                and len(pd) == v.ndim - 2 and all(d is not None for d in pd):
            dims[k] = list(pd)
            for d, n in zip(pd, v.shape[2:]):
                coords.setdefault(d, np.arange(n))
    return az.from_dict(posterior=dict(samples), sample_stats=dict(sample_stats or {}), dims=dims, coords=coords)


def _finite(value, grads) -> bool:
    return bool(np.isfinite(np.asarray(value))) and all(np.all(np.isfinite(np.asarray(g))) for g in grads.values())


def valid_initial_points(session: Session, make_point: Callable[[Any], dict], keys, tries: int = 100) -> list[dict]:
    """For each key, a point where the potential and its gradient are finite: `make_point(key)`,
    else fresh draws (as NumPyro retries its initialisation). Raises ModelError naming what makes
    the density invalid when no point is found."""
    import jax

    out = []
    for key in keys:
        for attempt in range(tries):
            point = make_point(key if attempt == 0 else jax.random.fold_in(key, attempt))
            value, grads = session.program.potential_and_grad(point)
            if _finite(value, grads):
                out.append(point)
                break
        else:
            raise invalid_density(session.model, session.data, point, tries)
    return out


def invalid_density(model: Callable, data, point: Mapping[str, Any], tries: int):
    """A ModelError naming the sites (and, for observed sites, the observations) whose
    log-probability is not finite at `point` (unconstrained)."""
    from claygraph.errors import ModelError

    bad = invalid_sites(model, data, point)
    where = "; ".join(bad) if bad else "no single site: the sum of the log-density terms is not finite"
    return ModelError(f"model {getattr(model, '__name__', 'model')!r} has no valid initial point: the potential or "
                      f"its gradient is not finite at {tries} random points in (-2, 2) (unconstrained). Not finite: "
                      f"{where}. Check that every observation lies in its likelihood's support and that the model "
                      f"takes no log or sqrt of negative data")


def _dist_name(fn) -> str:
    """The user's distribution inside NumPyro's wrappers (expand, to_event, mask)."""
    while type(fn).__name__ in ("ExpandedDistribution", "Independent", "MaskedDistribution"):
        fn = fn.base_dist
    return type(fn).__name__


def invalid_sites(model: Callable, data, point: Mapping[str, Any]) -> list[str]:
    """The sample sites whose log-probability is not finite at unconstrained `point`, each as
    "'y' (observed, 2 of 30 entries): not finite under Poisson at positions 3, 17". Best effort:
    empty when the model cannot be traced here (file-backed data, a model that fails eagerly)."""
    from numpyro import handlers
    from numpyro.infer.util import constrain_fn

    if getattr(data, "has_sources", False):
        return []
    try:
        z = constrain_fn(model, (data,), {}, dict(point))
        trace = handlers.trace(handlers.substitute(model, data=z)).get_trace(data)
        with warnings.catch_warnings():  # NumPyro warns of out-of-support values: that is what we look for
            warnings.simplefilter("ignore")
            lps = {name: np.asarray(site["fn"].log_prob(site["value"])) for name, site in trace.items()
                   if site["type"] == "sample"}
    except Exception:  # naming the cause is best effort; the caller's error stands without it
        return []
    out = []
    for name, lp in lps.items():
        site = trace[name]
        nonfinite = np.flatnonzero(~np.isfinite(lp))
        if not nonfinite.size:
            continue
        what = "observed" if site["is_observed"] else "latent"
        first = ", ".join(map(str, nonfinite[:5])) + (", ..." if nonfinite.size > 5 else "")
        out.append(f"{name!r} ({what}, {nonfinite.size} of {lp.size} entries): not finite under "
                   f"{_dist_name(site['fn'])} at positions {first}")
    return out
