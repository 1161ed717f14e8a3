"""canary: what the new upstream releases would do to the series, before anyone rebases (``make canary``).

For every pin, the releases newer than it on the configured index (or ``RELEASES=``), each alone and the newest
of every upstream together; torch the same way (a release newer than every torch the line declares in
vendor/lines.toml, or ``TORCH=``): a torch candidate runs every patch's tests and the guards on the line's pins with
that torch, compared with the reference on the line's primary torch. Per candidate, in order: is it installable (:mod:`.install`)? does the series replay
on its pristine sources (:mod:`.replay`)? is each patch still needed, and do the regression guards still pass
(:mod:`.needed`)? The answers go to a terminal grid and build/canary/report.{json,md,html} (:mod:`.report`).

Each release line (vendor/lines.toml; LINE=: one) is judged on its own: the new releases of the upstreams it pins
that are for it (:func:`lineup.refusals`: the PEFT line's transformers stops where transformers refuses its peft),
against its own pins as the reference, with its own series (its copies where it has them), in its own folder
(build/canary/lines/<line>/). The grid names each row's line, and the advice says what each release does to each
line: move it, propose a new line, take an upstream, retire (:mod:`.lineup`).

It never touches the user's work: everything it writes is under build/canary/ (and the environments
build/envs/canary-*); vendor/ is only read, under its lock, and pins.toml and patches/ only read. Exit 0 when
nothing needs a person, :class:`CanaryAttention` otherwise.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

from packaging.version import InvalidVersion, Version

from ...ground import ui
from ...ground.errors import CanaryAttention
from ...sources import fetch, lines as lines_mod
from ...sources.lines import Line
from ...sources.pins import Pin
from ...proof import testrun
from ...proof.envs import torch_requirement
from . import install, lineup, needed, plan, replay as replay_mod, report as report_mod
from .needed import GUARDS, EnvFactory, Runner, source_env, wheel_env  # noqa: F401 (the command line picks one)
from .replay import CANARY_DIR

# Resolved beside every candidate: the candidate's torch (the primary, or the torch it changes to). Tests set it to
# () (no torch: toy upstreams), which also leaves torch's releases out of what is looked for on the index.
BASE_REQUIREMENTS: Sequence[str] | None = None


def run(root: Path, *, releases: str | None = None, pre: bool = False, guards: Path = GUARDS,
        env_factory: EnvFactory = wheel_env, runner: Runner = needed.run_tests,
        base_requirements: Sequence[str] | None = None,
        versions_of: Callable[[str], list[str]] = fetch.index_versions, line: str | None = None,
        torch: str | None = None) -> int:
    """Every release line (``line``: the one named) judged against the new releases; one report for them all."""
    lines = lines_mod.select(lines_mod.load(root), line)
    versions_of = _once(versions_of)
    data = {"schema": 2, "pre": pre, "releases_option": releases or "", "torch_option": torch or "",
            "guards": str(guards), "lines": [], "candidates": [], "lineup": []}
    judged = []
    for ln in lines:
        if ln.name:
            ui.step("canary", f"the {ln.label} line ({ln.releases()}; {ln.pins_file})")
        entry, candidates, taken, refused = _line(root, ln, releases=releases, pre=pre, guards=guards,
                                                  env_factory=env_factory, runner=runner,
                                                  base_requirements=base_requirements, versions_of=versions_of,
                                                  torch=torch)
        data["lines"].append(entry)
        data["candidates"] += candidates
        judged.append({"line": ln, "taken": taken, "refused": refused})
    data["pins"], data["reference"] = data["lines"][0]["pins"], data["lines"][0]["reference"]  # schema 1's fields
    data["torch"] = data["lines"][0]["torch"]  # the first line's primary torch (each line's is in `lines`)
    if any(ln.name for ln in lines):
        data["lineup"] = lineup.moves(judged) + lineup.advise(root, versions_of)  # move, propose, take, retire
        ui.step("canary", "release lines (vendor/lines.toml): what the new releases do to them")
        for a in data["lineup"] or ["nothing moves: no line has a new release for it"]:
            ui.info(a)
    if not data["candidates"]:
        ui.info("nothing new: every pin is the newest release" + (" its line takes" if any(ln.name for ln in lines) else ""))
    attention = report_mod.write(root, data)
    if attention:
        raise CanaryAttention(
            f"{len(attention)} thing(s) in the new releases need a person (report: build/canary/report.html, "
            "report.md, report.json). Landed patches: `make rebase PIN=... DROP=...` (LINE=<the row's line>); "
            "conflicts: resolve them in `make rebase`; unknown ones: read the error line and the log.",
            details="\n".join(f"  - {a}" for a in attention))
    return 0


def _once(versions_of: Callable[[str], list[str]]) -> Callable[[str], list[str]]:
    """``versions_of`` asked once per distribution in a run (every line asks of the same upstreams)."""
    seen: dict[str, list[str]] = {}
    return lambda name: seen[name] if name in seen else seen.setdefault(name, versions_of(name))


_DOWNLOADED: dict[tuple[str, str], Pin] = {}  # (distribution, version) -> the downloaded release, for this process


def _download(pin: Pin, version: str) -> Pin:
    """The new release of ``pin`` (downloaded once a process, whichever line asks first), as a pin of its line."""
    key = (pin.distribution, version)
    if key not in _DOWNLOADED:
        _DOWNLOADED[key] = fetch.download_unpinned(pin, version, recorded="the canary never records a pin")
    return dataclasses.replace(_DOWNLOADED[key], name=pin.name, line=pin.line, folder=pin.folder)


def _given(text: str, pins: list[Pin], primary: str) -> dict[str, list[str]]:
    """RELEASES= for one line: the releases of the upstreams it pins, newer than its pins (the rest are other
    lines'; the command line checked the text), and a torch other than the line's primary."""
    items = []
    for item in (t.strip() for t in text.split(",")):
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*(\S+)", item)
        if m and m.group(1) == plan.TORCH:
            if m.group(2) != primary:
                items.append(item)
            continue
        pin = next((p for p in pins if m and m.group(1) in (p.name, p.distribution)), None)
        if pin is not None and _newer(m.group(2), pin.version):
            items.append(item)
    return plan.parse_releases(",".join(items), pins, primary) if items else {}


def _newer(version: str, than: str) -> bool:
    try:
        return Version(version) > Version(than)
    except InvalidVersion:
        return version != than


def _line(root: Path, line: Line, *, releases: str | None, pre: bool, guards: Path, env_factory: EnvFactory,
          runner: Runner, base_requirements: Sequence[str] | None, versions_of: Callable[[str], list[str]],
          torch: str | None = None) -> tuple[dict, list[dict], dict[str, list[str]], dict[str, dict[str, list[str]]]]:
    """One line judged: (its report entry, its candidates, {upstream: the new versions for it}, {upstream: {version:
    why it is not for it}})."""
    pins = list(line.pins)
    work = replay_mod.work_dir(line.name)
    out = root / work
    primary = line.primary_torch
    base_requirements = BASE_REQUIREMENTS if base_requirements is None else base_requirements
    watch_torch = base_requirements is None or torch is not None  # toy tests without torch do not look for it
    given = ", ".join(filter(None, [releases, f"torch {torch}" if torch else ""]))
    ui.step("canary", "new releases" + (f" (given: {given})" if given else " on the package index" + (" (pre-releases too)" if pre else "")))
    if given:
        new = _given(releases, pins, primary) if releases else {}
        if torch:
            for v in plan.torch_releases(plan.parse_torch(torch), primary, pre=pre, versions_of=versions_of):
                if v not in new.setdefault(plan.TORCH, []):
                    new[plan.TORCH].append(v)
    else:
        new = plan.discover(pins, pre=pre, versions_of=versions_of, torch=line.newest_torch if watch_torch else None)
    for d in ("runs", "tests"):
        shutil.rmtree(out / d, ignore_errors=True)
    data = {"line": line.name, "title": line.title, "pins_file": line.pins_file.as_posix(),
            "pins": {p.name: p.version for p in pins}, "torch": primary, "reference": {}, "refused": {}}
    if not new:
        ui.info("nothing new: every pin is the newest release")
        return data, [], {}, {}

    ui.step("canary", "download the new releases (trust on first use; cached by content)")
    new_pins = {(name, v): _download(_pin(pins, name), v) for name, vs in new.items() if name != plan.TORCH
                for v in vs}
    refused: dict[str, dict[str, list[str]]] = {}
    for (name, v), np in new_pins.items():
        why = lineup.refusals(np, fetch.fetch(np, "sdist"), line) if line.name else []
        if why:
            ui.info(f"{name} {v}: not for the {line.label} line: {'; '.join(why)}")
            refused.setdefault(name, {})[v] = why
            new[name].remove(v)
    new = {name: vs for name, vs in new.items() if vs}
    data["refused"] = refused
    candidates = plan.candidates(pins, new)
    if not candidates:
        ui.info(f"no new release for the {line.label} line")
        return data, [], new, refused

    ui.step("canary", f"replay each series on the new pristine releases (in clones under {work}/checkouts/)")
    tests: dict[str, dict] = {}
    replays: dict[tuple[str, str], dict[str, dict]] = {}
    for pin in pins:
        found, by_version = replay_mod.series(root, pin, [new_pins[(pin.name, v)] for v in new.get(pin.name, [])], work)
        tests.update(found)
        replays.update({(pin.name, v): r for v, r in by_version.items()})

    ui.step("canary", f"reference: each patch's tests and the guards on today's pins ({_label(pins)}, torch {primary})")
    guard_files = needed.guard_files(guards, [p.name for p in pins])
    ref_env = env_factory(root, pins, _key(line, "reference"), torch=primary)
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

    judged = []
    for cand in candidates:
        ui.step("canary", f"{cand.id}" + (" (the newest of each, together)" if cand.kind == "combination" else "")
                + (f" on the {line.label} line" if line.name else ""))
        cpins = [new_pins.get((p.name, cand.version_of(p.name) or ""), p) for p in pins]
        judged.append(_candidate(root, cand, cpins, tests, replays, reference, guards, guard_files,
                                 env_factory, runner, base_requirements, pre, line, work, primary))
    return data, judged, new, refused


def _key(line: Line, slug: str) -> str:
    """An environment's key (build/envs/canary-<key>): a line's own, so two lines never share one."""
    return f"{line.name}-{slug}" if line.name else slug


def _candidate(root: Path, cand: plan.Candidate, cpins: list[Pin], tests: dict, replays: dict, reference: dict,
               guards: Path, guard_files: list[str], env_factory: EnvFactory, runner: Runner,
               base_requirements: Sequence[str] | None, pre: bool, line: Line, work: Path = CANARY_DIR,
               primary: str = lines_mod.PRIMARY_TORCH) -> dict:
    runs = root / work / "runs" / cand.slug
    torch = cand.torch(primary)
    if base_requirements is None:
        base = [torch_requirement(torch)]
    else:  # the tests' own (no torch), and the torch a candidate changes to
        base = [*base_requirements, *([torch_requirement(torch)] if cand.version_of(plan.TORCH) else [])]
    inst = install.check([*base, *(p.requirement for p in cpins)], runs / "install.log", pre=pre)
    inst["log"] = _rel(root, runs / "install.log")
    ui.info(f"installable? {inst['verdict']}" + (f": {inst['error']}" if inst.get("error") else ""))
    if inst["verdict"] == "installable":
        env = env_factory(root, cpins, _key(line, cand.slug), torch=torch)
    else:
        env = "the release set is not installable (the replay still ran)"
    entry = {"line": line.name, "id": cand.id, "kind": cand.kind, "upstreams": dict(cand.changes), "torch": torch,
             "install": inst,
             "env": env if isinstance(env, str) else env.label, "env_made": not isinstance(env, str),
             "patches": {}, "battery": {}}
    for pid, t in tests.items():
        name = pid.split("/", 1)[0]
        version = cand.version_of(name)
        cell: dict = dict(replays[(name, version)][pid]) if version else {"replay": None}
        unproven = line.unproven.get(f"{name}/{pid.split('/', 1)[1][:4]}")
        if not t["files"]:
            cell.update(verdict="no tests")
        elif unproven:  # vendor/lines.toml says why its tests cannot run on this line: never guessed from skips
            cell.update(verdict="not run", error=f"not provable on this line: {unproven}")
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
