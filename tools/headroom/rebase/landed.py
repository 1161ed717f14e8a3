"""rebase's landed check: each patch's own tests against the pristine new upstream, before the replay.

A patch whose tests all pass there has *landed* (semantically); one whose tests that failed on the old pristine
now pass, while others still fail, has *partly landed*.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from .. import fetch, proc, testrun, ui
from ..pins import Pin
from ..testrun import TestEnv
from ..vcs import Repo
from .state import REBASE_DIR, rebase_dir

# (root, new pin, pristine new tree, official new wheel) -> an environment, or None: "not run"
EnvFactory = Callable[[Path, Pin, Path, Path], "TestEnv | None"]
# (folder holding the test files, the files relative to it, environment) -> {test id: outcome}
Runner = Callable[[Path, list[str], TestEnv], dict[str, str]]


def source_env(root: Path, pin: Pin, tree: Path, wheel: Path) -> TestEnv:
    """The pristine source tree on PYTHONPATH (src layout or flat); for pure-Python upstreams."""
    src = tree / "src"
    return TestEnv(Path(sys.executable), (src if src.is_dir() else tree,), f"{pin.name} {pin.version} source tree")


def wheel_env(root: Path, pin: Pin, tree: Path, wheel: Path) -> TestEnv | None:
    """build/envs/pristine (made by `make test`) with the new official wheel installed over it."""
    from .. import envs

    py = envs.python(root, "pristine")
    if not py.exists():
        ui.warn("no build/envs/pristine (run `make test` once): the landed check is not run")
        return None
    overlay = root / REBASE_DIR / pin.name / f"overlay-{pin.version}"
    if not overlay.exists():
        proc.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--target",
                  overlay, wheel], what=f"pip install {wheel.name} (overlay)")
    return TestEnv(py, (overlay,), f"official {wheel.name} over build/envs/pristine")


def _old_pristine_outcomes(root: Path, name: str) -> dict[str, dict[str, str]]:
    """{patch file name: outcomes on the old pristine} from build/report.json's proof section, when present."""
    entries = testrun.read_report(root).get("proof", [])
    return {Path(e["patch"]).name: e.get("pristine", {}).get("outcomes", {}) for e in entries
            if e.get("upstream") == name and "patch" in e}


def checks(root: Path, repo: Repo, state: dict, new: Pin, tree: Path, env_factory: EnvFactory,
                   runner: Runner) -> dict[str, dict]:
    wheel = fetch.fetch(new, "wheel")
    old_pristine = _old_pristine_outcomes(root, state["name"])
    env: TestEnv | None = None
    made = False
    out: dict[str, dict] = {}
    for name, commit in zip(state["patches"], state["old_commits"]):
        files = testrun.added_tests(repo, commit)
        if not files:
            out[name] = {"verdict": "no tests", "tests": []}
            continue
        if not made:
            env, made = env_factory(root, new, tree, wheel), True
        if env is None:
            out[name] = {"verdict": "not run", "tests": files}
            continue
        work = testrun.copy_tests(testrun.from_commit(repo, commit), files,
                                  rebase_dir(root, new.name) / "landed" / Path(name).stem)
        outcomes = runner(work, files, env)
        verdict = "landed" if testrun.is_landed(outcomes) else "not landed"
        entry = {"verdict": verdict, "tests": files, "outcomes": outcomes, "summary": testrun.summarize(outcomes),
                 "env": env.label}
        if verdict == "not landed" and "passed" in outcomes.values():
            # Some of its tests pass upstream now: part of the fix landed (those that were red on the old pristine).
            before = old_pristine.get(name, {})
            now_green = sorted(t for t, o in outcomes.items() if o == "passed" and before.get(t, "failed") == "failed")
            if now_green:
                entry.update(verdict="partly landed", now_passing=now_green,
                             still_failing=sorted(t for t, o in outcomes.items() if o == "failed"))
        out[name] = entry
        ui.info(f"{name}: its tests on pristine {new.version}: {testrun.summarize(outcomes)} -> {entry['verdict']}")
        for t in entry.get("now_passing", []):
            ui.info(f"    now passes upstream: {t}")
        for t in entry.get("still_failing", []):
            ui.info(f"    still fails upstream: {t}")
    return out
