"""pr: one patch of the series, ready to be proposed upstream (never pushed).

``headroom pr transformers/0001`` makes, for that patch alone:

* branch ``pr/<slug>`` in vendor/<name>, based on ``upstream/<version>`` with only this
  patch (``git am``; made in a temporary worktree, so the checkout's HEAD is untouched);
* build/pr/<patch>/: the ``git format-patch`` file, ``PR.md`` (the upstream's pull
  request template, whole; its description left to the person unless the upstream's
  policy in pr_data accepts a generated one), ``FACTS.md`` (what the person cites, every
  figure from this run) and ``checks.json``; ``COMMENT.md`` / ``ISSUE.md`` when the trailers
  call for them.

A retired patch (patches/<name>/retired.toml) gets no draft: one line says which release
made it unnecessary.

Checks: the patch applies alone on the pristine tag (no hidden dependency on an earlier
patch), its own tests are red on pristine and green with this patch alone (when a test
environment exists; else "not run"), and ruff passes on the changed files with the
upstream's own configuration (when ruff is installed; it is not a dependency).
"""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ...ground import proc, ui
from ...ground.errors import IdentityMissing, NotApplied, ProofFailed, RetiredPatch, UsageError
from ...ground.fsutil import atomic_write, atomic_write_json
from ...ground.vcs import Repo
from ...sources import checkout, export as export_mod, lines as lines_mod, pins as pins_mod, series as series_mod
from ...sources.pins import Pin
from ...proof import testrun
from ...proof.testrun import TestEnv, run_in_env, source_root
from . import lint, config as prconfig, draft as prdraft, facts as prfacts, push as prpush, repro, stack
from .evidence import bench_figures, bench_tables, diff_facts, summary_tail

PR_DIR = Path("build") / "pr"

# (root, pin, pristine tree, tree with the patch alone) -> {"pristine": env, "alone": env}, or None: not run
EnvsFactory = Callable[[Path, Pin, Path, Path], "dict[str, TestEnv] | None"]
Runner = Callable[[Path, list[str], TestEnv], dict[str, str]]


def installed_envs(root: Path, pin: Pin, pristine: Path, alone: Path) -> dict[str, TestEnv] | None:
    """build/envs/pristine's python (torch, accelerate, pytest...) with the upstream's source first on PYTHONPATH:
    the pristine tag's tree, then the tree with this patch alone. Both runs import the same kind of build, whatever
    version the environment itself was made for (e.g. just after a rebase)."""
    from ...proof import envs

    envs_dir = Path("build") / "lines" / pin.folder / "envs" if pin.folder else envs.ENVS_DIR  # the pin's line's
    py = envs.python(root, "pristine", envs_dir)
    if not py.exists():
        return None
    return {"pristine": TestEnv(py, (source_root(pristine),), f"{envs_dir}/pristine + {pin.name} {pin.version} source"),
            "alone": TestEnv(py, (source_root(alone),),
                             f"{envs_dir}/pristine + {pin.name} {pin.version} source + this patch")}


def source_envs(root: Path, pin: Pin, pristine: Path, alone: Path) -> dict[str, TestEnv]:
    """This python with each source tree on PYTHONPATH (pure-Python upstreams, and the tests)."""
    py = Path(sys.executable)
    return {"pristine": TestEnv(py, (source_root(pristine),), "pristine source"),
            "alone": TestEnv(py, (source_root(alone),), "source with this patch alone")}


# --------------------------------------------------------------------------- selection

def line_pin(root: Path, name: str, line: str | None = None) -> Pin:
    """The pin of upstream ``name`` that `make pr` proposes from: the named release line's (LINE=), else the original
    line's (vendor/lines.toml: the newest, closest to upstream's main), else the first line that pins it."""
    lines = lines_mod.select(lines_mod.load(root), line)
    carrying = [ln for ln in lines if ln.carries(name)]
    if not carrying:
        pins_mod.select([p for ln in lines_mod.load(root) for p in ln.pins], [name])  # unknown: names the known ones
        raise UsageError(f"the {line} line does not pin {name}; the lines that do: "
                         + ", ".join(ln.name for ln in lines_mod.load(root) if ln.carries(name)) + ".")
    chosen = next((ln for ln in carrying if ln.original), carrying[0])
    return next(p for p in chosen.pins if p.name == name)


