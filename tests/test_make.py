"""Every `make` target runs the way a user types it. For each target: make can expand it (`make -n`); the shell can
parse every line make hands it (`sh -n`, through `.SHELLFLAGS`); and run for real against stand-ins of the tools it
calls (a `.venv/` whose `headroom`, `python` and `mkdocs` only record their arguments), it calls the `headroom`
subcommands and options its docs say. The `make ...` commands the README and the docs' code blocks give go through the
same, and the cheap targets run for real with the real tools.

`make bench BENCH=quick` once failed at once with `/bin/sh: 1: Syntax error: Unterminated quoted string`: the comma in
`TRANSFORMERS=X[@Y],...` split the arguments of `$(if ...)` and the shell got `..." >&2; exit 2`; `make check` called
`headroom bench` directly, so CI never ran the target users type (issue 36, part 6)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MAKEFILE = REPO / "Makefile"
PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])

# What each command calls, in order ("" for none). Every target of the Makefile is here at least once
# (test_every_target_is_run_here).
CALLS: dict[str, list[str]] = {
    "make": ["headroom apply", "headroom build"],
    "make all": ["headroom apply", "headroom build"],
    "make help": [],
    "make fetch": ["headroom fetch"],
    "make apply": ["headroom apply"],
    "make apply FORCE=1": ["headroom apply --force"],
    "make apply V=1 NO_WAIT=1 ONLY=peft": ["headroom -v --no-wait --only peft apply"],
    "make export": ["headroom export"],
    "make check-export": ["headroom export --check"],
    "make build": ["headroom build"],
    "make build FORCE=1": ["headroom build --force"],
    "make index": ["headroom index"],
    "make test": ["headroom test --jobs auto"],
    "make test UPSTREAM=none JOBS=1 TINYHUB=0": ["headroom test --upstream none --jobs 1 --no-tinyhub"],
    "make test LINE=peft TORCH=newest": ["headroom --line peft test --jobs auto --torch newest"],
    "make test TORCH=2.15.0 UPSTREAM=default": ["headroom test --upstream default --jobs auto --torch 2.15.0"],
    "make unit": ["python -m pytest tests -m not integration"],
    "make check": [
        "python -m pytest tests",
        "headroom docs --check",
        "mkdocs build --strict --quiet --site-dir build/site",
        "headroom apply",
        "headroom export --check",
        "headroom build",
        "headroom test --jobs auto",
        "headroom bench --mode quick",
    ],
    "make rebase PIN=transformers==5.25.0": ["headroom rebase transformers==5.25.0"],
    "make rebase PIN=transformers==5.25.0 DROP=0002,0003": ["headroom rebase transformers==5.25.0 --drop 0002,0003"],
    "make rebase-continue": ["headroom rebase-continue"],
    "make rebase-continue DROP=0002": ["headroom rebase-continue --drop 0002"],
    "make rebase-abort": ["headroom rebase-abort"],
    "make canary": ["headroom canary"],
    "make canary TORCH=2.14.1": ["headroom canary --torch 2.14.1"],
    "make canary RELEASES=accelerate==1.16.0,transformers==5.25.0 PRE=1":
        ["headroom canary --releases accelerate==1.16.0,transformers==5.25.0 --pre"],
    "make pr PATCH=transformers/0001": ["headroom pr transformers/0001"],
    "make bench": ["headroom bench --mode full"],
    "make bench BENCH=quick": ["headroom bench --mode quick"],
    "make bench BENCH=quick PART=releases TRANSFORMERS=5.23.0@1.15.0,5.23.0":
        ["headroom bench --mode quick --transformers 5.23.0@1.15.0,5.23.0 --part releases"],
    "make publish REPOSITORY=internal": ["headroom publish --repository internal"],
    "make publish REPOSITORY=https://pypi.internal.example/ INDEX_URL=https://pypi.internal.example/simple/":
        ["headroom publish --repository https://pypi.internal.example/ --index-url https://pypi.internal.example/simple/"],
    "make serve": ["headroom serve"],
    "make serve PORT=8001": ["headroom serve --port 8001"],
    "make inspect WHEEL=transformers PY=build/envs/patched/bin/python":
        ["headroom inspect transformers --python build/envs/patched/bin/python"],
    "make verify WHEEL=dist/x.whl": ["headroom verify dist/x.whl"],
    "make clean": ["headroom clean"],
    "make docs-ref": ["headroom docs"],
    "make docs": ["headroom docs --check", "mkdocs build --strict --quiet --site-dir build/site"],
    "make distclean": [],
}

# The commands that stop with a usage line (exit 2) before calling anything, and what they say
REFUSED = {
    "make rebase": "usage: make rebase PIN=name==version",
    "make pr": "usage: make pr PATCH=",
    "make publish": "usage: make publish REPOSITORY=",
    "make inspect": "usage: make inspect WHEEL=",
    "make verify": "usage: make verify WHEEL=",
    "make bench RELEASES=transformers==5.25.0": "RELEASES= is canary's (name==version)",
}

# The line the bench target had: the shell cannot parse what make makes of it
OLD_BENCH_LINE = ("\t@$(if $(RELEASES),echo \"make bench: RELEASES= is canary's (name==version); the bench takes "
                  "TRANSFORMERS=X[@Y],...\" >&2; exit 2)\n")

STUB = """#!{python}
import json, os, sys
with open(os.environ["HEADROOM_MAKE_LOG"], "a", encoding="utf-8") as f:
    f.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:]]) + "\\n")
