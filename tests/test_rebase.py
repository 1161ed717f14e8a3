"""rebase / rebase-continue / rebase-abort on the synthetic upstream: toypkg 1.0.0 -> 1.1.0 and 1.2.0.

The series (tests/fixtures/series-rebase, made on 1.0.0) and what each release does to it:

====  ==================================  =========================  ==========================
 #    patch                               on 1.1.0                   on 1.2.0
====  ==================================  =========================  ==========================
0001  util: add a clamp helper (new file)  clean                     clean
0002  memory: stage loads on the CPU       conflict, but its test    3-way, and its test passes:
                                           passes: landed            landed
0003  memory: release the temporary state  empty (upstream has it)   clean
0004  project: declare the readme          3-way (version line in    3-way
                                           the context changed)
0005  greet: separate the name with comma  conflict (not landed)     clean
====  ==================================  =========================  ==========================
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from conftest import FIXTURES, TOY, Project, git, make_sdist, make_wheel, toy_env_links, toy_pin
from headroom.ground import errors
from headroom.sources import checkout, series
from headroom.proof import envs, testrun
from headroom.upkeep import rebase
from headroom.ground.fsutil import sha256_file

TREES = {"1.0.0": TOY, "1.1.0": FIXTURES / "toypkg-1.1.0", "1.2.0": FIXTURES / "toypkg-1.2.0"}
SERIES = FIXTURES / "series-rebase"


@pytest.fixture(scope="session")
def versions_index(tmp_path_factory) -> Path:
    index = tmp_path_factory.mktemp("index-versions")
    for version, tree in TREES.items():
        make_sdist(index, version=version, tree=tree)
        make_wheel(index, version=version)
    return index


@pytest.fixture
def proj(tmp_path, monkeypatch, versions_index, shared_cache) -> Project:
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(versions_index))
    monkeypatch.setenv("HEADROOM_CACHE", str(shared_cache))
    monkeypatch.delenv("V", raising=False)
    p = Project(tmp_path / "proj", versions_index, toy_pin(versions_index))
    p.write_pins()
    import shutil

    shutil.copytree(SERIES, p.patches)
    assert p.run("apply") == 0
    return p


def start(p: Project, version: str, **kw) -> int:
    return rebase.start(p.root, f"toypkg=={version}", env_factory=rebase.source_env, **kw)


def report(p: Project, version: str) -> dict:
    return json.loads((p.root / "build" / "rebase" / f"toypkg-{version}.json").read_text())


def statuses(p: Project, version: str) -> dict[str, str]:
    return {r["patch"][:4]: r["status"] for r in report(p, version)["results"]}


def snapshot(p: Project) -> dict:
    """Everything abort must restore, byte for byte."""
    files = git(p.vendor, "ls-files", "-z").split("\0")
    tree = hashlib.sha256()
    for f in sorted(x for x in files if x):
        tree.update(f.encode() + b"\0" + (p.vendor / f).read_bytes())
    return {
        "pins": (p.root / "vendor" / "pins.toml").read_bytes(),
        "patches": {f.name: f.read_bytes() for f in sorted(p.patches.iterdir())},
        "head": git(p.vendor, "rev-parse", "HEAD"),
        "branch": git(p.vendor, "symbolic-ref", "HEAD"),
        "refs": git(p.vendor, "for-each-ref"),
        "state": (p.vendor / ".git" / checkout.STATE_FILE).read_bytes(),
        "tree": tree.hexdigest(),
        "status": git(p.vendor, "status", "--porcelain", "--untracked-files=all"),
    }


def test_rebase_to_1_1_0_every_status_and_resume_after_conflicts(proj: Project, capsys):
    # 0002 conflicts textually, but its own test passes on pristine 1.1.0: landed. Not confirmed -> it stops.
    with pytest.raises(errors.PatchConflict) as exc:
        start(proj, "1.1.0")
    out = capsys.readouterr().out
    assert "toypkg-1.1.0.tar.gz: sha256 " + sha256_file(proj.index / "toypkg-1.1.0.tar.gz") in out
    assert "0002-memory-stage-loads-on-the-CPU.patch: its tests on pristine 1.1.0: 1 passed -> landed" in out
    assert "0005-greet-separate-the-name-with-a-comma.patch: its tests on pristine 1.1.0: 1 failed -> not landed" in out
    assert "0001-util-add-a-clamp-helper.patch" in out and " clean" in out
    msg = str(exc.value)
    assert "0002-memory-stage-loads-on-the-CPU.patch conflicts with toypkg 1.1.0" in msg
    assert "landed upstream" in msg and "make rebase-continue DROP=0002" in msg
    assert "src/toypkg/memory.py: conflict markers at lines" in msg and "patch hunk @@ -1,6 +1,6 @@" in msg
    assert (proj.vendor / ".git" / "rebase-apply").exists()
    # Nothing recorded yet.
    assert 'version = "1.0.0"' in (proj.root / "vendor" / "pins.toml").read_text()

    # Drop the landed one; 0003 is empty, 0004 needs a 3-way merge, 0005 really conflicts.
    with pytest.raises(errors.PatchConflict) as exc:
        rebase.resume(proj.root, drop=["0002"])
    out = capsys.readouterr().out
    assert "0003-memory-release-the-temporary-state.patch" in out and "empty" in out
    assert "3-way" in out and "readme" in out  # the range-diff of 0004, old vs new
    msg = str(exc.value)
    assert "0005-greet-separate-the-name-with-a-comma.patch conflicts" in msg and "landed" not in msg
    assert "src/toypkg/__init__.py: conflict markers at lines" in msg

    # Continuing without resolving is refused.
    with pytest.raises(errors.PatchConflict, match="not resolved yet"):
        rebase.resume(proj.root)
    # Resolve: keep upstream's capital and the patch's comma (and its test).
    init = proj.vendor / "src/toypkg/__init__.py"
    init.write_text('__version__ = "1.1.0"\n\n\ndef greet(name):\n    return "Hello, " + name\n')
    test = proj.vendor / "tests/test_greet_comma.py"
    test.write_text(test.read_text().replace('"hello, x"', '"Hello, x"'))
    git(proj.vendor, "add", "src/toypkg/__init__.py", "tests/test_greet_comma.py")
    assert rebase.resume(proj.root) == 0

    assert statuses(proj, "1.1.0") == {"0001": "clean", "0002": "landed", "0003": "empty", "0004": "3-way",
                                       "0005": "conflict"}
    pins = (proj.root / "vendor" / "pins.toml").read_text()
    assert 'version = "1.1.0"' in pins and sha256_file(proj.index / "toypkg-1.1.0.tar.gz") in pins
    assert sha256_file(proj.index / "toypkg-1.1.0-py3-none-any.whl") in pins and 'tag = "v1.1.0"' in pins
    assert (proj.patches / "series").read_text().splitlines() == [
        "0001-util-add-a-clamp-helper.patch", "0002-project-declare-the-readme.patch",
        "0003-greet-separate-the-name-with-a-comma.patch"]
    # The checkout is canonical: a normal apply of the new pin and series, and export changes nothing.
    state = checkout.read_state(proj.vendor)
    assert state["state"] == "done" and state["local_version"].startswith("1.1.0+headroom.")
    assert '"Hello, "' in init.read_text()
    assert proj.run("export", "--check") == 0
    assert not (proj.root / "build" / "rebase" / "toypkg").exists()


def test_rebase_to_1_2_0_landed_patch_dropped_when_confirmed(proj: Project, capsys):
    assert start(proj, "1.2.0", drop=["toypkg/0002"]) == 0
    assert statuses(proj, "1.2.0") == {"0001": "clean", "0002": "landed", "0003": "clean", "0004": "3-way",
                                       "0005": "clean"}
    out = capsys.readouterr().out
    assert "dropped 0002-memory-stage-loads-on-the-CPU.patch: landed (1 passed on toypkg 1.2.0 source tree)" in out
    series = (proj.patches / "series").read_text().splitlines()
    assert len(series) == 4 and not any("stage-loads" in s for s in series)
    assert proj.run("export", "--check") == 0
    # The pristine commit the rebase made is the one apply makes.
    assert git(proj.vendor, "log", "-1", "--format=%s", "upstream/1.2.0").strip() == \
        "Import toypkg 1.2.0 from toypkg-1.2.0.tar.gz"


def test_rebase_keeps_a_landed_patch_that_is_not_confirmed(proj: Project, capsys):
    assert start(proj, "1.2.0") == 0
    res = {r["patch"][:4]: r for r in report(proj, "1.2.0")["results"]}
    assert res["0002"]["status"] == "landed" and res["0002"]["textual"] == "3-way"
    assert "was kept (not confirmed)" in capsys.readouterr().err
    assert len((proj.patches / "series").read_text().splitlines()) == 5
    assert proj.run("export", "--check") == 0


def test_abort_restores_pins_patches_and_checkout_byte_for_byte(proj: Project):
    before = snapshot(proj)
    with pytest.raises(errors.PatchConflict):
        start(proj, "1.1.0")
    with pytest.raises(errors.PatchConflict):
        rebase.resume(proj.root, drop=["2"])
    assert snapshot(proj) != before
    assert rebase.abort(proj.root) == 0
    assert snapshot(proj) == before
    assert not (proj.root / "build" / "rebase" / "toypkg").exists()
    assert proj.run("apply") == 0  # still the applied checkout: a no-op
    assert git(proj.vendor, "tag", "-l").split() == ["upstream/1.0.0"]


def test_abort_without_a_rebase_and_a_second_start_are_refused(proj: Project):
    with pytest.raises(errors.UsageError, match="no rebase in progress"):
        rebase.abort(proj.root)
    with pytest.raises(errors.PatchConflict):
        start(proj, "1.1.0")
    with pytest.raises(errors.UsageError, match="already in progress"):
        start(proj, "1.2.0")
    assert rebase.abort(proj.root) == 0


def test_rebase_refuses_a_checkout_with_unexported_work(proj: Project):
    (proj.vendor / "README.md").write_text("local edit\n")
    with pytest.raises(errors.UnsavedWork, match="make export"):
        start(proj, "1.1.0")
    assert not (proj.root / "build" / "rebase" / "toypkg").exists()


def test_drop_names_and_requirement_parsing():
    names = ["0001-a.patch", "0002-b.patch"]
    assert series.match(["2", "toypkg/0001", "0002-b.patch"], names, "toypkg") == ["0002-b.patch", "0001-a.patch"]
    with pytest.raises(errors.UsageError):
        series.match(["0009"], names, "toypkg")
    assert rebase.parse_requirement("transformers==5.23.0") == ("transformers", "5.23.0")
    with pytest.raises(errors.UsageError):
        rebase.parse_requirement("transformers")


def test_command_line_rebase_conflict_continue_and_abort(proj: Project, capsys, monkeypatch, tmp_path):
    from headroom.cli import main as cli_with_rebase

    gitconfig = tmp_path / "gitconfig"  # `pr` commits as the person running it
    gitconfig.write_text("[user]\n\tname = Jo Person\n\temail = jo@example.org\n")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(gitconfig))

    root = ["--root", str(proj.root)]
    assert cli_with_rebase([*root, "rebase", "toypkg==1.1.0", "--env", "source"]) == errors.PatchConflict.exit_code
    err = capsys.readouterr().err
    assert "make rebase-continue DROP=0002" in err
    assert cli_with_rebase([*root, "rebase-continue", "--drop", "0002"]) == errors.PatchConflict.exit_code
    assert cli_with_rebase([*root, "rebase-continue"]) == errors.PatchConflict.exit_code  # not resolved yet
    assert cli_with_rebase([*root, "rebase-abort"]) == 0
    assert cli_with_rebase([*root, "rebase-abort"]) == errors.UsageError.exit_code
    assert cli_with_rebase([*root, "rebase", "toypkg==1.2.0", "--env", "source", "--drop", "0002"]) == 0
    assert 'version = "1.2.0"' in (proj.root / "vendor" / "pins.toml").read_text()
    assert cli_with_rebase([*root, "pr", "toypkg/0001"]) == 0  # no build/envs here: tests "not run"
    assert "tests alone: not run" in capsys.readouterr().out


def test_partly_landed_patch_is_named_in_the_conflict(proj: Project):
    def runner(where, files, env):
        return {"tests.t::test_memory": "passed", "tests.t::test_aliasing": "failed"}

    with pytest.raises(errors.PatchConflict) as exc:
        rebase.start(proj.root, "toypkg==1.1.0", env_factory=rebase.source_env, runner=runner)
    msg = str(exc.value)
    assert "Part of it landed upstream" in msg and "now passing: test_memory" in msg and "still failing: test_aliasing" in msg
    assert "DROP=0002" in msg  # dropping stays possible, but is not recommended
    assert rebase.abort(proj.root) == 0


def test_an_empty_patch_is_told_by_git_mailinfo_not_by_its_english(proj: Project, tmp_path):
    """A patch file with a message and no diff is 'empty' (git am stops on it); one with a diff is not. Decided from
    what git's mail splitter extracts, so a translated or reworded git message cannot change the answer."""
    from headroom.ground.vcs import Repo

    repo = Repo(proj.root / "vendor" / "toypkg")
    full = sorted((proj.root / "patches" / "toypkg").glob("*.patch"))[0]
    empty = tmp_path / "0009-empty.patch"
    head, _, _ = full.read_text(encoding="utf-8").partition("\ndiff --git")
    empty.write_text(head + "\n", encoding="utf-8")
    assert rebase.conflict_mod.has_no_diff(repo, empty)
    assert not rebase.conflict_mod.has_no_diff(repo, full)


