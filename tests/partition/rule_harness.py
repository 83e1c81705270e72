"""The rule verification harness: every primitive the registry knows, handed every placement that
propagation can give it, checked end to end against the unsplit model.

Each *term* applies one primitive to operands built so that the planner hands them a chosen
placement under the row split:

    S      a data array with dims ("row", "k")                          -> Sharded(row)
    R      a data array with dims ("k",)                                -> Replicated
    Psum   jnp.sum(x, axis=0) of an ("row", "k") array                  -> Partial(sum)
    Pmax   jnp.max(x, axis=0)                                           -> Partial(max)
    Pmin   jnp.min(x, axis=0)                                           -> Partial(min)

(under the `k` split the same terms receive Sharded(k) operands instead). An operation whose
operands include an S operand works on shape (n, k); the others are broadcast to it. The output
of term j enters the potential as `theta[j] * sum(w_j * out_j)` with data weights `w_j` of the
output's dims, so the gradient with respect to `theta[j]` is a position-sensitive checksum of
term j alone: a wrong value, a wrong layout or wrong padding in any one term shows up in its own
gradient entry, and the failure names the primitive and the placements it was handed.

The compiled split program runs on 1-4 host devices with row counts that do not divide evenly
(padding and masks), and is compared with NumPyro's potential and gradient of the same model.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import claygraph as cg

KINDS = ("S", "R", "Psum", "Pmax", "Pmin")
PARTIAL = {"Psum": jnp.sum, "Pmax": jnp.max, "Pmin": jnp.min}

# Every (primitive, placements handed to it) pair any run has verified: the coverage report.
COVERED: Counter = Counter()


@dataclass(frozen=True)
class Term:
    """One primitive applied to operands of the given kinds.

    `op` takes the operands (already of the op's shape) and returns the output; `out_dims` names
    the output's axes given the op's input dims; `domain` is where the raw data are drawn.
    """

    prim: str
    op: Callable
    kinds: tuple[str, ...]
    domain: str = "any"
    out_dims: Callable[[tuple[str, ...]], tuple[str, ...]] = field(default=lambda dims: dims)
    broadcast: bool = True  # False: operands keep their own shapes (S: (n, k); R and P*: (k,))

    @property
    def label(self) -> str:
        return f"{self.prim}({', '.join(self.kinds)})"


def _sample(rng: np.random.Generator, domain: str, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Raw data in a domain; `scale` keeps a sum of n entries inside bounded domains."""
    if domain == "positive":
        return rng.uniform(0.5, 2.0, shape)
    if domain == "unit":
        return rng.uniform(-0.9, 0.9, shape) * scale
    if domain == "small":
        return rng.uniform(-1.0, 1.0, shape) * scale
    return rng.normal(0.0, 1.0, shape)


def _op_dims(kinds: Sequence[str]) -> tuple[str, ...]:
    return ("row", "k") if "S" in kinds else ("k",)


def dim_size(d: str, n: int, k: int) -> int:
    """Sizes of the dims terms may produce: row, k, and the row/k axes doubled, less one, plus one."""
    base = {"row": n, "k": k}[d.rstrip("2mp")]
    return base * 2 if d.endswith("2") else base - 1 if d.endswith("m") else base + 1 if d.endswith("p") else base


def _operand(kind: str, x: jax.Array, dims: tuple[str, ...], n: int) -> jax.Array:
    if kind in PARTIAL:
        x = PARTIAL[kind](x, axis=0)
    if kind != "S" and dims[0] == "row":
        x = jnp.broadcast_to(x, (n, *x.shape))
    return x


@dataclass
class Suite:
    """A batch of terms built into one model over one data set."""

    terms: list[Term]
    n: int
    k: int
    seed: int = 0

    def data(self) -> cg.Data:
        rng = np.random.default_rng(self.seed)
        arrays = {}
        for j, t in enumerate(self.terms):
            scale = 1.0 / self.n if t.domain in ("unit", "small") else 1.0
            for i, kind in enumerate(t.kinds):
                if kind == "R":
                    v = _sample(rng, t.domain, (self.k,), 1.0)
                    arrays[f"t{j}_{i}"] = cg.array(v.astype(np.float32), "k")
                else:
                    v = _sample(rng, t.domain, (self.n, self.k), scale if kind == "Psum" else 1.0)
                    arrays[f"t{j}_{i}"] = cg.array(v.astype(np.float32), "row", "k")
            dims = t.out_dims(_op_dims(t.kinds))
            shape = tuple(dim_size(d, self.n, self.k) for d in dims)
            arrays[f"w{j}"] = cg.array(rng.normal(size=shape).astype(np.float32), *dims)
        return cg.Data(**arrays)

    def model(self, data: cg.Data) -> None:
        theta = numpyro.sample("theta", dist.Normal(0.0, 1.0).expand([len(self.terms)]).to_event(1))
        total = 0.0
        for j, t in enumerate(self.terms):
            dims = _op_dims(t.kinds)
            if not t.broadcast:
                dims = ("k",)
            ops = [_operand(kind, getattr(data, f"t{j}_{i}"), dims, self.n) for i, kind in enumerate(t.kinds)]
            out = t.op(*ops).astype(jnp.float32)
            total = total + theta[j] * jnp.sum(getattr(data, f"w{j}") * out)
        numpyro.factor("terms", total)


def record_coverage(plan, prims: set[str]) -> None:
    prop = plan.chosen.propagation
    graph = plan.graph
    for node in graph.nodes():
        if node.primitive in prims:
            COVERED[(node.primitive, tuple(str(s) for s in prop.received[node.id]))] += 1


def check_suite(suite: Suite | IndexSuite, split: tuple[str, ...], devices: int) -> None:
    """The split program's potential and every term's checksum equal NumPyro's."""
    from numpyro.infer.util import potential_energy

    data = suite.data()
    graph = cg.lower(suite.model, data)
    plan = cg.partition(graph, data, cluster=cg.ClusterSpec.local(devices=devices), split=split)
    record_coverage(plan, {t.prim for t in suite.terms})
    params = {"theta": jnp.asarray(np.random.default_rng(suite.seed + 1).normal(size=len(suite.terms)),
                                   jnp.float32)}
    v, g = cg.compile(plan).potential_and_grad(params)
    v_ref, g_ref = jax.jit(jax.value_and_grad(lambda z: potential_energy(suite.model, (data,), {}, z)))(params)
    got, want = np.asarray(g["theta"]), np.asarray(g_ref["theta"])
    bad = [f"{t.label}: split {float(a):.6g} != unsplit {float(b):.6g}"
           for t, a, b in zip(suite.terms, got, want) if not _close(a, b)]
    where = f"split {split} on {devices} devices, {suite.n} rows, k={suite.k}"
    assert not bad, f"{where}:\n  " + "\n  ".join(bad)
    assert _close(float(v), float(v_ref)), f"{where}: potential {float(v)} != {float(v_ref)}"


def _close(a: float, b: float) -> bool:
    if math.isnan(b):
        return math.isnan(a)
    return math.isfinite(a) and abs(a - b) <= 1e-3 + 2e-4 * abs(b)


@dataclass(frozen=True)
class IndexTerm:
    """A term over the index suite's data: X (row, k), x (row), A (grp), B (grp, k), g (row -> grp)."""

    prim: str
    op: Callable
    out_dims: tuple[str, ...]
    label: str


@dataclass
class IndexSuite:
    """Gathers through an index column and scatters into its target, under every split (the group
    split co-partitions rows with their groups and remaps the column to local ids)."""

    terms: list[IndexTerm]
    n: int
    k: int
    groups: int
    seed: int = 0

    def data(self) -> cg.Data:
        rng = np.random.default_rng(self.seed)
        g = rng.integers(0, self.groups, self.n).astype(np.int32)
        sizes = {"row": self.n, "k": self.k, "grp": self.groups}
        arrays = {"X": cg.array(rng.normal(size=(self.n, self.k)).astype(np.float32), "row", "k"),
                  "x": cg.array(rng.normal(size=self.n).astype(np.float32), "row"),
                  "A": cg.array(rng.normal(size=self.groups).astype(np.float32), "grp"),
                  "B": cg.array(rng.normal(size=(self.groups, self.k)).astype(np.float32), "grp", "k"),
                  "g": cg.index(g, "row", into="grp", size=self.groups)}
        for j, t in enumerate(self.terms):
            shape = tuple(sizes[d] for d in t.out_dims)
            arrays[f"w{j}"] = cg.array(rng.normal(size=shape).astype(np.float32), *t.out_dims)
        return cg.Data(**arrays)

    def model(self, data: cg.Data) -> None:
        theta = numpyro.sample("theta", dist.Normal(0.0, 1.0).expand([len(self.terms)]).to_event(1))
        total = 0.0
        for j, t in enumerate(self.terms):
            out = t.op(data).astype(jnp.float32)
            total = total + theta[j] * jnp.sum(getattr(data, f"w{j}") * out)
        numpyro.factor("terms", total)