"""


def targets(makefile_text: str) -> list[str]:
    """The targets `make help` lists: those with a `## ` comment on their line."""
    return re.findall(r"^([a-zA-Z_.-]+):.*## ", makefile_text, flags=re.M)


def sandbox(root: Path, makefile_text: str) -> Path:
    """A folder with the Makefile, the files its rules depend on, and a `.venv/` of stand-ins that record their
    arguments (its stamps up to date, so no recipe installs anything)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Makefile").write_text(makefile_text, encoding="utf-8")
    shutil.copytree(REPO / "requirements", root / "requirements")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    bindir = root / ".venv" / "bin"
    bindir.mkdir(parents=True)
    for tool in ("headroom", "python", "mkdocs"):
        (bindir / tool).write_text(STUB.format(python=sys.executable), encoding="utf-8")
        (bindir / tool).chmod(0o755)
    for stamp in (".installed", ".docs-installed"):  # after the files they depend on
        (root / ".venv" / stamp).touch()
    return root


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without an outer make's flags (`make unit V=1` would otherwise pass V=1 on)."""
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}
    return {**env, **extra}


def make(cwd: Path, command: str, *flags: str, log: Path | None = None) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run `command` (`make TARGET VAR=value ...`, as typed) in `cwd`; return it and the stand-ins' calls it made."""
    log = log or cwd / "calls.jsonl"
    log.unlink(missing_ok=True)
    args = shlex.split(command)
    assert args[0] == "make", command
    proc = subprocess.run(["make", "--no-print-directory", *flags, *args[1:]], cwd=cwd, capture_output=True, text=True,
                          env=clean_env(HEADROOM_MAKE_LOG=str(log)), timeout=120)
    calls = [" ".join(json.loads(line)) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, calls


def recipe_errors(cwd: Path, command: str) -> list[str]:
    """What goes wrong with `command`'s recipes short of running them: `make -n` (make expands every line), then
    every line through `sh -n` as make hands it to the shell (recursive `$(MAKE)` lines included, each parsed)."""
    errors = []
    proc, calls = make(cwd, command, "-n")
    if proc.returncode != 0:
        errors.append(f"make -n: exit {proc.returncode}: {proc.stderr.strip()}")
    proc, calls = make(cwd, command, "SHELL=/bin/sh", ".SHELLFLAGS=-n -c")
    if proc.returncode != 0 or calls:
        errors.append(f"sh -n: exit {proc.returncode}: {proc.stderr.strip()}{' (ran ' + str(calls) + ')' if calls else ''}")
    return errors


@pytest.fixture(scope="module")
def box(tmp_path_factory) -> Path:
    return sandbox(tmp_path_factory.mktemp("make"), MAKEFILE.read_text(encoding="utf-8"))


def test_every_target_is_run_here():
    typed = {shlex.split(c)[1] for c in [*CALLS, *REFUSED] if len(shlex.split(c)) > 1}
    missing = [t for t in targets(MAKEFILE.read_text(encoding="utf-8")) if t not in typed]
    assert missing == [], f"add `make {missing[0]} ...` and what it calls to CALLS in {Path(__file__).name}"


@pytest.mark.parametrize("command", [*CALLS, *REFUSED])
def test_make_and_the_shell_can_parse_it(box, command):
    assert recipe_errors(box, command) == []


@pytest.mark.parametrize("command", CALLS)
def test_it_calls_what_it_says(tmp_path, command):
    box = sandbox(tmp_path / "box", MAKEFILE.read_text(encoding="utf-8"))
    proc, calls = make(box, command, log=tmp_path / "calls.jsonl")
    assert proc.returncode == 0, proc.stderr
    assert calls == CALLS[command]
    if command == "make distclean":
        assert not (box / ".venv").exists()


@pytest.mark.parametrize("command", REFUSED)
def test_it_refuses_what_it_cannot_do_before_any_work(box, command):
    proc, calls = make(box, command)
    assert (proc.returncode, calls) == (2, [])
    assert REFUSED[command] in proc.stderr


def test_check_goes_through_the_targets_it_documents():
    """`make check` (CI) runs the targets users type, not their `headroom` subcommands: a target broken for a user
    breaks CI (it used to call `headroom bench --mode quick` itself)."""
    text = MAKEFILE.read_text(encoding="utf-8")
    recipe = re.search(r"^check:.*\n((?:\t.*\n)+)", text, flags=re.M).group(1).splitlines()
    assert [line for line in recipe if "$(HEADROOM)" in line] == []
    assert "\t@$(MAKE) --no-print-directory bench BENCH=quick" in recipe


def documented_commands() -> list[tuple[str, str]]:
    """Every `make ...` command in a code block of the README and the docs (`# comments` and `[optional]` parts
    dropped, a placeholder `<hash>` filled in as a user would), with the page that gives it."""
    found = []
    for page in PAGES:
        in_block = False
        for line in page.read_text(encoding="utf-8").splitlines():
            if line.lstrip().startswith("```"):
                in_block = not in_block
                continue
            if not in_block:
                continue
            for part in re.split(r"&&|;", line.split(" #", 1)[0]):
                part = re.sub(r"<(\w+)>", r"\1", re.sub(r"\[[^]]*\]", "", part)).strip()
                if part.startswith("make ") or part == "make":
                    found.append((str(page.relative_to(REPO)), " ".join(part.split())))
    return found


def test_the_docs_give_make_commands():
    commands = [c for _, c in documented_commands()]
    assert "make bench BENCH=quick" in commands and "make apply build test" in commands


@pytest.mark.parametrize("page,command", documented_commands(), ids=lambda v: v)
def test_every_command_the_docs_give_runs(tmp_path, page, command):
    box = sandbox(tmp_path, MAKEFILE.read_text(encoding="utf-8"))
    assert recipe_errors(box, command) == [], f"{page}: {command}"
    proc, calls = make(box, command)
    assert proc.returncode == 0, f"{page}: {command}: {proc.stderr}"
    assert calls or command == "make help", f"{page}: {command} called nothing"


# --------------------------------------------------------------------------- the check can fail

def test_the_check_fails_on_a_recipe_the_shell_cannot_parse(tmp_path):
    """The bench target as it was: `make -n` expands it, the shell cannot parse it, and it fails at once."""
    text = MAKEFILE.read_text(encoding="utf-8")
    bench = re.search(r"^bench:.*\n(\t.*\n)", text, flags=re.M)
    box = sandbox(tmp_path, text[:bench.start(1)] + OLD_BENCH_LINE + text[bench.end(1):])
    errors = recipe_errors(box, "make bench BENCH=quick")
    assert len(errors) == 1 and errors[0].startswith("sh -n: exit 2") and "Syntax error" in errors[0], errors
    proc, calls = make(box, "make bench BENCH=quick")
    assert proc.returncode == 2 and calls == [] and "Syntax error" in proc.stderr


def test_the_check_fails_on_a_target_that_calls_the_wrong_thing(tmp_path):
    text = MAKEFILE.read_text(encoding="utf-8").replace("bench --mode $(BENCH)", "bench --mode full")
    proc, calls = make(sandbox(tmp_path, text), "make bench BENCH=quick")
    assert calls != CALLS["make bench BENCH=quick"]


# --------------------------------------------------------------------------- the cheap ones, for real

REAL_HEADROOM = REPO / ".venv" / "bin" / "headroom"


@pytest.mark.skipif(not REAL_HEADROOM.exists(), reason="no tool environment .venv/ in this checkout")
@pytest.mark.parametrize("command,exit_code,says", [
    ("make bench RELEASES=transformers==5.25.0", 2, "RELEASES= is canary's (name==version)"),
    ("make bench BENCH=quick TRANSFORMERS=5.23.0@x", 2, "'5.23.0@x' is not a release version"),
    ("make canary RELEASES=transformers=5.25.0", 2, "give each release as NAME==VERSION"),
    ("make canary TORCH=two", 2, "give torch releases as versions"),
    ("make test TORCH=2.99.0", 2, "not proven on torch 2.99.0"),
    ("make pr", 2, "usage: make pr PATCH="),
    ("make help", 0, "make apply build test"),
])
def test_the_real_targets_check_their_options_before_any_work(tmp_path, command, exit_code, says):
    """Through the real Makefile and the real `headroom` in this checkout (its tool environment taken as it is)."""
    before = sorted(p.name for p in REPO.iterdir())
    proc, _ = make(REPO, command, "-o", ".venv/.installed", log=tmp_path / "calls.jsonl")
    assert proc.returncode == exit_code, proc.stderr
    assert says in proc.stdout + proc.stderr
    assert sorted(p.name for p in REPO.iterdir()) == before
