"""The package's structure: small modules, no import cycle, imports only downwards, no sys.path edits.

The layer order is written once, here. A module belongs to the layer of the longest name below
that is a prefix of its own; it may import its own layer and the layers below. Imports inside
functions count too: a lazy import that goes upwards or closes a cycle is the same coupling.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 450

#: low to high
LAYERS = [
    ["gmn_inr.atomic", "gmn_inr.cpu", "gmn_inr.provenance", "gmn_inr.devices", "gmn_inr.tasks", "gmn_inr.bench_report", "gmn_inr.fields"],
    ["graphs", "gmn_inr.render", "gmn_inr.losses", "gmn_inr.checkpoint", "gmn_inr.blocks", "gmn_inr.decoder"],
    ["gmn_inr.encoder", "gmn_inr.zoo"],
    ["gmn_inr.baselines", "gmn_inr.canonical", "gmn_inr.training", "gmn_inr.io", "gmn_inr.embedder"],
    ["gmn_inr.cross_modal", "gmn_inr.train", "gmn_inr.search", "gmn_inr.bench", "gmn_inr.demo"],
    ["gmn_inr.cli", "gmn_inr"],
    ["benchmarks", "examples"],
]
PACKAGES = ("gmn_inr", "graphs", "benchmarks", "examples")


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _layer(name: str) -> int:
    best, layer = -1, None
    for i, names in enumerate(LAYERS):
        for prefix in names:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, layer = len(prefix), i
    assert layer is not None, f"{name} is in no layer: add it to LAYERS"
    return layer


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports (the longest known module of each imported name)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                pkg = base[:len(base) - node.level + 1]
                mod = ".".join(pkg + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [f"{mod}.{a.name}" for a in node.names] + [mod]
        for t in targets:
            parts = t.split(".")
            for k in range(len(parts), 0, -1):
                cand = ".".join(parts[:k])
                if cand in known:
                    if cand != name:
                        found.add(cand)
                    break
    return found


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, set(mods)) for name, path in mods.items()}


def test_no_module_is_over_the_line_limit():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_imports_go_only_to_the_same_or_a_lower_layer():
    up = sorted(f"{a} (layer {_layer(a)}) imports {b} (layer {_layer(b)})"
                for a, deps in _graph().items() for b in deps if _layer(b) > _layer(a))
    assert not up, "imports from a higher layer:\n" + "\n".join(up)


def test_no_import_cycle():
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(graph.get(m, ())):
            # a package's __init__ importing its own submodules is how a package exposes them,
            # not a cycle between two pieces of code
            if m == d.rsplit(".", 1)[0] and d.startswith(m + "."):
                continue
            if state.get(d) == 1:
                cycles.append(" -> ".join(stack[stack.index(d):] + [d]))
            elif d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_nothing_edits_sys_path():
    edits = []
    for name, path in _modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "path" and \
                    isinstance(node.value, ast.Name) and node.value.id == "sys":
                edits.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not edits, f"sys.path is touched at {edits}"


def test_the_checks_see_what_they_check():
    """The walk finds the package and its imports (a broken walk would pass every check above)."""
    graph = _graph()
    assert len(graph) > 60
    assert "graphs.registry" in graph["graphs.convert"]
    assert "gmn_inr.fields" in graph["graphs.mlp"]
    assert _layer("gmn_inr.zoo.build") > _layer("graphs.mlp") > _layer("gmn_inr.fields.spec")
