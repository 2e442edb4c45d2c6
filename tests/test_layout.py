"""The package layout: imports point down (cli → demo → stages → runtimes → model/data → core),
no import cycles, and no module named like a standard-library module."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import exporter

PACKAGE = Path(exporter.__file__).parent
# Lower number = lower floor; a module may import its own floor and the floors below.
FLOORS = {
    "core": 0,
    "model": 1,
    "data": 1,
    "runtimes": 2,
    "train": 3,
    "export": 3,
    "verify": 3,
    "optimize": 3,
    "bench": 3,
    "serve": 3,
    "demo": 4,
    "cli": 5,
    "__main__": 6,
}


# The package root re-exports the public API lazily (``exporter.load``): the one allowed
# upward import.
FACADE = {("exporter", "exporter.serve.predictor")}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every exporter module ``name`` imports, at the top or inside a function."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*up, base] if base else up)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _floor(module: str) -> int:
    parts = module.split(".")
    return FLOORS.get(parts[1], 0) if len(parts) > 1 else 0


def test_imports_point_down() -> None:
    upward = [
        f"{mod} (floor {_floor(mod)}) imports {dep} (floor {_floor(dep)})"
        for mod, deps in _graph().items()
        for dep in deps
        if _floor(dep) > _floor(mod) and (mod, dep) not in FACADE
    ]
    assert not upward, "\n".join(sorted(upward))


def test_no_import_cycles() -> None:
    # Package __init__ files re-export their modules; a cycle through one is not a real
    # dependency of the modules, so they are left out of the walk.
    graph = {m: {d for d in deps if not _is_package(d)} for m, deps in _graph().items()}
    state: dict[str, int] = {}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*stack[stack.index(dep) :], dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def _is_package(module: str) -> bool:
    return (PACKAGE.parent / module.replace(".", "/") / "__init__.py").exists()


def test_no_module_is_named_like_the_standard_library() -> None:
    clashes = [m for m in _modules() if m.rpartition(".")[2] in sys.stdlib_module_names]
    assert not clashes, clashes
