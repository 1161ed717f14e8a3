"""testrun: the one module that runs tests and reads what they report.

Every caller (the proof, the upstream suites, rebase's landed check, pr's tests-alone check,
the bench) asks this module; nothing else starts pytest or parses JUnit XML.

* :func:`pytest` is the one pytest invocation: our own ``pytest.ini`` (``-c``), the folder
  as rootdir, JUnit XML, the offline environment (:data:`OFFLINE_ENV`), the log written
  atomically next to the XML.
* :func:`read_junit` is the one JUnit reader: every ``<testcase>`` is classified as passed,
  failed, known, skipped or needs_hub, and a test reported twice (a teardown error after a
  pass) keeps its worst outcome. :func:`outcomes` is the plain passed/failed/skipped view
  the red->green verdict uses, and :func:`failures` says in a line why each failing one failed
  (:func:`not_run`: those that could not run at all, a collection error or an ImportError).
* :func:`summarize`, :func:`verdict`, :func:`is_landed`, :func:`counts` and
  :func:`regressions` turn outcomes into words and decisions.
* :func:`added_tests` names the test files a commit adds; :func:`copy_tests` lays them
  out in a work folder.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..ground import proc, ui
from ..ground.errors import DataError, NotApplied
from ..ground.fsutil import atomic_write, atomic_write_json, read_json_state
from ..ground.vcs import Repo
from ..sources import checkout, series as series_mod
from ..sources.pins import Pin

REPORT = Path("build") / "report.json"

# The hub is unreachable here: offline, and any stray request fails at once on a closed local port.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_ENDPOINT": "http://127.0.0.1:9",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    # transformers' hub kernels (`kernels` package, on by default): a CPU test must never fetch a kernel from the hub.
    # 5.25.0 requires `kernels` and raises in every from_pretrained without it unless this says NO.
    "USE_HUB_KERNELS": "NO",
    "PYTHONPATH": "",
    "PYTHONNOUSERSITE": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}
# Lines a patch's test prints with its measured figures (source lines in tracebacks have braces).
FIGURE = re.compile(r"^[^{}\n]*\b(?:RssAnon rise|memory_reserved|reserved-but-unallocated)\b[^{}\n]*$", re.M)
# A failure whose text shows a request to the hub (offline here: HF_HUB_OFFLINE=1, and
# HF_ENDPOINT is a closed local port) is a hub miss, not a failure of the code under test.
HUB_MISS = re.compile(
    r"OfflineModeIsEnabled|LocalEntryNotFoundError|We couldn't connect to|outgoing traffic has been disabled"
    r"|HF_HUB_OFFLINE=1|127\.0\.0\.1:9(?!\d)|host='127\.0\.0\.1', port=9(?!\d)|Cannot find the requested files in the local cache"
    r"|couldn't find them in the cached files|offline mode is enabled",
    re.I,
)
# A line of a failure message that names the error (a worker's traceback ends with one, maybe behind "[rank1]: ").
ERROR_LINE = re.compile(r"\b[A-Z]\w*(?:Error|Exception|Failure)\b")
# What pytest's JUnit XML says of a test file that could not be imported.
COLLECTION = "collection failure"
# A failure that says the test could not run at all (its module or a name it imports is missing), not that it failed.
COULD_NOT_RUN = re.compile(rf"^{COLLECTION}\b|\b(?:ImportError|ModuleNotFoundError)\b")
OUTCOMES = ("passed", "failed", "known", "skipped", "needs_hub")
SEVERITY = {"passed": 0, "skipped": 1, "needs_hub": 2, "known": 3, "failed": 4}
PLAIN_INI = "[pytest]\n"


# ---------------------------------------------------------------- known failures


@dataclass(frozen=True)
class KnownFailure:
    pattern: str  # a node id glob, or a failure-text substring when ``text``
    reason: str
    text: bool = False

    def matches(self, node: str, failure_text: str) -> bool:
        if self.text:
            return self.pattern in failure_text
        return fnmatch.fnmatchcase(node, self.pattern)


def parse_known(text: str, source: str = "known_failures.txt") -> list[KnownFailure]:
    """``<node id glob> | <reason>`` or ``text:<substring> | <reason>`` per line; DataError names the line."""
    out = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pattern, sep, reason = line.partition(" | ")
        pattern, reason = pattern.strip(), reason.strip()
        if not sep or not pattern or not reason:
            raise DataError(f"{source} line {number}: expected '<node id> | <reason>', got {raw!r}")
        if pattern.startswith("text:"):
            out.append(KnownFailure(pattern[len("text:"):].strip(), reason, text=True))
        else:
            out.append(KnownFailure(pattern, reason))
    return out


# ---------------------------------------------------------------- reading JUnit XML


def node_id(case: ET.Element) -> str:
    classname, name = case.get("classname", ""), case.get("name", "")
    return f"{classname}::{name}" if classname else name


def classify(case: ET.Element, known: Sequence[KnownFailure] = ()) -> tuple[str, str]:
    """(outcome, reason) of one JUnit <testcase>; outcome is one of OUTCOMES."""
    problems = [c for c in case if c.tag in ("failure", "error")]
    if not problems:
        skipped = [c for c in case if c.tag == "skipped"]
        if skipped:
            return "skipped", skipped[0].get("message", "")
        return "passed", ""
    text = "\n".join(f"{c.get('message', '')}\n{c.text or ''}" for c in problems)
    for extra in ("system-out", "system-err"):
        for c in case.iter(extra):
            text += "\n" + (c.text or "")
    hub = HUB_MISS.search(text)
    if hub:
        return "needs_hub", hub.group(0)
    node = node_id(case)
    for k in known:
        if k.matches(node, text):
            return "known", k.reason
    lines = (problems[0].text or "").strip().splitlines()
    message = problems[0].get("message") or ""
    if message == COLLECTION:  # pytest's fixed message; the error (an ImportError, mostly) is the text's last one
        named = [line.strip().removeprefix("E").strip() for line in lines if ERROR_LINE.search(line)]
        return "failed", f"{message}: {named[-1]}" if named else message
    return "failed", message or (lines[-1] if lines else "")


def read_junit(path: Path, known: Sequence[KnownFailure] = ()) -> dict[str, tuple[str, str]]:
    """{node id: (outcome, reason)} from a JUnit XML file; {} when it is missing or unreadable."""
    if not path.exists():
        return {}
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return {}
    out: dict[str, tuple[str, str]] = {}
    for case in root.iter("testcase"):
        node = node_id(case)
        outcome = classify(case, known)
        # A test that errors in teardown after passing is reported twice: the worse outcome wins.
        if node not in out or SEVERITY[outcome[0]] > SEVERITY[out[node][0]]:
            out[node] = outcome
    return out


def outcomes(path: Path) -> dict[str, str]:
    """{node id: passed|failed|skipped}: a patch's own tests, where anything but a pass or a skip is a failure."""
    plain = {"passed": "passed", "skipped": "skipped"}
    return {node: plain.get(o, "failed") for node, (o, _) in read_junit(path).items()}


