"""The demo (`make demo`, or `python -m claygraph.demo`): a price-elasticity model through `inspect`.

It generates purchase data for a few thousand rows over 50 products, lowers the hierarchical
logistic regression of `claygraph.examples.make_hier_logistic` to claygraph's graph, and
prints what `claygraph inspect` shows for it.
"""
from __future__ import annotations

import time

from claygraph.cli.inspect import report
from claygraph.examples import make_hier_logistic

HEADER = """\
claygraph demo: a price-elasticity model
========================================
Each row is one offer: a product, its price, {d} other features, and whether it sold (y).
Each product has its own intercept a and price slope b (the elasticity), drawn from shared
priors; w weighs the other features:

    y ~ Bernoulli(logits = a[g] + b[g] * price + X @ w),   a, b  under  plate("product")

claygraph lowered the model's log density to a graph and named every axis. Below: the dims
and their sizes, the parameters with the dims inferred for them (w gets "feature" from
X @ w, although no plate names it), the data arrays (g is an index column that points into
"product"), node counts by primitive, and the graph itself.
"""


def main(rows: int = 4000, products: int = 50, d: int = 3) -> None:
    start = time.perf_counter()
    ex = make_hier_logistic(n=rows, products=products, d=d, seed=0)
    rep = report(ex.model, ex.data)
    print(HEADER.format(d=d))
    print(rep.to_text())
    print(f"({rows:,} rows, {products} products; generated, lowered and inspected in "
          f"{time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