def test_summary_says_what_landed_and_what_was_resolved_by_hand(proj: Project, capsys, monkeypatch):
    """The summary after a conflict resolved by hand still says what the landed check found, and asks for a review."""
    def runner(where, files, env):
        return {"tests.t::test_memory": "passed", "tests.t::test_aliasing": "failed"}

    monkeypatch.setattr(rebase, "RANGE_DIFF_LINES", 3)
    with pytest.raises(errors.PatchConflict):
        rebase.start(proj.root, "toypkg==1.1.0", env_factory=rebase.source_env, runner=runner)
    git(proj.vendor, "checkout", "--ours", "src/toypkg/memory.py")  # keep upstream's code, carry the test
    git(proj.vendor, "add", "src/toypkg/memory.py")
    capsys.readouterr()
    with pytest.raises(errors.PatchConflict):  # 0005 conflicts on 1.1.0
        rebase.resume(proj.root)
    out = capsys.readouterr().out
    assert "0002-memory-stage-loads-on-the-CPU.patch" in out and "conflict  (resolved by hand)" in out
    assert "more lines: the whole range-diff is in build/rebase/toypkg-1.1.0.json" in out
    assert rebase.resume(proj.root, drop=["0005"]) == 0
    captured = capsys.readouterr()
    summary = captured.out.split(": summary", 1)[1]
    assert "its tests on pristine 1.1.0: 1 passed, 1 failed -> partly landed" in summary
    assert "still fails upstream: test_aliasing" in summary and "now passes upstream: test_memory" in summary
    assert "0002-memory-stage-loads-on-the-CPU.patch was resolved by hand" in captured.err
    assert "still describe 1.0.0" in captured.err
    assert report(proj, "1.1.0")["results"][1]["range_diff"].count("\n") > 3  # the report keeps all of it


