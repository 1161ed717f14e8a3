"""pr: one patch of the series, ready to be proposed upstream (never pushed).

``headroom pr transformers/0001`` makes, for that patch alone:

* branch ``pr/<slug>`` in vendor/<name>, based on ``upstream/<version>`` with only this
  patch (``git am``; made in a temporary worktree, so the checkout's HEAD is untouched);
* build/pr/<patch>/: the ``git format-patch`` file, ``PR.md`` (the upstream's pull
  request template filled with the commit message, the red->green evidence and memory
  figures) and ``checks.json``.

Checks: the patch applies alone on the pristine tag (no hidden dependency on an earlier
patch), its own tests are red on pristine and green with this patch alone (when a test
environment exists; else "not run"), and ruff passes on the changed files with the
upstream's own configuration (when ruff is installed; it is not a dependency).
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from . import checkout, proc, testrun, ui
from . import export as export_mod
from . import pins as pins_mod
from . import series as series_mod
from .errors import CommandFailed, NotApplied, PatchConflict, ProofFailed, UsageError
from .fsutil import atomic_write, atomic_write_json
from .pins import Pin
from .testrun import TestEnv, run_in_env
from .vcs import Repo

PR_DIR = Path("build") / "pr"
BENCH_DIR = Path("build") / "bench"

# (root, pin, pristine tree, tree with the patch alone) -> {"pristine": env, "alone": env}, or None: not run
EnvsFactory = Callable[[Path, Pin, Path, Path], "dict[str, TestEnv] | None"]
Runner = Callable[[Path, list[str], TestEnv], dict[str, str]]


def _src(tree: Path) -> Path:
    return tree / "src" if (tree / "src").is_dir() else tree


def installed_envs(root: Path, pin: Pin, pristine: Path, alone: Path) -> dict[str, TestEnv] | None:
    """build/envs/pristine's python (torch, accelerate, pytest...) with the upstream's source first on PYTHONPATH:
    the pristine tag's tree, then the tree with this patch alone. Both runs import the same kind of build, whatever
    version the environment itself was made for (e.g. just after a rebase)."""
    from . import envs

    py = envs.python(root, "pristine")
    if not py.exists():
        return None
    return {"pristine": TestEnv(py, (_src(pristine),), f"build/envs/pristine + {pin.name} {pin.version} source"),
            "alone": TestEnv(py, (_src(alone),), f"build/envs/pristine + {pin.name} {pin.version} source + this patch")}


def source_envs(root: Path, pin: Pin, pristine: Path, alone: Path) -> dict[str, TestEnv]:
    """This python with each source tree on PYTHONPATH (pure-Python upstreams, and the tests)."""
    py = Path(sys.executable)
    return {"pristine": TestEnv(py, (_src(pristine),), "pristine source"),
            "alone": TestEnv(py, (_src(alone),), "source with this patch alone")}


# --------------------------------------------------------------------------- selection

def select(root: Path, spec: str) -> tuple[Pin, Path]:
    """``transformers/0001`` (or ``transformers/<file name>``) -> (pin, patch file)."""
    if "/" not in spec:
        raise UsageError(f"name the patch as UPSTREAM/NUMBER, e.g. transformers/0001, not {spec!r}.")
    name, which = spec.split("/", 1)
    pin = pins_mod.select(pins_mod.load(root), [name])[0]
    series = series_mod.load(root, pin.name)
    names = [p.name for p in series.patches]
    if not names:
        raise UsageError(f"patches/{pin.name}/ has no patches.")
    (chosen,) = series_mod.match([which], names, pin.name, flag="PATCH")
    return pin, series.folder / chosen


def slug(patch: Path) -> str:
    stem = re.sub(r"^\d{4}-", "", patch.stem)
    return re.sub(r"[^a-z0-9]+", "-", stem.lower()).strip("-")[:60] or "patch"


# --------------------------------------------------------------------------- message

def parse_message(text: str) -> dict:
    """Subject, body paragraphs (trailers removed) and the ``Fixes:`` references of a commit message."""
    lines = text.strip("\n").splitlines()
    subject = lines[0] if lines else ""
    body_lines = lines[1:]
    fixes, keep = [], []
    for line in body_lines:
        m = re.match(r"^(Fixes|Closes|Resolves)\s*:\s*(.+)$", line.strip(), re.IGNORECASE)
        if m:
            fixes.append(m.group(2).strip())
        else:
            keep.append(line)
    body = "\n".join(keep).strip("\n")
    return {"subject": subject, "body": body, "fixes": fixes}


def fixes_line(fixes: list[str], repository: str) -> str:
    if not fixes:
        return "Fixes # (no upstream issue is named in the patch: add one, or remove this line)"
    base = repository.rstrip("/").removesuffix(".git")
    issues, pulls = [], []
    for f in fixes:
        m = re.fullmatch(re.escape(base) + r"/(issues|pull)/(\d+)/?", f)
        if m and m.group(1) == "pull":
            pulls.append(f"#{m.group(2)}")
        else:
            issues.append(f"#{m.group(2)}" if m else f)
    lines = []
    if issues:
        lines.append("Fixes " + ", ".join(issues))
    if pulls:
        lines.append("Fixes # (the patch names a pull request, not an issue: follows up on " + ", ".join(pulls) + ")")
    return "\n".join(lines)


# --------------------------------------------------------------------------- evidence

def proof_entry(root: Path, pin: Pin, patch: Path) -> dict | None:
    for e in testrun.read_report(root).get("proof", []):
        if Path(e.get("patch", "")).name == patch.name and e.get("upstream", pin.name) == pin.name:
            return e
    return None


def _leaves(data: object, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(data, dict):
        return [x for k, v in data.items() for x in _leaves(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(data, list) and all(not isinstance(v, (dict, list)) for v in data):
        return [(prefix, ", ".join(str(v) for v in data))]
    if isinstance(data, list):
        return [x for i, v in enumerate(data) for x in _leaves(v, f"{prefix}[{i}]")]
    return [(prefix, data)]


def fix_section(root: Path, patch: Path) -> str | None:
    """``fixN`` when the commit that added ``patch`` to this repository says "(fix N)" (how bench results are keyed)."""
    try:
        repo = Repo(root)
        subjects = repo("log", "--diff-filter=A", "--format=%s", "--", str(patch.relative_to(root)))
    except (CommandFailed, NotApplied, ValueError):  # not a git repository, git failed, or patch outside root: no mapping
        return None
    for subject in reversed(subjects.splitlines()):
        m = re.search(r"\(fix (\d+)\)", subject)
        if m:
            return f"fix{m.group(1)}"
    return None


_MEMORY_KEY = re.compile(r"(?i)mem|rss|reserved|alloc|peak|rise|bytes|mib|gib")


def _pairs(node: object, path: str = "", ctx: tuple[str, ...] = ()) -> list[tuple[str, str, dict, dict]]:
    """(path, context, pristine, patched) for every dict holding both a "pristine" and a "patched" dict; the
    context is the scalar fields of the enclosing dicts (e.g. a benchmark case's size, ranks and dtype)."""
    out = []
    if isinstance(node, dict):
        here = ctx + tuple(f"{k}={v}" for k, v in node.items()
                           if isinstance(v, (str, int, float)) and not isinstance(v, bool) and len(str(v)) <= 40)
        if isinstance(node.get("pristine"), dict) and isinstance(node.get("patched"), dict):
            out.append((path, ", ".join(here), node["pristine"], node["patched"]))
        for k, v in node.items():
            if k not in ("pristine", "patched"):
                out += _pairs(v, f"{path}.{k}" if path else str(k), here)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _pairs(v, f"{path}[{i}]", ctx)
    return out


def _memory_leaves(side: dict) -> dict[str, object]:
    base = side.get("summary") if isinstance(side.get("summary"), dict) else side
    return {k: v for k, v in _leaves(base) if isinstance(v, (int, float)) and not isinstance(v, bool) and _MEMORY_KEY.search(k)}


def bench_figures(root: Path, pin: Pin, patch: Path, section: str | None = None) -> list[str]:
    """Markdown lines with the memory figures of build/bench/*.json for this patch: pristine vs patched."""
    folder = root / BENCH_DIR
    if not folder.exists():
        return []
    section = section or fix_section(root, patch)
    lines: list[str] = []
    for f in sorted(folder.glob("*.json")):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(data, dict):
            continue
        if section and section in data:
            node, where = data[section], f"{f.name}, {section}"
        elif any(k in json.dumps(data) for k in (patch.stem, patch.name)):
            node, where = data, f.name
        else:
            continue
        for path, label, pristine, patched in _pairs(node):
            title = f"`build/bench/{where}{'.' + path if path else ''}`" + (f" ({label})" if label else "")
            if "skipped" in pristine or "skipped" in patched:
                lines.append(f"- {title}: skipped ({pristine.get('skipped') or patched.get('skipped')})")
                continue
            a, b = _memory_leaves(pristine), _memory_leaves(patched)
            keys = [k for k in a if k in b][:15]
            if not keys:
                continue
            lines += ["", title, "", "| figure | pristine | patched |", "| --- | ---: | ---: |"]
            lines += [f"| {k} | {a[k]} | {b[k]} |" for k in keys]
            lines.append("")
    return lines


# --------------------------------------------------------------------------- checks

def _ruff(alone: Path, files: list[str]) -> dict:
    py_files = [f for f in files if f.endswith(".py") and (alone / f).exists()]
    if not py_files:
        return {"status": "no Python files changed"}
    exe = shutil.which("ruff")
    argv: list[str] | None = [exe] if exe else None
    if argv is None:
        probe = proc.run([sys.executable, "-m", "ruff", "--version"], check=False, quiet=True, what="ruff --version")
        argv = [sys.executable, "-m", "ruff"] if probe.returncode == 0 else None
    if argv is None:
        return {"status": "ruff not installed"}
    config = [c for c in ("ruff.toml", ".ruff.toml", "pyproject.toml") if (alone / c).exists()]
    result = proc.run([*argv, "check", "--no-cache", *py_files], cwd=alone, check=False, what="ruff check")
    return {"status": "passed" if result.returncode == 0 else "failed", "config": config[0] if config else "(ruff defaults)",
            "files": py_files, "output": result.output[-6000:]}


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
        log = where / "pytest.log"
        if log.exists():
            if keep_logs is not None:  # the evidence stays next to PR.md
                keep_logs.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(log, keep_logs / f"pytest-{label}.log")
            out[label]["figures"] = testrun.figures(log.read_text(encoding="utf-8"))
    out["verdict"] = testrun.verdict(out["pristine"]["outcomes"], out["alone"]["outcomes"])
    return out


# --------------------------------------------------------------------------- body

def _outcome_table(pristine: dict[str, str], patched: dict[str, str], right: str) -> list[str]:
    rows = [f"| test | pristine | {right} |", "| --- | --- | --- |"]
    for t in sorted(set(pristine) | set(patched)):
        rows.append(f"| `{t}` | {pristine.get(t, '-')} | {patched.get(t, '-')} |")
    return rows


def render_body(pin: Pin, patch: Path, message: dict, files: list[str], checks: dict, proof: dict | None,
                figures: list) -> str:
    repo_url = pin.repository.rstrip("/").removesuffix(".git")
    tests_added = bool(checks["tests"].get("tests"))
    lines = ["# What does this PR do?", ""]
    lines += [f"**{message['subject']}**", ""]
    if message["body"]:
        lines += [message["body"], ""]
    lines += [fixes_line(message["fixes"], pin.repository), ""]
    lines += ["### Evidence: the new tests fail before this change and pass with it", ""]
    t = checks["tests"]
    if t.get("status") == "run":
        lines += [f"With this patch alone on `{pin.tag}` ({pin.distribution} {pin.version}): **{t['verdict']}**", ""]
        lines += _outcome_table(t["pristine"]["outcomes"], t["alone"]["outcomes"], "with this PR")
        lines.append("")
        for label, right in (("pristine", "pristine"), ("alone", "with this PR")):
            for fig in t[label].get("figures", []):
                lines.append(f"- {right}: {fig}")
        if any(t[label].get("figures") for label in ("pristine", "alone")):
            lines.append("")
    else:
        lines += [f"With this patch alone: {t.get('status')} ({t.get('reason', t.get('verdict', ''))})", ""]
    if proof and proof.get("pristine", {}).get("outcomes"):
        lines += [(f"In the full series (`{proof['patch']}`, build/report.json): **{proof.get('verdict')}**, "
                   f"pristine {proof['pristine'].get('summary')}, patched {proof['patched'].get('summary')}"), ""]
        lines += _outcome_table(proof["pristine"]["outcomes"], proof["patched"].get("outcomes", {}), "patched")
        lines.append("")
        for f in proof.get("figures", []):
            lines.append(f"- {f}")
        if proof.get("figures"):
            lines.append("")
    if figures:
        lines += ["### Memory (build/bench)", ""] + figures + [""]
    lines += ["Files changed: " + ", ".join(f"`{f}`" for f in files), ""]
    lines += [
        "## Before submitting",
        "- [ ] This PR fixes a typo or improves the docs (you can dismiss the other checks if that's the case).",
        f"- [ ] Did you read the [contributor guideline]({repo_url}/blob/main/CONTRIBUTING.md), Pull Request section?",
        "- [ ] Was this discussed/approved via a GitHub issue or the forum? Please add a link to it if that's the case."
        + (" (see the Fixes line above)" if message["fixes"] else ""),
        "- [ ] Did you make sure to update the documentation with your changes?",
        f"- [{'x' if tests_added else ' '}] Did you write any new necessary tests?",
        "",
        "## Who can review?",
        "",
        "Anyone in the community is free to review the PR once the tests have passed. "
        "Tag the maintainers of: " + ", ".join(sorted({_area(f) for f in files if not f.startswith("tests/")}) or ["(tests only)"]),
        "",
    ]
    return "\n".join(lines)


def _area(path: str) -> str:
    parts = Path(path).parts
    if len(parts) >= 3 and parts[0] == "src":
        return "/".join(parts[1:3]).removesuffix(".py")
    return parts[0] if parts else path


# --------------------------------------------------------------------------- push commands

def _norm_url(url: str) -> str:
    """https://host/owner/repo(.git), git@host:owner/repo.git, ssh://git@host/owner/repo -> host/owner/repo."""
    u = url.strip().rstrip("/").removesuffix(".git")
    u = re.sub(r"^[a-z+]+://", "", u)
    u = re.sub(r"^[^@/]+@", "", u)
    if ":" in u.split("/", 1)[0]:
        u = u.replace(":", "/", 1)
    return u.lower()


def push_commands(repo: Repo, pin: Pin, branch: str, out_dir: Path, root: Path, subject: str) -> list[str]:
    """The commands that would propose the patch; empty when no remote is configured."""
    remotes = {}
    for line in repo("remote", "-v").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            remotes.setdefault(parts[0], parts[1])
    if not remotes or not pin.tag:
        return []
    base = _norm_url(pin.repository)
    norm = {n: _norm_url(u) for n, u in remotes.items()}
    upstream = next((n for n, u in norm.items() if u == base), None)
    fork = next((n for n in remotes if n != upstream), None)
    owner_repo = "/".join(base.split("/")[-2:])
    repo_url = pin.repository.rstrip("/").removesuffix(".git")
    vendor = f"vendor/{pin.name}"
    patch_files = sorted(out_dir.glob("*.patch"))
    patch_rel = patch_files[0].relative_to(root) if patch_files else out_dir / "*.patch"
    cmds = []
    if upstream:
        cmds.append(f"git -C {vendor} fetch {upstream} tag {pin.tag} --no-tags")
    else:
        cmds.append(f"git -C {vendor} fetch {repo_url}.git tag {pin.tag} --no-tags")
    cmds.append(f"git -C {vendor} switch -c {branch}-on-{pin.tag} {pin.tag}   # the upstream git tag, not the sdist import")
    cmds.append(f"git -C {vendor} am --3way {Path('../..') / patch_rel}")
    target = fork or "<your-fork-remote>"
    cmds.append(f"git -C {vendor} push {target} {branch}-on-{pin.tag}:{branch}")
    fork_owner = norm[fork].split("/")[-2] if fork and norm[fork].count("/") >= 2 else "<you>"
    title = subject.replace('"', '\\"')
    cmds.append(f'gh pr create --repo {owner_repo} --base main --head {fork_owner}:{branch} '
                f'--title "{title}" --body-file {out_dir.relative_to(root)}/PR.md')
    return cmds


# --------------------------------------------------------------------------- main

def make(root: Path, spec: str, *, envs_factory: EnvsFactory = installed_envs, runner: Runner = run_in_env,
         bench: str | None = None) -> dict:
    pin, patch = select(root, spec)
    dest = checkout.vendor_dir(root, pin)
    if not (dest / ".git").exists():
        raise NotApplied(f"vendor/{pin.name} does not exist. Run `make apply` first.")
    repo = Repo(dest)
    tag = checkout.upstream_tag(pin)
    if not repo.try_("rev-parse", "--verify", "-q", f"refs/tags/{tag}")[0]:
        raise NotApplied(f"vendor/{pin.name} has no tag {tag}. Run `make apply` first.")
    branch = f"pr/{slug(patch)}"
    out_dir = root / PR_DIR / patch.stem
    ui.step("pr", f"{pin.name}/{patch.name} alone on {tag} -> branch {branch}, {out_dir.relative_to(root)}/")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    checks: dict = {"patch": str(patch.relative_to(root)), "base": tag, "branch": branch}
    with tempfile.TemporaryDirectory(prefix="headroom-pr-") as tmp:
        tmpdir = Path(tmp)
        alone, pristine = tmpdir / "alone", tmpdir / "pristine"
        repo("worktree", "add", "-q", "--detach", str(alone), tag)
        repo("worktree", "add", "-q", "--detach", str(pristine), tag)
        try:
            wt = Repo(alone)
            ok, err = wt.try_(*checkout.AM, "--no-3way", str(patch))
            if not ok:
                failing = checkout.failing_files(wt, patch)
                wt.try_("am", "--abort")
                checks["applies_alone"] = {"status": "failed", "files": failing, "git": checkout.hunk_lines(err)}
                atomic_write_json(out_dir / "checks.json", checks)
                raise PatchConflict(
                    f"{patch.relative_to(root)} does not apply alone on {tag}: it depends on an earlier patch of the "
                    "series. Make it self-contained (move the shared change into it, or propose the earlier patch "
                    "first), then `make pr` again.",
                    details="files that fail: " + (", ".join(failing) or "(see git)") + "\n" + checkout.hunk_lines(err),
                )
            commit = wt.head()
            checks["applies_alone"] = {"status": "passed"}
            repo("branch", "-f", branch, commit)
            ui.info(f"branch {branch} -> {commit[:12]} ({tag} + this patch)")
            files = [f for f in repo("diff-tree", "--no-commit-id", "--name-only", "-r", commit).split() if f]
            fp_dir = tmpdir / "fp"
            repo(*export_mod.FORMAT_PATCH, "--start-number=1", "-o", str(fp_dir), "-1", commit)
            (produced,) = fp_dir.iterdir()
            atomic_write(out_dir / produced.name, produced.read_bytes())
            checks["tests"] = _tests_alone(root, pin, repo, commit, pristine, alone, envs_factory, runner, tmpdir,
                                           keep_logs=out_dir)
            checks["ruff"] = _ruff(alone, files)
        finally:
            repo("worktree", "remove", "--force", str(alone))
            repo("worktree", "remove", "--force", str(pristine))
    message = parse_message(repo("log", "-1", "--format=%B", commit))
    proof = proof_entry(root, pin, patch)
    checks["proof_in_series"] = {"verdict": proof.get("verdict")} if proof else {"status": "no build/report.json entry"}
    figures = bench_figures(root, pin, patch, bench)
    body = render_body(pin, patch, message, files, checks, proof, figures)
    atomic_write(out_dir / "PR.md", body)
    cmds = push_commands(repo, pin, branch, out_dir, root, message["subject"])
    checks["push_commands"] = cmds
    atomic_write_json(out_dir / "checks.json", checks)
    t = checks["tests"]
    ui.info(f"applies alone on {tag}: passed")
    ui.info(f"tests alone: {t.get('verdict') if t.get('status') == 'run' else t.get('status')}"
            + (f" (pristine {t['pristine']['summary']}; alone {t['alone']['summary']})" if t.get("status") == "run" else ""))
    ui.info(f"ruff: {checks['ruff']['status']}")
    ui.info(f"wrote {out_dir.relative_to(root)}/PR.md, {produced.name}, checks.json")
    if cmds:
        ui.info("to propose it (nothing was pushed):")
        for c in cmds:
            print(f"    {c}", flush=True)
    else:
        ui.info(f"no git remote in vendor/{pin.name}: add one (git -C vendor/{pin.name} remote add fork <your fork URL>) "
                "to get the push and pull-request commands")
    problems = []
    if t.get("status") == "run" and t["verdict"] != "red->green":
        problems.append(f"its tests alone: {t['verdict']}")
    if checks["ruff"]["status"] == "failed":
        problems.append("ruff check failed (see checks.json)")
    if problems:
        raise ProofFailed(f"{patch.name} is not ready to propose: {'; '.join(problems)}. Fix the patch in vendor/{pin.name}, "
                          f"`make export`, then `make pr PATCH={spec}` again. PR.md was written for review.")
    return checks