def failures(path: Path, limit: int = 240) -> dict[str, str]:
    """{node id: why} for each test of a patch that did not pass or skip: the first line of its message and, when the
    message goes on (a subprocess's combined stderr), the last line there that names an error, a rank's first."""
    out = {}
    for node, (outcome, reason) in read_junit(path).items():
        if outcome in ("passed", "skipped"):
            continue
        lines = [line.strip() for line in reason.strip().splitlines() if line.strip()] or [outcome]
        why = lines[0][:limit]
        named = [line for line in lines[1:] if ERROR_LINE.search(line)]
        # torchrun ends with its own ChildFailedError: the rank's own error line says more
        named = [line for line in named if line.startswith("[rank")] or named
        if named and named[-1] != lines[0]:
            why += f" ... {named[-1][:limit]}"
        out[node] = why
    return out


def not_run(path: Path) -> dict[str, str]:
    """{node id: why} for the failures of :func:`failures` that say the test could not run (a collection error, an
    ImportError): on another release they say nothing of whether the fix is there."""
    return {node: why for node, why in failures(path).items() if COULD_NOT_RUN.search(why)}


# ---------------------------------------------------------------- words and decisions


def summarize(results: Mapping[str, str]) -> str:
    if not results:
        return "no tests"
    n = {k: sum(1 for v in results.values() if v == k) for k in ("passed", "failed", "unknown", "skipped")}
    return ", ".join(f"{c} {k}" for k, c in n.items() if c)


