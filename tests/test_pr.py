"""pr on the synthetic upstream: one patch alone, its PR body, its checks; nothing is pushed."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from conftest import FIXTURES, Project, git, toy_pin
from headroom.ground import errors
from headroom.upkeep import pr
from headroom.upkeep.pr import draft as prdraft, evidence as previdence, facts as prfacts

SERIES = FIXTURES / "series-rebase"
RETIRED = FIXTURES / "retired" / "retired.toml"
PR_DATA = FIXTURES / "pr_data"
ME = ("Jane Doe", "jane@example.org")


@pytest.fixture
def proj(tmp_path, offline_pip) -> Project:
    p = Project(tmp_path / "proj", offline_pip, toy_pin(offline_pip))
    p.write_pins()
    shutil.copytree(SERIES, p.patches)
    assert p.run("apply") == 0
    return p


class FakeRuff:
    """Stands in for pip-installing ruff: a script that logs its arguments and exits with ``code``."""

    def __init__(self, tmp_path: Path, code: int = 0):
        self.asked: list[str] = []
        self.exe = tmp_path / f"fake-ruff-{code}"
        self.exe.write_text(f"#!/bin/sh\necho \"ruff $*\"\nexit {code}\n")
        self.exe.chmod(0o755)

    def __call__(self, root: Path, version: str) -> list[str]:
        self.asked.append(version)
        return [str(self.exe)]


def make(p: Project, spec: str, **kw) -> dict:
    kw.setdefault("envs_factory", pr.source_envs)
    kw.setdefault("identity", ME)
    kw.setdefault("data", PR_DATA)
    if "ruff_installer" not in kw:
        kw["ruff_installer"] = FakeRuff(p.root.parent)
    return pr.make(p.root, spec, **kw)


def retrail(p: Project, number: str, old: str, new: str) -> None:
    """Change the trailers of one patch of the project's series, then re-apply."""
    (patch,) = p.patches.glob(f"{number}-*.patch")
    patch.write_text(patch.read_text().replace(old, new))
    assert p.run("apply") == 0


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
    ruff = FakeRuff(proj.root.parent)
    checks = make(proj, "toypkg/0002", ruff_installer=ruff)
    out_dir = proj.root / "build" / "pr" / "0002-memory-stage-loads-on-the-CPU"
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "0001-memory-stage-loads-on-the-CPU.patch", "FACTS.md", "PR.md", "checks.json", "pytest-alone.log",
        "pytest-pristine.log"]
    # The branch: the pristine tag + this patch alone, committed as the person running make pr; HEAD untouched.
    branch = "pr/memory-stage-loads-on-the-cpu"
    assert git(proj.vendor, "rev-parse", f"{branch}~1") == git(proj.vendor, "rev-parse", "upstream/1.0.0")
    assert git(proj.vendor, "log", "-1", "--format=%s|%an <%ae>|%cn <%ce>", branch).strip() == \
        "memory: stage loads on the CPU|Jane Doe <jane@example.org>|Jane Doe <jane@example.org>"
    assert git(proj.vendor, "rev-parse", "HEAD") == head_before
    assert git(proj.vendor, "worktree", "list").count("\n") == 1
    # The format-patch file: the series' change, under the person's name.
    proposed = (out_dir / "0001-memory-stage-loads-on-the-CPU.patch").read_text()
    series_patch = (proj.patches / "0002-memory-stage-loads-on-the-CPU.patch").read_text()
    assert "From: Jane Doe <jane@example.org>" in proposed
    assert proposed.split("\ndiff --git", 1)[1] == series_patch.split("\ndiff --git", 1)[1]
    body = (out_dir / "PR.md").read_text()
    # The upstream's template, whole and in order, with our text in it and its boxes unticked.
    template = (PR_DATA / "toypkg" / "PULL_REQUEST_TEMPLATE.md").read_text()
    kept = [line for line in template.splitlines() if line.strip() and line != "Fixes # (issue)"]
    positions = [body.splitlines().index(line) for line in kept]
    assert positions == sorted(positions)
    assert "- [ ] I confirm that this is not a pure code agent PR." in body and "- [x]" not in body
    # The upstream refuses generated descriptions (pr_data's [policy]): the description section is the template's
    # comment and one line of ours pointing to FACTS.md; nothing of the commit message, no evidence written for them.
    description = body.split("# What does this PR do?\n", 1)[1].split("## Agent policy", 1)[0]
    assert [line for line in description.splitlines() if line.strip()] == [
        "<!--", "Describe the change.", "-->", prdraft.FACTS_POINTER, "Fixes #1"]
    assert "load() staged" not in body and "| `test_load_stages_on_cpu`" not in body and "812" not in body
    assert "Reviewers for this change: @memkeeper (memory)" in body
    assert body.index("Reviewers for this change") > body.index("## Who can review?")
    assert "Upstream-" not in body and "ISSUE.md" not in body
    # FACTS.md: what the person cites, every figure from this run's checks.json.
    facts = (out_dir / "FACTS.md").read_text()
    assert "| failure | `test_load_stages_on_cpu` on toypkg 1.0.0: AssertionError: assert 'accelerator' == 'cpu' |" in facts
    assert "| `test_load_stages_on_cpu` | failed | passed |" in facts
    assert "| peak accelerator (MiB) | 812 | 64 |" in facts
    assert "| `src/toypkg/memory.py` | 1 | 1 | `load` | 3 |" in facts
    assert "| Fixes | https://example.invalid/toypkg/issues/1 | - |" in facts
    assert "FAILED tests/test_memory_cpu.py::test_load_stages_on_cpu" in facts and "1 passed in " in facts
    assert "write the description yourself in build/pr/0002-memory-stage-loads-on-the-CPU/PR.md" in facts
    assert_facts_match_checks(facts, json.loads((out_dir / "checks.json").read_text()))
    assert checks["applies_alone"]["status"] == "passed"
    assert checks["tests"]["verdict"] == "red->green"
    assert checks["tests"]["pristine"]["summary"] == "1 failed" and checks["tests"]["alone"]["summary"] == "1 passed"
    # ruff: the version the upstream's tree pins, check and format --check on the changed Python files.
    assert ruff.asked == ["1.0.0"]
    assert checks["ruff"]["status"] == "passed" and checks["ruff"]["config"] == "pyproject.toml"
    assert "ruff check --no-cache src/toypkg/memory.py tests/test_memory_cpu.py" in checks["ruff"]["check"]["output"]
    assert "ruff format --check --no-cache src/toypkg/memory.py" in checks["ruff"]["format"]["output"]
    assert checks["reviewers"] == {"memory": ["@memkeeper"]}
    assert json.loads((out_dir / "checks.json").read_text())["branch"] == branch
    out = capsys.readouterr().out
    assert "no git remote" in out and "push" not in out.split("no git remote")[0]
    left = out.split("left to you", 1)[1]
    assert "write the description yourself" in left and "- [ ] I confirm that this is not a pure code agent PR." in left
    assert "open the issue first" not in left  # Fixes: names an upstream issue
    assert "git -C vendor/toypkg push <your-fork-remote> pr/memory-stage-loads-on-the-cpu-on-v1.0.0:" in left
    assert "gh pr create --repo example.invalid/toypkg --base main --head <you>:pr/memory-stage-loads-on-the-cpu" in left


