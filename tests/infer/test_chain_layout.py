"""How one process lays out its chains (vectorised batches x threads): the cost model's choice, and
that every layout draws exactly the requested draws, with the same draws where the programs are the same."""
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import claygraph as cg
from claygraph.errors import ClusterError
from claygraph.infer.scheduler import ChainCosts, Layout, choose_layout

CPU = ChainCosts(batch_marginal=0.9, depth_spread=0.1, concurrency=2)  # this machine's measured figures
GPU = ChainCosts(batch_marginal=0.1, depth_spread=0.1, concurrency=1)
# 3 x 50 draws are too few for the ESS bound; the runs here check layouts, not diagnostics
quiet = pytest.mark.filterwarnings("ignore::claygraph.infer.nuts.SamplingWarning")


def test_groups_and_description():
    assert Layout(2, 2).groups(5) == [[0, 1], [2, 3], [4]]
    assert Layout(4, 1).describe(4, 1) == "4 chains vectorised on 1 device"
    assert Layout(1, 4).describe(4, 1) == "4 chains on 1 device: 4 programs of one chain, 4 threads at once"
    assert Layout(2, 2).describe(4, 2) == "4 chains on 2 devices: 2 programs of 2 chains vectorised, 2 threads at once"
    assert Layout(1, 1).describe(3, 1) == "3 chains on 1 device: 3 programs of one chain, one after another"


def test_predicted_seconds_follow_the_figures():
    # 4 single-chain programs on 2 free cores: two rounds; vectorised: one batch of 4 at 1 + 3 x 0.9 of a
    # gradient, inflated by its deepest tree (1 + 0.1 x log2 4)
    assert CPU.seconds(Layout(1, 4), 4) == pytest.approx(2.0)
    assert CPU.seconds(Layout(1, 1), 4) == pytest.approx(4.0)
    assert CPU.seconds(Layout(4, 1), 4) == pytest.approx(3.7 * 1.2)
    assert CPU.seconds(Layout(2, 2), 4) == pytest.approx(1.9 * 1.1)


def test_cpu_runs_chains_in_threads_and_an_accelerator_vectorises():
    layout, options = choose_layout(4, CPU)
    assert layout == Layout(1, 4)
    assert len(options) == sum(-(-4 // b) for b in range(1, 5))  # every batch size x thread count
    assert choose_layout(4, GPU)[0] == Layout(4, 1)
    # one core and batching for free: vectorise; one core, batching at full price: one chain per program
    assert choose_layout(4, ChainCosts(0.0, 0.1, 1))[0] == Layout(4, 1)
    assert choose_layout(4, ChainCosts(1.0, 0.1, 1))[0].batch == 1
    assert choose_layout(1, CPU)[0] == Layout(1, 1)


def model(data):
    beta = numpyro.sample("beta", dist.Normal(0.0, 1.0).expand([2]).to_event(1))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(data.X @ beta, 1.0), obs=data.y)


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 2)).astype(np.float32)
    y = (X @ np.array([1.0, -0.5]) + rng.normal(0, 1.0, 100)).astype(np.float32)
    return cg.Data(X=cg.array(X, "row", "feature"), y=cg.array(y, "row"))


def _run(data, **kw):
    return cg.infer.nuts(model, data, chains=3, warmup=40, draws=50, segment=20, seed=2, progress=False, **kw)


@quiet
def test_threads_give_the_draws_of_chains_one_after_another(data):
    threads = _run(data, batch=1, threads=3)
    one_by_one = _run(data, batch=1, threads=1)
    assert threads.posterior["beta"].shape == (3, 50, 2)  # exactly the draws asked for
    np.testing.assert_array_equal(threads.posterior["beta"].values, one_by_one.posterior["beta"].values)
    assert threads.ran == "3 chains on 1 device: 3 programs of one chain, 3 threads at once"
    assert [c.n for c in threads.chains] == [50, 50, 50]


@quiet
def test_vectorised_batches_and_the_default_draw_exactly_what_was_asked(data):
    mixed = _run(data, batch=2)  # a batch of 2 and a batch of 1, in two threads
    assert mixed.layout == Layout(2, 2) and mixed.posterior["beta"].shape == (3, 50, 2)
    default = _run(data)
    assert default.layout_choice and default.posterior["beta"].shape == (3, 50, 2)
    # the same chains, vectorised or not, up to float32 rounding in the batched gradient, which NUTS's
    # trajectories amplify draw by draw: the first draws within a fifth of the posterior sd (another
    # chain's draws would differ by about one sd)
    one_each = _run(data, batch=1).posterior["beta"].values
    sd = one_each.std(axis=(0, 1))
    assert np.all(np.abs(mixed.posterior["beta"].values[:, :5] - one_each[:, :5]) < 0.2 * sd)


@quiet
def test_bad_layouts_are_refused(data):
    with pytest.raises(ValueError, match="batch"):
        _run(data, batch=0)
    with pytest.raises(ClusterError, match="one worker"):
        from claygraph.infer.nuts import local_layout

        class Two:
            runtime = type("R", (), {"workers": 2})()

        local_layout(Two(), 4, threads=2)