def select(root: Path, spec: str, line: str | None = None) -> tuple[Pin, Path]:
    """``transformers/0001`` (or ``transformers/<file name>``) -> (pin, patch file), from ``line`` (:func:`line_pin`)."""
    if "/" not in spec:
        raise UsageError(f"name the patch as UPSTREAM/NUMBER, e.g. transformers/0001, not {spec!r}.")
    name, which = spec.split("/", 1)
    pin = line_pin(root, name, line)
    series = series_mod.load(root, pin.name, pin.line)
    names = [p.name for p in series.patches]
    if not series_mod.hits_for(which, names, pin.name):
        # Not carried: a retired patch gets one line saying why, and no draft
        retired = series_mod.load_retired(root, pin.name)
        gone = [r for r in retired if r.patch in series_mod.hits_for(which, [r.patch for r in retired], pin.name)]
        if len(gone) == 1:
            raise RetiredPatch(gone[0].line(pin.name))
    if not names:
        raise UsageError(f"patches/{pin.name}/ has no patches.")
    (chosen,) = series_mod.match([which], names, pin.name, flag="PATCH")
    return pin, series.folder / chosen


def subject_slug(subject: str) -> str:
    """The whole subject as a file name (patch file names cut it): names the patch's reproduction script."""
    return re.sub(r"[^a-z0-9]+", "-", subject.lower()).strip("-") or "patch"


def slug(patch: Path) -> str:
    stem = re.sub(r"^\d{4}-", "", patch.stem)
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:60] or "patch"


# --------------------------------------------------------------------------- identity

def user_identity(root: Path) -> tuple[str, str]:
    """``git config user.name`` and ``user.email`` of the person running make pr (their own git config)."""
    values = []
    for key in ("user.name", "user.email"):
        result = proc.run(["git", "config", "--get", key], cwd=root, check=False, quiet=True, what=f"git config {key}")
        values.append(result.output.strip() if result.returncode == 0 else "")
    if not all(values):
        raise IdentityMissing("the pull request branch's commit carries your git identity, and git has none: set it "
                              "with `git config --global user.name \"Your Name\"` and `git config --global user.email "
                              "you@example.org`, then `make pr` again.")
    return values[0], values[1]


# --------------------------------------------------------------------------- evidence

def proof_entry(root: Path, pin: Pin, patch: Path) -> dict | None:
    report = testrun.read_report(root)
    entries = report.get("lines", {}).get(pin.line, {}).get("proof") if pin.line else None
    for e in entries if entries is not None else report.get("proof", []):
        if Path(e.get("patch", "")).name == patch.name and e.get("upstream", pin.name) == pin.name:
            return e
    return None


# --------------------------------------------------------------------------- checks

def _tests_alone(root: Path, pin: Pin, repo: Repo, commit: str, pristine: Path, alone: Path,
                 envs_factory: EnvsFactory, runner: Runner, work: Path, keep_logs: Path | None = None) -> dict:
    files = testrun.added_tests(repo, commit)
    if not files:
        return {"status": "no tests", "tests": [], "verdict": "NO TEST (a patch must add its own test under tests/)"}
    envs = envs_factory(root, pin, pristine, alone)
    if envs is None:
        return {"status": "not run", "tests": files,
                "reason": "no test environment (build/envs/pristine); run `make test` once"}
    out: dict = {"status": "run", "tests": files}
    for label in ("pristine", "alone"):
        where = testrun.copy_tests(testrun.from_tree(alone), files, work / f"tests-{label}")
        ui.info(f"running {len(files)} test file(s) on {label} ({envs[label].label})")
        outcomes = runner(where, files, envs[label])
        out[label] = {"outcomes": outcomes, "summary": testrun.summarize(outcomes), "env": envs[label].label}
        junit = where / "junit.xml"
        if junit.exists():
            out[label]["failures"] = testrun.failures(junit)
        log = where / "pytest.log"
        if log.exists():
            log_text = log.read_text(encoding="utf-8")
            out[label]["tail"] = summary_tail(log_text)
            if keep_logs is not None:  # the evidence stays next to PR.md
                keep_logs.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(log, keep_logs / f"pytest-{label}.log")
            out[label]["figures"] = testrun.figures(log_text)
    out["verdict"] = testrun.verdict(out["pristine"]["outcomes"], out["alone"]["outcomes"])
    return out


