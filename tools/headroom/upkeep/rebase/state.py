"""rebase's own state: build/rebase/<key>/ (the state file, and what the rebase may change, saved so that
``rebase-abort`` restores it byte for byte). ``<key>`` is the checkout's path under vendor/ (``transformers`` on the
home line, ``newest/transformers`` on the newest line), so two lines' rebases of one upstream never meet; the state
names the line and its pins file, and continue and abort follow them."""

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


def rebase_dir(root: Path, key: str) -> Path:
    """build/rebase/<key>/ of the checkout vendor/<key> (Pin.key)."""
    return root / REBASE_DIR / key


def key(state: dict) -> str:
    """The checkout a rebase's state is about (a state written before lines has only its name)."""
    return state.get("key") or state["name"]


def pins_file(root: Path, state: dict) -> Path:
    """The pins file the rebase records the new pin in: its line's (vendor/pins.toml before lines)."""
    return root / state.get("pins_file", pins_mod.PINS_FILE)


def found(root: Path) -> list[dict]:
    """Every rebase in progress (build/rebase/<name>/ and build/rebase/<line>/<name>/), by key."""
    base = root / REBASE_DIR
    paths = sorted([*base.glob(f"*/{STATE}"), *base.glob(f"*/*/{STATE}")]) if base.exists() else []
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]


def load(root: Path, key: str) -> dict | None:
    path = rebase_dir(root, key) / STATE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def save_state(root: Path, state: dict) -> None:
    atomic_write_json(rebase_dir(root, key(state)) / STATE, state)


def refs(repo: Repo) -> dict[str, str]:
    out = repo("for-each-ref", "--format=%(objectname) %(refname)")
    return {ref: sha for sha, ref in (line.split(" ", 1) for line in out.splitlines() if line.strip())}


def save(root: Path, pin: Pin, repo: Repo, pins_path: Path | None = None) -> dict:
    """Save what the rebase may change: the line's pins file (``pins_path``, default vendor/pins.toml), patches/<name>/
    (every line's copies with it) and the checkout's HEAD, refs and state."""
    where = rebase_dir(root, pin.key) / "saved"
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    shutil.copyfile(pins_path or root / pins_mod.PINS_FILE, where / "pins.toml")
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
    where = rebase_dir(root, key(state)) / "saved"
    dest = checkout.vendor_dir(root, Pin(**state["old"]))
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
    atomic_write(pins_file(root, state), (where / "pins.toml").read_bytes())
    patches = root / series_mod.PATCHES_DIR / name
    if patches.exists():
        shutil.rmtree(patches)
    if saved["patches_existed"]:
        shutil.copytree(where / "patches", patches, symlinks=True)
