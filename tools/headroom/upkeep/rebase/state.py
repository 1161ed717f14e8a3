"""rebase's own state: build/rebase/<name>/ (the state file, and what the rebase may change, saved so that
``rebase-abort`` restores it byte for byte)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ...ground.fsutil import atomic_write, atomic_write_json
from ...ground.vcs import Repo
from ...sources import checkout, pins as pins_mod, series as series_mod
from ...sources.pins import Pin

REBASE_DIR = Path("build") / "rebase"
STATE = "state.json"


def rebase_dir(root: Path, name: str) -> Path:
    return root / REBASE_DIR / name


def load(root: Path, name: str) -> dict | None:
    path = rebase_dir(root, name) / STATE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def save_state(root: Path, state: dict) -> None:
    atomic_write_json(rebase_dir(root, state["name"]) / STATE, state)


def refs(repo: Repo) -> dict[str, str]:
    out = repo("for-each-ref", "--format=%(objectname) %(refname)")
    return {ref: sha for sha, ref in (line.split(" ", 1) for line in out.splitlines() if line.strip())}


def save(root: Path, pin: Pin, repo: Repo) -> dict:
    where = rebase_dir(root, pin.name) / "saved"
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    shutil.copyfile(root / pins_mod.PINS_FILE, where / "pins.toml")
    patches = root / series_mod.PATCHES_DIR / pin.name
    if patches.exists():
        shutil.copytree(patches, where / "patches", symlinks=True)
    shutil.copyfile(repo.git_dir / checkout.STATE_FILE, where / checkout.STATE_FILE)
    ok, branch = repo.try_("symbolic-ref", "-q", "HEAD")
    return {"head": repo.head(), "branch": branch.strip() if ok else "", "refs": refs(repo),
            "patches_existed": patches.exists()}


def restore(root: Path, state: dict) -> None:
    name = state["name"]
    saved = state["saved"]
    where = rebase_dir(root, name) / "saved"
    dest = root / "vendor" / name
    repo = Repo(dest)
    if repo.am_in_progress():
        repo.try_("am", "--abort")
    if saved["branch"]:
        repo("symbolic-ref", "HEAD", saved["branch"])
    else:
        repo("update-ref", "--no-deref", "HEAD", saved["head"])
    current = refs(repo)
    for ref in current:
        if ref not in saved["refs"]:
            repo("update-ref", "-d", ref)
    for ref, sha in saved["refs"].items():
        if current.get(ref) != sha:
            repo("update-ref", ref, sha)
    repo("reset", "-q", "--hard", saved["head"])
    repo("clean", "-q", "-f", "-d")  # files the replay created (ignored build outputs are left alone)
    atomic_write(repo.git_dir / checkout.STATE_FILE, (where / checkout.STATE_FILE).read_bytes())
    atomic_write(root / pins_mod.PINS_FILE, (where / "pins.toml").read_bytes())
    patches = root / series_mod.PATCHES_DIR / name
    if patches.exists():
        shutil.rmtree(patches)
    if saved["patches_existed"]:
        shutil.copytree(where / "patches", patches, symlinks=True)
