"""canary's second question: does the series replay on the new pristine release?

Never in vendor/: the applied checkout is cloned (``git clone --shared``, under its lock) into
build/canary/checkouts/<name>-<version>, the new sdist is imported there as ``upstream/<version>`` (the same
commit apply and rebase make, :func:`checkout.import_pristine`), and each patch of patches/<name>/ is replayed
on it with ``git am``: ``clean``, ``3-way`` (with the range-diff of old and new patch), ``conflict`` (its files
and hunks; the patch is then left out and the next one tried) or ``empty``. The clone also gives each patch's
test files (:func:`testrun.added_tests` on the applied commits).

With release lines each line's series is replayed from its own checkout (vendor/[<line>/]<name>), its own copy of a
patch where it has one, in a folder of its own (build/canary/lines/<line>/: :func:`work_dir`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from ...ground import lock, ui
from ...ground.errors import NotApplied
from ...ground.vcs import Repo
from ...sources import archive, checkout, fetch, series as series_mod
from ...sources.pins import Pin
from ...proof import testrun
from ..rebase import conflict as conflict_mod

CANARY_DIR = Path("build") / "canary"
BRANCH = "headroom-canary"
# A patch's detail for each kind of empty patch (conflict_mod.am_patch's "empty").
EMPTY = {conflict_mod.UNCHANGED: "no changes: the new upstream already has them",
         conflict_mod.NO_DIFF: "the patch is empty"}


def patch_id(name: str, patch: Path) -> str:
    return f"{name}/{patch.name}"


def work_dir(line: str) -> Path:
    """Where the canary works for a release line: build/canary/ without lines (one unnamed line),
    build/canary/lines/<line>/ for each line of vendor/lines.toml (the reports stay in build/canary/)."""
    return CANARY_DIR / "lines" / line if line else CANARY_DIR


def series(root: Path, pin: Pin, new: list[Pin], work: Path = CANARY_DIR) -> tuple[dict[str, dict], dict[str, dict[str, dict]]]:
    """Under vendor/<name>'s lock: a ``git clone --shared`` of the applied checkout into build/canary/checkouts/,
    each patch's test files copied out of it (:func:`copy_patch_tests`), and the series replayed on each release
    of ``new`` (:func:`replay`). Returns ({patch id: its tests}, {new version: {patch id: replay result}}). The
    clone borrows vendor/<name>'s objects, so it is used only while the lock is held (a scratch copy after)."""
    series_ = series_mod.load(root, pin.name, pin.line)
    path, what = lock.resource_path(root, f"vendor:{pin.key}")
    dest = root / work / "checkouts" / pin.name
    with lock.hold(path, what):
        src = checkout.vendor_dir(root, pin)
        state = checkout.read_state(src) if src.exists() else {}
        if state.get("state") != "done" or state.get("key") != checkout.apply_key(pin, series_):
            raise NotApplied(f"{pin.vendor} is not the applied checkout of patches/{pin.name}/ (the canary reads "
                             "each patch's tests from it and never changes it). Run `make apply"
                             + (f" LINE={pin.line}" if pin.folder or pin.line else "") + "` first.")
        if dest.exists():
            shutil.rmtree(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        Repo(src)("clone", "-q", "--shared", "--no-checkout", str(src), str(dest))
        repo = Repo(dest)
        commits = state["commits"][1 : 1 + len(series_.patches)]
        patches = [(patch_id(pin.name, p), c) for p, c in zip(series_.patches, commits)]
        sources = {patch_id(pin.name, p): p for p in series_.patches}  # the line's own copy, where it has one
        tests = copy_patch_tests(root, repo, patches, work)
        replays = {}
        for new_pin in new:
            ui.info(f"{pin.name} {pin.version} -> {new_pin.version}" + (f" ({pin.line} line)" if pin.line else "") + ":")
            replays[new_pin.version] = replay(root, repo, new_pin, patches, work, sources)
    return tests, replays


def copy_patch_tests(root: Path, repo: Repo, patches: list[tuple[str, str]], work: Path = CANARY_DIR) -> dict[str, dict]:
    """{patch id: {"files": [...], "dir": folder holding them}} under build/canary/[lines/<line>/]tests/."""
    out = {}
    for pid, commit in patches:
        files = testrun.added_tests(repo, commit)
        where = root / work / "tests" / Path(pid).with_suffix("")
        if files:
            testrun.copy_tests(testrun.from_commit(repo, commit), files, where)
        out[pid] = {"files": files, "dir": str(where), "commit": commit}
    return out


def pristine_tree(root: Path, pin: Pin, work: Path = CANARY_DIR) -> tuple[Path, int]:
    """``pin``'s sdist extracted under build/canary/[lines/<line>/]trees/ (again each run), and its epoch."""
    sdist = fetch.fetch(pin, "sdist")
    tree = root / work / "trees" / f"{pin.name}-{pin.version}"
    if tree.exists():
        shutil.rmtree(tree)
    return tree, archive.extract(sdist, tree, strip_top=True)


def replay(root: Path, repo: Repo, new: Pin, patches: list[tuple[str, str]], work: Path = CANARY_DIR,
           sources: dict[str, Path] | None = None) -> dict[str, dict]:
    """Each patch on the new pristine tag, in series order: {patch id: {"replay": status, ...}}. ``sources``: the
    file of each patch id (a line's own copy); default patches/<name>/<file>."""
    tree, epoch = pristine_tree(root, new, work)
    checkout.import_pristine(repo, new, tree, epoch)
    repo("checkout", "-q", "-f", "-B", BRANCH, checkout.upstream_tag(new))
    source = root / series_mod.PATCHES_DIR / new.name
    out: dict[str, dict] = {}
    for pid, old_commit in patches:
        patch = (sources or {}).get(pid) or source / Path(pid).name
        am = conflict_mod.am_patch(repo, patch, old_commit)
        if am["status"] == "empty":
            result = {"replay": "empty", "detail": EMPTY[am["empty"]]}
        elif am["status"] != "conflict":
            result = {"replay": am["status"]}
            if "range_diff" in am:
                result["range_diff"] = am["range_diff"]
        else:  # the patch is left out: back to the HEAD before it, and the next one is tried
            repo.try_("am", "--abort")
            if repo.head() != am["before"]:
                repo("reset", "-q", "--hard", am["before"])
            result = {"replay": "conflict", "files": am["files"], "detail": am["report"]}
        ui.info(f"{pid:<60} {result['replay']}" + (f"  ({', '.join(result['files'])})" if result.get("files") else ""))
        out[pid] = result
    return out
