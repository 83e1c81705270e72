"""`claygraph inspect FILE.py`: lower a model and show its dims, parameters, data and graph.

FILE.py defines `model` (a NumPyro model of one argument) and `data` (a `claygraph.Data`, or a
function of no arguments returning one); `--model NAME` and `--data NAME` pick other names.
The report is `report(model, data)`, printed as text or (`--json`) as one JSON object.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import runpy
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from claygraph.errors import DataError, ModelError, PartitionError
from claygraph.frontend.data import Data
from claygraph.ir.graph import Graph
from claygraph.ir.lower import lower


@dataclass(frozen=True, slots=True)
class ParamRow:
    """One latent site as the potential sees it (unconstrained)."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    dims: tuple[str | None, ...]
    support: str


@dataclass(frozen=True, slots=True)
class DataRow:
    """One data array: its declared dims, and for an index column the dim it points into."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    dims: tuple[str, ...]
    into: str | None


@dataclass(frozen=True, slots=True)
class InspectReport:
    """What `claygraph inspect` shows. `plan` is the partition plan, once partitioning is wired in."""

    model_name: str
    graph: Graph
    dims: dict[str, int]
    params: tuple[ParamRow, ...]
    data: tuple[DataRow, ...]
    primitives: dict[str, int]
    plan: object | None = None
    projection: object | None = None  # claygraph.partition.projection.Projection for --nodes

    @property
    def nodes(self) -> int:
        return len(self.graph)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model_name,
            "dims": dict(self.dims),
            "params": {p.name: {"shape": list(p.shape), "dims": list(p.dims), "dtype": p.dtype, "support": p.support}
                       for p in self.params},
            "data": {d.name: {"shape": list(d.shape), "dims": list(d.dims), "into": d.into, "dtype": d.dtype}
                     for d in self.data},
            "nodes": self.nodes,
            "primitives": dict(self.primitives),
        }
        out.update(_plan_section(self.plan)[0])
        if self.projection is not None:
            out["projection"] = self.projection.to_json()
        return out

    def to_text(self) -> str:
        sections = [
            f"model {self.model_name!r}: {_count(self.nodes, 'node')}, {_count(len(self.params), 'parameter')}, "
            f"{_count(len(self.data), 'data array')}",
            _dims_text(self),
            _params_text(self.params),
            _data_text(self.data, self.dims),
            _table(f"nodes by primitive ({self.nodes})", [(k, f"{n:,}") for k, n in self.primitives.items()]),
            _plan_section(self.plan)[1],
            self.projection.to_text() if self.projection is not None else "",
            "graph (inputs, then nodes in topological order)\n" + _indent(str(self.graph)),
        ]
        return "\n\n".join(s for s in sections if s) + "\n"


def report(model: Callable, data: Data, *, plan: object | None = None,
           projection: object | None = None) -> InspectReport:
    """Lower `model(data)` and collect what `inspect` shows (data values are never read)."""
    graph = lower(model, data)
    sites = {s.name: s for s in graph.meta.info.sites}
    params = tuple(ParamRow(name, graph.value(vid).shape, graph.value(vid).dtype.name, graph.value(vid).dims,
                            sites[name].support)
                   for name, vid in sorted(graph.inputs.params.items()))
    rows = tuple(DataRow(name, a.shape, a.dtype.name, a.dims, a.into) for name, a in sorted(graph.meta.arrays.items()))
    return InspectReport(getattr(model, "__name__", "model"), graph, graph.dims, params, rows,
                         graph.primitive_counts(), plan, projection)


def _plan_section(plan: object | None) -> tuple[dict[str, Any], str]:
    """The partition plan as (JSON keys, text section). The place where plan output is formatted."""
    if plan is None:
        return {}, ""
    from claygraph.partition.plan import summary

    return summary(plan), "partition plan\n" + _indent(plan.explain())


# -- text sections ------------------------------------------------------------------------------

def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + line if line else line for line in text.splitlines())


def _table(title: str, rows: Sequence[Sequence[str]]) -> str:
    """A title and left-aligned columns (the last column ragged)."""
    if not rows:
        return f"{title}\n  (none)"
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)) + "  " + r[-1] for r in rows]
    return title + "\n" + _indent("\n".join(line.rstrip() for line in lines))


def _shape_text(dtype: str, shape: Sequence[int], dims: Sequence[str | None]) -> str:
    return f"{dtype}[{', '.join(f'{d}={n}' if d else str(n) for d, n in zip(dims, shape))}]"


def _dims_text(rep: InspectReport) -> str:
    users: dict[str, list[str]] = {d: [] for d in rep.dims}
    for p in rep.params:
        for d in dict.fromkeys(x for x in p.dims if x):
            users.setdefault(d, []).append(p.name)
    for a in rep.data:
        for d in dict.fromkeys(a.dims + ((a.into,) if a.into else ())):
            users.setdefault(d, []).append(a.name + (" (points into)" if d == a.into else ""))
    rows = [(d, f"{n:,}", ", ".join(users.get(d, [])) or "-") for d, n in rep.dims.items()]
    return _table("dims (size, used by)", rows)


def _params_text(params: Sequence[ParamRow]) -> str:
    rows = [(p.name, _shape_text(p.dtype, p.shape, p.dims), p.support) for p in params]
    return _table("parameters (unconstrained shape with dims; support)", rows)


def _data_text(data: Sequence[DataRow], sizes: dict[str, int]) -> str:
    rows = [(a.name, _shape_text(a.dtype, a.shape, a.dims),
             f"index into {a.into!r} ({sizes.get(a.into, '?')})" if a.into else "") for a in data]
    return _table("data arrays (shape with dims; what an index column points into)", rows)


# -- loading FILE.py ------------------------------------------------------------------------------

def load(path: str | Path, model_name: str = "model", data_name: str = "data") -> tuple[Callable, Data]:
    """Run FILE.py and take its model and data (calling `data` when it is a function)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"no model file {str(path)!r}; pass a Python file that defines "
                         f"`{model_name}` and `{data_name}`")
    names = _run_file(path)
    model = names.get(model_name)
    if model is None or not callable(model):
        what = "does not define" if model is None else "defines a non-callable"
        raise ModelError(f"{path} {what} `{model_name}`; define a NumPyro model `def {model_name}(data): ...` "
                         f"or pick another name with --model NAME")
    data = names.get(data_name)
    if data is None:
        raise DataError(f"{path} does not define `{data_name}`; define `{data_name} = cg.Data(...)` (or a "
                        f"function returning one) or pick another name with --data NAME")
    if callable(data) and not isinstance(data, Data):
        data = _call_data(path, data_name, data)
    if not isinstance(data, Data):
        raise DataError(f"`{data_name}` in {path} is a {type(data).__name__}, not a claygraph.Data; "
                        f"build it with cg.Data(X=cg.array(X, 'row', 'feature'), ...)")
    return model, data


