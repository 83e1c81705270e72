"""The library's layers import only downwards: errors < frontend < ir < partition < runtime < infer
< glm < cli. Every import in every module (also those inside functions and under TYPE_CHECKING) is
read with `ast`; one that reaches a higher layer fails, and so does any import cycle between modules."""
import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parent.parent / "claygraph"
LAYERS = ("errors", "frontend", "ir", "partition", "runtime", "infer", "glm", "cli")
TOP_LEVEL = {
    "errors": "errors",
    "examples": "frontend",  # example models with their Data (the demo's and the tests'); imports frontend only
    "demo": "cli",  # `make demo`: prints what `claygraph inspect` prints, then runs inference
    "__main__": "cli",
    "": "cli",  # claygraph/__init__.py: the public API, re-exporting every layer
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> int:
    parts = module.split(".")[1:]  # after "claygraph"
    head = parts[0] if parts else ""
    return LAYERS.index(head if head in LAYERS else TOP_LEVEL[head])


def imported(tree: ast.AST, known: set[str], typing: bool = True) -> set[str]:
    """The claygraph modules a module imports (`from claygraph import x` names module x when it is one);
    typing=False leaves out imports under `if TYPE_CHECKING:` (annotations only, never run)."""
    out = set()
    skip = set() if typing else {id(n) for b in ast.walk(tree) if _type_checking(b) for s in b.body
                                 for n in ast.walk(s)}
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "claygraph"}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "claygraph":
            assert node.level == 0, "relative imports are not used"
            subs = {f"{node.module}.{a.name}" for a in node.names} & known
            out |= subs or {node.module}
    return out


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def import_graph(typing: bool = True) -> nx.DiGraph:
    files = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(f) for f in files}
    g = nx.DiGraph()
    for f in files:
        src = module_name(f)
        g.add_node(src)
        for dst in imported(ast.parse(f.read_text(), str(f)), known, typing):
            assert dst in known, f"{src} imports {dst}, which does not exist"
            if dst != src:
                g.add_edge(src, dst)
    return g


def test_every_module_has_a_layer():
    for m in import_graph():
        assert 0 <= layer(m) < len(LAYERS), m


def test_no_import_reaches_a_higher_layer():
    bad = [f"{a} ({LAYERS[layer(a)]}) imports {b} ({LAYERS[layer(b)]})"
           for a, b in import_graph().edges if layer(b) > layer(a)]
    assert bad == [], "\n".join(bad)


# The one cycle by design: the registry of primitives imports its rule families (to fill its table
# on first use) and each family imports the registry's decorator, as JAX's rule tables do.
REGISTRY = "claygraph.partition.registry"


def test_no_import_cycles_between_modules():
    """No two modules import each other at run time (annotations-only imports left out)."""
    g = import_graph(typing=False)
    cycles = sorted(sorted(c) for c in nx.simple_cycles(g) if not _allowed(c))
    assert cycles == [], cycles


def _allowed(cycle: list[str]) -> bool:
    if len(cycle) != 2:
        return False
    a, b = sorted(cycle)
    if a.startswith(b + ".") or b.startswith(a + "."):  # a package's __init__ re-exporting its modules
        return True
    return REGISTRY in cycle and any(m.startswith("claygraph.partition.rules_") for m in cycle)


def test_the_walker_sees_an_upward_import(tmp_path):
    """The check can fail: an import of infer from partition is caught."""
    tree = ast.parse("def f():\n    from claygraph.infer.map import map\n")
    (dst,) = imported(tree, {"claygraph.infer.map"})
    assert layer(dst) > layer("claygraph.partition.plan")
