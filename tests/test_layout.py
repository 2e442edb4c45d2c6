"""The package layout: imports point down (cli → demo, deploy → stages → runtimes → model/data
→ core), no import cycles, and no module named like a standard-library module."""

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
    "sign": 3,
    # Packaging for a server reads verify's and bench's verdicts (serve.choice): it comes after.
    "deploy": 4,
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


def test_export_writes_model_files_and_packaging_comes_after_verify_and_bench() -> None:
    """Packaging for a server reads verify's and bench's verdicts, so it lives in ``deploy``,
    above them; the export stage imports neither it nor serve."""
    late = [
        f"{mod} imports {dep}"
        for mod, deps in _graph().items()
        if mod.startswith("exporter.export")
        for dep in deps
        if dep.startswith(("exporter.serve", "exporter.deploy", "exporter.bench"))
    ]
    assert not late, "\n".join(sorted(late))


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


MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _function_lines(source: str, *, cli: bool) -> list[tuple[str, int, int]]:
    """(name, first line, length) of every function in ``source``.

    A CLI command's signature is its Typer option declarations, so in ``cli/`` only the body
    (after the docstring) counts; elsewhere a function counts from ``def`` to its last line.
    """
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        first = node.lineno
        if cli:
            body = node.body
            has_doc = isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
            first = (body[1] if has_doc and len(body) > 1 else body[0]).lineno
        found.append((node.name, node.lineno, node.end_lineno - first + 1))
    return found


def test_modules_are_small() -> None:
    long = [
        f"{path.relative_to(PACKAGE).as_posix()}: {n} lines"
        for path in sorted(PACKAGE.rglob("*.py"))
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_MODULE_LINES
    ]
    assert not long, f"modules over {MAX_MODULE_LINES} lines:\n" + "\n".join(long)


def test_functions_are_short() -> None:
    long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        cli = rel.startswith("cli/")
        for name, line, n in _function_lines(path.read_text(encoding="utf-8"), cli=cli):
            if n > MAX_FUNCTION_LINES:
                long.append(f"{rel}:{line} {name}: {n} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_function_length_counts_the_body_of_cli_commands_only() -> None:
    options = "".join(f"    opt{i}: int = 0,\n" for i in range(100))
    body = "".join(f"    x{i} = {i}\n" for i in range(79))
    source = f'def command(\n{options}) -> None:\n    """Doc."""\n{body}\n'
    ((_, _, as_cli),) = _function_lines(source, cli=True)
    ((_, _, as_library),) = _function_lines(source, cli=False)
    assert as_cli == 79 and as_library == 182