def verdict(pristine: Mapping[str, str], patched: Mapping[str, str]) -> str:
    red = any(v == "failed" for v in pristine.values())
    green = bool(patched) and "failed" not in patched.values() and "passed" in patched.values()
    if red and green:
        return "red->green"
    if not red:
        return "NOT RED on pristine (the test proves nothing)"
    return "NOT GREEN on patched"


def is_landed(results: Mapping[str, str]) -> bool:
    """A patch's tests all pass on a pristine upstream: its fix is there already."""
    return bool(results) and "failed" not in results.values() and "passed" in results.values()


def counts(results: Mapping[str, tuple[str, str]]) -> dict[str, int]:
    return {k: sum(1 for o, _ in results.values() if o == k) for k in OUTCOMES}


def regressions(pristine: Mapping[str, tuple[str, str]], patched: Mapping[str, tuple[str, str]]) -> list[str]:
    """Tests that pass on pristine but do not pass on patched (absent there included)."""
    out = []
    for node, (outcome, _) in sorted(pristine.items()):
        if outcome != "passed":
            continue
        after = patched.get(node, ("not run", ""))[0]
        if after != "passed":
            out.append(f"{node} (passed on pristine, {after} on patched)")
    return out


def figures(output: str) -> list[str]:
    return sorted({line.strip() for line in FIGURE.findall(output)})


# ---------------------------------------------------------------- build/report.json


def read_report(root: Path) -> dict:
    """build/report.json, or {} when it is missing or malformed (started again, never trusted)."""
    return read_json_state(root / REPORT)


def _parts(report: dict, line: str, home: bool) -> list[dict]:
    """Where one line's results go in build/report.json: ``report["lines"][line]`` for a release line, and the top
    level for the home line (what `make pr` and `make rebase` read)."""
    parts = []
    if line:
        lines = report.get("lines") if isinstance(report.get("lines"), dict) else {}
        report["lines"] = lines
        parts.append(lines.setdefault(line, {}))
    if home:
        parts.append(report)
    return parts


def write_report(root: Path, section: str, data: object, *, line: str = "", home: bool = True) -> None:
    """``report[section] = data``; for a release line, ``report["lines"][line][section]`` too, and the top level only
    for the home line."""
    report = read_report(root)
    for part in _parts(report, line, home):
        part[section] = data
    atomic_write_json(root / REPORT, report)


def write_torch_report(root: Path, torch: str, section: str, data: object, *, line: str = "",
                       home: bool = True) -> None:
    """``report["torch"][torch][section] = data`` (the results on one torch version), in the same places as
    :func:`write_report`."""
    report = read_report(root)
    for part in _parts(report, line, home):
        by_torch = part.get("torch") if isinstance(part.get("torch"), dict) else {}
        part["torch"] = by_torch
        by_torch.setdefault(torch, {})[section] = data
    atomic_write_json(root / REPORT, report)


# ---------------------------------------------------------------- a commit's tests


def added_tests(repo: Repo, commit: str) -> list[str]:
    """The test modules (``tests/**.py``) that ``commit`` adds."""
    added = repo("diff-tree", "--no-commit-id", "--name-only", "--diff-filter=A", "-r", commit).split()
    return [f for f in added if f.startswith("tests/") and f.endswith(".py")]