def _run_file(path: Path) -> dict[str, Any]:
    folder = str(path.resolve().parent)
    sys.path.insert(0, folder)  # like `python FILE.py`: modules next to the file import
    try:
        with contextlib.redirect_stdout(sys.stderr):  # what the file prints must not mix with the report
            return runpy.run_path(str(path), run_name="__claygraph_inspect__")
    except Exception as e:
        raise ModelError(f"running {path} failed at {_where(path, e)}: {type(e).__name__}: {e}") from e
    finally:
        if folder in sys.path:
            sys.path.remove(folder)


def _call_data(path: Path, name: str, fn: Callable) -> Any:
    try:
        with contextlib.redirect_stdout(sys.stderr):
            return fn()
    except Exception as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"calling `{name}()` from {path} failed at {_where(path, e)}: {type(e).__name__}: {e}") from e


def _where(path: Path, exc: BaseException) -> str:
    """The deepest traceback line inside `path` ('file:line'), or the file itself."""
    if isinstance(exc, SyntaxError) and exc.lineno:
        return f"{path}:{exc.lineno}"
    target = str(path.resolve())
    own = [f for f in traceback.extract_tb(exc.__traceback__) if str(Path(f.filename).resolve()) == target]
    return f"{path}:{own[-1].lineno}" if own else str(path)


