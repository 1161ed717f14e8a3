"""rebase's conflicts: one patch replayed with ``git am`` (:func:`am_patch`, for rebase and canary), what a patch
that does not apply left (unmerged files, the patch's hunks, conflict markers), an empty patch, and the range-diff of
an old and a new patch. Asked of git, never read from its English."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ...ground.vcs import Repo
from ...sources import checkout

def has_no_diff(repo: Repo, patch: Path) -> bool:
    """The patch file carries a message but no diff (what `git am` calls an empty patch), asked of git's own mail
    splitter rather than read from its English messages."""
    tmp = repo.git_dir / "headroom-mailinfo"
    tmp.mkdir(exist_ok=True)
    try:
        repo("mailinfo", str(tmp / "msg"), str(tmp / "diff"), stdin_path=patch)
        return (tmp / "diff").stat().st_size == 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def unmerged(repo: Repo) -> list[str]:
    return [f for f in repo("diff", "--name-only", "--diff-filter=U").splitlines() if f.strip()]


def patch_hunks(patch: Path) -> dict[str, list[str]]:
    hunks: dict[str, list[str]] = {}
    current = None
    for line in patch.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.match(r"^diff --git a/(\S+) b/(\S+)", line)
        if m:
            current = m.group(2)
            hunks.setdefault(current, [])
        elif current and line.startswith("@@ "):
            hunks[current].append(line)
    return hunks


def markers(path: Path) -> list[str]:
    regions, begin = [], None
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return regions
    for i, line in enumerate(lines, 1):
        if line.startswith("<<<<<<< "):
            begin = i
        elif line.startswith(">>>>>>> ") and begin is not None:
            regions.append(f"lines {begin}-{i}")
            begin = None
    return regions


def conflict_report(repo: Repo, patch: Path, err: str) -> tuple[list[str], str]:
    files = unmerged(repo)
    hunks = patch_hunks(patch)
    lines = []
    if files:
        for f in files:
            where = ", ".join(markers(repo.path / f)) or "no markers (deleted or binary on one side)"
            lines.append(f"  {f}: conflict markers at {where}")
            for h in hunks.get(f, []):
                lines.append(f"      patch hunk {h}")
    else:
        files = checkout.failing_files(repo, patch) or sorted(hunks)
        for f in files:
            lines.append(f"  {f}: does not apply")
            for h in hunks.get(f, []):
                lines.append(f"      patch hunk {h}")
        lines.append(checkout.hunk_lines(err))
    return files, "\n".join(lines).rstrip()


def range_diff(repo: Repo, old: str, new: str) -> str:
    ok, out = repo.try_("range-diff", "--no-color", f"{old}^..{old}", f"{new}^..{new}")
    return out if ok else f"(range-diff failed: {out.strip()})"


# Why am_patch found a patch "empty": git am made no commit (the new upstream already has the change), or the patch
# file carries no diff (git am was then skipped past it).
UNCHANGED = "unchanged"
NO_DIFF = "no diff"


def am_patch(repo: Repo, patch: Path, old_commit: str) -> dict:
    """``patch`` replayed on HEAD with ``git am``: ``--no-3way`` when ``git apply --check`` says it applies as is
    (``--3way`` again after ``git am --abort`` when am still refuses it), ``--3way`` otherwise. Returns {"status":
    "clean" | "3-way" | "empty" | "conflict", "before": HEAD before it, ...}: "commit" (clean, 3-way), "range_diff"
    (3-way: ``old_commit`` against the new commit), "empty": :data:`UNCHANGED` or :data:`NO_DIFF`, "files" and
    "report" (conflict: :func:`conflict_report`; ``git am`` is left stopped on the patch, for the caller)."""
    before = repo.head()
    clean = repo.try_("apply", "--check", str(patch))[0]
    ok, out = repo.try_(*checkout.AM, "--no-3way" if clean else "--3way", str(patch))
    if not ok and clean:  # apply --check said yes, am said no: let the merge try
        repo.try_("am", "--abort")
        clean = False
        ok, out = repo.try_(*checkout.AM, "--3way", str(patch))
    if ok and repo.head() == before:
        return {"status": "empty", "empty": UNCHANGED, "before": before}
    if ok:
        result = {"status": "clean" if clean else "3-way", "before": before, "commit": repo.head()}
        if not clean:
            result["range_diff"] = range_diff(repo, old_commit, result["commit"])
        return result
    if has_no_diff(repo, patch):
        repo("am", "--skip")
        return {"status": "empty", "empty": NO_DIFF, "before": before}
    files, report = conflict_report(repo, patch, out)
    return {"status": "conflict", "before": before, "files": files, "report": report}


def staged_markers(repo: Repo) -> list[str]:
    bad = []
    for f in repo("diff", "--cached", "--name-only").splitlines():
        if f.strip() and markers(repo.path / f):
            bad.append(f)
    return bad