def series_tests(root: Path, pin: Pin) -> list[tuple[Path, list[str]]]:
    """(patch file, test files it adds) for each patch of pin's series, from its applied checkout."""
    dest = checkout.vendor_dir(root, pin)
    state = checkout.read_state(dest)
    series = series_mod.load(root, pin.name, pin.line)
    if state.get("state") != "done" or state.get("key") != checkout.apply_key(pin, series):
        raise NotApplied(f"{pin.vendor} does not match patches/{pin.name}/. Run `make apply build` first.")
    repo = Repo(dest)
    commits = state["commits"][1 : 1 + len(series.patches)]
    return [(patch, added_tests(repo, commit)) for patch, commit in zip(series.patches, commits)]


def copy_tests(read: Callable[[str], bytes], files: Sequence[str], where: Path) -> Path:
    """A fresh ``where`` holding ``files`` (their bytes from ``read``) and a plain pytest.ini."""
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    for f in files:
        (where / f).parent.mkdir(parents=True, exist_ok=True)
        (where / f).write_bytes(read(f))
    (where / "pytest.ini").write_text(PLAIN_INI, encoding="utf-8")
    return where


def from_tree(tree: Path) -> Callable[[str], bytes]:
    return lambda f: (tree / f).read_bytes()


def from_commit(repo: Repo, commit: str) -> Callable[[str], bytes]:
    return lambda f: repo("show", f"{commit}:{f}", strip=False).encode("utf-8", "surrogateescape")


# ---------------------------------------------------------------- running


@dataclass(frozen=True)
class Run:
    returncode: int
    output: str
    seconds: float
    junit: Path
    log: Path


def pytest(python: Path, args: Sequence[str | Path], *, cwd: Path, junit: Path, log: Path,
           env: Mapping[str, str] | None = None, ini: Path | None = None, what: str = "pytest") -> Run:
    """The one pytest invocation: ``python -m pytest`` in ``cwd`` with ``ini`` (default cwd/pytest.ini) as its
    only configuration, JUnit XML to ``junit``, output to ``log``, offline (``env`` is added on top)."""
    junit.parent.mkdir(parents=True, exist_ok=True)
    junit.unlink(missing_ok=True)
    argv = [python, "-m", "pytest", "-p", "no:cacheprovider", "-c", ini or cwd / "pytest.ini", "--rootdir", cwd,
            f"--junitxml={junit}", *args]
    with ui.Timer() as t:
        result = proc.run(argv, cwd=cwd, env={**OFFLINE_ENV, **(env or {})}, check=False, what=what)
    atomic_write(log, result.output)
    return Run(result.returncode, result.output, round(t.seconds, 1), junit, log)


@dataclass(frozen=True)
class TestEnv:
    """A python that runs a patch's tests, and what goes first on its PYTHONPATH (an upstream's source tree,
    an overlay of an official wheel)."""

    __test__ = False  # not a pytest class
    python: Path
    pythonpath: tuple[Path, ...]
    label: str


def source_root(tree: Path) -> Path:
    """What goes on PYTHONPATH for a source tree: ``tree/src`` when it is a folder (src layout), else ``tree``."""
    return tree / "src" if (tree / "src").is_dir() else tree


def junit_in(workdir: Path) -> Path:
    """Where :func:`run_in_env` writes the JUnit XML of a run in ``workdir``."""
    return workdir / "junit.xml"


def run_in_env(workdir: Path, files: list[str], env: TestEnv) -> dict[str, str]:
    """Run ``files`` (laid out by :func:`copy_tests` in ``workdir``) in ``env``: {test id: outcome}. A file that
    cannot be imported is reported (:func:`not_run`) and does not stop the others."""
    result = pytest(env.python, ["-rA", "--continue-on-collection-errors", *files], cwd=workdir,
                    junit=junit_in(workdir), log=workdir / "pytest.log",
                    what=f"pytest ({env.label})", env={"PYTHONPATH": os.pathsep.join(str(p) for p in env.pythonpath)})
    return outcomes(result.junit)