# ------------------------------------------------------------------ a fresh clone; the landed check's environment


def test_rebase_from_a_fresh_clone_applies_the_series_first(proj: Project, capsys):
    import shutil

    shutil.rmtree(proj.vendor)  # a fresh clone: pins and patches, no vendor/toypkg yet
    assert start(proj, "1.2.0", drop=["0002"]) == 0
    assert "vendor/toypkg is not the applied checkout of patches/toypkg/: apply it first" in capsys.readouterr().out
    assert statuses(proj, "1.2.0") == {"0001": "clean", "0002": "landed", "0003": "clean", "0004": "3-way",
                                       "0005": "clean"}
    assert proj.run("export", "--check") == 0


@pytest.fixture
def toy_envs(proj: Project, monkeypatch, tmp_path) -> Project:
    """The landed check's real environments without real torch: a stand-in torch on the find-links, no test
    requirements beside it."""
    torch = toy_env_links(tmp_path / "torch")
    monkeypatch.setenv("PIP_FIND_LINKS", f"{proj.index} {torch}")
    (proj.root / envs.REQUIREMENTS).parent.mkdir(parents=True, exist_ok=True)
    (proj.root / envs.REQUIREMENTS).write_text("# the toy environments need nothing more\n", encoding="utf-8")
    return proj


