"""The central property: for every example model, every candidate split and 1 to 4 devices, the
compiled split program's potential and gradient equal NumPyro's `potential_energy` and its
`jax.grad` (float32: rtol 1e-5 on the value, 1e-4 on gradients; float64: 1e-9).

Hypothesis draws the sizes (rows not divisible by the device count, groups without rows, most rows
in one group) and the point; the device count of each split rotates over the examples so that every
(split, device count) pair is compiled in every run. Compiling a program takes about a second, so
the number of examples per model is small.
"""
import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from models_for_tests import (
    GROUP_KINDS,
    assert_close,
    candidate_splits,
    eight_schools,
    hier_logistic,
    linear,
    logistic,
    numpyro_initial_params,
    poisson_crossed,
    random_params,
    reference,
    split_value_and_grad,
    wide_logistic,
)

import claygraph as cg
from claygraph.examples import EXAMPLES

DEVICES = (1, 2, 3, 4)
F32 = dict(rtol_value=1e-5, atol_value=1e-4, rtol_grad=1e-4, atol_grad_rel=2e-5)

# Dims of size 1 are left out of the property until the partitioner handles them: see
# test_tiny_split_dims below covers the size-1 edge cases explicitly as well.
MIN_DIM = 1

seeds = st.integers(0, 2**16)
rows = st.integers(MIN_DIM, 60)
features = st.integers(MIN_DIM, 5)
groups = st.integers(MIN_DIM, 12)
kinds = st.sampled_from(GROUP_KINDS)

CASES = {
    "logistic": st.builds(logistic, rows=rows, features=features, seed=seeds),
    "hier_logistic": st.builds(hier_logistic, rows=rows, groups=groups, features=features, kind=kinds, seed=seeds),
    "linear": st.builds(linear, rows=rows, features=features, seed=seeds),
    "eight_schools": st.builds(eight_schools, schools=st.integers(MIN_DIM, 12), seed=seeds),
    "poisson_crossed": st.builds(poisson_crossed, rows=rows, products=groups, stores=st.integers(MIN_DIM, 6),
                                 features=st.integers(MIN_DIM, 4), kind=kinds, seed=seeds),
    "wide_logistic": st.builds(wide_logistic, rows=st.integers(MIN_DIM, 12), features=st.integers(20, 80),
                               seed=seeds),
}

def test_every_example_model_is_covered():
    assert set(CASES) == set(EXAMPLES)


# Example i of a model compiles its j-th split on DEVICES[(i + j) % 4] devices, so every run of
# max_examples=4 compiles every (split, device count) pair once, each on different sizes.
_EXAMPLE_INDEX = {name: itertools.count() for name in CASES}


@pytest.mark.parametrize("name", sorted(CASES))
@settings(max_examples=len(DEVICES))
@given(draw=st.data())
def test_split_program_equals_numpyro(name, draw):
    case = draw.draw(CASES[name], label="case")
    params = random_params(case.model, case.data, draw.draw(seeds, label="params seed"))
    ref = reference(case.model, case.data, params)
    graph = cg.lower(case.model, case.data)
    splits = candidate_splits(graph, case.data)
    assert () in splits and len(splits) >= 2, splits
    i = next(_EXAMPLE_INDEX[name])
    for j, split in enumerate(splits):
        n = DEVICES[(i + j) % len(DEVICES)]
        got = split_value_and_grad(graph, case.data, split, n, params)
        assert_close(got, ref, where=f"{name} {case.data} split={split} devices={n}", **F32)


def test_random_params_match_numpyro_initialisation():
    """The quick param draw gives the sites, shapes and dtypes that NumPyro's initialisation gives."""
    case = poisson_crossed(rows=9, products=4, stores=3, features=2)
    ours, numpyros = random_params(case.model, case.data, 0), numpyro_initial_params(case.model, case.data, 0)
    assert {k: (v.shape, v.dtype) for k, v in ours.items()} == {k: (v.shape, v.dtype) for k, v in numpyros.items()}
    assert all(np.all(np.abs(v) <= 1.5) for v in ours.values())


