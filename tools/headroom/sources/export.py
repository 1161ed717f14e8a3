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
from . import checkout
from .pins import Pin
from .series import PATCHES_DIR

REPLAY_DIR = "headroom-export-replay"  # under .git/: a killed export's worktree is found and removed next time
FORMAT_PATCH = ["format-patch", "--zero-commit", "--full-index", "--no-signature", "--no-stat",
                "--keep-subject", "--no-numbered", "--no-signoff", "--no-thread", "--no-attach", "--no-cover-letter"]


def render(repo_dir: Path, pin: Pin) -> dict[str, bytes]:
    """The files patches/<name>/ should hold: {file name: bytes}."""
    if not (repo_dir / ".git").exists():
        raise NotApplied(f"vendor/{pin.name} does not exist. Run `make apply` first.")
    repo = Repo(repo_dir)
    if repo.am_in_progress():
        raise UnsavedWork(
            f"vendor/{pin.name} is in the middle of `git am`. Finish it first "
            "(fix the files, git add, git am --continue; or git am --skip), then `make export`."
        )
    tag = checkout.upstream_tag(pin)
    ok, _ = repo.try_("rev-parse", "--verify", "-q", f"refs/tags/{tag}")
    if not ok:
        raise NotApplied(f"vendor/{pin.name} has no tag {tag}: it was not made by `make apply` for {pin.version}.")
    dirty = repo.is_dirty()
    if dirty:
        ui.warn(f"vendor/{pin.name} has uncommitted edits ({len(dirty)} path(s)); only commits are exported")
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
                    f"commit {c[:12]} {subject!r} in vendor/{pin.name} does not apply without headroom's version "
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


def diff(root: Path, pin: Pin) -> tuple[dict[str, bytes], list[str]]:
    folder = root / PATCHES_DIR / pin.name
    wanted = render(checkout.vendor_dir(root, pin), pin)
    have = _current(folder)
    if not have.get("series") and wanted["series"] == b"":
        wanted = {}  # no series and no patches: nothing to write
    changes = [f"{'new' if n not in have else 'changed'}: {n}" for n in sorted(wanted) if have.get(n) != wanted[n]]
    changes += [f"removed: {n}" for n in sorted(have) if n not in wanted]
    return wanted, changes


def export(root: Path, pin: Pin, *, check: bool = False) -> list[str]:
    folder = root / PATCHES_DIR / pin.name
    wanted, changes = diff(root, pin)
    if check:
        if changes:
            raise ExportDrift(
                f"patches/{pin.name}/ differs from what vendor/{pin.name} exports. If the checkout is right, run "
                f"`make export` and commit patches/{pin.name}/; if patches/ is right, run `make apply`.",
                details="\n".join(f"  {c}" for c in changes),
            )
        ui.info(f"patches/{pin.name}: matches vendor/{pin.name}")
        return []
    with ui.leaves(f"patches/{pin.name}/ may be partly rewritten (each file whole); the next `make export` "
                   f"finishes it, and vendor/{pin.name} is untouched"):
        for name in sorted(wanted):  # "series" sorts after the NNNN-*.patch files it lists
            if (folder / name).exists() and (folder / name).read_bytes() == wanted[name]:
                continue
            atomic_write(folder / name, wanted[name])
        for c in changes:
            if c.startswith("removed: "):
                (folder / c.removeprefix("removed: ")).unlink()
    ui.info(f"patches/{pin.name}: " + ("; ".join(changes) if changes else "unchanged"))
    return changes