def _figures(text: str) -> list[str]:
    """Every number in a text as FACTS.md writes it (1,183 -> 1183)."""
    return [n.replace(",", "") for n in re.findall(r"\d[\d,]*(?:\.\d+)?", text)]


def assert_facts_match_checks(facts: str, checks: dict) -> None:
    """Every figure of FACTS.md is one of checks.json's; its tables say what checks.json says, cell by cell."""
    known = set(_figures(json.dumps(checks))) | {f"{v:.1f}" for v in re.findall(r"-?\d+\.\d+", json.dumps(checks))
                                                 for v in [float(v)]}
    assert [n for n in _figures(facts) if n not in known] == []
    assert prfacts.unsourced(facts, checks) == []
    for table in checks["figures"]["bench"]:
        for label, _key, a, b in table["rows"]:
            assert f"| {label} | {prfacts._num(a)} | {prfacts._num(b)} |" in facts
    for label, a, b in checks["figures"]["tests"]:
        assert f"| {label} | {a} | {b} |" in facts
    t = checks["tests"]
    if t.get("status") == "run":
        for node in set(t["pristine"]["outcomes"]) | set(t["alone"]["outcomes"]):
            row = f"| `{node.rsplit('::', 1)[-1]}` | {t['pristine']['outcomes'].get(node, '-')} | {t['alone']['outcomes'].get(node, '-')} |"
            assert row in facts
    for f in checks["diff"]["files"]:
        assert f"| `{f['path']}` | {f['added']} | {f['removed']} |" in facts
    for link in checks["upstream"]["links"]:
        assert link["url"] in facts