# -- dims of size one ----------------------------------------------------------------------------------



@pytest.mark.parametrize("make, split", [
    pytest.param(lambda: logistic(rows=1, features=3), ("row",), id="one-row"),
    pytest.param(lambda: hier_logistic(rows=6, groups=1, features=2), ("product",), id="one-group"),
    pytest.param(lambda: eight_schools(schools=1), ("school",), id="one-school"),
    pytest.param(lambda: poisson_crossed(rows=9, products=5, stores=1, features=2), ("store",), id="one-store"),
    pytest.param(lambda: logistic(rows=5, features=1), ("feature",), id="one-feature"),
    pytest.param(lambda: hier_logistic(rows=2, groups=12, features=3, kind="single"), ("product",),
                 id="two-rows-twelve-groups"),
])
def test_tiny_split_dims(make, split):
    case = make()
    params = random_params(case.model, case.data, seed=0)
    ref = reference(case.model, case.data, params)
    graph = cg.lower(case.model, case.data)
    got = split_value_and_grad(graph, case.data, split, 2, params)
    assert_close(got, ref, where=f"{case.name} split={split}", **F32)


# -- float64 ------------------------------------------------------------------------------------------

X64_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    import claygraph as cg
    import models_for_tests as M

    cases = [M.hier_logistic(23, 7, 3, "skewed", seed=3, dtype=np.float64),
             M.eight_schools(7, seed=4, dtype=np.float64)]
    for case in cases:
        params = M.random_params(case.model, case.data, seed=1)
        assert all(v.dtype == np.float64 for v in params.values()), {k: v.dtype for k, v in params.items()}
        ref = M.reference(case.model, case.data, params)
        graph = cg.lower(case.model, case.data)
        for split in M.candidate_splits(graph, case.data):
            got = M.split_value_and_grad(graph, case.data, split, 3, params)
            assert got[0].dtype == np.float64, got[0].dtype
            M.assert_close(got, ref, rtol_value=1e-9, atol_value=1e-9, rtol_grad=1e-9, atol_grad_rel=1e-11,
                           where=f"float64 {case.name} split={split}")
            print("ok", case.name, split)
""")


def test_float64_split_program_equals_numpyro():
    """In a subprocess: x64 is a process-wide switch that would change every other test's dtypes."""
    here = Path(__file__).parent
    env = dict(os.environ, JAX_ENABLE_X64="1", PYTHONPATH=os.pathsep.join(
        [str(here), *filter(None, [os.environ.get("PYTHONPATH")])]))
    flag = "--xla_force_host_platform_device_count"
    if flag not in env.get("XLA_FLAGS", ""):
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}=4".strip()
    proc = subprocess.run([sys.executable, "-c", X64_SCRIPT], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-4000:]
    assert proc.stdout.count("ok ") >= 6, proc.stdout


def test_plan_made_on_shapes_compiles_with_the_values():
    """Plan on abstract data (the cluster path), then compile with the real data of those shapes."""
    case = hier_logistic(rows=41, groups=9, features=3, kind="skewed", seed=1)
    params = random_params(case.model, case.data, 0)
    ref = reference(case.model, case.data, params)
    for split in [("product",), ("feature",)]:
        plan = cg.partition(case.model, case.data.abstract(), cluster=cg.ClusterSpec.local(devices=3), split=split)
        with pytest.raises(cg.errors.PartitionError, match="abstract data"):
            cg.compile(plan)
        got = cg.compile(plan, data=case.data).potential_and_grad(params)
        assert_close(got, ref, where=f"abstract plan, split={split}", **F32)


def test_params_of_wrong_shape_are_refused():
    case = logistic(rows=5, features=3)
    plan = cg.partition(case.model, case.data, cluster=cg.ClusterSpec.local(devices=2), split=("row",))
    program = cg.compile(plan)
    with pytest.raises(cg.errors.PartitionError, match="shape"):
        program.potential({"w": np.zeros(4, np.float32)})
    with pytest.raises(cg.errors.PartitionError, match="lack"):
        program.potential({})
