"""Draw a Graph as a picture (SVG or PNG): one layer per topological generation, nodes coloured by a key.

The default key is a node's dim (the first named axis of its first output); `color_by` takes
any `(graph, node) -> label` function, so that a partition plan can colour nodes by sharding.
matplotlib (Agg) and networkx are imported only when a picture is drawn.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from claygraph.ir.graph import Graph, Node

NO_DIM = "no dim"
ColorBy = Callable[[Graph, Node], str]


def dim_of(graph: Graph, node: Node) -> str:
    """A node's dim: the first named axis of its first output, else NO_DIM."""
    if not node.outputs:
        return NO_DIM
    return next((d for d in graph.value(node.outputs[0]).dims if d), NO_DIM)


@dataclass(frozen=True, slots=True)
class _Vertex:
    key: str           # unique within the picture
    label: str         # the text drawn on it
    color_key: str     # what decides its colour
    is_input: bool


def _vertices(graph: Graph, color_by: ColorBy) -> tuple[list[_Vertex], list[tuple[str, str]]]:
    """Inputs (params, data) and nodes as vertices; an edge wherever a value flows."""
    inputs = {**{vid: f"param {k}" for k, vid in graph.inputs.params.items()},
              **{vid: f"data {k}" for k, vid in graph.inputs.data.items()}}
    verts = [_Vertex(f"v{vid}", label, next((d for d in graph.value(vid).dims if d), NO_DIM), True)
             for vid, label in sorted(inputs.items())]
    edges = []
    for node in graph.nodes():
        verts.append(_Vertex(f"n{node.id}", node.primitive, color_by(graph, node), False))
        for vid in node.inputs:
            src = graph.producer(vid)
            if src is not None:
                edges.append((f"n{src.id}", f"n{node.id}"))
            elif vid in inputs:
                edges.append((f"v{vid}", f"n{node.id}"))
    return verts, edges


def _palette(keys: list[str]) -> dict[str, tuple]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(keys) <= 10 else "tab20"]
    named = sorted(k for k in keys if k != NO_DIM)
    colors = {k: cmap(i % cmap.N) for i, k in enumerate(named)}
    colors[NO_DIM] = (0.82, 0.82, 0.82, 1.0)
    return colors


def draw_graph(graph: Graph, path: str | Path, *, color_by: ColorBy = dim_of, legend: str = "dim",
               title: str = "") -> Path:
    """Write a picture of `graph` to `path` (format from the suffix: .svg or .png)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx
    from matplotlib.patches import Patch

    verts, edges = _vertices(graph, color_by)
    g = nx.DiGraph()
    g.add_nodes_from(v.key for v in verts)
    g.add_edges_from(edges)
    layers = [sorted(layer, key=lambda k: (k[0], int(k[1:]))) for layer in nx.topological_generations(g)]
    pos = {k: (x - (len(layer) - 1) / 2, -y) for y, layer in enumerate(layers) for x, k in enumerate(layer)}

    width = min(max(8.0, 1.3 * max(len(layer) for layer in layers)), 100.0)
    height = min(max(4.0, 0.55 * len(layers)), 120.0)
    fig, ax = plt.subplots(figsize=(width, height))
    colors = _palette(sorted({v.color_key for v in verts}))
    by_key = {v.key: v for v in verts}
    nx.draw_networkx_edges(g, pos, ax=ax, arrows=True, arrowsize=6, width=0.5, edge_color="#999999",
                           node_size=300)
    for is_input, shape in ((True, "s"), (False, "o")):
        keys = [v.key for v in verts if v.is_input == is_input]
        nx.draw_networkx_nodes(g, pos, nodelist=keys, ax=ax, node_shape=shape, node_size=300,
                               node_color=[colors[by_key[k].color_key] for k in keys])
    nx.draw_networkx_labels(g, pos, labels={v.key: v.label for v in verts}, ax=ax, font_size=6)
    ax.legend(handles=[Patch(color=c, label=k) for k, c in colors.items() if any(v.color_key == k for v in verts)],
              loc="upper left", fontsize=8, title=legend)
    ax.set_title(title or f"{len(graph)} nodes")
    ax.set_axis_off()
    path = Path(path)
    fig.savefig(path, bbox_inches="tight", dpi=80 if path.suffix.lower() == ".png" else None)
    plt.close(fig)
    return path
