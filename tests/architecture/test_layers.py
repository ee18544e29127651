"""The shape of the code: no import cycles, layers import only downward, no module past 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"
GENERATED = "_proto"
# Lower layers first; a module may import its own layer and the ones below it.
LAYERS = [
    ("base", ["onnxkit.errors", "onnxkit.types", "onnxkit.settings"]),
    ("toolkit", ["onnxkit.export", "onnxkit.inspect", "onnxkit.view", "onnxkit.pytorch"]),
    ("supply", ["onnxkit.models"]),
    ("execution", ["onnxkit.runtime"]),
    ("semantics", ["onnxkit.tasks"]),
    ("transports", ["onnxkit.serve"]),
    # the package's lazy public names (onnxkit.Server, onnxkit.export) and the command line
    ("entry points", ["onnxkit.cli", "onnxkit.commands", "onnxkit.__main__"]),
]
TRANSPORTS = {"onnxkit.serve.openai_http", "onnxkit.serve.tasks_http", "onnxkit.serve.kserve_http",
              "onnxkit.serve.kserve_grpc", "onnxkit.serve.tfserving_http", "onnxkit.serve.metrics_http",
              "onnxkit.serve.text_http"}  # fmt: skip


def modules() -> dict[str, Path]:
    found = {}
    for path in SRC.rglob("*.py"):
        if GENERATED in path.parts:
            continue
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports() -> dict[str, set[str]]:
    """Module -> the project modules it imports anywhere in its text (TYPE_CHECKING and lazy imports too)."""
    mods = modules()
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parts, base] if base else parts)
                targets = [base, *(f"{base}.{a.name}" for a in node.names)]
            for target in targets:
                # importing an ancestor package (e.g. `from onnxkit import __version__`) is never a cycle:
                # the ancestor is initialised before any of its modules
                if target in mods and target != name and not name.startswith(target + "."):
                    graph[name].add(target)
    return graph


def layer_of(module: str) -> int:
    if module == "onnxkit":
        return len(LAYERS) - 1
    best, depth = -1, -1
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > depth:
                best, depth = i, len(p)
    assert best >= 0, f"{module} belongs to no layer; add it to LAYERS"
    return best


def test_no_import_cycles() -> None:
    graph = imports()
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_layers_import_only_downward() -> None:
    wrong = [
        f"{a} ({LAYERS[layer_of(a)][0]}) imports {b} ({LAYERS[layer_of(b)][0]})"
        for a, targets in imports().items()
        for b in targets
        if layer_of(b) > layer_of(a)
    ]
    assert not wrong, "\n".join(wrong)


def test_transports_never_import_each_other() -> None:
    wrong = [f"{a} imports {b}" for a, targets in imports().items() if a in TRANSPORTS for b in targets & TRANSPORTS]
    assert not wrong, wrong


def test_no_module_over_400_lines() -> None:
    big = {name: n for name, path in modules().items() if (n := len(path.read_text().splitlines())) > 400}
    assert not big, f"split these by concept: {big}"
