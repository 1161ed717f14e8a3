"""build: one wheel per upstream from the patched checkout, reproducibly, into dist/.

The wheel is built with pypa/build from a ``git archive`` of the checkout's HEAD (so a
stale ``build/`` folder or an uncommitted edit never leaks in), with
``SOURCE_DATE_EPOCH`` taken from the pristine commit: building twice gives the same
bytes. A wheel already in dist/ with the same name must have the same bytes.

A wheel lands in dist/ by rename, then its state file is written: killed, interrupted
or out of disk space, a build leaves dist/ and ``build/state/`` as they were, and a state
file that cannot be read only makes the next build run again.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..ground import proc, ui
from ..ground.errors import BuildError, IndexConflict, NotApplied
from ..ground.fsutil import atomic_write, disk_full, read_json_state, sha256_file, tree_bytes
from ..ground.vcs import Repo
from ..sources import archive, checkout
from ..sources.pins import Pin
from . import sbom

DIST_DIR = Path("dist")
STATE_DIR = Path("build") / "state"


@dataclass(frozen=True)
class Built:
    name: str
    wheel: Path
    sha256: str
    reused: bool


def _applied_head(root: Path, pin: Pin) -> tuple[Repo, str]:
    dest = checkout.vendor_dir(root, pin)
    state = checkout.read_state(dest)
    if state.get("state") != "done":
        raise NotApplied(f"{pin.vendor} is not fully applied ({state.get('state', 'missing')}). Run `make apply` first.")
    repo = Repo(dest)
    head = repo.head()
    if head != state["head"]:
        raise NotApplied(
            f"{pin.vendor} has commits after the last apply. Run `make export` to record them in patches/, "
            "then `make apply` to rebuild the checkout, then `make build`."
        )
    if repo.is_dirty():
        ui.warn(f"{pin.vendor} has uncommitted edits: they are not built (commit them, `make export`, `make apply`)")
    return repo, head


def read_built(root: Path, name: str) -> dict:
    """build/state/<name>.json (``name`` is a pin's key: ``newest/transformers`` for a line's), or ``{}`` when
    missing or malformed (never trusted further)."""
    state = read_json_state(root / STATE_DIR / f"{name}.json", required={"head": str, "wheel": str, "sha256": str})
    if state and ("/" in state["wheel"] or "\\" in state["wheel"] or not state["wheel"].endswith(".whl")):
        return {}
    return state


def build(root: Path, pin: Pin, *, force: bool = False) -> Built:
    """Build ``pin``'s wheel; out of disk space, say how much the build needs."""
    left = f"dist/ and build/state/ hold no new file for {pin.name}; the next `make build` builds it again."

    def needed() -> int:  # the archive, its extracted tree, setuptools' build/ copy and the wheel
        return 4 * tree_bytes(checkout.vendor_dir(root, pin))

    with ui.leaves(left), disk_full(f"building the {pin.name} wheel", Path(tempfile.gettempdir()), needed, left):
        return _build(root, pin, force=force)


def _build(root: Path, pin: Pin, *, force: bool = False) -> Built:
    repo, head = _applied_head(root, pin)
    dist = root / DIST_DIR
    state_file = root / STATE_DIR / f"{pin.key}.json"
    recorded = {} if force else read_built(root, pin.key)
    if recorded:
        wheel = dist / recorded["wheel"]
        if (recorded.get("head") == head and wheel.exists() and sha256_file(wheel) == recorded.get("sha256")
                and sbom.has_sbom(wheel)):  # a wheel built before SBOMs existed is rebuilt
            ui.info(f"{wheel.name}: up to date (sha256 {recorded['sha256']})")
            return Built(pin.name, wheel, recorded["sha256"], True)
    epoch = repo("log", "-1", "--format=%ct", checkout.upstream_tag(pin)).strip()
    with tempfile.TemporaryDirectory(prefix=f"headroom-build-{pin.name}-") as tmp:
        tmpdir = Path(tmp)
        tarball = tmpdir / "src.tar"
        repo("archive", "--format=tar", "-o", str(tarball), "HEAD")
        src = tmpdir / "src"
        archive.extract(tarball, src, strip_top=False)
        out = tmpdir / "out"
        ui.info(f"building the {pin.distribution} wheel from {pin.vendor} @ {head[:12]} (SOURCE_DATE_EPOCH={epoch})")
        with ui.Timer() as t:
            proc.run([sys.executable, "-m", "build", "--wheel", "--outdir", out, src],
                     env={"SOURCE_DATE_EPOCH": epoch, "PYTHONHASHSEED": "0"}, what=f"python -m build ({pin.name})")
        wheels = sorted(out.glob("*.whl"))
        if len(wheels) != 1:
            raise BuildError(f"python -m build produced {len(wheels)} wheels for {pin.name}, expected one")
        built = wheels[0]
        member = sbom.add_to_wheel(root, pin, built, epoch=int(epoch))  # PEP 770 SBOM, bytes still reproducible
        ui.detail(f"SBOM: {member}")
        digest = sha256_file(built)
        dist.mkdir(parents=True, exist_ok=True)
        target = dist / built.name
        if target.exists():
            existing = sha256_file(target)
            if existing != digest:
                raise IndexConflict(
                    f"dist/{built.name} already exists with different bytes (sha256 {existing}, new build {digest}). "
                    "A published file name must never change content: `make clean` if it was never published, "
                    "otherwise change the series so the version changes.",
                )
        else:
            tmp_target = dist / f".{built.name}.part"
            try:
                shutil.copyfile(built, tmp_target)
                tmp_target.replace(target)
            finally:
                tmp_target.unlink(missing_ok=True)
    atomic_write(state_file, json.dumps({"head": head, "wheel": target.name, "sha256": digest}, indent=2) + "\n")
    ui.info(f"{target.name}  sha256 {digest}  ({t.seconds:.1f}s)")
    return Built(pin.name, target, digest, False)
