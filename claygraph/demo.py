"""The demo (`make demo`, or `python -m claygraph.demo`): a price-elasticity model end to end.

It generates purchase data for a few thousand rows over 50 products, lowers the hierarchical
logistic regression of `claygraph.examples.make_hier_logistic` to claygraph's graph and prints
what `claygraph inspect` shows for it; then the partition plans (for two local workers, and
for the same model at cluster scale on eight g5 nodes, planned from shapes only); then, on a
local Ray cluster of two workers, MAP with the product split and NUTS, with a summary table.
`--inspect-only` stops after the first part.
"""
from __future__ import annotations

import time

from claygraph.cli.inspect import report
from claygraph.examples import make_hier_logistic

# NUTS's run: long enough that its own diagnostics (max R-hat <= 1.01 over every parameter, ESS >= 100)
# pass by a wide margin, not by one seed's luck. With 4 chains split in 8 halves of about ESS / 8
# effective draws each, R-hat^2 - 1 is about chi2(7) / (7 ESS / 8); over 87 parameters at a 1e-3 chance
# in all that bound is R-hat 1.012 at 500 draws (bulk ESS ~1,700) and 1.006 at 1,000 draws.
CHAINS, WARMUP, DRAWS = 4, 500, 1000

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


def section(title: str) -> None:
    print(f"\n{title}\n{'=' * len(title)}")


def plans(ex, rows: int, products: int, d: int) -> None:
    import claygraph as cg

    section("The split, for two local workers")
    print(cg.partition(ex.model, ex.data, cluster=cg.ClusterSpec.local(devices=2)).explain())
    big = make_hier_logistic(n=50_000_000, products=2_000_000, d=d, abstract=True)
    section("The same model at cluster scale (50M rows, 2M products) on 8 g5 nodes, planned from shapes")
    print(cg.partition(big.model, big.data, cluster=cg.ClusterSpec.preset("g5", nodes=8)).explain())


def fit_on_ray(ex, rt) -> None:
    import numpy as np

    import claygraph as cg

    section("On a local Ray cluster of two workers")
    print(f"set-up: {rt.times.to_json()}")
    plan = cg.partition(ex.model, ex.data, cluster=cg.ClusterSpec.local(devices=2), split=("product",))
    program = cg.compile(plan, runtime=rt)
    zero = {k: np.zeros(s, np.float32) for k, s in plan.graph.param_shapes.items()}
    value, grad = program.potential_and_grad(zero)
    local = cg.compile(cg.partition(ex.model, ex.data, split=()))
    print(f"potential at zero, product split over the two workers: {float(value):.4f}; "
          f"one process, unsplit: {float(local.potential(zero)):.4f}")
    t0 = time.perf_counter()
    fit = cg.infer.map(ex.model, ex.data, runtime=rt, split=("product",))
    print(f"\nMAP by L-BFGS on the two workers ({time.perf_counter() - t0:.1f} s): {fit}")
    true_b, map_b = ex.truth["b"], np.asarray(fit.params["b"])
    print("per-product price slopes b, MAP against the values the data were generated with:")
    print("  product   true b    MAP b")
    for i in range(min(8, len(true_b))):
        print(f"  {i:7d}  {true_b[i]:7.3f}  {map_b[i]:7.3f}")
    print(f"  (first 8 of {len(true_b)}; over all products: correlation "
          f"{np.corrcoef(true_b, map_b)[0, 1]:.2f}, RMS error {np.sqrt(np.mean((true_b - map_b) ** 2)):.3f}, "
          f"the MAP shrinks towards mu_b = {float(fit.params['mu_b']):.3f})")
    t0 = time.perf_counter()
    post = cg.infer.nuts(ex.model, ex.data, chains=CHAINS, warmup=WARMUP, draws=DRAWS, runtime=rt, seed=0)
    print(f"\nNUTS, {post.parallel}-parallel, {CHAINS} chains x {WARMUP} warm-up + {DRAWS} draws "
          f"({time.perf_counter() - t0:.1f} s; diagnostics {'passed' if post.ok else 'FAILED'}):")
    table = cg.infer.common.arviz().summary(post.inference_data, round_to="none")
    print(f"over all {len(table)} parameters: max R-hat {table['r_hat'].max():.3f}, "
          f"min bulk ESS {table['ess_bulk'].min():.0f}, min tail ESS {table['ess_tail'].min():.0f}")
    keep = [i for i in table.index if "[" not in i or i.split("[")[1].split("]")[0] in ("0", "1", "2")]
    shown = table.loc[keep, ["mean", "sd", "ess_bulk", "ess_tail", "r_hat"]].round(3)
    print(shown.astype({"ess_bulk": int, "ess_tail": int}).to_string())
    print(f"(a and b: the first 3 of {np.shape(post.posterior['a'])[-1]} products shown)")


def main(rows: int = 20_000, products: int = 40, d: int = 3, inspect_only: bool = False) -> None:
    if inspect_only:
        return _run(rows, products, d, None)
    import claygraph as cg

    # the local Ray cluster starts before JAX does in this process: Ray starts its own processes with a
    # Python pre-exec hook, and forking a process whose JAX threads run risks a deadlock (JAX warns of it)
    with cg.runtime.Ray(workers=2) as rt:
        _run(rows, products, d, rt)


def _run(rows: int, products: int, d: int, rt) -> None:
    start = time.perf_counter()
    ex = make_hier_logistic(n=rows, products=products, d=d, seed=0)
    rep = report(ex.model, ex.data)
    print(HEADER.format(d=d))
    print(rep.to_text())
    print(f"({rows:,} rows, {products} products; generated, lowered and inspected in "
          f"{time.perf_counter() - start:.1f} s)")
    if rt is None:
        return
    plans(ex, rows, products, d)
    fit_on_ray(ex, rt)
    print(f"\n(demo done in {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    import sys

    main(inspect_only="--inspect-only" in sys.argv[1:])
