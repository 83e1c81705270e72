"""Data held feature-major: which (row, feature) arrays get a transposed copy, and its name.

A tall-skinny data array X (rows x few features) whose every use is `X @ w` is also stored as X.T
(contiguous, transposed once when the data is laid out). The emitted dot then reads whichever copy
is faster for the trace (claygraph.partition.kernels.matvec_stored): X.T for one chain, X for a
batch of chains under jax.vmap. Measured on the CPU, 100,000 rows, float32, one gradient of
sum(tanh(X @ w)) in us, row-major / feature-major (bench/suites/gradient.py prints this table):
d = 2: 291 / 153, 5: 667 / 184, 10: 684 / 275, 16: 571 / 357, 20: 523 / 429, 32: 615 / 584.
Past 16 features the gain no longer pays for a second copy of X; arrays of files stay row-major
(their readers build row blocks). See docs/performance.md.
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


def stored_feature_major(graph: Graph, shardings: Mapping[int, object], file_backed: frozenset[str] = frozenset(),
                         backend: str | None = None) -> frozenset[str]:
    """Names of the data arrays to hold feature-major as well (CPU, few features, only read by X @ w)."""
    if (backend or jax.default_backend()) != "cpu":
        return frozenset()
    out = set()
    for name, vid in graph.inputs.data.items():
        v, users = graph.value(vid), graph.consumers(vid)
        if name in file_backed or v.ndim != 2 or not np.issubdtype(v.dtype, np.floating):
            continue
        split_features = isinstance(shardings.get(vid), Sharded) and v.axis_of(shardings[vid].dim) == 1
        if v.shape[1] in FEATURE_MAJOR_WIDTHS and not split_features and users and \
                all(_reads_as_matvec(graph, n, vid) for n in users):
            out.add(name)
    return frozenset(out)
