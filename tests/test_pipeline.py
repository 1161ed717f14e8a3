"""apply / export / build / index on the synthetic upstream (tests/fixtures)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import Project, git, make_sdist, toy_pin

from headroom.ground import errors
from headroom.sources import archive, checkout, version as version_mod
from headroom.ground.fsutil import sha256_file


def head(path: Path) -> str:
    return git(path, "rev-parse", "HEAD").strip()


def test_apply_layout_and_export_round_trip(project: Project, capsys):
    assert project.run("apply") == 0
    log = git(project.vendor, "log", "--format=%s", "upstream/1.0.0~0..HEAD").splitlines()
    assert log == ["Set version to 1.0.0+headroom." + log[0].rsplit(".", 1)[1],
                   "memory: release the temporary state", "memory: stage loads on the CPU"]
    local = log[0].removeprefix("Set version to ")
    assert f'__version__ = "{local}"' in (project.vendor / "src/toypkg/__init__.py").read_text()
    assert f'version = "{local}"' in (project.vendor / "pyproject.toml").read_text()
    before = {p.name: p.read_bytes() for p in project.patches.iterdir()}
    assert project.run("export") == 0
    assert {p.name: p.read_bytes() for p in project.patches.iterdir()} == before
    assert project.run("export", "--check") == 0
    assert "unchanged" in capsys.readouterr().out


def test_second_apply_is_a_fast_no_op(project: Project, capsys):
    assert project.run("apply") == 0
    first = head(project.vendor)
    capsys.readouterr()
    start = time.monotonic()
    assert project.run("apply") == 0
    assert time.monotonic() - start < 2.0
    assert "up to date" in capsys.readouterr().out
    assert head(project.vendor) == first


def test_same_shas_on_two_fresh_applies(project: Project, tmp_path):
    assert project.run("apply") == 0
    other = Project(tmp_path / "other", project.index, project.pin)
    other.write_pins()
    other.use_series("clean")
    assert other.run("apply") == 0
    assert head(project.vendor) == head(other.vendor)
    assert git(project.vendor, "rev-parse", "upstream/1.0.0") == git(other.vendor, "rev-parse", "upstream/1.0.0")


def test_conflict_stops_with_its_exit_code_and_names_the_patch(project: Project, capsys):
    project.use_series("conflict")
    assert project.run("apply") == errors.PatchConflict.exit_code
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert "patches/toypkg/0002-memory-release-state-written-for-another-version.patch does not apply" in text
    assert "files that fail: src/toypkg/memory.py" in text
    assert "git am --continue" in text and "make export" in text
    assert (project.vendor / ".git" / "rebase-apply").exists()
    # The checkout is left mid-am: a second apply refuses rather than destroy the resolution.
    assert project.run("apply") == errors.UnsavedWork.exit_code
    # Resolve as docs/how-to/change-a-patch.md says (here: drop the patch), export, apply again.
    git(project.vendor, "am", "--skip")
    assert project.run("export") == 0
    assert (project.patches / "series").read_text() == "0001-memory-stage-loads-on-the-CPU.patch\n"
    assert project.run("apply") == 0


def test_wrong_sha256_is_refused_before_extraction(project: Project, capsys):
    project.write_pins(toy_pin(project.index, sdist_sha256="0" * 64))
    assert project.run("apply") == errors.HashMismatch.exit_code
    text = capsys.readouterr()
    out = text.out + text.err
    assert "expected " + "0" * 64 in out
    assert "actual   " + sha256_file(project.index / "toypkg-1.0.0.tar.gz") in out
    assert not (project.vendor / "src").exists()


def test_corrupted_cache_entry_is_deleted_and_fetched_again(project: Project, shared_cache):
    assert project.run("apply") == 0
    cached = shared_cache / "sha256" / project.pin.sdist_sha256 / project.pin.sdist
    cached.write_bytes(b"tampered")
    assert project.run("fetch") == 0
    assert sha256_file(cached) == project.pin.sdist_sha256


def _evil(tmp_path: Path, info: tarfile.TarInfo) -> Path:
    return make_sdist(tmp_path / "evil", extra=[info])


@pytest.mark.parametrize(
    ("name", "kind", "link", "message"),
    [
        ("toypkg-1.0.0/../../escape.txt", tarfile.REGTYPE, "", "contains '..'"),
        ("/tmp/absolute.txt", tarfile.REGTYPE, "", "absolute path"),
        ("toypkg-1.0.0/passwd", tarfile.SYMTYPE, "/etc/passwd", "points outside the tree"),
        ("toypkg-1.0.0/up", tarfile.SYMTYPE, "../../..", "points outside the tree"),
    ],
)
def test_unsafe_sdist_is_refused(tmp_path, name, kind, link, message):
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, link, 1 if kind == tarfile.REGTYPE else 0
    sdist = _evil(tmp_path, info)
    dest = tmp_path / "out"
    with pytest.raises(errors.UnsafeArchive, match=message):
        archive.extract(sdist, dest, strip_top=True)
    assert not dest.exists() and not (tmp_path / "escape.txt").exists()


def test_unsafe_sdist_in_cache_stops_apply(project: Project, tmp_path, shared_cache, monkeypatch):
    info = tarfile.TarInfo("toypkg-1.0.0/../escape.txt")
    info.size = 1
    sdist = _evil(tmp_path, info)
    digest = sha256_file(sdist)
    monkeypatch.setenv("HEADROOM_CACHE", str(tmp_path / "evil-cache"))
    target = tmp_path / "evil-cache" / "sha256" / digest / "toypkg-1.0.0.tar.gz"
    target.parent.mkdir(parents=True)
    target.write_bytes(sdist.read_bytes())
    project.write_pins(toy_pin(project.index, sdist_sha256=digest))
    assert project.run("apply") == errors.UnsafeArchive.exit_code
    assert not (project.root / "vendor" / "escape.txt").exists()


def test_dirty_checkout_is_protected_and_force_backs_it_up(project: Project, capsys, tmp_path):
    assert project.run("apply") == 0
    edited = project.vendor / "src/toypkg/__init__.py"
    edited.write_text(edited.read_text() + "# my local experiment\n")
    (project.vendor / "NOTES.txt").write_text("untracked notes\n")
    capsys.readouterr()
    assert project.run("apply") == errors.UnsavedWork.exit_code
    out = capsys.readouterr()
    assert "make export" in out.err and "FORCE=1" in out.err and "uncommitted edits" in out.out
    assert "my local experiment" in edited.read_text()
    assert project.run("apply", "--force") == 0
    assert "my local experiment" not in edited.read_text()
    (bundle,) = (project.root / "vendor" / ".backup").glob("toypkg-*.bundle")
    clone = tmp_path / "recovered"
    git(tmp_path, "clone", "-q", str(bundle), str(clone))
    git(clone, "checkout", "-q", "origin/headroom-backup/worktree")
    assert "my local experiment" in (clone / "src/toypkg/__init__.py").read_text()
    assert (clone / "NOTES.txt").read_text() == "untracked notes\n"


def test_user_commit_is_kept_until_exported(project: Project):
    assert project.run("apply") == 0
    f = project.vendor / "src/toypkg/__init__.py"
    f.write_text(f.read_text().replace('"hello "', '"hi "'))
    git(project.vendor, "commit", "-q", "-am", "greet: say hi", "--date=@1700000300 +0000")
    # HEAD moved past the last apply: the unexported commit must stop a re-apply.
    assert project.run("apply") == errors.UnsavedWork.exit_code
    assert "greet: say hi" in git(project.vendor, "log", "--format=%s")
    assert project.run("export") == 0
    assert (project.patches / "series").read_text().splitlines()[-1] == "0003-greet-say-hi.patch"
    assert project.run("apply") == 0
    assert '"hi "' in f.read_text()
    assert project.run("export", "--check") == 0


def test_interrupted_apply_is_not_taken_for_done(project: Project, monkeypatch, capsys):
    reference = Project(project.root.parent / "ref", project.index, project.pin)
    reference.write_pins()
    reference.use_series("clean")
    assert reference.run("apply") == 0

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(version_mod, "stamp", killed)
        assert project.run("apply") == 130
    # The unfinished checkout is never put in place (it was made beside it and discarded).
    assert not project.vendor.exists() and not list((project.root / "vendor").glob(".toypkg.*"))
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: interrupted: vendor/toypkg was not created; the unfinished new checkout is discarded.")
    assert project.run("apply") == 0
    assert checkout.read_state(project.vendor)["state"] == "done"
    assert head(project.vendor) == head(reference.vendor)


def test_series_must_list_every_patch(project: Project, capsys):
    (project.patches / "0003-stray.patch").write_text("x")
    assert project.run("apply") == errors.SeriesError.exit_code
    assert "0003-stray.patch" in capsys.readouterr().err
    (project.patches / "0003-stray.patch").unlink()
    (project.patches / "series").write_text("0001-memory-stage-loads-on-the-CPU.patch\n0009-missing.patch\n")
    assert project.run("apply") == errors.SeriesError.exit_code


def test_export_check_catches_a_series_edited_out_of_band(project: Project, capsys):
    assert project.run("apply") == 0
    p = project.patches / "0001-memory-stage-loads-on-the-CPU.patch"
    p.write_bytes(p.read_bytes().replace(b"load() staged", b"load()  staged"))
    capsys.readouterr()
    assert project.run("export", "--check") == errors.ExportDrift.exit_code
    assert "changed: 0001-memory-stage-loads-on-the-CPU.patch" in capsys.readouterr().out


def test_wheel_is_reproducible_and_carries_the_local_version(project: Project):
    assert project.run("apply") == 0
    assert project.run("build") == 0
    (wheel,) = (project.root / "dist").glob("*.whl")
    assert wheel.name.startswith("toypkg-1.0.0+headroom.")
    first = sha256_file(wheel)
    assert project.run("build", "--force") == 0  # same name, so a different byte would be an error
    assert sha256_file(wheel) == first
    state = json.loads((project.root / "build/state/toypkg.json").read_text())
    assert state["sha256"] == first


def test_dist_never_overwrites_a_name_with_other_bytes(project: Project):
    assert project.run("apply") == 0
    assert project.run("build") == 0
    (wheel,) = (project.root / "dist").glob("*.whl")
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    assert project.run("build", "--force") == errors.IndexConflict.exit_code


def _pip_install(index_url: str, target: Path) -> str:
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--no-cache-dir",
         "--index-url", index_url, "--target", str(target), "toypkg==1.0.0"],
        check=True, env={"PATH": "/usr/bin:/bin", "PIP_CONFIG_FILE": "/dev/null", "HOME": str(target.parent)},
    )
    out = subprocess.run([sys.executable, "-c", "import toypkg; print(toypkg.__version__)"],
                         env={"PYTHONPATH": str(target)}, check=True, capture_output=True, text=True)
    return out.stdout.strip()


@pytest.fixture
def built(project: Project) -> Project:
    assert project.run("apply") == 0
    assert project.run("build") == 0
    return project


def test_index_layout(built: Project):
    dist = built.root / "dist"
    (wheel,) = dist.glob("*.whl")
    page = (dist / "simple" / "toypkg" / "index.html").read_text()
    meta = (dist / f"{wheel.name}.metadata").read_bytes()
    from headroom.ground.fsutil import sha256_bytes

    assert f"#sha256={sha256_file(wheel)}" in page
    assert f'data-dist-info-metadata="sha256={sha256_bytes(meta)}"' in page
    assert f'data-core-metadata="sha256={sha256_bytes(meta)}"' in page
    assert '<a href="toypkg/">toypkg</a>' in (dist / "simple" / "index.html").read_text()


def test_index_installs_with_pip_from_a_file_url(built: Project, tmp_path):
    local = checkout.read_state(built.vendor)["local_version"]
    url = (built.root / "dist" / "simple").as_uri()
    assert _pip_install(url, tmp_path / "site") == local


def test_index_installs_with_pip_over_http(built: Project, tmp_path):
    local = checkout.read_state(built.vendor)["local_version"]
    handler = partial(SimpleHTTPRequestHandler, directory=str(built.root / "dist"))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/simple/"
        assert _pip_install(url, tmp_path / "site") == local
    finally:
        server.shutdown()
