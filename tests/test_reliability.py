"""Two runs at once, corrupt inputs, a full disk, Ctrl-C: each has its own words and exit code.

Locks: two ``headroom apply`` on one checkout (the second waits, naming the first's pid
and command; ``--no-wait`` fails at once; a killed holder's lock is taken over). Corrupt
inputs: a patch file git cannot parse, a damaged sdist, malformed state files. ENOSPC
while extracting, committing and building leaves the previous state usable. And the
every error class has its own exit code and a test that produces it (PRODUCED_BY).
"""

from __future__ import annotations

import ast
import errno
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import git as gitpython
import pytest
from conftest import Project, git, make_sdist, toy_pin

from headroom.ground import errors, fsutil, proc, refdocs
from headroom.sources import archive, checkout, version as version_mod
from headroom.wheels import build as build_mod
from headroom.ground.fsutil import sha256_file

REPO = Path(__file__).resolve().parents[1]
CPU_PATCH = "0001-memory-stage-loads-on-the-CPU.patch"


def head(path: Path) -> str:
    return git(path, "rev-parse", "HEAD").strip()


def spawn(project: Project, *argv: str, fault: str = "") -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if fault:
        env["HEADROOM_FAULT"] = fault
    return subprocess.Popen([sys.executable, "-m", "headroom", "--root", str(project.root), *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_stopped(p: subprocess.Popen, timeout: float = 60) -> None:
    """Until ``p`` has stopped itself (SIGSTOP from the fault hook)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert p.poll() is None, p.stdout.read()
        if Path(f"/proc/{p.pid}/stat").read_text().split(") ", 1)[1].startswith("T"):
            return
        time.sleep(0.05)
    raise AssertionError("the first run never reached its stop point")


def read_until(p: subprocess.Popen, text: str, timeout: float = 60) -> str:
    seen: list[str] = []
    done = threading.Event()

    def reader() -> None:
        for line in p.stdout:
            seen.append(line)
            if text in line:
                done.set()
                return

    threading.Thread(target=reader, daemon=True).start()
    assert done.wait(timeout), f"{text!r} never printed; got:\n{''.join(seen)}"
    return "".join(seen)


# --------------------------------------------------------------------------- locks

def test_two_applies_at_once_the_second_waits_and_both_end_correct(project: Project, tmp_path):
    reference = Project(tmp_path / "ref", project.index, project.pin)
    reference.write_pins()
    reference.use_series("clean")
    assert reference.run("apply") == 0
    # The first run stops itself mid-apply (after tagging the pristine import), holding the lock.
    first = spawn(project, "apply", fault="12:STOP")
    try:
        wait_stopped(first)
        assert (project.root / "vendor" / ".toypkg.new").exists()
        second = spawn(project, "apply")
        said = read_until(second, "waiting for vendor/toypkg")
        assert f"in use by pid {first.pid} (headroom --root {project.root} apply, since " in said
        # --no-wait fails at once with its own exit code, naming the holder.
        busy = subprocess.run([sys.executable, "-m", "headroom", "--root", str(project.root), "--no-wait", "apply"],
                              capture_output=True, text=True, timeout=60)
        assert busy.returncode == errors.Locked.exit_code == 40
        assert f"vendor/toypkg is in use by pid {first.pid} (headroom --root {project.root} apply" in busy.stderr
        assert not project.vendor.exists()  # neither touched the half-made checkout
    finally:
        os.kill(first.pid, signal.SIGCONT)
    assert first.wait(60) == 0
    assert second.wait(60) == 0
    rest = second.stdout.read()
    assert "vendor/toypkg: free after" in rest and "vendor/toypkg: up to date" in rest
    assert head(project.vendor) == head(reference.vendor)
    assert checkout.read_state(project.vendor)["state"] == "done"


def test_a_killed_runs_lock_is_taken_over_with_a_notice(project: Project, capsys):
    victim = spawn(project, "apply", fault="12:KILL")
    assert victim.wait(60) == -signal.SIGKILL
    assert project.run("apply") == 0
    err = capsys.readouterr().err
    assert (f"taking over the lock on vendor/toypkg from pid {victim.pid} (headroom --root {project.root} apply"
            in err) and "no longer running" in err


def test_locks_are_taken_in_one_order():
    from headroom.ground import lock

    assert lock.resources_for("test", ["peft", "transformers"]) == ["vendor:peft", "vendor:transformers", "dist", "envs"]
    assert lock.resources_for("clean", ["peft"]) == ["dist", "envs"]
    assert lock.resources_for("fetch", ["peft"]) == []
    assert lock.resources_for("some-new-command", ["x"]) == ["vendor:x", "dist", "envs"]


# --------------------------------------------------------------------------- Ctrl-C during a command

def test_ctrl_c_stops_the_running_command_too(tmp_path):
    marker = tmp_path / "still-running"
    child = [sys.executable, "-c", f"import time, pathlib; time.sleep(30); pathlib.Path({str(marker)!r}).touch()"]
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        proc.run(child, what="a long command")
    assert time.monotonic() - start < 15
    time.sleep(0.5)
    assert not marker.exists()
    assert not [line for line in subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout.splitlines()
                if str(marker) in line and "ps -eo" not in line]


# --------------------------------------------------------------------------- corrupt patches

def _drop_line(text: str, n: int) -> str:
    lines = text.splitlines(keepends=True)
    del lines[n - 1]
    return "".join(lines)


@pytest.mark.parametrize(
    ("damage", "words"),
    [
        (lambda t: _drop_line(t, 19), 'git says "corrupt patch at line 21" (line 21: \'diff --git a/tests/'),
        (lambda t: "".join(t.splitlines(keepends=True)[:16]), "line 17 is past its end (16 lines: truncated?)"),
        (lambda t: t.replace("@@ -1,6 +1,6 @@", "@@ -1,6 +1,x @@"), 'git says "corrupt patch at line 14"'),
        (lambda t: t.split("\ndiff --git")[0] + "\n", 'it holds no diff'),
        (lambda t: "just some notes\n", "no From/Subject header"),
    ],
    ids=["hunk-short-a-line", "truncated", "bad-hunk-header", "no-diff", "not-a-mail"],
)
def test_a_corrupt_patch_is_a_broken_file_not_upstream_drift(project: Project, capsys, damage, words):
    assert project.run("apply") == 0
    before = head(project.vendor)
    patch = project.patches / CPU_PATCH
    patch.write_text(damage(patch.read_text()))
    capsys.readouterr()
    assert project.run("apply") == errors.CorruptPatch.exit_code == 41
    err = capsys.readouterr().err
    assert f"patches/toypkg/{CPU_PATCH} is not a valid patch file: " in err and words in err
    assert "not a change upstream" in err and "does not apply" not in err
    # Nothing happened to the checkout: the broken file never reached it.
    assert head(project.vendor) == before and checkout.read_state(project.vendor)["state"] == "done"
    assert not list((project.root / "vendor").glob(".toypkg.*"))


# --------------------------------------------------------------------------- damaged sdists

@pytest.mark.parametrize("damage", ["truncated", "not-gzip"])
def test_a_damaged_sdist_in_the_cache_is_deleted_and_fetched_again(project: Project, monkeypatch, tmp_path, capsys, damage):
    monkeypatch.setenv("HEADROOM_CACHE", str(tmp_path / "cache"))
    assert project.run("fetch") == 0
    cached = tmp_path / "cache" / "sha256" / project.pin.sdist_sha256 / project.pin.sdist
    data = cached.read_bytes()
    cached.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"PK\x03\x04 this is no tarball")
    capsys.readouterr()
    assert project.run("apply") == 0
    assert "(truncated or damaged): deleted, downloading again" in capsys.readouterr().err
    assert sha256_file(cached) == project.pin.sdist_sha256


def test_a_pinned_sdist_that_is_not_a_tarball_has_its_own_error(project: Project, tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(make_sdist(tmp_path / "good").read_bytes()[:300])  # a truncated gzip stream
    digest = sha256_file(bad)
    monkeypatch.setenv("HEADROOM_CACHE", str(tmp_path / "cache"))
    cached = tmp_path / "cache" / "sha256" / digest / "toypkg-1.0.0.tar.gz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(bad.read_bytes())
    project.write_pins(toy_pin(project.index, sdist_sha256=digest))
    assert project.run("apply") == errors.CorruptArchive.exit_code == 43
    err = capsys.readouterr().err
    assert "is not a readable sdist; it was deleted from the cache" in err
    assert not cached.exists() and not project.vendor.exists()


# --------------------------------------------------------------------------- malformed state files

BROKEN = {
    "not-json": b"{\"state\": \"do",
    "not-utf8": b"\xff\xfe\x00garbage",
    "a-list": b"[]",
    "wrong-types": b'{"state": "done", "key": 1, "head": ["x"], "commits": "abc", "local_version": 2}',
    "unreadable": None,  # a directory where the file should be
}


def _break(path: Path, how: str) -> None:
    path.unlink()
    if BROKEN[how] is None:
        path.mkdir()
    else:
        path.write_bytes(BROKEN[how])


@pytest.mark.parametrize("how", sorted(BROKEN))
def test_a_malformed_checkout_state_is_not_done(project: Project, capsys, how):
    assert project.run("apply") == 0
    before = head(project.vendor)
    _break(project.vendor / ".git" / checkout.STATE_FILE, how)
    assert checkout.read_state(project.vendor) == {}
    capsys.readouterr()
    assert project.run("build") == errors.NotApplied.exit_code == 14  # never trusted as applied
    assert "is not fully applied (missing). Run `make apply` first." in capsys.readouterr().err
    assert project.run("apply") == 0  # done again, to the same commit
    assert head(project.vendor) == before and checkout.read_state(project.vendor)["state"] == "done"


@pytest.mark.parametrize("how", ["not-json", "a-list", "wrong-types", "escaping-name"])
def test_a_malformed_build_state_is_not_done(project: Project, capsys, how):
    assert project.run("apply") == 0 and project.run("build") == 0
    state = project.root / "build" / "state" / "toypkg.json"
    recorded = json.loads(state.read_text())
    if how == "escaping-name":
        state.write_text(json.dumps(dict(recorded, wheel="../../vendor/pins.toml")))
    else:
        _break(state, how)
    assert build_mod.read_built(project.root, "toypkg") == {}
    capsys.readouterr()
    assert project.run("build") == 0
    out = capsys.readouterr().out
    assert "up to date" not in out and "building the toypkg wheel" in out  # built again, not trusted
    assert json.loads(state.read_text()) == recorded  # to the same bytes


def test_state_reader_never_trusts_a_bad_file(tmp_path, capsys):
    f = tmp_path / "s.json"
    assert fsutil.read_json_state(f) == {}  # missing: quietly not done
    for data in (b"{", b"\xff", b"null", b"7", b'"done"'):
        f.write_bytes(data)
        assert fsutil.read_json_state(f) == {}
    f.write_text('{"head": 3}')
    assert fsutil.read_json_state(f, required={"head": str}) == {}
    f.write_text('{"head": "abc"}')
    assert fsutil.read_json_state(f, required={"head": str}) == {"head": "abc"}
    assert capsys.readouterr().err.count("treated as not done") == 6


# --------------------------------------------------------------------------- disk full

def _enospc(*args, **kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def applied_then_changed(project: Project) -> tuple[Project, str]:
    """A finished checkout of the clean series, then a series change that makes apply redo it."""
    assert project.run("apply") == 0
    before = head(project.vendor)
    (project.patches / "0002-memory-release-the-temporary-state.patch").unlink()
    (project.patches / "series").write_text(f"{CPU_PATCH}\n")
    return project, before


def _previous_checkout_is_usable(project: Project, before: str) -> None:
    assert head(project.vendor) == before and checkout.read_state(project.vendor)["state"] == "done"
    assert git(project.vendor, "status", "--porcelain") == ""
    assert not list((project.root / "vendor").glob(".toypkg.*"))
    # The previous checkout still builds, once patches/ is again the series it was made from (a build refuses a
    # series changed since apply: the wheel's SBOM would name patches it does not carry).
    project.use_series("clean")
    assert project.run("build") == 0


def test_disk_full_while_extracting(applied_then_changed, monkeypatch, capsys):
    project, before = applied_then_changed
    with monkeypatch.context() as m:
        m.setattr(archive.tarfile.TarFile, "extractall", _enospc)
        assert project.run("apply") == errors.DiskFull.exit_code == 42
    err = capsys.readouterr().err
    assert re.search(r"disk full while applying toypkg \(extracting toypkg-1.0.0.tar.gz and committing\): "
                     r"it needs about [\d.,]+ MiB free on the file system of .*vendor \([\d.,]+ MiB free now\)\. "
                     r"vendor/toypkg is as it was before this run", err), err
    _previous_checkout_is_usable(project, before)
    assert project.run("apply") == 0  # with space again, the change is applied


def test_disk_full_while_committing(applied_then_changed, monkeypatch, capsys):
    project, before = applied_then_changed
    real = gitpython.cmd.Git.execute

    def execute(self, command, *args, **kwargs):
        if command[:2] == ["git", "commit"]:
            raise gitpython.GitCommandError(command, 128, stderr=b"fatal: unable to write new index file: "
                                                                   b"No space left on device")
        return real(self, command, *args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(gitpython.cmd.Git, "execute", execute)
        assert project.run("apply") == errors.DiskFull.exit_code
    captured = capsys.readouterr()
    assert "disk full while applying toypkg" in captured.err and "needs about" in captured.err
    assert "No space left on device" in captured.out  # git's own words, after the message
    _previous_checkout_is_usable(project, before)


def test_disk_full_while_building(project: Project, monkeypatch, capsys):
    assert project.run("apply") == 0 and project.run("build") == 0
    dist = project.root / "dist"
    before = {p.name: p.read_bytes() for p in dist.rglob("*") if p.is_file()}
    state = (project.root / "build/state/toypkg.json").read_bytes()
    real = proc.run

    def run(args, **kwargs):
        if "build" in [str(a) for a in args][1:3]:  # python -m build: fail as a full disk makes it fail
            args = [sys.executable, "-c", "import sys; sys.exit('OSError: [Errno 28] No space left on device')"]
        return real(args, **kwargs)

    with monkeypatch.context() as m:
        m.setattr(proc, "run", run)
        assert project.run("build", "--force") == errors.DiskFull.exit_code
    err = capsys.readouterr().err
    assert re.search(r"disk full while building the toypkg wheel: it needs about [\d.,]+ MiB free", err), err
    assert "dist/ and build/state/ hold no new file for toypkg" in err
    assert {p.name: p.read_bytes() for p in dist.rglob("*") if p.is_file()} == before
    assert (project.root / "build/state/toypkg.json").read_bytes() == state
    assert project.run("build") == 0  # the previous build is still the current one
    assert "up to date" in capsys.readouterr().out


# --------------------------------------------------------------------------- every exit code, with its test

def test_a_package_without_a_version_line_is_a_build_error(tmp_path):
    (tmp_path / "setup.py").write_text("from setuptools import setup\nsetup(name='x')\n")
    with pytest.raises(errors.BuildError, match="could not find where .* declares version '1.0.0'"):
        version_mod.stamp(tmp_path, "1.0.0", "1.0.0+headroom.0")


PRODUCED_BY = {  # exit code: a test that produces it (and names its class)
    2: "tests/test_pr.py::test_selection_errors",
    3: "tests/test_pins.py::test_typo_names_file_key_and_suggestion",
    4: "tests/test_pipeline.py::test_wrong_sha256_is_refused_before_extraction",
    5: "tests/test_pipeline.py::test_unsafe_sdist_in_cache_stops_apply",
    6: "tests/test_pipeline.py::test_series_must_list_every_patch",
    7: "tests/test_pipeline.py::test_conflict_stops_with_its_exit_code_and_names_the_patch",
    8: "tests/test_pipeline.py::test_dirty_checkout_is_protected_and_force_backs_it_up",
    9: "tests/test_pipeline.py::test_export_check_catches_a_series_edited_out_of_band",
    10: "tests/test_reliability.py::test_a_package_without_a_version_line_is_a_build_error",
    11: "tests/test_pipeline.py::test_dist_never_overwrites_a_name_with_other_bytes",
    12: "tests/test_testsource.py::test_missing_tag_is_an_error_that_leads_with_the_fix",
    13: "tests/test_pr.py::test_pr_red_green_failure_is_reported",
    14: "tests/test_reliability.py::test_a_malformed_checkout_state_is_not_done",
    15: "tests/test_upstream.py::test_known_failures_by_node_glob_and_malformed_lines",
    16: "tests/test_docs.py::test_docs_check_fails_on_a_changed_parser",
    20: "tests/test_pr.py::test_pr_needs_the_persons_git_identity",
    21: "tests/test_pr.py::test_a_retired_patch_gets_one_line_and_no_draft",
    25: "tests/test_publish.py::test_same_name_with_other_bytes_is_refused_naming_both_hashes",
    26: "tests/test_publish.py::test_wrong_credentials_fail_clearly_and_the_next_publish_completes",
    27: "tests/test_publish.py::test_unreachable_index_fails_clearly",
    28: "tests/test_publish.py::test_upload_rejected_half_way_is_completed_by_the_next_publish",
    30: "tests/test_provenance.py::test_inspect_an_official_wheel_says_it_has_no_sbom",
    31: "tests/test_provenance.py::test_verify_fails_on_one_changed_byte_inside_a_member",
    32: "tests/test_provenance.py::test_verify_refuses_when_the_checkout_is_not_what_the_sbom_names",
    35: "tests/test_envs.py::test_test_requirements_may_not_name_a_pinned_upstream",
    36: "tests/test_envs.py::test_a_swapped_environment_equals_a_fresh_one",
    37: "tests/test_rebase.py::test_a_landed_check_that_cannot_run_stops_and_undoes_the_rebase",
    40: "tests/test_reliability.py::test_two_applies_at_once_the_second_waits_and_both_end_correct",
    41: "tests/test_reliability.py::test_a_corrupt_patch_is_a_broken_file_not_upstream_drift",
    42: "tests/test_reliability.py::test_disk_full_while_extracting",
    43: "tests/test_reliability.py::test_a_pinned_sdist_that_is_not_a_tarball_has_its_own_error",
    50: "tests/test_bench.py::test_wheel_and_sha256_from_pips_report",
    60: "tests/test_canary.py::test_exit_code_says_a_person_is_needed",
}


def test_every_error_class_has_its_own_exit_code_and_a_test_that_produces_it():
    classes = refdocs.error_classes()
    codes = [c.exit_code for c in classes]
    assert len(codes) == len(set(codes)), "two error classes share an exit code"
    missing = [f"{c.__name__} ({c.exit_code})" for c in classes if c.exit_code not in PRODUCED_BY]
    assert not missing, f"PRODUCED_BY lacks {missing}"
    assert set(PRODUCED_BY) == set(codes), "PRODUCED_BY names a code no class has"
    page = (REPO / refdocs.EXIT_CODES).read_text()
    for cls in classes:
        assert f"| {cls.exit_code} | `{cls.__name__}` |" in page, f"{refdocs.EXIT_CODES} lacks {cls.__name__}"
        path, name = PRODUCED_BY[cls.exit_code].split("::")
        source = (REPO / path).read_text()
        funcs = {f.name: ast.get_source_segment(source, f) for f in ast.walk(ast.parse(source))
                 if isinstance(f, ast.FunctionDef)}
        assert name in funcs, f"{PRODUCED_BY[cls.exit_code]} does not exist"
        assert cls.__name__ in funcs[name], f"{PRODUCED_BY[cls.exit_code]} does not check {cls.__name__}"