# --------------------------------------------------------------------------- main

def left_to_you(config: prconfig.PrConfig, pin: Pin, checks: dict, rel: Path, open_pr: dict | None,
                issue_needed: bool) -> list[str]:
    """What only the person can do, per draft, in the order to do it (said on the terminal and in FACTS.md)."""
    out = []
    if checks.get("stacked_on"):
        out.append(f"propose {', '.join(n[:4] for n in checks['stacked_on'])} first (its own make pr): this change is "
                   "stacked on it; its branch holds both commits, and your description says what it builds on")
    if issue_needed:
        out.append(f"open the issue first: read and edit {rel}/ISSUE.md, file it yourself, then link it "
                   + ("in COMMENT.md" if open_pr else "in PR.md's Fixes line"))
    if open_pr:  # a comment on that PR, nothing to push
        out.append(f"read and edit {rel}/COMMENT.md, then post it yourself on {open_pr['url']}"
                   + (" (the command below; make pr never runs it)" if checks.get("push_commands") else ""))
        return out
    if config.person_writes_description:
        heading = config.description_after or "# What does this PR do?"
        out.append(f"write the description yourself in {rel}/PR.md under \"{heading}\" (a few sentences of yours; "
                   f"{pin.name}'s policy on generated descriptions: {config.policy})")
    else:
        out.append(f"read and edit the description in {rel}/PR.md")
    if config.policy_confirm:
        out.append(f"the policy line in PR.md is yours to answer, only if it is true: {config.policy_confirm}")
    out.append("tick the template's other boxes that are true (none is ticked for you)")
    cmds = checks.get("push_commands", [])
    if any("<your-fork-remote>" in c or "<you>:" in c for c in cmds):
        out.append(f"add your fork as a remote of vendor/{pin.name} (git -C vendor/{pin.name} remote add fork <your fork "
                   "URL>) and run make pr again for the exact commands; until then they name <your-fork-remote>")
    if cmds:
        out.append("push the branch and open the pull request yourself with the commands below (make pr never runs them)")
    return out