def test_the_landed_check_makes_its_environment(toy_envs: Project, capsys):
    """No build/envs at all: the check makes build/envs/landed-toypkg-1.2.0 with the new official wheel (by default)."""
    proj = toy_envs
    assert rebase.start(proj.root, "toypkg==1.2.0") == 0
    where = proj.root / envs.ENVS_DIR / "landed-toypkg-1.2.0"
    freeze = json.loads((where / envs.STAMP).read_text())["wheels"]
    assert freeze == ["toypkg-1.2.0-py3-none-any.whl"]
    landed = report(proj, "1.2.0")["landed"]
    assert landed["0002-memory-stage-loads-on-the-CPU.patch"]["env"] == \
        "official toypkg-1.2.0-py3-none-any.whl in build/envs/landed-toypkg-1.2.0"
    assert "not run" not in capsys.readouterr().out


def test_a_landed_check_that_cannot_run_stops_and_undoes_the_rebase(toy_envs: Project, tmp_path, monkeypatch):
    """toypkg 1.3.0 needs missingdep, which no index has: no 'not run', an error (exit 37) naming it; nothing changed."""
    proj = toy_envs
    links = tmp_path / "release-1.3.0"
    make_sdist(links, version="1.3.0", tree=TOY)  # 1.0.0's code: the check stops before the replay
    make_wheel(links, version="1.3.0", requires=("missingdep>=2",))
    monkeypatch.setenv("PIP_FIND_LINKS", f"{os.environ['PIP_FIND_LINKS']} {links}")
    before = snapshot(proj)
    with pytest.raises(errors.LandedCheckNotRun) as exc:
        rebase.start(proj.root, "toypkg==1.3.0")
    assert exc.value.exit_code == 37
    assert exc.value.message.startswith("The landed check of toypkg 1.3.0 could not run: build/envs/landed-toypkg-1.3.0")
    assert "missingdep>=2" in exc.value.message and "The rebase was undone" in exc.value.message
    assert snapshot(proj) == before
    assert not (proj.root / "build" / "rebase" / "toypkg").exists()


