"""export: vendor/<name>'s commits on top of upstream/<version> -> patches/<name>/, byte-stable.

Every commit between the upstream tag and HEAD that headroom did not generate becomes
one ``git format-patch`` file (zero commit id, full index, no signature, no stat, kept
subject, numbered names), listed in ``series`` in commit order. Right after ``apply``
this changes no byte; ``--check`` fails when it would change anything.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..ground import ui
from ..ground.errors import ExportDrift, NotApplied, UnsavedWork
from ..ground.fsutil import atomic_write
from ..ground.vcs import Repo
from . import checkout, series as series_mod
from .pins import Pin
from .series import LINES_DIR, PATCHES_DIR

REPLAY_DIR = "headroom-export-replay"  # under .git/: a killed export's worktree is found and removed next time
FORMAT_PATCH = ["format-patch", "--zero-commit", "--full-index", "--no-signature", "--no-stat",
                "--keep-subject", "--no-numbered", "--no-signoff", "--no-thread", "--no-attach", "--no-cover-letter"]


def render(repo_dir: Path, pin: Pin) -> dict[str, bytes]:
    """The files patches/<name>/ should hold: {file name: bytes}."""
    if not (repo_dir / ".git").exists():
        raise NotApplied(f"{pin.vendor} does not exist. Run `make apply` first.")
    repo = Repo(repo_dir)
    if repo.am_in_progress():
        raise UnsavedWork(
            f"{pin.vendor} is in the middle of `git am`. Finish it first "
            "(fix the files, git add, git am --continue; or git am --skip), then `make export`."
        )
    tag = checkout.upstream_tag(pin)
    ok, _ = repo.try_("rev-parse", "--verify", "-q", f"refs/tags/{tag}")
    if not ok:
        raise NotApplied(f"{pin.vendor} has no tag {tag}: it was not made by `make apply` for {pin.version}.")
    dirty = repo.is_dirty()
    if dirty:
        ui.warn(f"{pin.vendor} has uncommitted edits ({len(dirty)} path(s)); only commits are exported")
    listed = repo("rev-list", "--reverse", f"{tag}..HEAD").split()
    generated = [checkout.is_generated(repo, c) for c in listed]
    commits = [c for c, g in zip(listed, generated) if not g]
    files: dict[str, bytes] = {}
    names: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        if any(generated[: max((i for i, g in enumerate(generated) if not g), default=-1)]):
            # Commits made on top of the version commit: replay them without it, so each
            # patch's context and index lines are those of the pristine tree + series.
            commits = _replay_without_generated(repo, tag, commits, repo.git_dir / REPLAY_DIR, pin)
        n = 0
        for c in commits:
            n += 1
            out = Path(tmp) / str(n)
            repo(*FORMAT_PATCH, f"--start-number={n}", "-o", str(out), "-1", c)
            (produced,) = out.iterdir()
            files[produced.name] = produced.read_bytes()
            names.append(produced.name)
    files["series"] = ("".join(f"{name}\n" for name in names)).encode()
    return files


def _replay_without_generated(repo: Repo, tag: str, commits: list[str], where: Path, pin: Pin) -> list[str]:
    if where.exists():  # left by an export that was killed
        shutil.rmtree(where)
    repo("worktree", "prune")
    repo("worktree", "add", "-q", "--detach", str(where), tag)
    try:
        wt = Repo(where)
        out = []
        for c in commits:
            ok, err = wt.try_("cherry-pick", "--allow-empty", "--keep-redundant-commits", c)
            if not ok:
                subject = repo("log", "-1", "--format=%s", c)
                raise UnsavedWork(
                    f"commit {c[:12]} {subject!r} in {pin.vendor} does not apply without headroom's version "
                    "commit (does it edit a version line?). Move it below the version commit "
                    "(git rebase -i) or drop the version edits, then `make export` again.",
                    details=err,
                )
            out.append(wt.head())
        return out
    finally:
        repo("worktree", "remove", "--force", str(where))


def _current(folder: Path) -> dict[str, bytes]:
    if not folder.exists():
        return {}
    out = {p.name: p.read_bytes() for p in folder.glob("*.patch")}
    if (folder / "series").exists():
        out["series"] = (folder / "series").read_bytes()
    return out


def diff(root: Path, pin: Pin, original: bool = True) -> tuple[dict[str, bytes], list[str]]:
    """{path relative to patches/<name>/: bytes} to write, and the changes. With release lines, a patch file whose
    change (series_mod.same_change) the commit makes is kept byte for byte: one file serves every line whose release it
    applies to. A commit that changes it is written to the file the line uses: the original (patches/<name>/) from
    the original line, the line's own copy (patches/<name>/lines/<line>/) from another line."""
    folder = root / PATCHES_DIR / pin.name
    rendered = render(checkout.vendor_dir(root, pin), pin)
    have = _current(folder)
    wanted: dict[str, bytes] = {}
    for name, data in rendered.items():
        copy = f"{LINES_DIR}/{pin.line}/{name}"
        target = copy if pin.line and (folder / copy).is_file() else name
        if pin.line and target in have | _copies(folder, pin.line) and name != "series":
            used = (folder / target).read_bytes()
            if series_mod.same_change(used, data):
                wanted[target] = used
                continue
            if not original and target == name:
                target = copy  # this line's release needs another diff: its own copy, the original stays
        wanted[target] = data
    have |= {k: v for k, v in _copies(folder, pin.line).items() if k in wanted}
    if not have.get("series") and wanted["series"] == b"":
        wanted = {}  # no series and no patches: nothing to write
    changes = [f"{'new' if n not in have else 'changed'}: {n}" for n in sorted(wanted) if have.get(n) != wanted[n]]
    kept = {n for n in have if n.split("/")[-1] in rendered} if pin.line else set()  # each line's own file
    changes += [f"removed: {n}" for n in sorted(have) if n not in wanted and n not in kept]
    for n in sorted(wanted):
        if n.startswith(f"{LINES_DIR}/") and n.split("/")[-1] in have:
            why = series_mod.drift(have[n.split("/")[-1]], wanted[n])
            if why:
                raise ExportDrift(f"{pin.vendor}'s {n.split('/')[-1]} makes another change than the original "
                                  f"patches/{pin.name}/{n.split('/')[-1]}: {why}. Change a fix in the original "
                                  f"line's checkout; a line's own copy may differ only in context.")
    return wanted, changes


