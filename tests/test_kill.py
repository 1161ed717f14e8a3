"""Killed at any point: apply, build, export and test's environment creation on the synthetic upstream.

``HEADROOM_FAULT=<n>:<SIGNAL>`` (tools/headroom/ground/proc.py) makes a run signal itself right
after its n-th subprocess (git, pip, python -m build). For every step, a clean run counts
its subprocesses; then the step is killed after each of them with SIGKILL (a separate
process: nothing of it runs after the signal) and interrupted with SIGINT (Ctrl-C, in this
process: it must exit 130 with one line saying what it left). After each kill the next
plain run must reach exactly what a clean run reaches: the same commit SHAs, the same
wheel bytes, the same patch files, the same environment; and the user's own work in
vendor/ is never lost.

The size of the matrix is printed (``-s``) and asserted: steps x kill points x signals.
By default a step with more than 8 kill points is killed at 8 of them spread evenly (the
first and the last included), and the environment creation (seconds per point) after
torch is installed only; ``HEADROOM_KILL_ALL=1`` kills every step at every point.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from conftest import Project, git

from headroom.ground import proc
from headroom.sources import checkout
from headroom.proof import envs
from headroom.ground.fsutil import sha256_file

pytestmark = pytest.mark.slow
SIGNALS = ("KILL", "INT")
ALL = os.environ.get("HEADROOM_KILL_ALL", "") not in ("", "0")
MOST = 8


def spread(points: int, most: int = MOST) -> list[int]:
    """Kill points 1..points, or ``most`` of them evenly spread (first and last included)."""
    if ALL or points <= most:
        return list(range(1, points + 1))
    return sorted({1 + round(i * (points - 1) / (most - 1)) for i in range(most)})


def head(path: Path) -> str:
    return git(path, "rev-parse", "HEAD").strip()


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (relative name -> bytes)."""
    if not folder.exists():
        return {}
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def count(fn) -> int:
    """How many subprocesses ``fn()`` (a clean run) starts."""
    before = proc.subprocess_count()
    fn()
    return proc.subprocess_count() - before


def killed(argv: list[str], n: int, tmp: Path) -> subprocess.CompletedProcess:
    """Run ``argv`` in a new process that SIGKILLs itself after its n-th subprocess."""
    tmp.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, HEADROOM_FAULT=f"{n}:KILL", TMPDIR=str(tmp))
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)


def interrupted(fn, n: int, monkeypatch) -> object:
    """Call ``fn()`` here with a real SIGINT delivered to this process after its n-th subprocess."""
    monkeypatch.setenv("HEADROOM_FAULT", f"{proc.subprocess_count() + n}:INT")
    try:
        return fn()
    finally:
        monkeypatch.delenv("HEADROOM_FAULT")


def headroom(project: Project, *argv: str) -> list[str]:
    return [sys.executable, "-m", "headroom", "--root", str(project.root), *argv]


class Matrix:
    """Collects (step, point, signal) cases and what went wrong in any of them."""

    def __init__(self, step: str) -> None:
        self.step, self.cases, self.failures = step, 0, []
        self.start = time.monotonic()

    def check(self, point: int, sig: str, ok: bool, what: str) -> None:
        if not ok:
            self.failures.append(f"{self.step} killed ({sig}) after subprocess {point}: {what}")

    def done(self, points: int, killed_at: int) -> None:
        print(f"\nkill matrix {self.step}: killed at {killed_at} of its {points} kill points x {len(SIGNALS)} signals "
              f"= {self.cases} kills ({time.monotonic() - self.start:.0f}s)")
        assert self.cases == killed_at * len(SIGNALS)
        assert not self.failures, "\n".join(self.failures)


def kill_and_check(m: Matrix, points: list[int], capsys, monkeypatch, tmp: Path, *, argv: list[str], cli: tuple[str, ...],
                   project: Project, setup, verify) -> None:
    """The loop of every step: set up, kill (both ways) after subprocess n, check the next plain run."""
    for n in points:
        for sig in SIGNALS:
            setup()
            capsys.readouterr()
            m.cases += 1
            if sig == "KILL":
                result = killed(argv, n, tmp / f"{m.step}-{n}")
                m.check(n, sig, result.returncode == -signal.SIGKILL, f"exit {result.returncode}, not killed:\n{result.stderr}")
            else:
                rc = interrupted(lambda: project.run(*cli), n, monkeypatch)
                err = capsys.readouterr().err.strip().splitlines()
                said = [line for line in err if "interrupted" in line]
                m.check(n, sig, rc == 130, f"exit {rc}, not 130")
                m.check(n, sig, len(said) == 1 and err[-1] == said[0] and said[0].startswith("error: interrupted: "),
                        f"not one line saying what is left: {err[-3:]}")
            verify(n, sig)


