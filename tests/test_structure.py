"""The measures that keep tools/headroom/ small enough to hold in one's head (checked, not hoped for):
no module over 400 lines, no import cycle among the package's modules, pytest started from one module only, and the
folders in the pipeline's order: every module in one stage, and a stage importing only the ground and earlier stages."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "tools" / "headroom"
MAX_LINES = 400
# Scripts that run inside the test environments (not modules of the tool): bench workers, upstream conftests.
DATA_DIRS = ("bench_data", "upstream_data", "pr_data")
# The stages, in the order data flows through them; "ground" is what they all stand on. A module of a stage may import
# its own stage, the ground and earlier stages, never a later one. The front (cli, __main__) may import any stage.
STAGES = ("ground", "sources", "wheels", "proof", "upkeep", "bench")
FRONT = ("cli", "__main__")
ROOT = ""  # the package itself: its __init__ holds __version__ and nothing else, so any stage may read it


def modules() -> dict[str, Path]:
    """{dotted name relative to the package: file} for every module of the tool."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if any(part in DATA_DIRS for part in rel.parts):
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
    assert sorted(set(starters)) == ["proof.testrun"]


def stage_of(name: str) -> str | None:
    """The stage a module belongs to ("ground", "sources", ...), "" for the front and the package, None if neither."""
    if name == ROOT or name in FRONT:
        return ""
    head = name.split(".")[0]
    return head if head in STAGES else None


def direction_violations(graph: dict[str, set[str]]) -> list[str]:
    """Each import in ``graph`` ({module: modules it imports}) that goes against the pipeline: a stage importing a later
    stage, or anything but the front importing the front."""
    bad = []
    for name in sorted(graph):
        stage = stage_of(name)
        for dep in sorted(graph[name]):
            target = stage_of(dep)
            if dep in FRONT and name not in FRONT:
                bad.append(f"{name} -> {dep}: only the front imports the front")
            elif stage and target and STAGES.index(target) > STAGES.index(stage):
                bad.append(f"{name} -> {dep}: {stage} (stage {STAGES.index(stage) + 1}) imports {target} "
                           f"(stage {STAGES.index(target) + 1}), a later stage")
    return bad


def test_every_module_lives_in_a_stage():
    stray = sorted(name for name in modules() if stage_of(name) is None)
    assert stray == [], f"modules outside the stages {STAGES} (move each into the stage it serves): {stray}"


def test_each_stage_is_a_package_that_says_what_it_takes_and_gives():
    for stage in STAGES:
        init = PACKAGE / stage / "__init__.py"
        assert init.is_file(), f"{init} is missing"
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8")), clean=False) or ""
        head = doc.split("\n\n")[0]
        assert "takes" in head and "gives" in head and len(head.splitlines()) <= 2, \
            f"{init}: the docstring's first two lines say what the stage takes in and gives out"


def test_a_stage_imports_only_the_ground_and_earlier_stages():
    mods = modules()
    graph = {name: imports(name, path, set(mods)) for name, path in mods.items()}
    assert direction_violations(graph) == []


def test_the_direction_check_can_fail():
    graph = {"ground.proc": {"proof.testrun"}, "sources.pins": {"ground.errors"}, "bench.jobs": {"proof.testrun"},
             "upkeep.pr": {"bench.report", "cli"}, "wheels.sbom": {""}, "cli": {"bench", "ground.ui"}}
    assert direction_violations(graph) == [
        "ground.proc -> proof.testrun: ground (stage 1) imports proof (stage 4), a later stage",
        "upkeep.pr -> bench.report: upkeep (stage 5) imports bench (stage 6), a later stage",
        "upkeep.pr -> cli: only the front imports the front",
    ]


def test_the_data_folders_sit_beside_the_code_that_reads_them():
    for data in sorted(p for p in PACKAGE.rglob("*_data") if p.is_dir()):
        readers = [path for path in data.parent.glob("*.py") if f'"{data.name}"' in path.read_text(encoding="utf-8")]
        assert readers, f"{data.relative_to(PACKAGE)}: no module beside it names it"


def test_the_measures_see_the_package():
    mods = modules()
    assert {"proof.testrun", "proof.proof", "proof.upstream", "cli"} <= set(mods)
    assert "proof.testrun" in imports("proof.proof", mods["proof.proof"], set(mods))
    assert set(STAGES) <= set(mods)
