"""The measures that keep tools/headroom/ small enough to hold in one's head (checked, not hoped for):
no module over 400 lines, no import cycle among the package's modules, pytest started from one module only."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tools" / "headroom"
MAX_LINES = 400
# Scripts that run inside the test environments (not modules of the tool): bench workers, upstream conftests.
DATA_DIRS = ("bench_data", "upstream_data", "pr_data")


def modules() -> dict[str, Path]:
    """{dotted name relative to the package: file} for every module of the tool."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] in DATA_DIRS:
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The package's own modules that ``name`` imports, at the top or inside a function (a lazy import is still a
    dependency)."""
    package = name.split(".")[:-1] if path.name != "__init__.py" else name.split(".")
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
        prefix = [*base, *(node.module.split(".") if node.module else [])]
        for alias in node.names:
            candidate = ".".join([*prefix, alias.name])
            target = candidate if candidate in known else ".".join(prefix)
            if target in known and target != name:
                found.add(target)
    return found


def test_no_module_is_over_400_lines():
    long = {name: n for name, path in modules().items()
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"


def test_no_import_cycle():
    mods = modules()
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    cycles = []
    state: dict[str, int] = {}  # 1: on the stack, 2: done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(" -> ".join([*stack[stack.index(dep):], dep]))
            elif dep not in state:
                visit(dep, [*stack, dep])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == [], "import cycles: " + "; ".join(cycles)


def test_pytest_is_started_from_testrun_only():
    starters = []
    for name, path in modules().items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.List, ast.Tuple)):
                words = [e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)]
                if any(a == "-m" and b == "pytest" for a, b in zip(words, words[1:])):
                    starters.append(name)
    assert sorted(set(starters)) == ["testrun"]


def test_the_measures_see_the_package():
    mods = modules()
    assert {"testrun", "proof", "upstream", "cli"} <= set(mods)
    assert "testrun" in imports("proof", mods["proof"], set(mods))
