"""canary: what the new upstream releases would do to the series, before anyone rebases (``make canary``).

For every pin, the releases newer than it on the configured index (or ``RELEASES=``), each alone and the newest
of every upstream together; torch the same way (a release newer than every torch the home line declares in
vendor/lines.toml, or ``TORCH=``): a torch candidate runs every patch's tests and the guards on today's pins with
that torch, compared with the reference on the primary torch. Per candidate, in order: is it installable (:mod:`.install`)? does the series replay
on its pristine sources (:mod:`.replay`)? is each patch still needed, and do the regression guards still pass
(:mod:`.needed`)? The answers go to a terminal grid and build/canary/report.{json,md,html} (:mod:`.report`).

It never touches the user's work: everything it writes is under build/canary/ (and the environments
build/envs/canary-*); vendor/ is only read, under its lock, and pins.toml and patches/ only read. Exit 0 when
nothing needs a person, :class:`CanaryAttention` otherwise.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from ...ground import ui
from ...ground.errors import CanaryAttention
from ...sources import fetch, lines as lines_mod, pins as pins_mod
from ...sources.pins import Pin
from ...proof import testrun
from ...proof.envs import torch_requirement
from . import install, lineup, needed, plan, replay as replay_mod, report as report_mod
from .needed import GUARDS, EnvFactory, Runner, source_env, wheel_env  # noqa: F401 (the command line picks one)
from .replay import CANARY_DIR

# Resolved beside every candidate: the candidate's torch (the primary, or the torch it changes to). Tests set it to
# () (no torch: toy upstreams), which also leaves torch's releases out of what is looked for on the index.
BASE_REQUIREMENTS: Sequence[str] | None = None


def home_line(root: Path) -> lines_mod.Line:
    """The line of today's pins (vendor/pins.toml): its primary torch is the reference's, its newest the one a torch
    release must be newer than to be looked at."""
    all_lines = lines_mod.load(root)
    return next((ln for ln in all_lines if not ln.folder), all_lines[0])


def run(root: Path, *, releases: str | None = None, pre: bool = False, guards: Path = GUARDS,
        env_factory: EnvFactory = wheel_env, runner: Runner = needed.run_tests,
        base_requirements: Sequence[str] | None = None,
        versions_of: Callable[[str], list[str]] = fetch.index_versions, torch: str | None = None) -> int:
    pins = pins_mod.load(root)
    out = root / CANARY_DIR
    home = home_line(root)
    primary = home.primary_torch
    base_requirements = BASE_REQUIREMENTS if base_requirements is None else base_requirements
    watch_torch = base_requirements is None or torch is not None  # toy tests without torch do not look for it
    given = ", ".join(filter(None, [releases, f"torch {torch}" if torch else ""]))
    ui.step("canary", "new releases" + (f" (given: {given})" if given else " on the package index" + (" (pre-releases too)" if pre else "")))
    if given:
        new = plan.parse_releases(releases, pins, primary) if releases else {}
        if torch:
            for v in plan.torch_releases(plan.parse_torch(torch), primary, pre=pre, versions_of=versions_of):
                new.setdefault(plan.TORCH, [])
                if v not in new[plan.TORCH]:
                    new[plan.TORCH].append(v)
    else:
        new = plan.discover(pins, pre=pre, versions_of=versions_of, torch=home.newest_torch if watch_torch else None)
    candidates = plan.candidates(pins, new)
    for d in ("runs", "tests"):
        shutil.rmtree(out / d, ignore_errors=True)
    data = {"schema": 1, "pins": {p.name: p.version for p in pins}, "torch": primary, "pre": pre,
            "releases_option": releases or "", "torch_option": torch or "",
            "guards": str(guards), "reference": {}, "candidates": []}
    advice = lineup.advise(root, versions_of)  # the release lines: who can take what, who can retire
    if advice:
        ui.step("canary", "release lines (vendor/lines.toml)")
        for a in advice:
            ui.info(a)
        data["lines"] = advice
    if not candidates:
        ui.info("nothing new: every pin is the newest release")
        report_mod.write(root, data)
        return 0

    ui.step("canary", "download the new releases (trust on first use; cached by content)")
    new_pins = {(name, v): fetch.download_unpinned(_pin(pins, name), v, recorded="the canary never records a pin")
                for name, vs in new.items() if name != plan.TORCH for v in vs}

    ui.step("canary", "replay each series on the new pristine releases (in clones under build/canary/checkouts/)")
    tests: dict[str, dict] = {}
    replays: dict[tuple[str, str], dict[str, dict]] = {}
    for pin in pins:
        found, by_version = replay_mod.series(root, pin, [new_pins[(pin.name, v)] for v in new.get(pin.name, [])])
        tests.update(found)
        replays.update({(pin.name, v): r for v, r in by_version.items()})

    ui.step("canary", f"reference: each patch's tests and the guards on today's pins ({_label(pins)}, torch {primary})")
    guard_files = needed.guard_files(guards, [p.name for p in pins])
    ref_env = env_factory(root, pins, "reference", torch=primary)
    if isinstance(ref_env, str):
        raise CanaryAttention(f"the reference environment (today's pins) could not be made: {ref_env}. Fix that "
                              "first (`make test` makes the same one); nothing can be compared without it.")
    reference = {"env": ref_env.label, "torch": primary, "patches": {}, "battery": {}}
    for pid, t in tests.items():
        if t["files"]:
            r = runner(Path(t["dir"]), t["files"], ref_env, out / "runs" / "reference" / Path(pid).with_suffix("") / "junit.xml")
            reference["patches"][pid] = {"tests": needed.results(r), "log": _rel(root, r.log)}
    if guard_files:
        reference["battery"] = _battery(root, guards, guard_files, runner, ref_env,
                                        out / "runs" / "reference" / "guards")
    data["reference"] = reference

    for cand in candidates:
        ui.step("canary", f"{cand.id}" + (" (the newest of each, together)" if cand.kind == "combination" else ""))
        cpins = [new_pins.get((p.name, cand.version_of(p.name) or ""), p) for p in pins]
        data["candidates"].append(_candidate(root, cand, cpins, tests, replays, reference, guards, guard_files,
                                             env_factory, runner, base_requirements, pre, primary))
    attention = report_mod.write(root, data)
    if attention:
        raise CanaryAttention(
            f"{len(attention)} thing(s) in the new releases need a person (report: build/canary/report.html, "
            "report.md, report.json). Landed patches: `make rebase PIN=... DROP=...`; conflicts: resolve them in "
            "`make rebase`; unknown ones: read the error line and the log.",
            details="\n".join(f"  - {a}" for a in attention))
    return 0


def _candidate(root: Path, cand: plan.Candidate, cpins: list[Pin], tests: dict, replays: dict, reference: dict,
               guards: Path, guard_files: list[str], env_factory: EnvFactory, runner: Runner,
               base_requirements: Sequence[str] | None, pre: bool, primary: str) -> dict:
    runs = root / CANARY_DIR / "runs" / cand.slug
    torch = cand.torch(primary)
    if base_requirements is None:
        base = [torch_requirement(torch)]
    else:  # the tests' own (no torch), and the torch a candidate changes to
        base = [*base_requirements, *([torch_requirement(torch)] if cand.version_of(plan.TORCH) else [])]
    inst = install.check([*base, *(p.requirement for p in cpins)], runs / "install.log", pre=pre)
    inst["log"] = _rel(root, runs / "install.log")
    ui.info(f"installable? {inst['verdict']}" + (f": {inst['error']}" if inst.get("error") else ""))
    if inst["verdict"] == "installable":
        env = env_factory(root, cpins, cand.slug, torch=torch)
    else:
        env = "the release set is not installable (the replay still ran)"
    entry = {"id": cand.id, "kind": cand.kind, "upstreams": dict(cand.changes), "torch": torch, "install": inst,
             "env": env if isinstance(env, str) else env.label, "env_made": not isinstance(env, str),
             "patches": {}, "battery": {}}
    for pid, t in tests.items():
        name = pid.split("/", 1)[0]
        version = cand.version_of(name)
        cell: dict = dict(replays[(name, version)][pid]) if version else {"replay": None}
        if not t["files"]:
            cell.update(verdict="no tests")
        elif isinstance(env, str):
            cell.update(verdict="not run", error=env)
        else:
            work = Path(t["dir"])
            junit = runs / Path(pid).with_suffix("") / "junit.xml"
            r = runner(work, t["files"], env, junit)
            now = needed.results(r)
            cell.update(needed.compare(now, reference["patches"][pid]["tests"]), tests=now, log=_rel(root, r.log))
            if cell["verdict"] in ("landed", "partly landed"):
                again = needed.compare(needed.results(runner(work, t["files"], env, junit.with_name("junit-2.xml"))),
                                       reference["patches"][pid]["tests"])
                cell["confirmed"] = again["verdict"] == cell["verdict"]
                if not cell["confirmed"]:
                    cell.update(verdict="unknown", error=f"not confirmed: the second run says {again['verdict']} "
                                f"({again.get('error', '')})")
        ui.info(f"{pid:<60} {report_mod.cell_text(cell)}")
        entry["patches"][pid] = cell
    if not guard_files:
        entry["battery"] = {"verdict": "no guards"}
    elif isinstance(env, str):
        entry["battery"] = {"verdict": "not run", "error": env}
    else:
        ran = _battery(root, guards, guard_files, runner, env, runs / "guards")
        entry["battery"] = {**needed.battery(ran["tests"], reference["battery"]["tests"]), **ran}
    ui.info(f"{'battery (regression guards)':<60} {entry['battery']['verdict']}")
    return entry


def _battery(root: Path, guards: Path, guard_files: list[str], runner: Runner, env: testrun.TestEnv,
             where: Path) -> dict:
    """The regression guards copied into ``where`` and run there in ``env``: {"tests": their results, "log": ...}."""
    work = testrun.copy_tests(testrun.from_tree(guards), guard_files, where)
    r = runner(work, guard_files, env, work / "junit.xml")
    return {"tests": needed.results(r), "log": _rel(root, r.log)}


def _pin(pins: list[Pin], name: str) -> Pin:
    return next(p for p in pins if p.name == name)


def _label(pins: Sequence[Pin]) -> str:
    return ", ".join(f"{p.name} {p.version}" for p in pins)


def _rel(root: Path, path: Path) -> str:
    """A path relative to build/canary/ (where the reports are, so the HTML's links work)."""
    try:
        return path.relative_to(root / CANARY_DIR).as_posix()
    except ValueError:
        return str(path)
