"""tests = "git": upstream's tests from its release tag, with a local repository standing in for the remote."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from headroom.ground import vcs
from headroom.sources import pins
from headroom.proof import testsource, upstream
from headroom.ground.errors import CommandFailed, PinsError

from conftest import git

H = "a" * 64
GOOD = f"""
[toy]
distribution = "toypkg"
version = "1.0.0"
sdist = "toypkg-1.0.0.tar.gz"
sdist_sha256 = "{H}"
wheel = "toypkg-1.0.0-py3-none-any.whl"
wheel_sha256 = "{H}"
repository = "https://example.invalid/toypkg"
tag = "v1.0.0"
"""


def make_pin(repository: str, *, name: str = "transformers", tag: str = "v1.0.0", tests: str = "git") -> pins.Pin:
    return pins.Pin(name, name, "1.0.0", f"{name}-1.0.0.tar.gz", H, f"{name}-1.0.0-py3-none-any.whl", H,
                    repository, tag, tests=tests)


@pytest.fixture
def remote(tmp_path) -> Path:
    """Upstream's repository: tests/ at tag v1.0.0 (annotated), then a later commit on main."""
    repo = tmp_path / "remote"
    (repo / "tests" / "trainer").mkdir(parents=True)
    (repo / "tests" / "__init__.py").write_text("")
    (repo / "tests" / "trainer" / "test_checkpoint.py").write_text("def test_checkpoint():\n    assert True\n")
    (repo / "tests" / "test_tiny.py").write_text("def test_tiny():\n    assert 1 + 1 == 2\n")
    (repo / "README").write_text("upstream\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "release")
    git(repo, "tag", "-a", "v1.0.0", "-m", "v1.0.0")
    (repo / "tests" / "test_later.py").write_text("def test_later():\n    pass\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "after the release")
    return repo


def test_sdist_default_is_vendor_tests(tmp_path):
    pin = make_pin("https://example.invalid/x", tests="sdist")
    assert testsource.tests_tree(tmp_path, pin) == tmp_path / "vendor" / "transformers" / "tests"
    assert pins.Pin("a", "a", "1", "a-1.tar.gz", H, "a-1-py3-none-any.whl", H, "u", "v1").tests == "sdist"
    assert not (tmp_path / "build").exists()  # nothing fetched


def test_git_tests_tree_is_the_tag_and_is_reused(tmp_path, remote, monkeypatch):
    root = tmp_path / "proj"
    pin = make_pin(str(remote))
    tests = testsource.tests_tree(root, pin)
    assert tests == root / "build" / "testsource" / "transformers-v1.0.0" / "tests"
    assert sorted(p.relative_to(tests).as_posix() for p in tests.rglob("*.py")) == [
        "__init__.py", "test_tiny.py", "trainer/test_checkpoint.py"]  # not test_later.py: that is after the tag
    tag_commit = git(remote, "rev-parse", "v1.0.0^{commit}").strip()
    assert vcs.Repo(tests.parent).head() == tag_commit
    assert not tests.parent.with_name("transformers-v1.0.0.part").exists()

    # A second call reuses the fetch: no new repository is made.
    def no_init(*args, **kwargs):
        raise AssertionError("fetched again")

    monkeypatch.setattr(testsource.vcs.Repo, "init", no_init)
    marker = tests / "marker.txt"
    marker.write_text("kept")
    assert testsource.tests_tree(root, pin) == tests
    assert marker.read_text() == "kept"


def test_git_file_url_and_new_tag_refetch(tmp_path, remote):
    root = tmp_path / "proj"
    pin = make_pin(remote.as_uri())
    first = testsource.tests_tree(root, pin)
    assert not (first / "test_later.py").exists()
    git(remote, "tag", "v1.1.0")
    second = testsource.tests_tree(root, dataclasses.replace(pin, tag="v1.1.0"))
    assert second.parent.name == "transformers-v1.1.0" and (second / "test_later.py").exists()
    # The same folder from another repository is fetched again, not reused.
    other = tmp_path / "other"
    git(tmp_path, "clone", "-q", str(remote), str(other))
    (first.parent / "stale").write_text("x")
    again = testsource.tests_tree(root, dataclasses.replace(pin, repository=str(other)))
    assert again == first and not (first.parent / "stale").exists()


def test_missing_tag_is_an_error_that_leads_with_the_fix(tmp_path, remote):
    root = tmp_path / "proj"
    with pytest.raises(testsource.TestSourceError) as exc:
        testsource.tests_tree(root, make_pin(str(remote), tag="v9.9.9"))
    err = exc.value
    assert isinstance(err, CommandFailed) and err.exit_code == CommandFailed.exit_code == 12
    assert err.message.startswith('set tests = "sdist" in vendor/pins.toml [transformers]')
    assert "no tag 'v9.9.9'" in err.message
    assert not (root / "build" / "testsource" / "transformers-v9.9.9").exists()
    assert not (root / "build" / "testsource" / "transformers-v9.9.9.part").exists()


def test_unreachable_remote_is_an_error_that_leads_with_the_fix(tmp_path):
    with pytest.raises(testsource.TestSourceError) as exc:
        testsource.tests_tree(tmp_path, make_pin(str(tmp_path / "no-such-repo")))
    assert exc.value.message.startswith(
        'set tests = "sdist" in vendor/pins.toml [transformers] or check network access: cannot reach')
    assert exc.value.exit_code == 12


def test_tag_without_tests_folder(tmp_path):
    repo = tmp_path / "remote"
    repo.mkdir()
    (repo / "README").write_text("x\n")
    git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "r")
    git(repo, "tag", "v1.0.0")
    with pytest.raises(testsource.TestSourceError, match="has no tests/ folder"):
        testsource.tests_tree(tmp_path / "proj", make_pin(str(repo)))


# ------------------------------------------------------------ pins.toml: the optional key


def test_pins_tests_key_default_and_git():
    (pin,) = pins.parse(GOOD, Path("vendor/pins.toml"))
    assert pin.tests == "sdist"
    assert "tests" not in pins.render([pin])  # the default is not written: pins.toml stays as it is
    (pin,) = pins.parse(GOOD + 'tests = "git"\n', Path("vendor/pins.toml"))
    assert pin.tests == "git"
    assert 'tests = "git"' in pins.render([pin])
    assert pins.parse(pins.render([pin]), Path("p")) == [pin]
    (pin,) = pins.parse(GOOD + 'tests = "sdist"\n', Path("vendor/pins.toml"))
    assert pin.tests == "sdist"


@pytest.mark.parametrize("value", ['"github"', '""', "1"])
def test_pins_bad_tests_value_names_file_table_key_and_choices(value):
    with pytest.raises(PinsError) as exc:
        pins.parse(GOOD + f"tests = {value}\n", Path("vendor/pins.toml"))
    text = str(exc.value)
    assert text.startswith("vendor/pins.toml: [toy].tests must be")
    assert '"sdist" or "git"' in text


def test_pins_tests_key_typo_is_suggested():
    with pytest.raises(PinsError, match=r"\[toy\]: unknown key 'test'\. Did you mean 'tests'\?"):
        pins.parse(GOOD + 'test = "git"\n', Path("vendor/pins.toml"))


def test_pins_missing_message_lists_only_required_keys():
    with pytest.raises(PinsError) as exc:
        pins.parse(GOOD.replace('tag = "v1.0.0"', ""), Path("p"))
    assert "tests" not in str(exc.value)


# ------------------------------------------------------------ upstream.py: suites and the copied tree


def test_git_selection_for_transformers_and_peft():
    sdist = [make_pin("u", name="accelerate", tests="sdist"), make_pin("u", tests="sdist"),
             make_pin("u", name="peft", tests="sdist")]
    git_tf = [make_pin("u", name="accelerate", tests="sdist"), make_pin("u", tests="git"),
              make_pin("u", name="peft", tests="git")]
    for selection in upstream.SELECTIONS:
        guards = upstream.guard_suites(sdist)
        assert upstream.selected_suites(selection, sdist) == list(upstream.SELECTIONS[selection]) + guards
        suites = [s for s in upstream.selected_suites(selection, git_tf) if s not in guards]
        names = [s.name for s in suites]
        assert len(names) == len(set(names))
        tf = [s for s in suites if s.upstream == "transformers"]
        has_tf = any(s.upstream == "transformers" for s in upstream.SELECTIONS[selection])
        assert tf == (list(upstream.GIT_SUITES["transformers"]) if has_tf else [])
        # peft from git: the same files as from the sdist.
        assert [s for s in suites if s.upstream == "peft"] == [
            s for s in upstream.SELECTIONS[selection] if s.upstream == "peft"]
    paths = {p for s in upstream.GIT_SUITES["transformers"] for p in s.paths}
    assert {"tests/trainer", "tests/peft_integration", "tests/fsdp"} <= paths
    trainer = next(s for s in upstream.GIT_SUITES["transformers"] if "tests/trainer" in s.paths)
    assert "best_model" in trainer.keyword and "checkpoint" in trainer.keyword
    for s in upstream.GIT_SUITES["transformers"]:
        for f in s.ours:
            assert (upstream.DATA / f).is_file()


def test_guards_are_a_suite_per_upstream_in_every_selection(tmp_path):
    """The regression guards (upstream_data/guards/<name>/test_*.py): one suite per upstream that has any, run in one
    process, their files copied into the layer under the same relative path."""
    pins_ = [make_pin("u", name="accelerate"), make_pin("u"), make_pin("u", name="peft")]
    for name in ("accelerate", "transformers"):
        assert upstream.guard_files(name), f"no guard of {name}"
    guards = upstream.guard_suites(pins_)
    assert [s.name for s in guards] == [f"{n}-guards" for n in ("accelerate", "transformers", "peft")
                                        if upstream.guard_files(n)]
    for suite in guards:
        assert suite.paths == suite.ours and not suite.parallel
        assert all((upstream.DATA / f).is_file() and f.startswith(f"guards/{suite.upstream}/") for f in suite.ours)
    for selection in upstream.SELECTIONS:
        assert upstream.selected_suites(selection, pins_)[-len(guards):] == guards
    # a folder of our own: only test_*.py files count, in name order
    (tmp_path / "toy").mkdir()
    for f in ("test_b.py", "test_a.py", "helper.py"):
        (tmp_path / "toy" / f).write_text("")
    assert upstream.guard_files("toy", tmp_path) == ("guards/toy/test_a.py", "guards/toy/test_b.py")
    assert upstream.guard_files("none", tmp_path) == ()


def test_run_copies_the_git_tests(tmp_path, remote, monkeypatch):
    """upstream.run with tests = "git": the layer holds the tag's tests, vendor/ is not needed."""
    from headroom.ground import proc

    root = tmp_path / "proj"
    pin = make_pin(str(remote))
    suite = upstream.Suite("transformers-x", "transformers", ("tests/test_tiny.py",))
    monkeypatch.setitem(upstream.GIT_SUITES, "transformers", (suite,))
    monkeypatch.setattr(upstream, "load_known", lambda: [])
    monkeypatch.setattr(upstream, "_patch_added_tests", lambda root, pin: [])
    monkeypatch.setattr(upstream, "guard_suites", lambda pins, missing=(): [])
    seen = []

    def fake_run(args, **kwargs):
        seen.append([str(a) for a in args])
        junit = Path(next(str(a) for a in args if str(a).startswith("--junitxml=")).split("=", 1)[1])
        junit.write_text('<testsuites><testsuite><testcase classname="tests.test_tiny" name="test_tiny"/>'
                         "</testsuite></testsuites>", encoding="utf-8")
        return proc.Result(list(args), 0, "ok\n")

    monkeypatch.setattr(proc, "run", fake_run)
    failures = upstream.run(root, [pin], {"pristine": Path("py1"), "patched": Path("py2")}, selection="default")
    assert failures == []
    assert len(seen) == 2 and all(a[-1] == "tests/test_tiny.py" for a in seen)
    layer = root / "build" / "upstream" / "transformers" / "patched"
    assert (layer / "tests" / "trainer" / "test_checkpoint.py").is_file()
    assert not (layer / "tests" / "test_later.py").exists()
    assert not (root / "vendor").exists()
