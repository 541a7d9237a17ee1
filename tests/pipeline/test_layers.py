"""The import graph: no loop, and every import points down the layers.

    icstn  <-  trial, store, grids  <-  runner, tracking, results  <-  executors  <-  search, sweep  <-  CLI, workflow
    report/ reads results (the table, the store's arrays, the grid files), never runs or tracks anything
"""

import ast

import pytest

from tests.conftest import REPO

#: pipeline modules by layer: a module imports only from lower layers (and icstn, and the base).
LAYERS = {
    "pipeline.files": 0, "pipeline.schema": 0, "pipeline.provenance": 0, "pipeline.images": 0, "pipeline.trial": 0,
    "pipeline.stop": 0, "pipeline.interrupt": 0,
    "pipeline.store": 1, "pipeline.grids": 2, "pipeline.progress": 1, "pipeline.settings": 1, "pipeline.fetch": 1,
    "pipeline.runner": 2, "pipeline.tracking": 2, "pipeline.results": 2, "pipeline.prepare": 2,
    "pipeline.executors": 3, "pipeline.executors.inline": 3, "pipeline.executors.tune": 3,
    "pipeline.search": 4, "pipeline.sweep": 5,
    "pipeline.reference_keep": 2, "pipeline.reference": 3, "pipeline.migrate": 4,
    "pipeline.report.agreement": 0, "pipeline.report.paper": 0, "pipeline.report.markup": 0, "pipeline.report.tables": 4,
    "pipeline.report.figures": 4, "pipeline.report.curves": 4, "pipeline.report.html": 5,
}  # fmt: skip
REPORT_MAY_NOT = ("pipeline.runner", "pipeline.tracking", "pipeline.executors", "pipeline.search", "pipeline.sweep", "pipeline.settings")
ORCHESTRATION = ("ray", "mlflow", "snakemake", "optuna", "pipeline", "benchmarks")


def _under_type_checking(tree: ast.AST) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            lines |= {n.lineno for child in node.body for n in ast.walk(child) if hasattr(n, "lineno")}
    return lines


def import_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (anywhere in it, lazily too; not for type checking)."""
    files = {".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
             for pkg in ("icstn", "pipeline", "benchmarks") for p in (REPO / pkg).rglob("*.py")}  # fmt: skip
    graph = {}
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        skip = _under_type_checking(tree)
        found = set()
        for node in ast.walk(tree):
            if getattr(node, "lineno", None) in skip:
                continue
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
        graph[name] = {m for m in found if m in files and m != name and not name.startswith(m + ".")} | {
            m.split(".")[0] for m in found if m.split(".")[0] in ORCHESTRATION
        }
    return graph


def depth(graph: dict[str, set[str]], module: str, seen=()) -> int:
    """The longest chain of project modules below ``module``, itself included."""
    return 1 + max((depth(graph, m, (*seen, module)) for m in graph.get(module, ()) if m in graph and m not in seen), default=0)


@pytest.fixture(scope="module")
def graph():
    return import_graph()


def test_no_import_loop(graph):
    def visit(module, path):
        for m in graph.get(module, ()):
            if m in graph:
                assert m not in path, f"import loop: {' -> '.join([*path, m])}"
                visit(m, (*path, m))

    for module in graph:
        visit(module, (module,))


def test_imports_point_down_the_layers(graph):
    wrong = []
    for module, targets in graph.items():
        if module.startswith("icstn"):
            wrong += [f"{module} -> {t}" for t in targets if t.split(".")[0] in ORCHESTRATION]  # the science is pure PyTorch
        if module in LAYERS:
            wrong += [f"{module} -> {t}" for t in targets if t in LAYERS and LAYERS[t] >= LAYERS[module]]
        if module.startswith("pipeline.report"):
            wrong += [f"{module} -> {t}" for t in targets if t.startswith(REPORT_MAY_NOT)]
    assert not wrong, "\n".join(wrong)
    assert set(LAYERS) == {m for m in graph if m.startswith("pipeline.") and m != "pipeline.report"}, "every module has a layer"


def test_depth(graph):
    own = {m: {t for t in targets if t.startswith("pipeline.")} for m, targets in graph.items() if m.startswith("pipeline.")}
    deepest = max((depth(own, m), m) for m in own)
    print(f"deepest import chain within pipeline/: {deepest[0]} modules, from {deepest[1]}")
    # the report reads a reference, which packs a results table: one layer more than the rest
    assert deepest[0] <= 6, "a driver, then at most four layers, then the base"