def test_pr_needs_the_persons_git_identity(proj: Project, monkeypatch, tmp_path):
    empty = tmp_path / "gitconfig"
    empty.write_text("")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(empty))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    with pytest.raises(errors.IdentityMissing, match="git config --global user.name"):
        make(proj, "toypkg/0002", identity=None)
    empty.write_text("[user]\n\tname = Jo Person\n\temail = jo@example.org\n")
    assert pr.user_identity(proj.root) == ("Jo Person", "jo@example.org")


def test_open_upstream_pr_gets_a_comment_and_no_issue_gets_a_report(proj: Project):
    retrail(proj, "0005", "Fixes: https://example.invalid/toypkg/issues/5",
            "Upstream-Issue: none\nUpstream-PR: https://example.invalid/toypkg/pull/7 (open, the same fix)")
    checks = make(proj, "toypkg/0005")
    out_dir = proj.root / "build" / "pr" / "0005-greet-separate-the-name-with-a-comma"
    assert sorted(p.name for p in out_dir.iterdir()) == [
        "0001-greet-separate-the-name-with-a-comma.patch", "COMMENT.md", "FACTS.md", "ISSUE.md", "checks.json",
        "pytest-alone.log", "pytest-pristine.log", "repro.py"]
    comment = (out_dir / "COMMENT.md").read_text()
    assert "https://example.invalid/toypkg/pull/7" in comment
    assert "| `test_greet_comma` | failed | passed |" in comment
    assert '+    return "hello, " + name' in comment and "def test_greet_comma" in comment
    assert checks["upstream"]["pull_requests"][0]["state"] == "open" and checks["drafts"][0] == "COMMENT.md"
    # The bug report: the form's sections in order, boxes unticked, the script and its real output on both trees.
    issue = (out_dir / "ISSUE.md").read_text()
    titles = [line for line in issue.splitlines() if line.startswith("### ")]
    assert titles == ["### System Info", "### Who can help?", "### Information", "### Reproduction", "### Expected behavior"]
    assert "- [ ] My own modified scripts" in issue and "@corekeeper @other-keeper (core)" in issue
    assert "`python repro.py` with the script below (CPU only, no hub access); on toypkg 1.0.0 it ends with:\n\n" \
        "```\ngreet('x') -> 'hello x'\n```" in issue
    assert "greet('x') -> 'hello, x'" in issue.split("### Expected behavior")[1]
    assert 'A comma between the greeting and the name ("hello, x").' in issue
    assert "### Reproduction\n\ngreet() runs the greeting and the name together.\n" in issue  # the script's symptom
    assert "<summary>repro.py</summary>" in issue and re.search(r"\n\ntoypkg 1.0.0, .*, Python 3[.0-9]+\n", issue)
    # Short where we still write: the symptom, the reproduction, the evidence; the long material folded.
    assert prdraft.lines_before_details(issue) <= 25 and prdraft.lines_before_details(comment) <= 25
    assert "<summary>Our change, to compare with this PR's</summary>" in comment
    facts = (out_dir / "FACTS.md").read_text()
    assert "| Upstream-PR | https://example.invalid/toypkg/pull/7 | open, the same fix |" in facts
    assert "`python repro.py` (its last lines)" in facts and "greet('x') -> 'hello, x'" in facts
    assert checks["left_to_you"][:2] == [
        "open the issue first: read and edit build/pr/0005-greet-separate-the-name-with-a-comma/ISSUE.md, file it "
        "yourself, then link it in COMMENT.md",
        "read and edit build/pr/0005-greet-separate-the-name-with-a-comma/COMMENT.md, then post it yourself on "
        "https://example.invalid/toypkg/pull/7 (the command below; make pr never runs it)"]
    assert len(checks["left_to_you"]) == 2 and checks["push_commands"][-1].startswith("gh pr comment 7 ")
    assert_facts_match_checks(facts, checks)
    # The branch proposed upstream carries no bookkeeping trailer.
    message = git(proj.vendor, "log", "-1", "--format=%B", "pr/greet-separate-the-name-with-a-comma")
    assert "Upstream-" not in message