COLLECTION_ERROR = """<testsuites><testsuite><testcase classname="" name="tests.test_fsdp2">
<error message="collection failure">ImportError while importing test module 'tests/test_fsdp2.py'.
E   ImportError: cannot import name 'require_fsdp2' from 'accelerate.test_utils.testing'</error>
</testcase></testsuite></testsuites>"""


def test_a_test_that_could_not_run_is_unknown_never_still_needed(proj: Project, capsys):
    def runner(where, files, env):
        testrun.junit_in(where).write_text(COLLECTION_ERROR, encoding="utf-8")
        return testrun.outcomes(testrun.junit_in(where))

    assert rebase.start(proj.root, "toypkg==1.2.0", env_factory=rebase.source_env, runner=runner) == 0
    out = capsys.readouterr().out
    why = "collection failure: ImportError: cannot import name 'require_fsdp2' from 'accelerate.test_utils.testing'"
    assert "its tests on pristine 1.2.0: 1 unknown -> unknown" in out
    row = next(line for line in out.splitlines() if line.strip().startswith("0002-memory-stage-loads-on-the-CPU.patch "))
    assert row.split()[1] == "3-way"
    assert row.endswith(f"(landed? unknown: its tests could not run on pristine 1.2.0 (tests.test_fsdp2: {why}))")
    summary = out.split(": summary", 1)[1]
    assert "-> unknown: 1 of its tests could not run there" in summary
    assert f"could not run upstream: tests.test_fsdp2: {why}" in summary
    assert "still needed" not in out and "landed (" not in out
    assert len((proj.patches / "series").read_text().splitlines()) == 5  # nothing dropped


