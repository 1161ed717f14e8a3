"""rebase's landed check: each patch's own tests against the pristine new upstream, before the replay.

A patch whose tests all pass there has *landed* (semantically); one whose tests that failed on the old pristine
now pass, while others still fail, has *partly landed*. A test that could not run there (a collection error, an
ImportError: testrun.not_run) says nothing either way: with no real failure beside it the verdict is *unknown*.

The check runs in a real environment (:func:`wheel_env`): build/envs/landed-<name>-<version>, made by envs.ensure
from torch, the test requirements and the official wheel of every pinned upstream, the new release in place of the
old pin, in one resolution with their dependencies. When it cannot be made the check cannot run: LandedCheckNotRun.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from ...ground import ui
from ...ground.errors import CommandFailed, DependencyUnresolved, LandedCheckNotRun
from ...ground.vcs import Repo
from ...sources import fetch, pins as pins_mod
from ...sources.pins import Pin
from ...proof import testrun
from ...proof.testrun import TestEnv
from .state import rebase_dir

# (root, new pin, pristine new tree, official new wheel) -> an environment (LandedCheckNotRun when none can be made)
EnvFactory = Callable[[Path, Pin, Path, Path], TestEnv]
# (folder holding the test files, the files relative to it, environment) -> {test id: outcome}
Runner = Callable[[Path, list[str], TestEnv], dict[str, str]]


def source_env(root: Path, pin: Pin, tree: Path, wheel: Path) -> TestEnv:
    """The pristine source tree on PYTHONPATH (src layout or flat); for pure-Python upstreams."""
    return TestEnv(Path(sys.executable), (testrun.source_root(tree),), f"{pin.name} {pin.version} source tree")


def landed_env_name(pin: Pin) -> str:
    """landed-<name>-<version>; a line's other than the home line's: landed-<line>-<name>-<version>."""
    return f"landed-{pin.folder + '-' if pin.folder else ''}{pin.name}-{pin.version}"


def line_pins(root: Path, pin: Pin) -> list[Pin]:
    """The pins of ``pin``'s release line (vendor/pins.toml's without lines, or for the home line)."""
    if not pin.folder:
        return pins_mod.load(root)
    from ...sources import lines as lines_mod

    return next(list(ln.pins) for ln in lines_mod.load(root) if ln.name == pin.line)


def wheel_env(root: Path, pin: Pin, tree: Path, wheel: Path) -> TestEnv:
    """build/envs/landed-<name>-<version>: torch, the test requirements and the official wheels of every pin, with
    ``wheel`` (the new release of ``pin``) in place of its old pin; made when missing, reused when up to date."""
    from ...proof import envs

    all_pins = line_pins(root, pin)
    wheels = [wheel if p.name == pin.name else fetch.fetch(p, "wheel") for p in all_pins]
    name = landed_env_name(pin)
    try:
        py = envs.ensure(root, name, wheels, all_pins)
    except (DependencyUnresolved, CommandFailed) as exc:
        raise LandedCheckNotRun(
            f"The landed check of {pin.distribution} {pin.version} could not run: build/envs/{name} (the official "
            f"{', '.join(w.name for w in wheels)}) cannot be made. {exc.message} The rebase was undone; fix that, "
            f"then `make rebase PIN={pin.distribution}=={pin.version}` again.", details=exc.details) from None
    return TestEnv(py, (), f"official {wheel.name} in build/envs/{name}")


def _old_pristine_outcomes(root: Path, name: str, line: str = "") -> dict[str, dict[str, str]]:
    """{patch file name: outcomes on the old pristine} from build/report.json's proof section (``line``'s, when the
    report has one), when present."""
    report = testrun.read_report(root)
    lines = report.get("lines") if isinstance(report.get("lines"), dict) else {}
    entries = (lines.get(line) or report).get("proof", []) if line else report.get("proof", [])
    return {Path(e["patch"]).name: e.get("pristine", {}).get("outcomes", {}) for e in entries
            if e.get("upstream") == name and "patch" in e}


def _verdict(outcomes: dict[str, str], unknown: dict[str, str], before: dict[str, str]) -> dict:
    """landed / partly landed / not landed / unknown, from the outcomes (unknown ones marked) on the new release."""
    if unknown and "failed" not in outcomes.values():
        return {"verdict": "unknown"}
    if testrun.is_landed(outcomes):
        return {"verdict": "landed"}
    # Some of its tests pass upstream now: part of the fix landed (those that were red on the old pristine).
    now_green = sorted(t for t, o in outcomes.items() if o == "passed" and before.get(t, "failed") == "failed")
    if now_green:
        return {"verdict": "partly landed", "now_passing": now_green,
                "still_failing": sorted(t for t, o in outcomes.items() if o == "failed")}
    return {"verdict": "not landed"}


def checks(root: Path, repo: Repo, state: dict, new: Pin, tree: Path, env_factory: EnvFactory,
           runner: Runner) -> dict[str, dict]:
    wheel = fetch.fetch(new, "wheel")
    old_pristine = _old_pristine_outcomes(root, state["name"], state.get("line", ""))
    env: TestEnv | None = None
    out: dict[str, dict] = {}
    for name, commit in zip(state["patches"], state["old_commits"]):
        files = testrun.added_tests(repo, commit)
        if not files:
            out[name] = {"verdict": "no tests", "tests": []}
            continue
        env = env or env_factory(root, new, tree, wheel)
        work = testrun.copy_tests(testrun.from_commit(repo, commit), files,
                                  rebase_dir(root, new.key) / "landed" / Path(name).stem)
        outcomes = runner(work, files, env)
        unknown = testrun.not_run(testrun.junit_in(work))
        outcomes = {**outcomes, **{t: "unknown" for t in unknown}}
        entry = {"tests": files, "outcomes": outcomes, "summary": testrun.summarize(outcomes), "env": env.label,
                 **_verdict(outcomes, unknown, old_pristine.get(name, {}))}
        if unknown:
            entry["could_not_run"] = unknown
        out[name] = entry
        ui.info(f"{name}: its tests on pristine {new.version}: {entry['summary']} -> {entry['verdict']}")
        for t in entry.get("now_passing", []):
            ui.info(f"    now passes upstream: {t}")
        for t in entry.get("still_failing", []):
            ui.info(f"    still fails upstream: {t}")
        for t, why in unknown.items():
            ui.info(f"    could not run upstream: {t}: {why}")
    return out


def could_not_run_text(ev: dict) -> str:
    """'test_x: ImportError: ...; ...' for the row of a patch whose landed check is unknown."""
    return "; ".join(f"{t.rsplit('::', 1)[-1]}: {why}" for t, why in ev.get("could_not_run", {}).items())


def verdict_text(ev: dict) -> str:
    unknown = (f"unknown: {len(ev.get('could_not_run', {}))} of its tests could not run there, so whether it "
               "landed is not known (see below)")
    return {"not landed": "still needed", "partly landed": "partly landed (carry only what is still missing)",
            "landed": "landed", "unknown": unknown}.get(ev.get("verdict", ""), ev.get("verdict", ""))


def show_verdict(ev: dict, new: Pin) -> None:
    """The summary's lines for one patch's landed check (test names without their module)."""
    if ev.get("summary"):
        ui.info(f"    its tests on pristine {new.version}: {ev['summary']} -> {verdict_text(ev)}")
    for t in ev.get("now_passing", []):
        ui.info(f"      now passes upstream: {t.rsplit('::', 1)[-1]}")
    for t in ev.get("still_failing", []):
        ui.info(f"      still fails upstream: {t.rsplit('::', 1)[-1]}")
    for t, why in ev.get("could_not_run", {}).items():
        ui.info(f"      could not run upstream: {t.rsplit('::', 1)[-1]}: {why}")
