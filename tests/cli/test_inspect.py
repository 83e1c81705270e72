"""`claygraph inspect`: JSON and text views on every example, pictures, and clear errors."""
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from claygraph.cli import inspect as inspect_cli
from claygraph.cli import main as main_cli
from claygraph.examples import EXAMPLES

CLAYGRAPH = os.path.join(os.path.dirname(sys.executable), "claygraph")
SIZES = {"wide_logistic": {"n": 20, "d": 50}}  # small, so each run stays quick


def example_file(folder: Path, name: str, **kw) -> Path:
    path = folder / f"{name}_model.py"
    path.write_text(textwrap.dedent(f"""
        from claygraph.examples import EXAMPLES

        example = EXAMPLES[{name!r}](**{SIZES.get(name, {}) | kw!r})
        model = example.model
        data = example.data
    """))
    return path


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CLAYGRAPH, *args], capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def json_views(tmp_path_factory) -> dict:
    """`claygraph inspect FILE --json` for every example, run side by side."""
    folder = tmp_path_factory.mktemp("examples")
    procs = {name: subprocess.Popen([CLAYGRAPH, "inspect", str(example_file(folder, name)), "--json"],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in EXAMPLES}
    out = {}
    for name, p in procs.items():
        stdout, stderr = p.communicate(timeout=180)
        assert p.returncode == 0, stderr
        out[name] = json.loads(stdout)
    return out


@pytest.mark.parametrize("name", EXAMPLES)
def test_json_on_every_example(json_views, name):
    view = json_views[name]
    ex = EXAMPLES[name](**SIZES.get(name, {}))
    assert {"dims", "params", "data", "nodes", "primitives"} <= set(view)
    assert view["dims"] == {**ex.data.dims, **view["dims"]} and set(ex.data.dims) <= set(view["dims"])
    assert {k: tuple(v["dims"]) for k, v in view["params"].items()} == dict(ex.expected_dims)
    for k, arr in ex.data.arrays.items():
        assert view["data"][k] == {"shape": list(arr.shape), "dims": list(arr.dims), "into": arr.into,
                                   "dtype": arr.dtype.name}
    assert isinstance(view["nodes"], int) and view["nodes"] == sum(view["primitives"].values()) > 0


def test_text_view_and_svg(tmp_path):
    src = example_file(tmp_path, "hier_logistic")
    svg = tmp_path / "graph.svg"
    r = run("inspect", str(src), "--svg", str(svg))
    assert r.returncode == 0, r.stderr
    for word in ("dims", "product", "feature", "row", "parameters", "mu_a", "s_b", "w", "float32[product=20]",
                 "index into 'product'", "nodes by primitive", "dot_general", "gather", "graph"):
        assert word in r.stdout
    assert svg.stat().st_size > 1000 and svg.read_text().lstrip().startswith("<?xml")


def test_missing_model_exits_2_with_a_clear_message(tmp_path):
    src = tmp_path / "no_model.py"
    src.write_text("import claygraph as cg\nimport numpy as np\n"
                   "data = cg.Data(y=cg.array(np.zeros(3, np.float32), 'row'))\n")
    # through `python -m claygraph`, which must behave like the `claygraph` script
    r = subprocess.run([sys.executable, "-m", "claygraph", "inspect", str(src)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert "does not define `model`" in r.stderr and "--model NAME" in r.stderr
    assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1


# -- in process: options, loading, errors ------------------------------------------------------

MODEL_FILE = """
import numpy as np
import numpyro
import numpyro.distributions as dist
import claygraph as cg


def my_model(data):
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([data.size("feature")]).to_event(1))
    with numpyro.plate("row", data.size("row")):
        numpyro.sample("y", dist.Normal(data.X @ w, 1.0), obs=data.y)


def make_data():
    rng = np.random.default_rng(0)
    return cg.Data(X=cg.array(rng.normal(size=(9, 2)).astype(np.float32), "row", "feature"),
                   y=cg.array(rng.normal(size=9).astype(np.float32), "row"))
"""


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "custom.py"
    path.write_text(MODEL_FILE)
    return path


def test_model_and_data_names_and_data_function(model_file, capsys):
    assert main_cli.main(["inspect", str(model_file), "--model", "my_model", "--data", "make_data", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)
    assert view["model"] == "my_model" and view["params"]["w"]["dims"] == ["feature"]
    assert view["dims"] == {"feature": 2, "row": 9}


@pytest.mark.parametrize("args, message", [
    (["--model", "nope", "--data", "make_data"], "does not define `nope`"),
    (["--model", "my_model"], "does not define `data`"),
    (["--model", "my_model", "--data", "np"], "is a module, not a claygraph.Data"),
])
def test_bad_names(model_file, capsys, args, message):
    assert main_cli.main(["inspect", str(model_file), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.startswith("claygraph inspect: error:")


def test_file_that_raises_names_its_line(tmp_path, capsys):
    path = tmp_path / "broken.py"
    path.write_text("x = 1\nraise ValueError('bad input file')\n")
    assert main_cli.main(["inspect", str(path)]) == 2
    assert f"{path}:2: ValueError: bad input file" in capsys.readouterr().err


def test_model_errors_are_one_line(tmp_path, capsys):
    path = tmp_path / "bad_plate.py"
    path.write_text(MODEL_FILE.replace('numpyro.plate("row"', 'numpyro.plate("obs"') + "\ndata = make_data()\n")
    assert main_cli.main(["inspect", str(path), "--model", "my_model"]) == 2
    err = capsys.readouterr().err
    assert "plate 'obs'" in err and err.count("\n") == 1


def test_report_and_plan_hook(model_file):
    model, data = inspect_cli.load(model_file, "my_model", "make_data")
    rep = inspect_cli.report(model, data)
    assert rep.plan is None and inspect_cli._plan_section(None) == ({}, "")
    view = rep.to_json()
    assert view["nodes"] == rep.nodes == len(rep.graph)
    assert "plan" not in view
    text = rep.to_text()
    assert text.startswith(f"model 'my_model': {rep.nodes} nodes, 1 parameter, 2 data arrays")
    order = [text.index(title) for title in ("\ndims (", "\nparameters (", "\ndata arrays (", "\ngraph (")]
    assert order == sorted(order)
    assert str(rep.graph) in text.replace("\n  ", "\n")


def test_draw_png_with_custom_colours(model_file, tmp_path):
    from claygraph.cli.draw import draw_graph

    model, data = inspect_cli.load(model_file, "my_model", "make_data")
    graph = inspect_cli.report(model, data).graph
    path = draw_graph(graph, tmp_path / "g.png", color_by=lambda g, n: n.primitive, legend="primitive")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_unknown_or_missing_command(monkeypatch, capsys):
    monkeypatch.setitem(main_cli.COMMANDS, "bench", ("claygraph.cli._not_written_yet", "benchmarks"))
    assert main_cli.main(["bench"]) == 2
    assert "not available" in capsys.readouterr().err
    assert main_cli.main([]) == 2
    with pytest.raises(SystemExit):
        main_cli.main(["frobnicate"])


def test_scaling_projection(tmp_path, capsys):
    """`--cluster p5 --nodes ...`: every candidate on every node count, where it stops scaling, as text,
    JSON and a picture; the chosen split at each size is the one `cg.partition` picks there."""
    import claygraph as cg
    from claygraph import examples
    from claygraph.partition.projection import STOP_GAIN

    src = tmp_path / "big.py"
    src.write_text(textwrap.dedent("""
        from claygraph import examples
        model = examples.hier_logistic_model
        data = examples.make_hier_logistic(n=20_000_000, products=2_000_000, d=10, abstract=True).data
    """))
    assert main_cli.main(["inspect", str(src), "--cluster", "p5", "--nodes", "1,4,16", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)["projection"]
    assert view["nodes"] == [1, 4, 16]
    data = examples.make_hier_logistic(n=20_000_000, products=2_000_000, d=10, abstract=True).data
    for i, n in enumerate(view["nodes"]):
        plan = cg.partition(examples.hier_logistic_model, data, cluster=cg.ClusterSpec.preset("p5", nodes=n))
        chosen = [c["split"] for c in view["candidates"] if c["points"][i]["chosen"]]
        assert chosen == [list(plan.split)]
        for c in view["candidates"]:
            point = c["points"][i]
            assert point["nodes"] == n and point["devices"] == 8 * n
            assert 0 <= point["comm_share"] <= 1
    for c in view["candidates"]:  # a split stops scaling where more nodes first buy less than STOP_GAIN
        times = [p["predicted_s"] for p in c["points"]]
        gains = [a / b for a, b in zip(times, times[1:])]
        first = next((view["nodes"][k + 1] for k, g in enumerate(gains) if g < STOP_GAIN), None)
        assert c["stops_scaling_at"] == first
    assert next(c for c in view["candidates"] if c["split"] == [])["stops_scaling_at"] == 4  # none never scales

    svg = tmp_path / "projection.svg"
    assert main_cli.main(["inspect", str(src), "--cluster", "p5", "--nodes", "1,4,16", "--svg", str(svg)]) == 0
    text = capsys.readouterr().out
    assert "scaling projection on p5" in text and "stops scaling at" in text and "where the time goes" in text
    assert svg.stat().st_size > 1000 and svg.read_text().lstrip().startswith("<?xml")


def test_scaling_projection_where_one_node_holds_nothing(tmp_path, capsys):
    """A model that fits no split of one g5 node: the projection still shows from how many nodes one fits."""
    src = tmp_path / "huge.py"
    src.write_text(textwrap.dedent("""
        from claygraph import examples
        model = examples.logistic_model
        data = examples.make_logistic(n=40_000_000, d=200, abstract=True).data
    """))
    assert main_cli.main(["inspect", str(src), "--cluster", "g5", "--nodes", "1,2,4", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)["projection"]
    first = {c["split"][0] if c["split"] else "none": c["points"] for c in view["candidates"]}
    assert not any(p[0]["chosen"] for p in first.values())  # nothing fits one node
    assert any(p[-1]["chosen"] for p in first.values())  # something fits four
    assert all(0 <= q["comm_share"] <= 1 for p in first.values() for q in p)  # no NaN from infeasible candidates


@pytest.mark.parametrize("args, message", [(["--nodes", "1,2"], "pass --cluster PRESET too"),
                                           (["--cluster", "p5", "--nodes", "4,2"], "must be increasing"),
                                           (["--cluster", "p5", "--nodes", "1,x"], "whole numbers")])
def test_scaling_projection_refuses_bad_node_lists(model_file, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        inspect_cli.main([str(model_file), "--model", "my_model", "--data", "make_data", *args])
    assert e.value.code == 2 and message in capsys.readouterr().err