def _copies(folder: Path, line: str) -> dict[str, bytes]:
    where = folder / LINES_DIR / line
    return {f"{LINES_DIR}/{line}/{p.name}": p.read_bytes() for p in where.glob("*.patch")} if line else {}


def export(root: Path, pin: Pin, *, check: bool = False, original: bool = True) -> list[str]:
    folder = root / PATCHES_DIR / pin.name
    wanted, changes = diff(root, pin, original)
    if check:
        if changes:
            raise ExportDrift(
                f"patches/{pin.name}/ differs from what {pin.vendor} exports. If the checkout is right, run "
                f"`make export` and commit patches/{pin.name}/; if patches/ is right, run `make apply`.",
                details="\n".join(f"  {c}" for c in changes),
            )
        ui.info(f"patches/{pin.name}: matches {pin.vendor}")
        return []
    with ui.leaves(f"patches/{pin.name}/ may be partly rewritten (each file whole); the next `make export` "
                   f"finishes it, and {pin.vendor} is untouched"):
        for name in sorted(wanted):  # "series" sorts after the NNNN-*.patch files it lists
            if (folder / name).exists() and (folder / name).read_bytes() == wanted[name]:
                continue
            atomic_write(folder / name, wanted[name])
        for c in changes:
            if c.startswith("removed: "):
                (folder / c.removeprefix("removed: ")).unlink()
    ui.info(f"patches/{pin.name}: " + ("; ".join(changes) if changes else "unchanged"))
    return changes