def test_verdicts_with_tests_that_could_not_run():
    cannot = {"t::a": "collection failure: ImportError: x"}
    assert rebase.landed_mod._verdict({"t::a": "unknown", "t::b": "passed"}, cannot, {})["verdict"] == "unknown"
    assert rebase.landed_mod._verdict({"t::a": "unknown", "t::b": "failed"}, cannot, {})["verdict"] == "not landed"
    assert rebase.landed_mod._verdict({"t::b": "passed"}, {}, {})["verdict"] == "landed"


def test_the_landed_environment_holds_every_pin_with_the_new_release(tmp_path, monkeypatch):
    pins = [toy_pin_like("accelerate", "1.15.0"), toy_pin_like("transformers", "5.23.0")]
    new = toy_pin_like("accelerate", "1.16.0")
    made = {}
    monkeypatch.setattr(rebase.landed_mod.pins_mod, "load", lambda root: pins)
    monkeypatch.setattr(rebase.landed_mod.fetch, "fetch", lambda pin, kind: Path(f"/cache/{pin.wheel}"))
    monkeypatch.setattr(envs, "ensure", lambda root, env, wheels, all_pins: made.update(env=env, wheels=wheels) or
                        Path("/py"))
    env = rebase.wheel_env(tmp_path, new, tmp_path, Path("/cache/accelerate-1.16.0-py3-none-any.whl"))
    assert made == {"env": "landed-accelerate-1.16.0", "wheels": [Path("/cache/accelerate-1.16.0-py3-none-any.whl"),
                                                                  Path("/cache/transformers-5.23.0-py3-none-any.whl")]}
    assert env.python == Path("/py") and env.pythonpath == ()


def toy_pin_like(name: str, version: str):
    from headroom.sources.pins import Pin

    return Pin(name=name, distribution=name, version=version, sdist=f"{name}-{version}.tar.gz", sdist_sha256="0" * 64,
               wheel=f"{name}-{version}-py3-none-any.whl", wheel_sha256="0" * 64, repository="-", tag="-")


# ---- a release line's rebase (vendor/lines.toml) ------------------------------------------------------------------

LINES = (FIXTURES / "lines-new-old.toml").read_text(encoding="utf-8")  # two lines: new (original), old


@pytest.fixture
def lines_proj(proj: Project) -> Project:
    """Two lines of toypkg 1.0.0: ``new`` (the original, vendor/new.pins.toml, vendor/new/toypkg) and ``old`` (the
    home line, vendor/pins.toml, vendor/toypkg), both applied."""
    (proj.root / "vendor" / "new.pins.toml").write_text((proj.root / "vendor" / "pins.toml").read_text())
    (proj.root / "vendor" / "lines.toml").write_text(LINES)
    assert proj.run("apply") == 0
    return proj


def line_snapshot(p: Project) -> dict:
    """What a line's rebase may change and its abort must restore, byte for byte (both lines' checkouts)."""
    new_vendor = p.root / "vendor" / "new" / "toypkg"
    out = {f"old {k}": v for k, v in snapshot(p).items()}
    out |= {"new pins": (p.root / "vendor" / "new.pins.toml").read_bytes(),
            "all patches": {str(f.relative_to(p.patches)): f.read_bytes() for f in sorted(p.patches.rglob("*")) if f.is_file()},
            "new head": git(new_vendor, "rev-parse", "HEAD"), "new branch": git(new_vendor, "symbolic-ref", "HEAD"),
            "new refs": git(new_vendor, "for-each-ref"),
            "new state": (new_vendor / ".git" / checkout.STATE_FILE).read_bytes(),
            "new status": git(new_vendor, "status", "--porcelain", "--untracked-files=all")}
    return out


def test_rebase_needs_a_line_when_several_pin_the_upstream(lines_proj: Project, capsys):
    assert lines_proj.run("rebase", "toypkg==1.2.0", "--env", "source") == errors.UsageError.exit_code
    err = capsys.readouterr().err
    assert "toypkg is pinned on 2 release lines: new (toypkg 1.0.0, vendor/new.pins.toml), old (toypkg 1.0.0" in err
    assert "`make rebase PIN=toypkg==1.2.0 LINE=new` or `make rebase PIN=toypkg==1.2.0 LINE=old`" in err
    assert lines_proj.run("--line", "nwe", "rebase", "toypkg==1.2.0") == errors.UsageError.exit_code
    assert "Did you mean 'new'" in capsys.readouterr().err
    line, pin = rebase.resolve(lines_proj.root, "toypkg==1.2.0", "new")
    assert (line.name, pin.key, pin.line) == ("new", "new/toypkg", "new")