def make(root: Path, spec: str, *, envs_factory: EnvsFactory = installed_envs, runner: Runner = run_in_env,
         bench: str | None = None, ruff_installer: lint.Installer = lint.pip_install,
         identity: tuple[str, str] | None = None, data: Path = prconfig.DATA, line: str | None = None) -> dict:
    pin, patch = select(root, spec, line)
    config = prconfig.load(pin.name, data)
    if config.path is None:
        ui.warn(f"no pr_data/{pin.name}.toml: a plain draft (no upstream template, no reviewers, no pinned ruff)")
    dest = checkout.vendor_dir(root, pin)
    if not (dest / ".git").exists():
        raise NotApplied(f"{pin.vendor} does not exist. Run `make apply` first.")
    repo = Repo(dest)
    tag = checkout.upstream_tag(pin)
    if not repo.try_("rev-parse", "--verify", "-q", f"refs/tags/{tag}")[0]:
        raise NotApplied(f"{pin.vendor} has no tag {tag}. Run `make apply` first.")
    identity = identity or user_identity(root)
    branch = f"pr/{slug(patch)}"
    out_dir = root / PR_DIR / patch.stem
    ui.step("pr", f"{pin.name}/{patch.name} alone on {tag} -> branch {branch}, {out_dir.relative_to(root)}/")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    checks: dict = {"patch": str(patch.relative_to(root)), "base": tag, "branch": branch,
                    "author": f"{identity[0]} <{identity[1]}>"}
    runs: dict[str, str] = {}
    versions = ""
    deps = stack.stacked_on(root, pin, patch)
    if deps:
        checks["stacked_on"] = [d.name for d in deps]
        ui.info(f"stacked on {', '.join(d.name for d in deps)} (Depends-on): proposed after it, tested against it")
    with tempfile.TemporaryDirectory(prefix="headroom-pr-") as tmp:
        tmpdir = Path(tmp)
        alone, pristine = tmpdir / "alone", tmpdir / "pristine"
        repo("worktree", "add", "-q", "--detach", str(alone), tag)
        repo("worktree", "add", "-q", "--detach", str(pristine), tag)
        try:
            wt = Repo(alone)
            # A stacked patch's base is the tag + the patches it depends on, in both trees: red is measured there
            for dep in deps:
                stack.apply(root, Repo(pristine), dep, tag, checks, out_dir, tmpdir, None)
                stack.apply(root, wt, dep, tag, checks, out_dir, tmpdir, identity)
            base = wt.head()
            message = stack.apply(root, wt, patch, tag, checks, out_dir, tmpdir, identity, deps)
            commit = wt.head()
            checks["applies_alone"] = {"status": "passed"}
            repo("branch", "-f", branch, commit)
            on = f"{tag} + {len(deps)} patch(es) it depends on" if deps else tag
            ui.info(f"branch {branch} -> {commit[:12]} ({on} + this patch, author {checks['author']})")
            files = [f for f in repo("diff-tree", "--no-commit-id", "--name-only", "-r", commit).split() if f]
            fp_dir = tmpdir / "fp"
            # A stacked patch comes with the patches it stands on, numbered in the order they apply
            repo(*export_mod.FORMAT_PATCH, "--start-number=1", "-o", str(fp_dir), *([f"{tag}..{commit}"] if deps
                                                                                     else ["-1", commit]))
            produced = sorted(fp_dir.iterdir())
            for f in produced:
                atomic_write(out_dir / f.name, f.read_bytes())
            checks["tests"] = _tests_alone(root, pin, repo, commit, pristine, alone, envs_factory, runner, tmpdir,
                                           keep_logs=out_dir)
            checks["ruff"] = lint.run(root, config, alone, files, ruff_installer)
            test_files = {f: (alone / f).read_text(encoding="utf-8") for f in checks["tests"].get("tests", [])}
            source_diff = repo("diff", base, commit, "--", *[f for f in files if not f.startswith("tests/")], strip=False)
            checks["diff"] = diff_facts(repo, base, commit, tmpdir)
            issues = prdraft.upstream_issues(message, pin.repository)
            issue_needed = not issues
            script = config.repro_script(subject_slug(message["subject"]))
            if script.exists():  # its real output goes into FACTS.md (and ISSUE.md when one is drafted)
                envs = envs_factory(root, pin, pristine, alone) if checks["tests"].get("status") == "run" else None
                runs = repro.runs(script, envs, tmpdir / "repro")
                versions = repro.versions(pin, envs)
                command = prdraft.run_command(script.read_text(encoding="utf-8"))
                checks["repro"] = {"script": str(script.relative_to(script.parents[3])), "command": command, **runs} \
                    if runs else {"status": f"{script.name}: not run (no test environment)"}
            else:
                checks["repro"] = {"status": f"none in pr_data/{pin.name}/repro/ for this subject"}
        finally:
            repo("worktree", "remove", "--force", str(alone))
            repo("worktree", "remove", "--force", str(pristine))
    checks["upstream"] = {"issues": issues,
                          "issue_none_recorded": message["upstream_issue_none"], "pull_requests": message["upstream_prs"],
                          "links": message["links"]}
    # what the new test was red on: the release, and for a stacked patch the patches it stands on
    checks["official"] = f"{pin.distribution} {pin.version}" + "".join(f" + {d.name[:4]}" for d in deps)
    checks["subject"] = message["subject"]
    checks["commit"] = {"cost_paragraph": prdraft.cost_paragraph(message["body"])}
    checks["policy"] = {"generated_description": config.policy, "quote": config.policy_quote,
                        "source": config.policy_source, "confirm": config.policy_confirm}
    t = checks["tests"]
    checks["figures"] = {"tests": [list(r) for r in prdraft.figure_rows(t.get("pristine", {}).get("figures", []),
                                                                        t.get("alone", {}).get("figures", []))]
                         if t.get("status") == "run" else [],
                         "bench": bench_tables(root, pin, patch, bench or config.bench_section(patch.name))}
    proof = proof_entry(root, pin, patch)
    checks["proof_in_series"] = {"verdict": proof.get("verdict")} if proof else {"status": "no build/report.json entry"}
    areas = config.areas_for([f for f in files if not f.startswith("tests/")])
    checks["reviewers"] = {a.area: list(a.handles) for a in areas}
    written = []
    open_pr = prdraft.open_pr(message)
    if open_pr:
        ui.info(f"upstream PR {open_pr['url']} is open and proposes this fix: COMMENT.md for it instead of a new PR")
        atomic_write(out_dir / "COMMENT.md", prdraft.render_comment(pin, message, checks, open_pr, test_files, source_diff))
        written.append("COMMENT.md")
    else:
        figures = bench_figures(root, pin, patch, tables=checks["figures"]["bench"])
        atomic_write(out_dir / "PR.md", prdraft.render_pr(config, pin, message, checks, figures, areas, issue_needed))
        written.append("PR.md")
    if issue_needed:
        text = script.read_text(encoding="utf-8") if script.exists() else None
        if text is None:
            ui.warn(f"no reproduction script {script}: ISSUE.md asks for one")
        else:
            atomic_write(out_dir / "repro.py", text)
            written.append("repro.py")
        atomic_write(out_dir / "ISSUE.md", prdraft.render_issue(config, pin, message, areas, text, runs, versions))
        written.append("ISSUE.md")
    checks["drafts"] = [*written, "FACTS.md"]
    cmds = prpush.commands(repo, pin, branch, out_dir, root, message["subject"], open_pr, issue_needed)
    checks["push_commands"] = cmds
    checks["left_to_you"] = left_to_you(config, pin, checks, out_dir.relative_to(root), open_pr, issue_needed)
    facts = prfacts.render(checks)
    stray = prfacts.unsourced(facts, checks)
    if stray:  # a figure FACTS.md did not take from checks.json: a bug here, said rather than hidden
        ui.warn(f"FACTS.md holds figures that checks.json does not: {', '.join(stray)}")
    atomic_write_json(out_dir / "checks.json", checks)
    atomic_write(out_dir / "FACTS.md", facts)
    written.append("FACTS.md")
    ui.info(f"applies alone on {tag}: passed")
    ui.info(f"tests alone: {t.get('verdict') if t.get('status') == 'run' else t.get('status')}"
            + (f" (pristine {t['pristine']['summary']}; alone {t['alone']['summary']})" if t.get("status") == "run" else ""))
    r = checks["ruff"]
    ui.info(f"ruff {r['version']} (pinned in {r['pinned_in']}): check {r['check']['status']}, format --check "
            f"{r['format']['status']}" if "version" in r else f"ruff: {r['status']}")
    ui.info(f"reviewers: {prdraft.reviewers_line(areas, config)}")
    ui.info(f"wrote {out_dir.relative_to(root)}/: {', '.join(written)}, {', '.join(f.name for f in produced)}, "
            "checks.json")
    if not repo("remote").strip():
        ui.info(f"no git remote in vendor/{pin.name}: add one (git -C vendor/{pin.name} remote add fork <your fork URL>) "
                "to get the exact commands; below they name <your-fork-remote>")
    ui.info(f"left to you ({out_dir.relative_to(root)}/FACTS.md has what to cite):")
    for item in checks["left_to_you"]:
        print(f"    - {item}", flush=True)
    if cmds:
        ui.info("the commands, to type yourself (nothing was pushed or posted):")
        for c in cmds:
            print(f"    {c}", flush=True)
    problems = []
    if t.get("status") == "run" and t["verdict"] != "red->green":
        problems.append(f"its tests alone: {t['verdict']}")
    if r["status"] == "failed":
        problems.append("ruff failed (see checks.json)")
    if problems:
        raise ProofFailed(f"{patch.name} is not ready to propose: {'; '.join(problems)}. Fix the patch in vendor/{pin.name}, "
                          f"`make export`, then `make pr PATCH={spec}` again. The drafts were written for review.")
    return checks
