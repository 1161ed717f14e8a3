"""pr on the synthetic upstream: one patch alone, its PR body, its checks; nothing is pushed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, Project, git, toy_pin
from headroom import errors, pr

SERIES = FIXTURES / "series-rebase"


@pytest.fixture
def proj(tmp_path, offline_pip) -> Project:
    p = Project(tmp_path / "proj", offline_pip, toy_pin(offline_pip))
    p.write_pins()
    shutil.copytree(SERIES, p.patches)
    assert p.run("apply") == 0
    return p


def make(p: Project, spec: str, **kw) -> dict:
    kw.setdefault("envs_factory", pr.source_envs)
    return pr.make(p.root, spec, **kw)


def test_pr_for_one_patch(proj: Project, capsys):
    head_before = git(proj.vendor, "rev-parse", "HEAD")
    (proj.root / "build").mkdir(exist_ok=True)
    (proj.root / "build" / "report.json").write_text(json.dumps({"proof": [{
        "upstream": "toypkg", "patch": "patches/toypkg/0002-memory-stage-loads-on-the-CPU.patch",
        "tests": ["tests/test_memory_cpu.py"], "verdict": "red->green", "figures": ["patched: RssAnon rise 12 MiB"],
        "pristine": {"outcomes": {"tests.test_memory_cpu::test_load_stages_on_cpu": "failed"}, "summary": "1 failed"},
        "patched": {"outcomes": {"tests.test_memory_cpu::test_load_stages_on_cpu": "passed"}, "summary": "1 passed"},
    }]}))
    (proj.root / "build" / "bench").mkdir()
    (proj.root / "build" / "bench" / "toypkg-load.json").write_text(json.dumps(
        {"patch": "0002-memory-stage-loads-on-the-CPU", "pristine": {"peak_accelerator_mib": 812},
         "patched": {"peak_accelerator_mib": 64}}))
    checks = make(proj, "toypkg/0002")
    out_dir = proj.root / "build" / "pr" / "0002-memory-stage-loads-on-the-CPU"
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "0001-memory-stage-loads-on-the-CPU.patch", "PR.md", "checks.json", "pytest-alone.log", "pytest-pristine.log"]
    # The branch: the pristine tag + this patch alone; the checkout's HEAD is untouched.
    branch = "pr/memory-stage-loads-on-the-cpu"
    assert git(proj.vendor, "rev-parse", f"{branch}~1") == git(proj.vendor, "rev-parse", "upstream/1.0.0")
    assert git(proj.vendor, "log", "-1", "--format=%s", branch).strip() == "memory: stage loads on the CPU"
    assert git(proj.vendor, "rev-parse", "HEAD") == head_before
    assert git(proj.vendor, "worktree", "list").count("\n") == 1
    # The format-patch file is the series' patch (it applies alone, so the same bytes).
    assert (out_dir / "0001-memory-stage-loads-on-the-CPU.patch").read_bytes().replace(b"[PATCH] ", b"") == \
        (proj.patches / "0002-memory-stage-loads-on-the-CPU.patch").read_bytes()
    body = (out_dir / "PR.md").read_text()
    for heading in ("# What does this PR do?", "## Before submitting", "## Who can review?"):
        assert heading in body
    assert "load() staged on the accelerator by default." in body
    assert "Fixes #1" in body
    assert "| `tests.test_memory_cpu::test_load_stages_on_cpu` | failed | passed |" in body
    assert "- [x] Did you write any new necessary tests?" in body
    assert "RssAnon rise 12 MiB" in body and "| peak_accelerator_mib | 812 | 64 |" in body
    assert "toypkg/memory" in body  # the area to tag reviewers for
    assert checks["applies_alone"]["status"] == "passed"
    assert checks["tests"]["verdict"] == "red->green"
    assert checks["tests"]["pristine"]["summary"] == "1 failed" and checks["tests"]["alone"]["summary"] == "1 passed"
    assert checks["ruff"]["status"] in ("ruff not installed", "passed", "failed")
    assert json.loads((out_dir / "checks.json").read_text())["branch"] == branch
    out = capsys.readouterr().out
    assert "no git remote" in out and "push" not in out.split("no git remote")[0]


def test_pr_without_a_test_environment_reports_not_run(proj: Project):
    checks = make(proj, "toypkg/0004", envs_factory=lambda *a: None)
    assert checks["tests"]["status"] == "no tests"
    checks = make(proj, "toypkg/0001", envs_factory=lambda *a: None)
    assert checks["tests"]["status"] == "not run"
    body = (proj.root / "build" / "pr" / "0001-util-add-a-clamp-helper" / "PR.md").read_text()
    assert "With this patch alone: not run" in body and "Fixes # (no upstream issue" in body


def test_pr_refuses_a_patch_that_depends_on_an_earlier_one(proj: Project):
    init = proj.vendor / "src/toypkg/__init__.py"
    init.write_text(init.read_text().replace('"hello, "', '"hello,  "'))
    git(proj.vendor, "commit", "-q", "-am", "greet: two spaces", "--date=@1700000600 +0000")
    assert proj.run("export") == 0
    assert proj.run("apply") == 0
    with pytest.raises(errors.PatchConflict, match="does not apply alone on upstream/1.0.0") as exc:
        make(proj, "toypkg/0006")
    assert "src/toypkg/__init__.py" in str(exc.value)
    checks = json.loads((proj.root / "build" / "pr" / "0006-greet-two-spaces" / "checks.json").read_text())
    assert checks["applies_alone"]["status"] == "failed"
    assert git(proj.vendor, "branch", "--list", "pr/*").strip() == ""
    assert git(proj.vendor, "worktree", "list").count("\n") == 1


def test_pr_prints_push_and_pr_commands_when_a_remote_is_configured(proj: Project, capsys):
    git(proj.vendor, "remote", "add", "upstream", "https://example.invalid/toypkg.git")
    git(proj.vendor, "remote", "add", "fork", "https://example.invalid/me/toypkg.git")
    checks = make(proj, "toypkg/0005")
    cmds = checks["push_commands"]
    assert cmds[0] == "git -C vendor/toypkg fetch upstream tag v1.0.0 --no-tags"
    assert any(c.startswith("git -C vendor/toypkg push fork pr/greet-separate-the-name-with-a-comma-on-v1.0.0:"
                            "pr/greet-separate-the-name-with-a-comma") for c in cmds)
    assert cmds[-1].startswith("gh pr create --repo example.invalid/toypkg --base main --head me:pr/greet-")
    assert "gh pr create" in capsys.readouterr().out
    # Never pushed: the remotes were not even contacted (they do not exist).
    assert git(proj.vendor, "branch", "-r").strip() == ""


def test_pr_red_green_failure_is_reported(proj: Project, monkeypatch):
    with pytest.raises(errors.ProofFailed, match="NOT RED on pristine"):
        make(proj, "toypkg/0001", runner=lambda where, files, env: {"t::x": "passed"})
    assert (proj.root / "build" / "pr" / "0001-util-add-a-clamp-helper" / "PR.md").exists()


def test_selection_errors(proj: Project):
    with pytest.raises(errors.UsageError, match="UPSTREAM/NUMBER"):
        pr.select(proj.root, "0001")
    with pytest.raises(errors.UsageError):
        pr.select(proj.root, "toypkg/0042")
    assert pr.slug(Path("0001-Trainer-reload-the-best-PEFT-adapter-on-CPU-in-_load.patch")) == \
        "trainer-reload-the-best-peft-adapter-on-cpu-in-load"


def test_fixes_line():
    repo = "https://github.com/huggingface/transformers"
    assert pr.fixes_line([f"{repo}/issues/44637"], repo) == "Fixes #44637"
    assert "follows up on #45649" in pr.fixes_line([f"{repo}/pull/45649"], repo)
    assert pr.fixes_line(["https://elsewhere/x/1"], repo) == "Fixes https://elsewhere/x/1"


def test_pr_runs_ruff_when_installed_and_reports_its_failure(proj: Project, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ruff"
    fake.write_text("#!/bin/sh\necho \"ruff $*\"\necho 'src/toypkg/util.py:1:1: E999 pretend'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    with pytest.raises(errors.ProofFailed, match="ruff check failed"):
        make(proj, "toypkg/0001")
    checks = json.loads((proj.root / "build" / "pr" / "0001-util-add-a-clamp-helper" / "checks.json").read_text())
    assert checks["ruff"]["status"] == "failed" and checks["ruff"]["config"] == "pyproject.toml"
    assert "ruff check --no-cache src/toypkg/util.py tests/test_util.py" in checks["ruff"]["output"]


def test_bench_section_found_from_the_commit_that_added_the_patch(proj: Project):
    git(proj.root, "init", "-q")
    git(proj.root, "add", "patches")
    git(proj.root, "commit", "-q", "-m", "toypkg: stage loads on the CPU (fix 2)")
    (proj.root / "build" / "bench").mkdir(parents=True)
    (proj.root / "build" / "bench" / "results.json").write_text(json.dumps({
        "fix1": {"pristine": {"skipped": "no CUDA"}, "patched": {"skipped": "no CUDA"}},
        "fix2": {"cases": [{"size": "60M", "ranks": 2, "envs": {
            "pristine": {"summary": {"rank1_load_rise_mib": 229.7, "fsdp_enabled": True}},
            "patched": {"summary": {"rank1_load_rise_mib": 0.7, "fsdp_enabled": True}}}}]}}))
    patch = proj.patches / "0002-memory-stage-loads-on-the-CPU.patch"
    assert pr.fix_section(proj.root, patch) == "fix2"
    lines = pr.bench_figures(proj.root, proj.pin, patch)
    assert "| rank1_load_rise_mib | 229.7 | 0.7 |" in lines
    assert any("fix2.cases[0].envs" in line and "size=60M" in line and "ranks=2" in line for line in lines)
    assert pr.bench_figures(proj.root, proj.pin, patch, "fix1") == ["- `build/bench/results.json, fix1`: skipped (no CUDA)"]