def test_pr_without_a_test_environment_reports_not_run(proj: Project):
    checks = make(proj, "toypkg/0004", envs_factory=lambda *a: None)
    assert checks["tests"]["status"] == "no tests"
    checks = make(proj, "toypkg/0001", envs_factory=lambda *a: None)
    assert checks["tests"]["status"] == "not run"
    out_dir = proj.root / "build" / "pr" / "0001-util-add-a-clamp-helper"
    body = (out_dir / "PR.md").read_text()
    assert "Fixes # (issue)" in body  # no upstream issue named: the placeholder stays
    facts = (out_dir / "FACTS.md").read_text()
    assert "The new test: not run (no test environment" in facts and "| failure | not measured in this run" in facts
    assert_facts_match_checks(facts, checks)
    left = checks["left_to_you"]
    assert left[0].startswith("open the issue first: read and edit build/pr/0001-util-add-a-clamp-helper/ISSUE.md")
    assert left[0].endswith("then link it in PR.md's Fixes line")
    assert (out_dir / "ISSUE.md").exists() and "(no standalone script in pr_data" in (out_dir / "ISSUE.md").read_text()


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
    # Reproduction scripts are named after the whole subject (a patch's file name cuts it).
    assert pr.subject_slug("Release the temporary adapter state dict in load_adapter") == \
        "release-the-temporary-adapter-state-dict-in-load-adapter"


def test_fixes_line_and_trailers():
    repo = "https://github.com/huggingface/transformers"
    assert prdraft.fixes_line([f"{repo}/issues/44637"], repo) == "Fixes #44637"
    assert prdraft.fixes_line([f"{repo}/pull/45649"], repo) == "Follows up on #45649"
    assert prdraft.fixes_line(["https://elsewhere/x/1"], repo) == "Related: https://elsewhere/x/1"
    msg = prdraft.parse_message(f"Subject\n\nBody.\n\nFixes: {repo}/issues/44637\nUpstream-PR: {repo}/pull/44660 (open)\n")
    assert msg["body"] == "Body." and prdraft.open_pr(msg)["number"] == "44660"
    assert prdraft.upstream_issues(msg, repo) == [f"{repo}/issues/44637"]
    msg = prdraft.parse_message("S\n\nB\n\nUpstream-Issue: none (ISSUE.md)\nFixes: https://github.com/o/other/pull/1\n")
    assert msg["upstream_issue_none"] and prdraft.upstream_issues(msg, repo) == [] and prdraft.open_pr(msg) is None
    assert prdraft.strip_trailers("S\n\nB\n\nFixes: x\nUpstream-PR: y (open)\n") == "S\n\nB\n\nFixes: x\n"


def test_pr_settings_are_validated(tmp_path):
    from headroom.upkeep.pr import config as prconfig

    for name in ("transformers", "peft"):  # the real settings parse, and name the reviewers the task expects
        config = prconfig.load(name)
        assert config.template is not None and config.ruff_pin_file == "setup.py"
    tf = prconfig.load("transformers")
    assert [a.handles for a in tf.areas_for(["src/transformers/trainer.py"])] == [("@SunMarc",)]
    assert [a.handles for a in tf.areas_for(["src/transformers/modeling_utils.py"])] == [("@Cyrilvallez",)]
    assert prconfig.load("peft").areas_for(["src/peft/peft_model.py"])[0].handles == ("@BenjaminBossan", "@githubnemo")
    assert prconfig.load("no-such-upstream", tmp_path).path is None  # no file: a plain draft, not an error
    assert prconfig.load("no-such-upstream", tmp_path).person_writes_description  # and the person writes it
    # Each upstream's policy on generated descriptions, with its source (the template copies beside the files).
    assert (tf.policy, tf.person_writes_description) == ("refused", True)
    assert "We will also close PRs with AI-written descriptions." in tf.policy_quote
    assert tf.policy_source.startswith("transformers/PULL_REQUEST_TEMPLATE.md")
    assert tf.policy_confirm == "- [ ] I confirm that this is not a pure code agent PR."
    peft, acc = prconfig.load("peft"), prconfig.load("accelerate")
    assert (peft.policy, acc.policy) == ("not stated", "not stated")
    assert peft.person_writes_description and acc.person_writes_description
    assert peft.policy_confirm == "This PR was authored by a human." and acc.policy_quote == ""
    assert "sdist holds no CONTRIBUTING.md" in peft.policy_source and "sdist holds no CONTRIBUTING.md" in acc.policy_source
    shutil.copytree(PR_DATA / "toypkg", tmp_path / "toypkg")  # the template the third case quotes
    for text, message in [
        ('[policy]\ngenerated_description = "maybe"\nsource = "s"\n', "generated_description must be one of"),
        ('[policy]\ngenerated_description = "refused"\nquote = ""\nsource = "s"\n',
         "quote must give upstream's own words"),
        ('[pull_request]\ntemplate = "toypkg/PULL_REQUEST_TEMPLATE.md"\n[policy]\ngenerated_description = "refused"\n'
         'quote = "Words it never says."\nsource = "toypkg/PULL_REQUEST_TEMPLATE.md"\n', "is not in"),
        ('[lint]\nruff_pin_fle = "setup.py"\n', "Did you mean 'ruff_pin_file'"),
        ('[[reviewers]]\narea = "a"\npaths = ["src/*"]\nhandles = ["SunMarc"]\n', "GitHub handles"),
    ]:
        (tmp_path / "x.toml").write_text(text)
        with pytest.raises(errors.DataError, match=message):
            prconfig.load("x", tmp_path)