def test_apply_killed_at_every_point(project: Project, capsys, monkeypatch, tmp_path):
    assert project.run("fetch") == 0
    points = count(lambda: project.run("apply"))
    ref_head, ref_tag = head(project.vendor), git(project.vendor, "rev-parse", "upstream/1.0.0")
    m = Matrix("apply")
    taken_over = []

    def setup() -> None:
        shutil.rmtree(project.vendor)

    def verify(n: int, sig: str) -> None:
        rc = project.run("apply")
        out = capsys.readouterr()
        taken_over.append("taking over the lock on vendor/toypkg" in out.err)
        m.check(n, sig, rc == 0, f"the next apply exited {rc}:\n{out.err}")
        if rc == 0:
            m.check(n, sig, head(project.vendor) == ref_head, "HEAD differs from a clean apply")
            m.check(n, sig, git(project.vendor, "rev-parse", "upstream/1.0.0") == ref_tag, "the pristine tag differs")
            m.check(n, sig, checkout.read_state(project.vendor)["state"] == "done", "state is not done")
            m.check(n, sig, git(project.vendor, "status", "--porcelain") == "", "the work tree is not clean")
        m.check(n, sig, not list((project.root / "vendor").glob(".toypkg.*")), "a half-made checkout is left")

    chosen = spread(points)
    kill_and_check(m, chosen, capsys, monkeypatch, tmp_path, argv=headroom(project, "apply"),
                   cli=("apply",), project=project, setup=setup, verify=verify)
    # A SIGKILLed run leaves its lock record; the next run says it takes over (and only then).
    assert taken_over[0::2] == [True] * len(chosen) and taken_over[1::2] == [False] * len(chosen)
    m.done(points, len(chosen))


def test_apply_force_killed_never_loses_the_users_work(project: Project, capsys, monkeypatch, tmp_path):
    assert project.run("apply") == 0
    ref_head = head(project.vendor)
    init = project.vendor / "src/toypkg/__init__.py"

    def setup() -> None:
        if git(project.vendor, "log", "-1", "--format=%s").strip() != "greet: say hi":
            shutil.rmtree(project.vendor)
            assert project.run("apply") == 0
            init.write_text(init.read_text().replace('"hello "', '"hi "'))
            git(project.vendor, "commit", "-q", "-am", "greet: say hi", "--date=@1700000300 +0000")
            (project.vendor / "NOTES.txt").write_text("my notes\n")
        shutil.rmtree(project.root / "vendor" / ".backup", ignore_errors=True)

    setup()
    backups = project.root / "vendor" / ".backup"
    points = count(lambda: project.run("apply", "--force"))
    assert head(project.vendor) == ref_head and len(list(backups.glob("*.bundle"))) == 1
    m = Matrix("apply --force (user work)")

    def verify(n: int, sig: str) -> None:
        # The next plain apply refuses to touch the work, which is still in vendor/toypkg.
        rc = project.run("apply")
        capsys.readouterr()
        in_vendor = (rc == 8 and '"hi "' in init.read_text() and (project.vendor / "NOTES.txt").exists()
                     and "greet: say hi" in git(project.vendor, "log", "--format=%s"))
        m.check(n, sig, in_vendor, f"the user's commit and notes are not in vendor/toypkg any more (apply: {rc})")
        rc = project.run("apply", "--force")
        capsys.readouterr()
        m.check(n, sig, rc == 0 and head(project.vendor) == ref_head, f"apply --force exited {rc} or differs")
        bundles = sorted(backups.glob("toypkg-*.bundle"))
        m.check(n, sig, bool(bundles), "no bundle holds the discarded work")
        if bundles:
            clone = tmp_path / f"recovered-{n}-{sig}"
            git(tmp_path, "clone", "-q", str(bundles[-1]), str(clone))
            kept = "greet: say hi" in git(clone, "log", "--all", "--format=%s")
            git(clone, "checkout", "-q", "origin/headroom-backup/worktree")
            m.check(n, sig, kept and (clone / "NOTES.txt").read_text() == "my notes\n", "the bundle lacks the work")

    chosen = spread(points)
    kill_and_check(m, chosen, capsys, monkeypatch, tmp_path, argv=headroom(project, "apply", "--force"),
                   cli=("apply", "--force"), project=project, setup=setup, verify=verify)
    m.done(points, len(chosen))


