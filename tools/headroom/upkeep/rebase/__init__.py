"""rebase: carry one upstream's series to a new release, patch by patch, resumably.

``headroom rebase transformers==5.23.0`` (``--line newest``: on that release line, vendor/lines.toml):

0. applies the series first when vendor/<name> is not its applied checkout (a fresh clone);
   a checkout holding unsaved work is refused, as ``apply`` refuses it;
1. downloads the new sdist and official wheel with pip (trust on first use: their
   sha256 are printed, and recorded in vendor/pins.toml only when the rebase finishes);
2. saves what it may change (pins.toml, patches/<name>/, the checkout's HEAD, refs and
   state) under build/rebase/<name>/, so ``rebase-abort`` restores them byte for byte;
3. commits the new pristine tree in vendor/<name> (tag ``upstream/<new version>``, the
   same commit ``apply`` makes) and runs each patch's own tests against the pristine new
   upstream, in build/envs/landed-<name>-<version> (the official wheels of every pin, the
   new release in place of the old one): a patch whose tests already pass there has
   *landed* (semantically); when that environment cannot be made the rebase is undone
   (LandedCheckNotRun);
4. replays the series with ``git am -3`` on branch ``headroom-rebase``, one patch at a
   time, and prints one row per patch: ``clean``, ``3-way`` (with the range-diff of the
   old and new patch), ``empty`` (the change is already upstream: nothing left to
   carry), ``landed`` or ``conflict`` (it stops, names the files and hunks, and leaves
   the checkout in ``git am`` for you to resolve; ``rebase-continue`` goes on);
5. at the end exports the new series, writes the new pin and re-runs ``apply`` so the
   checkout is canonical.

With release lines every step is the line's: its pins file (vendor/pins.toml or vendor/<line>.pins.toml), its
checkout (vendor/[<line>/]<name>), its series (its own copies where it has them), and the export writes the files it
uses (the original on the original line, its own copies on another: export.diff). Without ``--line`` the one line
that pins the upstream is meant; when several pin it, ``--line`` is required (:func:`resolve`). The state names the
line, so rebase-continue and rebase-abort follow it.

Patches found ``landed`` are dropped only when confirmed (``--drop`` / ``DROP=``, or a
prompt when stdin is a terminal); ``empty`` ones leave no commit, so they are dropped.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
from pathlib import Path

from ...ground import ui
from ...ground.errors import LandedCheckNotRun, NotApplied, PatchConflict, UnsavedWork, UsageError
from ...ground.fsutil import atomic_write_json
from ...ground.vcs import Repo
from ...sources import archive, checkout, fetch, export as export_mod, pins as pins_mod
from ...sources import series as series_mod
from ...sources.pins import Pin
from ...proof.testrun import run_in_env
from . import conflict as conflict_mod, landed as landed_mod, state as state_mod
from .landed import EnvFactory, Runner, source_env, wheel_env  # noqa: F401 (the command line picks one)
from .state import REBASE_DIR  # noqa: F401 (tests read it)
from . import lines as lines_step
from .lines import parse_requirement, report_path, resolve  # noqa: F401 (the command line and tests use them)

BRANCH = "headroom-rebase"
# A row's detail for each kind of empty patch (conflict_mod.am_patch's "empty").
EMPTY = {conflict_mod.UNCHANGED: "git am: no changes, the new upstream already has them",
         conflict_mod.NO_DIFF: "git am: the patch is empty"}


# --------------------------------------------------------------------------- helpers

def _split(values: list[str] | None) -> list[str]:
    return [t for v in values or [] for t in v.split(",") if t.strip()]


# --------------------------------------------------------------------------- start

def _applied(root: Path, pin: Pin, series: series_mod.Series) -> bool:
    state = checkout.read_state(checkout.vendor_dir(root, pin))
    return state.get("state") == "done" and state.get("key") == checkout.apply_key(pin, series)


def _apply_first(root: Path, pin: Pin, series: series_mod.Series) -> None:
    """A fresh clone (no vendor/<name>) or a checkout of another series: `make apply` first, as the person would.
    A checkout holding unsaved work is refused by apply itself (UnsavedWork), nothing changed."""
    if _applied(root, pin, series):
        return
    ui.step("rebase", f"{pin.vendor} is not the applied checkout of patches/{pin.name}/: apply it first")
    checkout.apply(root, pin)


def _require_clean_checkout(root: Path, pin: Pin, series: series_mod.Series) -> Repo:
    dest = checkout.vendor_dir(root, pin)
    state = checkout.read_state(dest)
    if not _applied(root, pin, series):
        raise NotApplied(f"{pin.vendor} is not the applied checkout of patches/{pin.name}/. Run `make apply` "
                         "first (and `make export` before it if the checkout holds work you want to keep).")
    repo = Repo(dest)
    problems = []
    if repo.am_in_progress():
        problems.append("a `git am` is in progress")
    if repo.head() != state.get("head"):
        problems.append("HEAD moved since the last apply (commits not exported?)")
    dirty = repo.is_dirty()
    if dirty:
        problems.append(f"uncommitted edits: {len(dirty)} path(s), e.g. {dirty[0].strip()}")
    if problems:
        raise UnsavedWork(f"{pin.vendor} holds work that is not in patches/{pin.name}/; nothing was changed. "
                          f"Record it (`make export`, then `make apply`) or discard it (`make apply FORCE=1`), "
                          "then rebase.", details="\n".join(f"  - {p}" for p in problems))
    return repo


def _import_pristine(root: Path, repo: Repo, new: Pin) -> tuple[str, Path]:
    """The new sdist extracted under build/rebase/ and committed as apply would (checkout.import_pristine)."""
    sdist = fetch.fetch(new, "sdist")
    tree = state_mod.rebase_dir(root, new.key) / f"pristine-{new.version}"
    if tree.exists():
        shutil.rmtree(tree)
    epoch = archive.extract(sdist, tree, strip_top=True)
    return checkout.import_pristine(repo, new, tree, epoch), tree


def _confirm(names: list[str], question: str) -> list[str]:
    if not names or not sys.stdin.isatty():
        return []
    chosen = []
    for n in names:
        answer = input(f"  {question} {n}? [y/N] ").strip().lower()
        if answer in ("y", "yes"):
            chosen.append(n)
    return chosen


def start(root: Path, requirement: str, *, line: str | None = None, drop: list[str] | None = None,
          env_factory: EnvFactory = wheel_env, runner: Runner = run_in_env) -> int:
    _, version = parse_requirement(requirement)
    chosen, pin = resolve(root, requirement, line)
    on = lines_step.on({"line": chosen.name})
    if state_mod.load(root, pin.key):
        raise UsageError(f"a rebase of {pin.vendor} is already in progress. Go on with `make rebase-continue{on}` "
                         f"or undo it with `make rebase-abort{on}`.")
    if version == pin.version:
        raise UsageError(f"{pin.name} is already pinned to {version} in {chosen.pins_file}; nothing to rebase.")
    series = series_mod.load(root, pin.name, pin.line)
    names = [p.name for p in series.patches]
    drops = series_mod.match(_split(drop), names, pin.name)
    siblings = lines_step.siblings(root, chosen, pin.name)
    if drops and siblings:
        raise UsageError(lines_step.shared_series(pin, chosen.name, siblings, drops, on) + " Nothing was changed.")
    _apply_first(root, pin, series)
    repo = _require_clean_checkout(root, pin, series)
    ui.step("rebase", f"{pin.name} {pin.version} -> {version}" + (f" on the {chosen.name} line" if chosen.name else "")
            + ": download (trust on first use)")
    new = fetch.download_unpinned(pin, version)
    old_state = checkout.read_state(repo.path)
    state = {
        "name": pin.name, "old": dataclasses.asdict(pin), "new": dataclasses.asdict(new), "patches": names,
        "old_commits": old_state["commits"][1 : 1 + len(names)], "next": 0, "results": [], "drop": drops,
        "phase": "starting", "key": pin.key, "line": chosen.name, "original": chosen.original,
        "pins_file": chosen.pins_file.as_posix(),
        "series_files": [p.relative_to(series.folder).as_posix() for p in series.patches],
    }
    state["saved"] = state_mod.save(root, pin, repo, root / chosen.pins_file)
    state_mod.save_state(root, state)
    ui.step("rebase", f"pristine {new.version} -> tag {checkout.upstream_tag(new)} in {pin.vendor}")
    _, tree = _import_pristine(root, repo, new)
    ui.step("rebase", f"each patch's own tests on pristine {new.version} (landed?)")
    try:
        state["landed"] = landed_mod.checks(root, repo, state, new, tree, env_factory, runner)
    except LandedCheckNotRun:
        state_mod.restore(root, state)  # a rebase without its landed check would not be honest: undo it
        shutil.rmtree(state_mod.rebase_dir(root, pin.key))
        ui.info(f"{pin.name} is back on {pin.version}: pins, patches and checkout as before the rebase")
        raise
    landed = [n for n in names if state["landed"][n]["verdict"] == "landed" and n not in drops]
    state["siblings"] = siblings
    state["drop"] = drops + ([] if siblings else _confirm(landed, "its tests pass on the pristine new upstream: drop"))
    repo("checkout", "-q", "-f", "-B", BRANCH, checkout.upstream_tag(new))
    state["phase"] = "replaying"
    state_mod.save_state(root, state)
    return _replay(root, state)


# --------------------------------------------------------------------------- replay

def _row(result: dict) -> None:
    extra = f"  ({result['detail']})" if result.get("detail") else ""
    ui.info(f"{result['patch']:<60} {result['status']}{extra}")


RANGE_DIFF_LINES = 40


def _show_range_diff(result: dict, new: Pin) -> None:
    """The range-diff of old and new patch, at most RANGE_DIFF_LINES lines (all of it is in the JSON report)."""
    lines = result.get("range_diff", "").splitlines()
    for line in lines[:RANGE_DIFF_LINES]:
        ui.info(f"    {line}")
    if len(lines) > RANGE_DIFF_LINES:
        ui.info(f"    ... {len(lines) - RANGE_DIFF_LINES} more lines: the whole range-diff is in "
                f"{REBASE_DIR}/{new.name}-{new.version}.json")


def _replay(root: Path, state: dict) -> int:
    name = state["name"]
    new = Pin(**state["new"])
    on = lines_step.on(state)
    repo = Repo(checkout.vendor_dir(root, new))
    saved_patches = state_mod.rebase_dir(root, state_mod.key(state)) / "saved" / "patches"
    sources = state.get("series_files") or state["patches"]  # the line's own copy of a patch, where it has one
    ui.step("rebase", f"replay patches/{name}/" + (f" ({state['line']} line)" if state.get("line") else "")
            + f" on {checkout.upstream_tag(new)} (git am -3)")
    while state["next"] < len(state["patches"]):
        i = state["next"]
        pname = state["patches"][i]
        patch = saved_patches / sources[i]
        landed = state["landed"].get(pname, {})
        is_l = landed.get("verdict") == "landed"
        result = {"patch": pname, "status": "", "detail": ""}
        if pname in state["drop"]:
            textual = "applies clean" if repo.try_("apply", "--check", str(patch))[0] else "does not apply as is"
            result.update(status="landed" if is_l else "dropped",
                          detail=f"dropped as confirmed; {textual}" + (f"; tests on pristine: {landed['summary']}" if is_l else ""))
        else:
            am = conflict_mod.am_patch(repo, patch, state["old_commits"][i])
            if am["status"] == "empty":
                result.update(status="empty", detail=EMPTY[am["empty"]])
            elif am["status"] != "conflict":
                result["status"] = am["status"]
                result["commit"] = am["commit"]
                if "range_diff" in am:
                    result["range_diff"] = am["range_diff"]
            else:
                files, report = am["files"], am["report"]
                state["phase"] = "conflict"
                state["conflict"] = {"patch": pname, "before": am["before"], "files": files}
                state_mod.save_state(root, state)
                result.update(status="conflict", detail=", ".join(files))
                _row(result)
                num = pname[:4]
                hint = ""
                if landed.get("verdict") == "partly landed":
                    hint = (f" Part of it landed upstream: on pristine {new.version} its tests give {landed['summary']} "
                            f"(now passing: {', '.join(t.rsplit('::', 1)[-1] for t in landed['now_passing'])}; still "
                            f"failing: {', '.join(t.rsplit('::', 1)[-1] for t in landed['still_failing'])}): keep what "
                            "upstream did and carry only what is still missing.")
                if landed.get("verdict") == "unknown":
                    hint = (f" Whether it landed upstream is unknown: its tests could not run on pristine {new.version} "
                            f"({landed_mod.could_not_run_text(landed)}).")
                if is_l:
                    hint = (f" Its own tests already pass on pristine {new.version} ({landed['summary']}): it has "
                            f"landed upstream; dropping it is likely right: `make rebase-continue DROP={num}{on}`.")
                raise PatchConflict(
                    f"patches/{name}/{sources[i]} conflicts with {new.distribution} {new.version}; {new.vendor} is "
                    f"stopped in `git am` on branch {BRANCH}.{hint} Resolve it: cd {new.vendor}; fix the files listed "
                    f"below (conflict markers); git add them; then `make rebase-continue{on}`. Or drop this patch: "
                    f"`make rebase-continue DROP={num}{on}`. Or undo everything: `make rebase-abort{on}`.",
                    details=report,
                )
            if landed.get("verdict") == "unknown" and result["status"] in ("clean", "3-way", "empty"):
                result["detail"] = ", ".join(x for x in (result["detail"], f"landed? unknown: its tests could not "
                                                         f"run on pristine {new.version} ({landed_mod.could_not_run_text(landed)})") if x)
            if is_l and result["status"] in ("clean", "3-way"):
                result["detail"] = (f"applies {result['status']}, but its tests pass on pristine {new.version} "
                                    f"({landed['summary']})")
                result["textual"] = result["status"]
                result["status"] = "landed"
        _row(result)
        _show_range_diff(result, new)
        state["results"].append(result)
        state["next"] = i + 1
        state["phase"] = "replaying"
        state.pop("conflict", None)
        state_mod.save_state(root, state)
    return _finish(root, state)


def _finish(root: Path, state: dict) -> int:
    name = state["name"]
    new = Pin(**state["new"])
    old = Pin(**state["old"])
    results = state["results"]
    ui.step("rebase", f"{name} {old.version} -> {new.version}: summary")
    for r in results:
        _row(r)
        landed_mod.show_verdict(state["landed"].get(r["patch"], {}), new)
    kept_landed = [r for r in results if r["status"] == "landed" and r.get("commit")]
    for r in results:
        ev = state["landed"].get(r["patch"], {})
        if r["status"] == "empty":
            ui.info(f"dropped {r['patch']}: empty on {new.version} ({r['detail']})")
        elif r["status"] == "landed" and not r.get("commit"):
            ui.info(f"dropped {r['patch']}: landed ({ev.get('summary')} on {ev.get('env')})")
    on = lines_step.on(state)
    for r in kept_landed:
        ui.warn(f"{r['patch']} looks landed ({r['detail']}) but was kept (not confirmed). To drop it later: "
                f"`make rebase-abort{on}` now and `make rebase PIN={new.distribution}=={new.version} "
                f"DROP={r['patch'][:4]}{on}`, or remove it from patches/{name}/ after this rebase and `make apply`.")
    by_hand = [r["patch"] for r in results if r["status"] == "conflict" and r.get("commit")]
    for pname in by_hand:
        ui.warn(f"{pname} was resolved by hand: its commit message and tests still describe {old.version}. Review "
                f"them on {new.version} (cd {new.vendor}; git rebase -i {checkout.upstream_tag(new)}; make export{on}), "
                f"then `make build test{on}`.")
    lost = [r["patch"] for r in results if not r.get("commit")]
    if lost and state.get("siblings"):
        raise UsageError(f"the rebase of {new.vendor} cannot finish: {', '.join(lost)} left the series on "
                         f"{new.version} (empty: upstream has the change), and the {' and '.join(state['siblings'])} "
                         f"line(s) apply the same patches/{name}/series: it would be dropped there too, where its "
                         f"release still needs it. Nothing was written; undo it with `make rebase-abort{on}`, then "
                         f"move or retire the {' and '.join(state['siblings'])} line(s) first "
                         "(docs/how-to/pick-a-line.md).")
    # The replay commits become the series (a patch dropped as confirmed was never committed): written to the files
    # this line uses (the original on the original line, the line's own copies on another).
    pins_path = state_mod.pins_file(root, state)
    ui.step("rebase", f"export patches/{name}/, pin {new.requirement} in {pins_path.relative_to(root)}, apply")
    others = lines_step.other_lines(root, state)
    export_mod.export(root, new, original=state.get("original", True))
    lines_step.keep_for_other_lines(root, name, others, results)
    pins_mod.write(root, new, pins_path)
    ui.info(f"{pins_path.relative_to(root)}: [{name}] -> {new.version} (sdist sha256 {new.sdist_sha256}, "
            f"wheel sha256 {new.wheel_sha256})")
    report = {"name": name, "line": state.get("line", ""), "from": old.version, "to": new.version,
              "results": [{k: v for k, v in r.items()} for r in results], "landed": state["landed"]}
    atomic_write_json(report_path(root, new), report)
    checkout.apply(root, new)
    shutil.rmtree(state_mod.rebase_dir(root, state_mod.key(state)))
    ui.info(f"done: report in {report_path(root, new).relative_to(root)}; review and commit "
            f"{pins_path.relative_to(root)} and patches/{name}/")
    return 0


# --------------------------------------------------------------------------- continue / abort

def resume(root: Path, name: str | None = None, *, line: str | None = None, drop: list[str] | None = None) -> int:
    state = lines_step.in_progress(root, name, line)
    name = state["name"]
    state["drop"] = list(dict.fromkeys(state["drop"] + series_mod.match(_split(drop), state["patches"], name)))
    repo = Repo(checkout.vendor_dir(root, Pin(**state["new"])))
    if state["phase"] == "starting":
        raise UsageError(f"the rebase of {name} stopped before the replay began. Undo it with "
                         f"`make rebase-abort{lines_step.on(state)}` and start again.")
    if state["phase"] == "conflict":
        conflict = state["conflict"]
        pname = conflict["patch"]
        landed = state["landed"].get(pname, {})
        result = {"patch": pname}
        if pname in state["drop"]:
            if repo.am_in_progress():
                repo("am", "--skip")
            elif repo.head() != conflict["before"]:
                repo("reset", "-q", "--hard", conflict["before"])
            is_l = landed.get("verdict") == "landed"
            result.update(status="landed" if is_l else "dropped",
                          detail="conflicted; dropped as confirmed" + (f"; tests on pristine: {landed['summary']}" if is_l else ""))
        elif repo.am_in_progress():
            left = conflict_mod.unmerged(repo)
            marked = conflict_mod.staged_markers(repo)
            if left or marked:
                raise PatchConflict(
                    f"{pname} is not resolved yet in {repo.path.relative_to(root)}. Fix the files, `git add` them, "
                    f"then `make rebase-continue{lines_step.on(state)}` (or drop it: `make rebase-continue DROP={pname[:4]}"
                    f"{lines_step.on(state)}`).",
                    details="\n".join([f"  unmerged: {f}" for f in left] + [f"  still has conflict markers: {f}" for f in marked]),
                )
            if repo.try_("diff", "--cached", "--quiet", "HEAD")[0]:  # the resolution leaves nothing to commit
                repo("am", "--skip")
                result.update(status="empty", detail="resolved to no change")
            else:
                ok, out = repo.try_("am", "--continue")
                if not ok:
                    raise PatchConflict(f"git am --continue failed in {repo.path.relative_to(root)}; fix what it "
                                        f"says, then `make rebase-continue{lines_step.on(state)}` again.", details=out)
                result.update(status="conflict", detail="resolved by hand", commit=repo.head())
        else:  # resolved (or skipped) with git am directly
            if repo.head() == conflict["before"]:
                result.update(status="dropped", detail="skipped in git am")
            else:
                result.update(status="conflict", detail="resolved by hand", commit=repo.head())
        if result["status"] == "conflict":
            result["range_diff"] = conflict_mod.range_diff(repo, state["old_commits"][state["next"]], repo.head())
        _row(result)
        _show_range_diff(result, Pin(**state["new"]))
        state["results"].append(result)
        state["next"] += 1
        state["phase"] = "replaying"
        state.pop("conflict", None)
        state_mod.save_state(root, state)
    elif repo.am_in_progress():
        raise UnsavedWork(f"{repo.path.relative_to(root)} is in `git am` but the rebase did not stop there; finish or "
                          f"abort it (git am --abort), then `make rebase-continue{lines_step.on(state)}`.")
    return _replay(root, state)


def abort(root: Path, name: str | None = None, *, line: str | None = None) -> int:
    state = lines_step.in_progress(root, name, line)
    name = state["name"]
    ui.step("rebase-abort", f"{name}: restoring {state_mod.pins_file(root, state).relative_to(root)}, patches/{name}/ "
            f"and vendor/{state_mod.key(state)}")
    state_mod.restore(root, state)
    shutil.rmtree(state_mod.rebase_dir(root, state_mod.key(state)))
    old = Pin(**state["old"])
    ui.info(f"{name} is back on {old.version}: pins, patches and checkout as before the rebase")
    return 0