def test_pr_reports_a_ruff_failure(proj: Project):
    with pytest.raises(errors.ProofFailed, match="ruff failed"):
        make(proj, "toypkg/0001", ruff_installer=FakeRuff(proj.root.parent, code=1))
    checks = json.loads((proj.root / "build" / "pr" / "0001-util-add-a-clamp-helper" / "checks.json").read_text())
    assert checks["ruff"]["status"] == "failed" and checks["ruff"]["check"]["status"] == "failed"
    assert "ruff check --no-cache src/toypkg/util.py tests/test_util.py" in checks["ruff"]["check"]["output"]


def test_ruff_version_comes_from_the_upstream_tree(tmp_path):
    from headroom.upkeep.pr import lint, config as prconfig

    (tmp_path / "setup.py").write_text('_deps = [\n    "pytest",\n    "ruff==0.14.10",\n]\n')
    assert lint.pinned_version(prconfig.load("transformers"), tmp_path) == ("0.14.10", 'setup.py: "ruff==0.14.10"')
    (tmp_path / "setup.py").write_text("_deps = []\n")
    assert lint.pinned_version(prconfig.load("transformers"), tmp_path)[0] is None
    assert lint.run(tmp_path, prconfig.load("transformers"), tmp_path, ["setup.py"])["status"].startswith("not run: no match")


def test_bench_section_found_from_the_commit_that_added_the_patch(proj: Project):
    git(proj.root, "init", "-q")
    git(proj.root, "add", "patches")
    git(proj.root, "commit", "-q", "-m", "toypkg: stage loads on the CPU (fix 2)")
    (proj.root / "build" / "bench").mkdir(parents=True)
    (proj.root / "build" / "bench" / "results.json").write_text(json.dumps({
        "trainer_best_adapter": {"pristine": {"skipped": "no CUDA"}, "patched": {"skipped": "no CUDA"}},
        "fsdp_loading": {"cases": [{"size": "60M", "ranks": 2, "envs": {
            "pristine": {"summary": {"rank1_load_rise_mib": 229.7, "fsdp_enabled": True}},
            "patched": {"summary": {"rank1_load_rise_mib": 0.7, "fsdp_enabled": True}}}}]}}))
    patch = proj.patches / "0002-memory-stage-loads-on-the-CPU.patch"
    assert previdence.fix_section(proj.root, patch) == "fsdp_loading"
    lines = previdence.bench_figures(proj.root, proj.pin, patch)
    assert "| rank 1 load rise (MiB) | 229.7 | 0.7 |" in lines
    assert any(line.startswith("Memory (") and "size=60M" in line and "ranks=2" in line for line in lines)
    assert previdence.bench_figures(proj.root, proj.pin, patch, "trainer_best_adapter") == []  # skipped parts show no figure
    # results written before the parts were named after what they measure (fix1/fix2/fix3) still read
    old = json.loads((proj.root / "build" / "bench" / "results.json").read_text())
    old["fix2"] = old.pop("fsdp_loading")
    (proj.root / "build" / "bench" / "results.json").write_text(json.dumps(old))
    assert "| rank 1 load rise (MiB) | 229.7 | 0.7 |" in previdence.bench_figures(proj.root, proj.pin, patch)