def test_build_killed_at_every_point(project: Project, capsys, monkeypatch, tmp_path):
    assert project.run("apply") == 0
    dist, state = project.root / "dist", project.root / "build" / "state"
    points = count(lambda: project.run("build"))
    reference = snapshot(dist)
    (wheel,) = [name for name in reference if name.endswith(".whl")]
    m = Matrix("build")

    def setup() -> None:
        shutil.rmtree(dist)
        shutil.rmtree(state)

    def verify(n: int, sig: str) -> None:
        rc = project.run("build")
        capsys.readouterr()
        m.check(n, sig, rc == 0, f"the next build exited {rc}")
        got = snapshot(dist)
        m.check(n, sig, got.get(wheel) == reference[wheel], "the wheel's bytes differ from a clean build")
        m.check(n, sig, got == reference, f"dist/ differs: {sorted(set(got) ^ set(reference))}")
        m.check(n, sig, json.loads((state / "toypkg.json").read_text())["sha256"] == sha256_file(dist / wheel),
                "build/state disagrees with dist/")

    chosen = spread(points)
    kill_and_check(m, chosen, capsys, monkeypatch, tmp_path, argv=headroom(project, "build"),
                   cli=("build",), project=project, setup=setup, verify=verify)
    m.done(points, len(chosen))


def test_export_killed_at_every_point(project: Project, capsys, monkeypatch, tmp_path):
    assert project.run("apply") == 0
    init = project.vendor / "src/toypkg/__init__.py"
    init.write_text(init.read_text().replace('"hello "', '"hi "'))
    git(project.vendor, "commit", "-q", "-am", "greet: say hi", "--date=@1700000300 +0000")
    before = snapshot(project.patches)
    points = count(lambda: project.run("export"))
    reference = snapshot(project.patches)
    assert set(reference) - set(before) == {"0003-greet-say-hi.patch"}
    m = Matrix("export")

    def setup() -> None:
        shutil.rmtree(project.patches)
        project.patches.mkdir()
        for name, data in before.items():
            (project.patches / name).write_bytes(data)

    def verify(n: int, sig: str) -> None:
        m.check(n, sig, "greet: say hi" in git(project.vendor, "log", "-1", "--format=%s"), "the user's commit is gone")
        rc = project.run("export")
        capsys.readouterr()
        m.check(n, sig, rc == 0, f"the next export exited {rc}")
        m.check(n, sig, snapshot(project.patches) == reference, "patches/ differs from a clean export")
        m.check(n, sig, len(git(project.vendor, "worktree", "list").splitlines()) == 1, "a replay worktree is left")

    chosen = spread(points)
    kill_and_check(m, chosen, capsys, monkeypatch, tmp_path, argv=headroom(project, "export"),
                   cli=("export",), project=project, setup=setup, verify=verify)
    m.done(points, len(chosen))


def _fake_torch(dest: Path) -> None:
    """A tiny stand-in for the torch wheel, so `pip install torch==2.13.0` resolves offline in a second."""
    with zipfile.ZipFile(dest / "torch-2.13.0-py3-none-any.whl", "w") as zf:
        zf.writestr("torch/__init__.py", '__version__ = "2.13.0"\n')
        info = "torch-2.13.0.dist-info"
        zf.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: torch\nVersion: 2.13.0\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")


def test_environment_creation_killed_at_every_point(project: Project, capsys, monkeypatch, tmp_path):
    """`make test` creating build/envs/pristine (venv, torch first, then the test requirements and the wheels)."""
    links = tmp_path / "links"
    shutil.copytree(project.index, links)
    _fake_torch(links)
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    (project.root / "requirements").mkdir()
    (project.root / envs.REQUIREMENTS).write_text("# the toy environment needs nothing more\n")
    where = project.root / envs.ENVS_DIR / "pristine"

    def create() -> Path:
        return envs.ensure(project.root, "pristine", envs.wheels_for(project.root, [project.pin], "pristine"))

    def state() -> tuple[bytes, str]:
        freeze = subprocess.run([where / "bin" / "python", "-m", "pip", "list", "--format=freeze",
                                 "--disable-pip-version-check"], capture_output=True, text=True, check=True).stdout
        return (where / envs.STAMP).read_bytes(), freeze

    assert project.run("fetch") == 0
    points = count(create)
    assert points == 3  # python -m venv, pip install torch, pip install the requirements and the wheel
    reference = state()
    assert "torch==2.13.0" in reference[1] and "toypkg==1.0.0" in reference[1]
    m = Matrix("test environments")
    # `headroom test` creates pristine first; the kill lands inside that creation. Afterwards the
    # proof would run on transformers, which toypkg is not, so the next run is envs.ensure itself.
    argv = headroom(project, "test", "--upstream", "none")

    def verify(n: int, sig: str) -> None:
        try:
            create()
            got = state()
        except Exception as exc:  # noqa: BLE001 - reported as a failure of this case
            m.check(n, sig, False, f"the next creation failed: {exc}")
            return
        finally:
            capsys.readouterr()
        m.check(n, sig, got == reference, "the environment differs from a clean creation")

    # Each point costs a venv and two pip runs twice over: by default only after torch (point 2).
    chosen = list(range(1, points + 1)) if ALL else [2]
    kill_and_check(m, chosen, capsys, monkeypatch, tmp_path, argv=argv, cli=("test", "--upstream", "none"),
                   project=project, setup=lambda: shutil.rmtree(where, ignore_errors=True), verify=verify)
    m.done(points, len(chosen))