def test_rebase_a_line_uses_its_pins_checkout_and_files(lines_proj: Project, capsys):
    p = lines_proj
    home_pins = (p.root / "vendor" / "pins.toml").read_bytes()
    home_head = git(p.vendor, "rev-parse", "HEAD")
    originals = {f.name: f.read_bytes() for f in p.patches.glob("*.patch")}
    # one series serves both lines: a drop on one line would drop it on the other, whose release still needs it
    assert p.run("--line", "new", "rebase", "toypkg==1.2.0", "--env", "source", "--drop", "0002") == 2
    assert "0002-memory-stage-loads-on-the-CPU.patch would leave patches/toypkg/series, and the old line(s)" in \
        capsys.readouterr().err
    assert p.run("--line", "new", "rebase", "toypkg==1.2.0", "--env", "source") == 0
    out, err = capsys.readouterr()
    assert "toypkg 1.0.0 -> 1.2.0 on the new line" in out and "in vendor/new/toypkg" in out
    assert 'version = "1.2.0"' in (p.root / "vendor" / "new.pins.toml").read_text()
    assert (p.root / "vendor" / "pins.toml").read_bytes() == home_pins  # the other line's pins: not a byte moved
    assert git(p.vendor, "rev-parse", "HEAD") == home_head  # nor its checkout
    assert (p.root / "build" / "rebase" / "new" / "toypkg-1.2.0.json").is_file()
    assert not (p.root / "build" / "rebase" / "new" / "toypkg").exists()  # its state: gone when it finishes
    assert "0002-memory-stage-loads-on-the-CPU.patch looks landed" in err  # kept: with another line, never asked
    # The original line's export rewrote the originals of the 3-way merges: the old line keeps the diffs it applies,
    # as its own copies (the same fix, its release's context), and both lines still apply and export as they are.
    changed = sorted(n for n, b in originals.items() if (p.patches / n).read_bytes() != b)
    assert [n[:4] for n in changed] == ["0002", "0004", "0005"], out
    assert all((p.patches / "lines" / "old" / n).read_bytes() == originals[n] for n in changed)
    assert "the old line keeps its diff of 0004-project-declare-the-readme.patch as its own copy" in out
    assert p.run("apply") == 0 and p.run("export", "--check") == 0
    assert git(p.vendor, "rev-parse", "HEAD") == home_head


def test_a_line_rebase_continue_and_abort_follow_its_line(lines_proj: Project, capsys):
    p = lines_proj
    before = line_snapshot(p)
    assert p.run("--line", "new", "rebase", "toypkg==1.1.0", "--env", "source") == errors.PatchConflict.exit_code
    err = capsys.readouterr().err
    assert "vendor/new/toypkg is stopped in `git am`" in err and "make rebase-continue DROP=0002 LINE=new" in err
    state = json.loads((p.root / "build" / "rebase" / "new" / "toypkg" / "state.json").read_text())
    assert (state["line"], state["key"], state["pins_file"]) == ("new", "new/toypkg", "vendor/new.pins.toml")
    assert (p.root / "vendor" / "new" / "toypkg" / ".git" / "rebase-apply").exists()
    assert not (p.vendor / ".git" / "rebase-apply").exists()
    # continue without LINE=: the one rebase in progress, on its line; it stops on 0005, in the line's checkout
    assert p.run("rebase-continue", "--drop", "0002") == errors.PatchConflict.exit_code
    assert "make rebase-continue LINE=new" in capsys.readouterr().err
    assert p.run("--line", "old", "rebase-abort") == errors.UsageError.exit_code  # no rebase on that line
    assert p.run("--line", "new", "rebase-abort") == 0
    assert line_snapshot(p) == before