def test_a_retired_patch_gets_one_line_and_no_draft(proj: Project, capsys):
    from headroom.sources import series

    assert series.load_retired(proj.root, "toypkg") == ()  # no file: no retired patch
    shutil.copyfile(RETIRED, proj.patches / "retired.toml")
    assert proj.run("apply") == 0  # the series folder holds the record, and still applies
    (gone,) = series.load_retired(proj.root, "toypkg")
    assert gone.retired_in == "toypkg 1.1.0" and gone.last_commit.startswith("0123456789ab")
    line = ("toypkg/0006 is retired: toypkg 1.1.0 made it unnecessary (load() frees the staging cache itself); "
            "last carried in 0123456789ab. Nothing to draft.")
    for spec in ("toypkg/0006", "toypkg/6", "toypkg/0006-memory-drop-the-cache-after-a-load",
                 "toypkg/0006-memory-drop-the-cache-after-a-load.patch"):
        with pytest.raises(errors.RetiredPatch) as exc:
            pr.select(proj.root, spec)
        assert str(exc.value) == line
    capsys.readouterr()
    assert proj.run("pr", "toypkg/0006") == errors.RetiredPatch.exit_code == 21  # not 2: that is a usage error
    err = capsys.readouterr().err
    assert line in err and "Traceback" not in err
    assert not (proj.root / "build" / "pr").exists()
    assert pr.select(proj.root, "toypkg/0002")[1].name == "0002-memory-stage-loads-on-the-CPU.patch"  # carried ones still


def test_retired_records_are_validated(proj: Project):
    from headroom.sources import series

    target = proj.patches / "retired.toml"
    text = RETIRED.read_text()
    target.write_text(text.replace("how =", "hwo ="))
    with pytest.raises(errors.SeriesError, match=r"retired\.toml: \[\[retired\]\] #1 has an unknown key 'hwo'. Did you mean 'how'"):
        series.load_retired(proj.root, "toypkg")
    target.write_text(text.replace('last_commit = "0123456789abcdef0123456789abcdef01234567"', 'last_commit = "abc"'))
    with pytest.raises(errors.SeriesError, match="not a 40-hex commit"):
        series.load_retired(proj.root, "toypkg")
    target.write_text(text.replace('found_by = "its behaviour test passes on official toypkg 1.1.0"\n', ""))
    with pytest.raises(errors.SeriesError, match="lacks found_by"):
        series.load_retired(proj.root, "toypkg")
    target.write_text(text + "\n[other]\nx = 1\n")
    with pytest.raises(errors.SeriesError, match="unknown top-level key 'other'"):
        series.load_retired(proj.root, "toypkg")
    # A patch cannot be carried and retired at once.
    target.write_text(text.replace("0006-memory-drop-the-cache-after-a-load.patch", "0002-memory-stage-loads-on-the-CPU.patch"))
    with pytest.raises(errors.SeriesError, match="says is retired"):
        series.load(proj.root, "toypkg")


def test_upstream_links_from_every_trailer(proj: Project):
    retrail(proj, "0002", "Fixes: https://example.invalid/toypkg/issues/1",
            "Fixes: https://elsewhere.invalid/app/issues/43749 (the part in load)\n"
            "Upstream-Issue: https://example.invalid/toypkg/issues/3968 (open: slow loading)\n"
            "Related: https://elsewhere.invalid/app/pull/2154 (same life cycle)")
    checks = make(proj, "toypkg/0002")
    out_dir = proj.root / "build" / "pr" / "0002-memory-stage-loads-on-the-CPU"
    facts = (out_dir / "FACTS.md").read_text()
    assert "| Fixes | https://elsewhere.invalid/app/issues/43749 | the part in load |" in facts
    assert "| Upstream-Issue | https://example.invalid/toypkg/issues/3968 | open: slow loading |" in facts
    assert "| Related | https://elsewhere.invalid/app/pull/2154 | same life cycle |" in facts
    body = (out_dir / "PR.md").read_text()
    assert "Related: https://elsewhere.invalid/app/issues/43749, #3968, https://elsewhere.invalid/app/pull/2154" in body
    assert "Fixes # (issue)" not in body and "ISSUE.md" not in checks["drafts"]  # upstream tracks it: no bug report
    message = git(proj.vendor, "log", "-1", "--format=%B", "pr/memory-stage-loads-on-the-cpu")
    assert "Fixes: https://elsewhere.invalid/app/issues/43749" in message and "Related:" not in message
    assert_facts_match_checks(facts, checks)


