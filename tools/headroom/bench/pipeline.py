"""The pipeline's wall time: cold and no-op ``apply`` + ``build`` on a copy of the repository, and the floor."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from ..ground import proc, ui
from ..ground.errors import CommandFailed
from ..sources import archive, pins as pins_mod
from .common import PLAN
from .stats import summary


def copy_repo(root: Path, dest: Path, *, with_work: bool) -> None:
    """Copy the tracked and untracked-but-not-ignored files of ``root`` (what a fresh clone plus local edits has).

    ``with_work`` also copies the vendor/ checkouts, dist/ and build/state/ (for a no-op re-run)."""
    listing = proc.run(["git", "-C", root, "ls-files", "-co", "--exclude-standard"], quiet=True, what="git ls-files")
    for rel in listing.output.splitlines():
        src = root / rel
        if not rel or not src.is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    if with_work:
        for pin in pins_mod.load(root):
            if (root / "vendor" / pin.name).exists():
                shutil.copytree(root / "vendor" / pin.name, dest / "vendor" / pin.name, symlinks=True)
                # refresh the copied index's stat data, so the timed no-op does not pay for it
                proc.run(["git", "-C", dest / "vendor" / pin.name, "status", "--porcelain"], quiet=True,
                         what="git status")
        for sub in ("dist", "build/state"):
            if (root / sub).exists():
                shutil.copytree(root / sub, dest / sub, symlinks=True)


def _headroom(copy: Path, *args: str, cache: Path | None = None) -> float:
    env = {"HEADROOM_CACHE": str(cache)} if cache else None
    with ui.Timer() as t:
        proc.run([sys.executable, "-m", "headroom", "--root", copy, *args], env=env,
                 what=f"headroom {' '.join(args)} (bench copy)")
    return t.seconds


def floor_build(copy: Path, work: Path) -> float:
    """``python -m build --wheel`` of a ``git archive`` of each vendor/<name> HEAD; returns the summed build time."""
    total = 0.0
    for pin in pins_mod.load(copy):
        tarball = work / f"{pin.name}.tar"
        src = work / f"{pin.name}-src"
        proc.run(["git", "-C", copy / "vendor" / pin.name, "archive", "--format=tar", "-o", tarball, "HEAD"],
                 quiet=True, what="git archive")
        archive.extract(tarball, src, strip_top=False)
        with ui.Timer() as t:
            proc.run([sys.executable, "-m", "build", "--wheel", "--outdir", work / "out", src],
                     what=f"python -m build ({pin.name}, floor)")
        total += t.seconds
        shutil.rmtree(src)
        tarball.unlink()
    return total


def pipeline(root: Path, mode: str) -> dict:
    runs = PLAN[mode]["pipeline_runs"]
    times: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        times.setdefault(name, []).append(value)

    for i in range(runs):
        with tempfile.TemporaryDirectory(prefix="headroom-bench-pipeline-") as tmp:
            tmpdir = Path(tmp)
            copy = tmpdir / "repo"
            if mode == "quick":
                ui.step("bench", "pipeline: no-op apply + build on a copy of the repository (with its checkouts)")
                copy_repo(root, copy, with_work=True)
                try:
                    _headroom(copy, "apply")  # makes it a no-op if the checkouts were stale
                    _headroom(copy, "build")
                except CommandFailed as exc:
                    # e.g. unsaved work in vendor/: the memory figures still count, the pipeline timing is left out
                    ui.warn(f"pipeline timing skipped: {exc.message}")
                    return {"steps": {}, "note": f"skipped: `apply` + `build` failed on the copy ({exc.message})"}
                add("noop_apply", _headroom(copy, "apply"))
                add("noop_build", _headroom(copy, "build"))
                add("noop_total", times["noop_apply"][-1] + times["noop_build"][-1])
                continue
            ui.step("bench", f"pipeline run {i + 1}/{runs}: cold apply + build on a copy, empty HEADROOM_CACHE")
            copy_repo(root, copy, with_work=False)
            cache = tmpdir / "cache"
            cache.mkdir()
            add("cold_apply", _headroom(copy, "apply", cache=cache))
            add("cold_build", _headroom(copy, "build", cache=cache))
            add("cold_total", times["cold_apply"][-1] + times["cold_build"][-1])
            add("noop_apply", _headroom(copy, "apply", cache=cache))
            add("noop_build", _headroom(copy, "build", cache=cache))
            add("noop_total", times["noop_apply"][-1] + times["noop_build"][-1])
            add("force_build", _headroom(copy, "build", "--force", cache=cache))
            work = tmpdir / "floor"
            work.mkdir()
            add("floor", floor_build(copy, work))
        ui.info("; ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()))
    steps = {name: summary(values) for name, values in times.items()}
    note = ("quick mode: only the no-op `apply` + `build` (1 run) on a copy holding the current checkouts; "
            "`headroom bench --mode full` times the cold pipeline and the floor.") if mode == "quick" else (
        f"{runs} runs, each on a fresh copy of the repository (tracked + untracked files) with an empty HEADROOM_CACHE "
        "(the cold run downloads the pinned sdists). The floor builds the same `git archive` trees with a plain "
        "`python -m build --wheel`.")
    return {"steps": steps, "note": note}
