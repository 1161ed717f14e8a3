"""apply: vendor/<name> as a git checkout = pristine sdist + one commit per patch + version commit.

State lives in ``.git/headroom-state.json``, written ``done`` only when an apply
finishes, so an interrupted apply is never taken for a finished one; a state file that
cannot be read is "not done". Before anything is replaced, the checkout is searched for
work that is not in patches/ (commits whose patch-id matches no patch file, uncommitted
edits); such work stops the apply, or with ``force`` is first saved to a git bundle
under ``vendor/.backup/``.

The new checkout is made beside the old one (``vendor/.<name>.new``) and swapped in
only when it is finished (or stopped at a conflict, to be resolved in place): killed,
interrupted or out of disk space, an apply leaves the previous ``vendor/<name>`` as it
was, and the next apply removes what the unfinished one left.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..ground import ui
from ..ground.errors import CorruptArchive, CorruptPatch, PatchConflict, UnsavedWork
from ..ground.fsutil import atomic_write_json, disk_full, read_json_state, sha256_bytes
from ..ground.vcs import Repo, date_env
from . import archive, fetch, series as series_mod, version as version_mod
from .pins import Pin

STATE_FILE = "headroom-state.json"
APPLY_FORMAT = "1"  # bump when the layout of a checkout changes: forces a re-apply
GENERATED = "Headroom-Generated"
# How a patch becomes a commit: apply, rebase and pr all run `git am` so (author date = committer date).
AM = ("am", "--committer-date-is-author-date", "--keep-non-patch")
EXCLUDES = "build/\ndist/\n*.egg-info/\n__pycache__/\n.pytest_cache/\n"


@dataclass(frozen=True)
class Outcome:
    name: str
    changed: bool
    head: str
    local_version: str


def vendor_dir(root: Path, pin: Pin) -> Path:
    return root / "vendor" / pin.key


def upstream_tag(pin: Pin) -> str:
    return f"upstream/{pin.version}"


def pristine_message(pin: Pin) -> tuple[str, str]:
    """Subject and body of a pristine commit. apply and rebase both take them from here: the same bytes, the same
    date (the sdist's), the same identity, so the same SHA everywhere."""
    return (f"Import {pin.distribution} {pin.version} from {pin.sdist}",
            f"Sdist-Sha256: {pin.sdist_sha256}\n{GENERATED}: pristine")


def import_pristine(repo: Repo, pin: Pin, tree: Path, epoch: int) -> str:
    """Commit ``tree`` (an extracted sdist outside the checkout) as ``pin``'s pristine commit, tag it
    ``upstream/<version>`` and return its SHA; the checkout's HEAD, index and files are not touched."""
    index = repo.git_dir / "headroom-import.index"
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        repo("-C", str(tree), f"--git-dir={repo.git_dir}", f"--work-tree={tree}", "add", "-A", "-f", ".", env=env)
        sha_tree = repo("write-tree", env=env).strip()
    finally:
        index.unlink(missing_ok=True)
    subject, body = pristine_message(pin)
    msg_file = repo.git_dir / "headroom-import.msg"
    msg_file.write_text(f"{subject}\n\n{body}\n", encoding="utf-8")
    try:
        commit = repo("commit-tree", sha_tree, "-F", str(msg_file), env=date_env(epoch)).strip()
    finally:
        msg_file.unlink(missing_ok=True)
    repo("tag", "-f", upstream_tag(pin), commit)
    return commit


def read_state(repo_dir: Path) -> dict:
    """The checkout's state, or ``{}`` when it is missing or malformed (then nothing in it is trusted)."""
    path = repo_dir / ".git" / STATE_FILE
    state = read_json_state(path, required={"state": str})
    commits = state.get("commits", [])
    well_formed = isinstance(commits, list) and all(isinstance(c, str) for c in commits) and (
        state.get("state") != "done" or all(isinstance(state.get(k), str) for k in ("key", "head", "local_version")))
    if state and not well_formed:
        ui.warn(f"ignoring the state file {path} (a field has the wrong type): treated as not done, the step runs again")
        return {}
    return state


def _write_state(repo: Repo, state: dict) -> None:
    atomic_write_json(repo.git_dir / STATE_FILE, state)


def apply_key(pin: Pin, series: series_mod.Series) -> str:
    payload = json.dumps({"format": APPLY_FORMAT, "pin": pin.identity(), "series": series.digest()}, sort_keys=True)
    return sha256_bytes(payload.encode())


def is_generated(repo: Repo, commit: str) -> bool:
    message = repo("log", "-1", "--format=%B", commit)
    return any(line.startswith(f"{GENERATED}:") for line in message.splitlines())


def patch_ids_of_files(repo: Repo, files: list[Path]) -> set[str]:
    ids = set()
    for f in files:
        out = repo("patch-id", "--stable", stdin_path=f)
        if out.strip():
            ids.add(out.split()[0])
    return ids


def patch_id_of_commit(repo: Repo, commit: str) -> str | None:
    # Build the diff, then hash it: `git show C | git patch-id --stable` without a shell.
    diff = repo("show", "--format=", "--full-index", "--binary", commit, strip=False)
    tmp = repo.git_dir / "headroom-patch-id.tmp"
    tmp.write_text(diff, encoding="utf-8")
    try:
        out = repo("patch-id", "--stable", stdin_path=tmp)
    finally:
        tmp.unlink(missing_ok=True)
    return out.split()[0] if out.strip() else None


def unsaved_work(repo_dir: Path, series: series_mod.Series) -> list[str]:
    """What in the checkout is not in patches/ and not produced by headroom: a line each."""
    if not (repo_dir / ".git").exists():
        return [f"{repo_dir} exists but is not a git checkout made by headroom"] if any(repo_dir.iterdir()) else []
    repo = Repo(repo_dir)
    state = read_state(repo_dir)
    found: list[str] = []
    head = repo.head()
    if head is None:
        return found  # an apply was interrupted before the first commit
    interrupted = state.get("state") == "applying"
    if not interrupted:
        dirty = repo.is_dirty()
        if dirty:
            found.append(f"uncommitted edits: {len(dirty)} path(s), e.g. {dirty[0].strip()}")
    ours = set(state.get("commits", []))
    roots = repo("rev-list", "--max-parents=0", "HEAD").split()
    commits = repo("rev-list", "--reverse", "HEAD", "--not", *roots).split()
    known = None
    for c in commits:
        if c in ours or is_generated(repo, c):
            continue
        if known is None:
            known = patch_ids_of_files(repo, list(series.patches))
        if patch_id_of_commit(repo, c) not in known:
            subject = repo("log", "-1", "--format=%s", c)
            found.append(f"commit {c[:12]} {subject!r} is not in patches/{series.name}/")
    if repo.am_in_progress() and not interrupted:
        found.append("a `git am` is in progress (a patch that did not apply is being resolved)")
    return found


def backup(repo_dir: Path, root: Path, name: str) -> Path:
    """Save HEAD and the work tree (untracked files too) into a git bundle; return its path."""
    repo = Repo(repo_dir)
    refs = []
    head = repo.head()
    if head:
        repo("update-ref", "refs/heads/headroom-backup/head", head)
        refs.append("refs/heads/headroom-backup/head")
    if repo.is_dirty():
        index = repo.git_dir / "headroom-backup.index"
        env = {"GIT_INDEX_FILE": str(index)}
        if head:
            repo("read-tree", "HEAD", env=env)
        repo("add", "-A", "-f", ".", env=env)
        tree = repo("write-tree", env=env)
        index.unlink(missing_ok=True)
        parents = ["-p", head] if head else []
        wip = repo("commit-tree", tree, *parents, "-m", "headroom backup: work tree before FORCE=1 apply")
        repo("update-ref", "refs/heads/headroom-backup/worktree", wip)
        refs.append("refs/heads/headroom-backup/worktree")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    dest = root / "vendor" / ".backup" / f"{name}-{stamp}.bundle"
    dest.parent.mkdir(parents=True, exist_ok=True)
    if refs:
        repo("bundle", "create", str(dest), *refs, quiet=False)
    else:
        shutil.make_archive(str(dest.with_suffix("")), "gztar", repo_dir)
        dest = dest.with_suffix(".tar.gz")
    return dest


def _staging(dest: Path, kind: str) -> Path:
    return dest.parent / f".{dest.name}.{kind}"


def _leftovers(dest: Path) -> None:
    """Clear what a killed apply left: put a checkout moved aside back, remove an unfinished one."""
    old = _staging(dest, "old")
    if old.exists():
        if dest.exists():
            shutil.rmtree(old)
        else:
            old.rename(dest)
            ui.warn(f"vendor/{dest.name}: an apply was killed while swapping checkouts; the previous one is back in place")
    for kind in ("new", "extract"):
        if _staging(dest, kind).exists():
            ui.info(f"removing vendor/{_staging(dest, kind).name}/ (left by an apply that did not finish)")
            shutil.rmtree(_staging(dest, kind))


def _swap(new: Path, dest: Path) -> None:
    old = _staging(dest, "old")
    if dest.exists():
        dest.rename(old)
    new.rename(dest)
    if old.exists():
        shutil.rmtree(old)


def apply(root: Path, pin: Pin, *, force: bool = False) -> Outcome:
    series = series_mod.load(root, pin.name, pin.line)
    key = apply_key(pin, series)
    dest = vendor_dir(root, pin)
    dest.parent.mkdir(parents=True, exist_ok=True)
    local = version_mod.local_version(pin.version, series, pin.line)
    _leftovers(dest)
    if dest.exists():
        state = read_state(dest)
        if state.get("state") == "done" and state.get("key") == key and (dest / ".git").exists():
            repo = Repo(dest)
            if repo.head() == state.get("head") and not repo.am_in_progress() and not repo.is_dirty():
                ui.info(f"{pin.vendor}: up to date ({local}, {len(series.patches)} patch(es))")
                return Outcome(pin.name, False, state["head"], local)
        problems = unsaved_work(dest, series)
        if problems:
            if not force:
                raise UnsavedWork(
                    f"{pin.vendor} holds work that is not in patches/{pin.name}/; nothing was changed. "
                    f"Keep it: commit it in {pin.vendor} and run `make export`; "
                    "or discard it: `make apply FORCE=1` (it is saved to a git bundle first).",
                    details="\n".join(f"  - {p}" for p in problems),
                )
            with ui.leaves(f"{pin.vendor} is as it was (its work was being saved to vendor/.backup/)"):
                saved = backup(dest, root, pin.key.replace("/", "-"))
            ui.warn(f"FORCE=1: saved {pin.vendor}'s work to {saved.relative_to(root)} "
                    f"(recover: git clone {saved.relative_to(root)} /tmp/recovered; branches headroom-backup/head and headroom-backup/worktree)")
    return _materialise(root, pin, series, key, local, dest)


def _materialise(root: Path, pin: Pin, series: series_mod.Series, key: str, local: str, dest: Path) -> Outcome:
    sdist = fetch.fetch(pin, "sdist")
    new = _staging(dest, "new")
    before = f"{pin.vendor} is as it was before this run" if dest.exists() else f"{pin.vendor} was not created"
    left = f"{before}; the unfinished new checkout is discarded."

    def needed() -> int:  # the work tree, git's copy of it, and the old checkout until the swap
        return 2 * archive.unpacked_size(sdist)

    try:
        with ui.leaves(left), disk_full(f"applying {pin.name} (extracting {pin.sdist} and committing)",
                                        dest.parent, needed, left):
            outcome = _make_checkout(root, pin, series, key, local, sdist, new)
    except PatchConflict:
        _swap(new, dest)  # resolved in place, as docs/how-to/change-a-patch.md#when-a-patch-does-not-apply says
        raise
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    with ui.leaves(f"{pin.vendor} was being swapped for the new checkout; the next `make apply` finishes it"):
        _swap(new, dest)
    ui.info(f"{pin.vendor}: {upstream_tag(pin)} + {len(series.patches)} patch(es) + version commit "
            f"-> {outcome.head[:12]} ({local})")
    return outcome


def _make_checkout(root: Path, pin: Pin, series: series_mod.Series, key: str, local: str, sdist: Path,
                   new: Path) -> Outcome:
    ui.info(f"extracting {pin.sdist} into {pin.vendor}")
    try:
        epoch = archive.extract(sdist, new, strip_top=True)
    except CorruptArchive as exc:
        sdist.unlink(missing_ok=True)
        raise CorruptArchive(
            f"{pin.sdist} has the sha256 pinned in vendor/pins.toml [{pin.name}] but is not a readable sdist; "
            "it was deleted from the cache. The pin names a broken file: correct sdist and sdist_sha256 "
            f"({pin.vendor} was not changed).", details=exc.message) from None
    repo = Repo.init(new)
    _write_state(repo, {"state": "applying", "key": key})
    (repo.git_dir / "info").mkdir(exist_ok=True)
    (repo.git_dir / "info" / "exclude").write_text(EXCLUDES, encoding="utf-8")
    repo("add", "-A", "-f", ".")
    subject, body = pristine_message(pin)
    repo("commit", "-q", "--no-verify", "-m", subject, "-m", body, env=date_env(epoch))
    repo("tag", upstream_tag(pin))
    commits = [repo.head()]
    total = len(series.patches)
    for i, patch in enumerate(series.patches, 1):
        ui.info(f"applying {i}/{total} {patch.name}")
        ok, err = repo.try_(*AM, "--no-3way", str(patch))
        if not ok:
            rel = patch.relative_to(root)
            broken = _corrupt(repo, patch, err)
            if broken:
                raise CorruptPatch(
                    f"{rel} is not a valid patch file: {broken}. The file in patches/{pin.name}/ is broken "
                    "(edited by hand, truncated, or its whitespace changed); this is not a change upstream. "
                    f"Restore it (`git diff {rel}`, `git checkout -- {rel}`) or export it again from a good "
                    f"checkout (`make export`). {pin.vendor} was not changed.",
                )
            _write_state(repo, {"state": "conflict", "key": key, "patch": patch.name, "commits": commits})
            failing = failing_files(repo, patch)
            raise PatchConflict(
                f"{rel} does not apply to {pin.distribution} {pin.version}; {pin.vendor} is stopped in `git am`. "
                f"Resolve it: cd {pin.vendor} && git am --show-current-patch=diff; fix the files; git add them; "
                "git am --continue; then `make export` (or drop the patch: git am --skip). "
                "See docs/how-to/change-a-patch.md#when-a-patch-does-not-apply.",
                details="files that fail: " + (", ".join(failing) or "(see git's message)") + "\n" + hunk_lines(err),
            )
        commits.append(repo.head())
    changed_files = version_mod.stamp(new, pin.version, local)
    repo("add", "-A", "-f", ".")
    repo(
        "commit", "-q", "--no-verify", "-m", f"Set version to {local}",
        "-m", f"Changed: {', '.join(changed_files)}\n{GENERATED}: version", env=date_env(epoch),
    )
    head = repo.head()
    commits.append(head)
    _write_state(repo, {"state": "done", "key": key, "head": head, "commits": commits, "local_version": local})
    return Outcome(pin.name, True, head, local)


_CORRUPT = re.compile(r"(corrupt patch|malformed patch|patch fragment without header|patch with only garbage) at line (\d+)")


def _corrupt(repo: Repo, patch: Path, am_output: str) -> str | None:
    """Why ``patch`` is not a patch at all (git cannot parse it), or None when it is one that
    does not apply. ``git apply --numstat`` parses without touching the tree and counts lines
    from the top of the file."""
    if "Patch format detection failed" in am_output:
        return "git cannot read it as a `git format-patch` mail (no From/Subject header before the diff)"
    ok, out = repo.try_("apply", "--numstat", str(patch))
    if ok:
        return None
    m = _CORRUPT.search(out)
    if m:
        n = int(m.group(2))
        lines = patch.read_text(encoding="utf-8", errors="replace").splitlines()
        where = f"line {n}: {lines[n - 1]!r}" if n <= len(lines) else f"line {n} is past its end ({len(lines)} lines: truncated?)"
        return f"git says \"{m.group(1)} at line {n}\" ({where})"
    if "No valid patches in input" in out:
        return "it holds no diff (git: \"No valid patches in input\")"
    first = next((line for line in out.splitlines() if line.startswith(("error:", "fatal:"))), out.strip()[:200])
    return f"git cannot parse it ({first})"


def failing_files(repo: Repo, patch: Path) -> list[str]:
    """Which of the patch's files do not apply (asked of git per file, nothing parsed)."""
    ok, numstat = repo.try_("apply", "--numstat", str(patch))
    if not ok:
        return []
    files = [line.split("\t", 2)[2] for line in numstat.splitlines() if line.count("\t") >= 2]
    return [f for f in files if not repo.try_("apply", "--check", f"--include={f}", str(patch))[0]]


def hunk_lines(err: str) -> str:
    keep = [line for line in err.splitlines() if re.match(r"^(error|Patch failed|hint: Use)", line)]
    return "\n".join(keep[:20])