def test_an_upstream_that_accepts_generated_descriptions_gets_one(proj: Project, tmp_path):
    data = tmp_path / "pr_data"
    shutil.copytree(PR_DATA, data)
    toml = data / "toypkg.toml"
    toml.write_text(toml.read_text().replace('generated_description = "refused"', 'generated_description = "accepted"'))
    make(proj, "toypkg/0002", data=data)
    out_dir = proj.root / "build" / "pr" / "0002-memory-stage-loads-on-the-CPU"
    body = (out_dir / "PR.md").read_text()
    assert prdraft.FACTS_POINTER not in body
    assert "load() staged on the accelerator by default.\n\nThe new test" in body  # paragraphs stay paragraphs
    assert "| `test_load_stages_on_cpu` | failed | passed |" in body
    assert (out_dir / "FACTS.md").exists()


@pytest.mark.parametrize("name", ["transformers", "peft", "accelerate"])
def test_real_templates_leave_the_description_to_the_person(name):
    """With each real upstream's template and policy, PR.md's description section is the template's own text and
    one line of ours pointing to FACTS.md (plus the Fixes line where the template has no placeholder for it)."""
    from headroom.sources import pins
    from headroom.upkeep.pr import config as prconfig

    config = prconfig.load(name)
    pin = pins.select(pins.load(Path(__file__).resolve().parents[1]), [name])[0]
    message = prdraft.parse_message(f"S\n\nA paragraph of the commit message.\n\nFixes: {pin.repository}/issues/12\n")
    body = prdraft.render_pr(config, pin, message, {"tests": {"status": "not run"}}, [], [], False)
    template = config.template.read_text()
    heading = config.description_after
    section = body.split(heading + "\n", 1)[1]
    section = section.split("\n## ", 1)[0] if name != "peft" else section
    ours = [line for line in section.splitlines() if line.strip() and line.strip() not in template]
    assert ours[0] == prdraft.FACTS_POINTER and "A paragraph" not in body and "Tests:" not in body
    assert all(line == prdraft.FACTS_POINTER or line.startswith(("Fixes #12", "Reviewers for this change:"))
               for line in ours), ours
    assert "- [x]" not in body


def test_bench_section_from_pr_data_and_a_part_run_alone(proj: Project, tmp_path):
    """[bench].sections in pr_data/<name>.toml names the results' section that measures a patch; the figures are
    also read from a part run alone (build/bench/part-<part>/results.json, `make bench PART=prepare`)."""
    from headroom.upkeep.pr import config as prconfig

    config = prconfig.parse('[bench]\nsections = { "0002" = "accelerate_prepare" }\n', tmp_path / "x.toml", "toypkg")
    patch = proj.patches / "0002-memory-stage-loads-on-the-CPU.patch"
    assert config.bench_section(patch.name) == "accelerate_prepare" and config.bench_section("0001-x.patch") is None
    part = proj.root / "build" / "bench" / "part-prepare"
    part.mkdir(parents=True)
    (part / "results.json").write_text(json.dumps({"part": "prepare", "accelerate_prepare": {"cases": [
        {"size": "1B", "ranks": 4, "envs": {"pristine": {"summary": {"rank1_peak_mib": 1663.5}},
                                            "patched": {"summary": {"rank1_peak_mib": 1183.2}}}}]}}))
    lines = previdence.bench_figures(proj.root, proj.pin, patch, config.bench_section(patch.name))
    assert "| rank 1 peak (MiB) | 1,663.5 | 1,183.2 |" in lines
    # the prepare bench compares paths: "official" is the official side, beside "patched" (torch and floor left out)
    (part / "results.json").write_text(json.dumps({"part": "prepare", "accelerate_prepare": {"cases": [
        {"size": "1B", "ranks": 4, "paths": {
            "official": {"summary": {"rank1_peak_mib": 1663.0, "prepare_seconds": 22.19}},
            "patched": {"summary": {"rank1_peak_mib": 1183.7, "prepare_seconds": 9.53}},
            "floor": {"summary": {"rank1_peak_mib": 1182.7, "prepare_seconds": 9.02}}}}]}}))
    lines = previdence.bench_figures(proj.root, proj.pin, patch, "accelerate_prepare")
    assert "| rank 1 peak (MiB) | 1,663.0 | 1,183.7 |" in lines and "| prepare seconds | 22.2 | 9.5 |" in lines
    assert not any("9.0" in line for line in lines)
    assert any("size=1B" in line and "ranks=4" in line for line in lines)
    for bad in ('[bench]\nsections = { "1" = "x" }\n', '[bench]\nsection = {}\n', "bench = 3\n"):
        with pytest.raises(errors.DataError):
            prconfig.parse(bad, tmp_path / "x.toml", "toypkg")