# -- partitioning (wired in by claygraph.partition when it lands) --------------------------------

def plan_for(model: Callable, data: Data, devices: int | None, cluster: str | None) -> object | None:
    """The partition plan for `--devices N` / `--cluster PRESET` (with both: enough preset nodes for N)."""
    from claygraph.partition.cluster import ClusterSpec
    from claygraph.partition.plan import partition

    if devices is None and cluster is None:
        return None
    if cluster is None:
        spec = ClusterSpec.local(devices=devices)
    else:
        per_node = ClusterSpec.preset(cluster).devices_per_node
        spec = ClusterSpec.preset(cluster, nodes=max(1, -(-(devices or per_node) // per_node)))
    return partition(model, data, cluster=spec)


# -- the command ----------------------------------------------------------------------------------

def _positive(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {n}")
    return n


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="claygraph inspect", description=__doc__.splitlines()[0])
    p.add_argument("file", metavar="FILE.py", help="a Python file defining a model and its data")
    p.add_argument("--model", default="model", metavar="NAME", help="the model's name in FILE.py (default: model)")
    p.add_argument("--data", default="data", metavar="NAME",
                   help="the data's name in FILE.py: a claygraph.Data or a function returning one (default: data)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    draw = p.add_mutually_exclusive_group()
    draw.add_argument("--svg", metavar="PATH", help="draw the graph, nodes coloured by dim, as SVG (with --nodes: "
                      "the scaling projection)")
    draw.add_argument("--png", metavar="PATH", help="the same drawing as PNG")
    p.add_argument("--devices", type=_positive, metavar="N", help="plan a split over N local devices")
    p.add_argument("--cluster", metavar="PRESET", help="plan a split for a ClusterSpec preset (e.g. p4d)")
    p.add_argument("--nodes", type=_node_counts, metavar="N,N,...",
                   help="with --cluster: project every candidate's time, memory and communication share over these "
                        "node counts (e.g. 1,2,4,8,16,64)")
    return p


def _node_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(t) for t in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"node counts are whole numbers separated by commas, got {text!r}") from None
    if any(n < 1 for n in counts) or list(counts) != sorted(set(counts)):
        raise argparse.ArgumentTypeError(f"node counts must be increasing and at least 1, got {text!r}")
    return counts


def sharding_of(plan) -> Callable:
    """Colour key for a node: the sharding of its first output under the plan."""
    shardings = plan.shardings

    def key(graph: Graph, node) -> str:
        return str(shardings.get(node.outputs[0], "R")) if node.outputs else "R"

    return key


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.nodes and not args.cluster:
        parser.error("--nodes projects over a cluster preset's nodes: pass --cluster PRESET too")
    model, data = load(args.file, args.model, args.data)
    projection = None
    if args.nodes:
        from claygraph.partition.projection import project

        projection = project(model, data, args.cluster, args.nodes)
    try:
        plan = plan_for(model, data, args.devices, args.cluster)
    except PartitionError:
        if projection is None:
            raise
        plan = None  # nothing fits one node: the projection says from how many nodes something does
    rep = report(model, data, plan=plan, projection=projection)
    picture = args.svg or args.png
    if picture:
        from claygraph.cli.draw import draw_graph

        if projection is not None:
            from claygraph.partition.projection import draw

            draw(projection, picture, rep.model_name)
        elif rep.plan is not None:  # colour by sharding once there is a plan
            draw_graph(rep.graph, picture, color_by=sharding_of(rep.plan), legend="sharding",
                       title=f"{rep.model_name}: split {','.join(rep.plan.split) or 'none'}")
        else:
            draw_graph(rep.graph, picture, title=f"{rep.model_name}: {rep.nodes} nodes")
        print(f"claygraph inspect: wrote {picture}", file=sys.stderr)
    print(json.dumps(rep.to_json(), indent=2) if args.json else rep.to_text(), end="\n" if args.json else "")
    return 0
