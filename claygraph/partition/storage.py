"""Data held feature-major: which (row, feature) arrays are stored transposed, and under which name.

A tall-skinny data array X (rows x few features) whose every use is `X @ w` is stored as X.T instead
(contiguous, transposed once when the data is laid out; no second copy is kept), and the emitted dot
reads it (claygraph.partition.kernels.matvec_t), for one chain and for a batch of chains under
jax.vmap. Measured on the CPU, 100,000 rows, float32, ms per gradient of sum(tanh(X @ w)),
row-major / feature-major (`python -m bench.suites.gradient --widths` prints this table):
one chain: d = 2: 0.29 / 0.15, 5: 0.67 / 0.18, 10: 0.68 / 0.28, 16: 0.57 / 0.36, 20: 0.52 / 0.43,
32: 0.62 / 0.58; a batch of 2 (4) chains: d = 5: 0.71 / 0.32 (0.73 / 0.56), 10: 0.80 / 0.64
(1.03 / 0.83), 16: 0.99 / 0.88 (1.25 / 1.03), 32: 1.11 / 3.36 (1.51 / 3.60). Up to 16 features
feature-major wins both ways; an array read from files is read feature-major by each worker
(parquet.read_block), never held row-major. See docs/performance.md.
"""
from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np

from claygraph.ir.graph import Graph, Node
from claygraph.partition.kernels import is_matvec
from claygraph.partition.shardings import Sharded

FEATURE_MAJOR_WIDTHS = range(1, 17)  # where the feature-major read beat the row-major one (above)


def key(name: str) -> str:
    """The data entry holding `name` feature-major."""
    return f"{name}:feature-major"


def _reads_as_matvec(graph: Graph, node: Node, vid: int) -> bool:
    """`node` is `X @ w` with X = vid (the lhs only) and a w of X's dtype."""
    if node.primitive != "dot_general" or node.inputs[0] != vid or vid in node.inputs[1:]:
        return False
    x, w = graph.value(node.inputs[0]), graph.value(node.inputs[1])
    return is_matvec(node.params, x.ndim, w.ndim) and x.dtype == w.dtype \
        and node.params.get("preferred_element_type") in (None, x.dtype)


def stored_feature_major(graph: Graph, shardings: Mapping[int, object], backend: str | None = None) -> frozenset[str]:
    """Names of the data arrays to hold feature-major as well (CPU, few features, only read by X @ w)."""
    if (backend or jax.default_backend()) != "cpu":
        return frozenset()
    out = set()
    for name, vid in graph.inputs.data.items():
        v, users = graph.value(vid), graph.consumers(vid)
        if v.ndim != 2 or not np.issubdtype(v.dtype, np.floating):
            continue
        split_features = isinstance(shardings.get(vid), Sharded) and v.axis_of(shardings[vid].dim) == 1
        if v.shape[1] in FEATURE_MAJOR_WIDTHS and not split_features and users and \
                all(_reads_as_matvec(graph, n, vid) for n in users):
            out.add(name)
    return frozenset(out)