def test_a_torchrun_reproduction_gets_a_free_port(tmp_path, monkeypatch):
    """repro.runs launches `torchrun` scripts with --standalone unless their Run line names a port: torchrun's default
    port (29500) may be another job's (a canary or make test beside it), which made a patched run abort."""
    from headroom.ground import proc
    from headroom.upkeep.pr import repro
    from headroom.proof.testrun import TestEnv

    seen = []
    monkeypatch.setattr(proc, "run", lambda cmd, **kw: seen.append([str(c) for c in cmd]) or proc.Result(cmd, 0, "ok\n"))
    envs = {label: TestEnv(Path("/py"), (), label) for label in ("pristine", "alone")}
    for run_line, expected in (("torchrun --nproc-per-node=2 repro.py", True),
                               ("torchrun --master-port=29555 --nproc-per-node=2 repro.py", False),
                               ("python repro.py", False)):
        script = tmp_path / "script.py"
        script.write_text(f'"""Symptom.\n\nRun: {run_line}\n"""\nprint("ok")\n', encoding="utf-8")
        seen.clear()
        assert repro.runs(script, envs, tmp_path / "work") == {"pristine": "ok", "alone": "ok"}
        assert len(seen) == 2 and all(("--standalone" in cmd) == expected for cmd in seen), seen
        assert all(cmd[-1] == str(tmp_path / "work" / "repro.py") for cmd in seen)


def test_a_stacked_patch_is_proposed_on_the_patch_it_names_in_depends_on(proj: Project):
    """A patch that changes an earlier patch's lines names it in `Depends-on:`: its branch holds both commits (the
    person's), red is measured with the earlier patch applied, and the diff shown is this patch's alone."""
    init = proj.vendor / "src/toypkg/__init__.py"
    init.write_text(init.read_text().replace('"hello, "', '"hello,  "'))
    message = "greet: two spaces\n\nDepends-on: 0005-greet-separate-the-name-with-a-comma.patch"
    git(proj.vendor, "commit", "-q", "-am", message, "--date=@1700000600 +0000")
    assert proj.run("export") == 0
    assert proj.run("apply") == 0
    checks = make(proj, "toypkg/0006")
    assert checks["applies_alone"] == {"status": "passed"}
    assert checks["stacked_on"] == ["0005-greet-separate-the-name-with-a-comma.patch"]
    assert checks["official"] == "toypkg 1.0.0 + 0005"  # what red is measured on, in every table's title
    facts = (proj.root / "build" / "pr" / "0006-greet-two-spaces" / "FACTS.md").read_text()
    assert "propose 0005 first (its own make pr): this change is stacked on it" in facts
    branch = "pr/greet-two-spaces"
    subjects = git(proj.vendor, "log", "--format=%s|%an", "upstream/1.0.0.." + branch).splitlines()
    assert subjects == [f"greet: two spaces|{ME[0]}", f"greet: separate the name with a comma|{ME[0]}"]
    assert "Depends-on" not in git(proj.vendor, "log", "-1", "--format=%B", branch)  # our bookkeeping stays here
    out_dir = proj.root / "build" / "pr" / "0006-greet-two-spaces"
    stacked = ["0001-greet-separate-the-name-with-a-comma.patch", "0002-greet-two-spaces.patch"]
    assert sorted(f.name for f in out_dir.glob("*.patch")) == stacked
    (am,) = [c for c in checks["push_commands"] if " am " in c]
    assert am.endswith(" ".join(f"../../build/pr/0006-greet-two-spaces/{name}" for name in stacked))
    assert [f["path"] for f in checks["diff"]["files"]] == ["src/toypkg/__init__.py"]
    assert all(f["added"] == 1 and f["removed"] == 1 for f in checks["diff"]["files"])  # this patch's line alone


def test_depends_on_must_name_an_earlier_patch(proj: Project):
    fixes = "Fixes: https://example.invalid/toypkg/issues/1\n"
    retrail(proj, "0002", fixes, fixes + "Depends-on: 0005\n")
    with pytest.raises(errors.UsageError, match="Depends-on names 0005-greet-separate-the-name-with-a-comma.patch, "
                                                "which does not come before it"):
        make(proj, "toypkg/0002")
