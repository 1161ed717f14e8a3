"""rebase: carry one upstream's series to a new release, patch by patch, resumably.

``headroom rebase transformers==5.23.0``:

1. downloads the new sdist and official wheel with pip (trust on first use: their
   sha256 are printed, and recorded in vendor/pins.toml only when the rebase finishes);
2. saves what it may change (pins.toml, patches/<name>/, the checkout's HEAD, refs and
   state) under build/rebase/<name>/, so ``rebase-abort`` restores them byte for byte;
3. commits the new pristine tree in vendor/<name> (tag ``upstream/<new version>``, the
   same commit ``apply`` makes) and runs each patch's own tests against the pristine new
   upstream: a patch whose tests already pass there has *landed* (semantically);
4. replays the series with ``git am -3`` on branch ``headroom-rebase``, one patch at a
   time, and prints one row per patch: ``clean``, ``3-way`` (with the range-diff of the
   old and new patch), ``empty`` (the change is already upstream: nothing left to
   carry), ``landed`` or ``conflict`` (it stops, names the files and hunks, and leaves
   the checkout in ``git am`` for you to resolve; ``rebase-continue`` goes on);
5. at the end exports the new series, writes the new pin and re-runs ``apply`` so the
   checkout is canonical.

Patches found ``landed`` are dropped only when confirmed (``--drop`` / ``DROP=``, or a
prompt when stdin is a terminal); ``empty`` ones leave no commit, so they are dropped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import archive, checkout, fetch, proc, ui
from . import export as export_mod
from . import pins as pins_mod
from . import series as series_mod
from .errors import CommandFailed, HashMismatch, NotApplied, PatchConflict, PinsError, UnsavedWork, UsageError
from .fsutil import atomic_write, atomic_write_json, cache_dir, sha256_file
from .pins import Pin
from .vcs import Repo, date_env

REBASE_DIR = Path("build") / "rebase"
BRANCH = "headroom-rebase"
STATE = "state.json"
AM = ["am", "--committer-date-is-author-date", "--keep-non-patch"]


# --------------------------------------------------------------------------- landed check

@dataclass(frozen=True)
class TestEnv:
    """Where a patch's tests run against the pristine new upstream."""

    python: Path
    pythonpath: tuple[Path, ...]
    label: str


# (root, new pin, pristine new tree, official new wheel) -> an environment, or None: "not run"
EnvFactory = Callable[[Path, Pin, Path, Path], "TestEnv | None"]
# (folder holding the test files, the files relative to it, environment) -> {test id: outcome}
Runner = Callable[[Path, list[str], TestEnv], dict[str, str]]


def source_env(root: Path, pin: Pin, tree: Path, wheel: Path) -> TestEnv:
    """The pristine source tree on PYTHONPATH (src layout or flat); for pure-Python upstreams."""
    src = tree / "src"
    return TestEnv(Path(sys.executable), (src if src.is_dir() else tree,), f"{pin.name} {pin.version} source tree")


def wheel_env(root: Path, pin: Pin, tree: Path, wheel: Path) -> TestEnv | None:
    """build/envs/pristine (made by `make test`) with the new official wheel installed over it."""
    from . import envs

    py = envs.python(root, "pristine")
    if not py.exists():
        ui.warn("no build/envs/pristine (run `make test` once): the landed check is not run")
        return None
    overlay = root / REBASE_DIR / pin.name / f"overlay-{pin.version}"
    if not overlay.exists():
        proc.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps", "--target",
                  overlay, wheel], what=f"pip install {wheel.name} (overlay)")
    return TestEnv(py, (overlay,), f"official {wheel.name} over build/envs/pristine")


def pytest_runner(workdir: Path, files: list[str], env: TestEnv) -> dict[str, str]:
    from . import proof

    (workdir / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    junit = workdir / "junit.xml"
    result = proc.run(
        [env.python, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-c", workdir / "pytest.ini",
         "--rootdir", workdir, f"--junitxml={junit}", *files],
        cwd=workdir, env={**proof.OFFLINE_ENV, "PYTHONPATH": os.pathsep.join(str(p) for p in env.pythonpath)},
        check=False, what=f"pytest ({env.label})",
    )
    (workdir / "pytest.log").write_text(result.output, encoding="utf-8")
    return proof._junit(junit)


def is_landed(outcomes: dict[str, str]) -> bool:
    return bool(outcomes) and "failed" not in outcomes.values() and "passed" in outcomes.values()


# --------------------------------------------------------------------------- helpers

def rebase_dir(root: Path, name: str) -> Path:
    return root / REBASE_DIR / name


def _load_state(root: Path, name: str) -> dict | None:
    path = rebase_dir(root, name) / STATE
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _save_state(root: Path, state: dict) -> None:
    atomic_write_json(rebase_dir(root, state["name"]) / STATE, state)


def parse_requirement(text: str) -> tuple[str, str]:
    m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([0-9][A-Za-z0-9.+!_-]*)\s*", text or "")
    if not m:
        raise UsageError(f"give the upstream and its new version as NAME==VERSION (e.g. transformers==5.23.0), not {text!r}.")
    return m.group(1), m.group(2)


def _find_pin(pins: list[Pin], name: str) -> Pin:
    for p in pins:
        if p.name == name or p.distribution == name:
            return p
    return pins_mod.select(pins, [name])[0]  # raises with a "did you mean"


def match_patches(tokens: list[str], names: list[str], upstream: str) -> list[str]:
    """Patch file names meant by ``tokens`` (``0002``, ``2``, ``toypkg/0002``, a stem or a file name)."""
    out = []
    for raw in tokens:
        t = raw.strip().removeprefix(f"{upstream}/")
        if not t:
            continue
        hits = [n for n in names if t in (n, n.removesuffix(".patch")) or n.startswith(f"{t}-")
                or (t.isdigit() and n.startswith(f"{int(t):04d}-"))]
        if len(hits) != 1:
            raise UsageError(f"--drop {raw!r} matches {len(hits)} patch(es) of patches/{upstream}/; "
                             f"name one of: {', '.join(n[:4] for n in names)} (or the file name).")
        if hits[0] not in out:
            out.append(hits[0])
    return out


def _split(values: list[str] | None) -> list[str]:
    return [t for v in values or [] for t in v.split(",") if t.strip()]


# --------------------------------------------------------------------------- download (trust on first use)

def download_new(pin: Pin, version: str) -> Pin:
    """pip-download the new sdist and wheel without hashes, print and cache them; return the new pin."""
    files: dict[str, tuple[str, str]] = {}
    tmp_root = cache_dir() / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    for kind in ("sdist", "wheel"):
        with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
            out = Path(tmp) / "out"
            binary = ["--no-binary", ":all:"] if kind == "sdist" else ["--only-binary", ":all:"]
            result = proc.run([sys.executable, "-m", "pip", "download", "--no-deps", *binary, "--disable-pip-version-check",
                               f"{pin.distribution}=={version}", "-d", out],
                              what=f"pip download {pin.distribution}=={version} ({kind})", check=False)
            got = sorted(out.iterdir()) if out.exists() else []
            if result.returncode != 0 or len(got) != 1:
                sys.stderr.write(result.output[-10000:])
                raise CommandFailed(f"could not download {pin.distribution}=={version} ({kind}) with pip; its output is "
                                    "above. Check the version exists on the index (pip index versions "
                                    f"{pin.distribution}) and the machine's pip settings.")
            f = got[0]
            if kind == "sdist" and not f.name.endswith((".tar.gz", ".zip")) or kind == "wheel" and not f.name.endswith(".whl"):
                raise HashMismatch(f"pip returned {f.name} for the {kind} of {pin.distribution}=={version}; not a {kind}.")
            digest = sha256_file(f)
            target = cache_dir() / "sha256" / digest / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(f), target)
            files[kind] = (f.name, digest)
            ui.info(f"{f.name}: sha256 {digest} (trust on first use: recorded in vendor/pins.toml when the rebase finishes)")
    tag = pin.tag.replace(pin.version, version) if pin.version in pin.tag else f"v{version}"
    new = dataclasses.replace(pin, version=version, sdist=files["sdist"][0], sdist_sha256=files["sdist"][1],
                              wheel=files["wheel"][0], wheel_sha256=files["wheel"][1], tag=tag)
    for kind in ("sdist", "wheel"):
        fetch.fetch(new, kind)  # the second lock: the cached copy has the hash we print
    return new


def write_pin(root: Path, new: Pin) -> None:
    """Record ``new`` in vendor/pins.toml, keeping the other pins, comments and layout as they are."""
    path = root / pins_mod.PINS_FILE
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    out, inside = [], False
    for line in lines:
        header = re.match(r"^\s*\[([^\]]+)\]\s*(#.*)?$", line)
        if header:
            inside = header.group(1).strip() == new.name
        elif inside:
            m = re.match(r'^(\s*)([a-z0-9_]+)(\s*=\s*)"[^"]*"(.*)$', line.rstrip("\n"))
            if m and hasattr(new, m.group(2)) and m.group(2) != "name":
                line = f'{m.group(1)}{m.group(2)}{m.group(3)}"{getattr(new, m.group(2))}"{m.group(4)}\n'
        out.append(line)
    candidate = "".join(out)
    try:
        parsed = pins_mod.parse(candidate, path)
    except PinsError:
        parsed = []
    if new not in parsed:
        candidate = pins_mod.render([new if p.name == new.name else p for p in pins_mod.load(root)])
    atomic_write(path, candidate)


# --------------------------------------------------------------------------- save / restore

def _refs(repo: Repo) -> dict[str, str]:
    out = repo("for-each-ref", "--format=%(objectname) %(refname)")
    return {ref: sha for sha, ref in (line.split(" ", 1) for line in out.splitlines() if line.strip())}


def _save(root: Path, pin: Pin, repo: Repo) -> dict:
    where = rebase_dir(root, pin.name) / "saved"
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    shutil.copyfile(root / pins_mod.PINS_FILE, where / "pins.toml")
    patches = root / series_mod.PATCHES_DIR / pin.name
    if patches.exists():
        shutil.copytree(patches, where / "patches", symlinks=True)
    shutil.copyfile(repo.git_dir / checkout.STATE_FILE, where / checkout.STATE_FILE)
    ok, branch = repo.try_("symbolic-ref", "-q", "HEAD")
    return {"head": repo.head(), "branch": branch.strip() if ok else "", "refs": _refs(repo),
            "patches_existed": patches.exists()}


def _restore(root: Path, state: dict) -> None:
    name = state["name"]
    saved = state["saved"]
    where = rebase_dir(root, name) / "saved"
    dest = root / "vendor" / name
    repo = Repo(dest)
    if repo.am_in_progress():
        repo.try_("am", "--abort")
    if saved["branch"]:
        repo("symbolic-ref", "HEAD", saved["branch"])
    else:
        repo("update-ref", "--no-deref", "HEAD", saved["head"])
    current = _refs(repo)
    for ref in current:
        if ref not in saved["refs"]:
            repo("update-ref", "-d", ref)
    for ref, sha in saved["refs"].items():
        if current.get(ref) != sha:
            repo("update-ref", ref, sha)
    repo("reset", "-q", "--hard", saved["head"])
    repo("clean", "-q", "-f", "-d")  # files the replay created (ignored build outputs are left alone)
    atomic_write(repo.git_dir / checkout.STATE_FILE, (where / checkout.STATE_FILE).read_bytes())
    atomic_write(root / pins_mod.PINS_FILE, (where / "pins.toml").read_bytes())
    patches = root / series_mod.PATCHES_DIR / name
    if patches.exists():
        shutil.rmtree(patches)
    if saved["patches_existed"]:
        shutil.copytree(where / "patches", patches, symlinks=True)


# --------------------------------------------------------------------------- start

def _require_clean_checkout(root: Path, pin: Pin, series: series_mod.Series) -> Repo:
    dest = checkout.vendor_dir(root, pin)
    state = checkout.read_state(dest)
    if state.get("state") != "done" or state.get("key") != checkout.apply_key(pin, series):
        raise NotApplied(f"vendor/{pin.name} is not the applied checkout of patches/{pin.name}/. Run `make apply` "
                         "first (and `make export` before it if the checkout holds work you want to keep).")
    repo = Repo(dest)
    problems = []
    if repo.am_in_progress():
        problems.append("a `git am` is in progress")
    if repo.head() != state.get("head"):
        problems.append("HEAD moved since the last apply (commits not exported?)")
    dirty = repo.is_dirty()
    if dirty:
        problems.append(f"uncommitted edits: {len(dirty)} path(s), e.g. {dirty[0].strip()}")
    if problems:
        raise UnsavedWork(f"vendor/{pin.name} holds work that is not in patches/{pin.name}/; nothing was changed. "
                          f"Record it (`make export`, then `make apply`) or discard it (`make apply FORCE=1`), "
                          "then rebase.", details="\n".join(f"  - {p}" for p in problems))
    return repo


def _import_pristine(root: Path, repo: Repo, new: Pin) -> tuple[str, Path]:
    """Commit the new sdist's tree as apply would (same message and date) and tag it; return (sha, tree)."""
    sdist = fetch.fetch(new, "sdist")
    tree = rebase_dir(root, new.name) / f"pristine-{new.version}"
    if tree.exists():
        shutil.rmtree(tree)
    epoch = archive.extract(sdist, tree, strip_top=True)
    index = repo.git_dir / "headroom-rebase.index"
    env = {"GIT_INDEX_FILE": str(index)}
    try:
        repo("-C", str(tree), f"--git-dir={repo.git_dir}", f"--work-tree={tree}", "add", "-A", "-f", ".", env=env)
        sha_tree = repo("write-tree", env=env).strip()
    finally:
        index.unlink(missing_ok=True)
    message = (f"Import {new.distribution} {new.version} from {new.sdist}\n\n"
               f"Sdist-Sha256: {new.sdist_sha256}\n{checkout.GENERATED}: pristine\n")
    msg_file = repo.git_dir / "headroom-rebase.msg"
    msg_file.write_text(message, encoding="utf-8")
    try:
        commit = repo("commit-tree", sha_tree, "-F", str(msg_file), env=date_env(epoch)).strip()
    finally:
        msg_file.unlink(missing_ok=True)
    repo("tag", "-f", checkout.upstream_tag(new), commit)
    return commit, tree


def _tests_of(repo: Repo, commit: str) -> list[str]:
    added = repo("diff-tree", "--no-commit-id", "--name-only", "--diff-filter=A", "-r", commit).split()
    return [f for f in added if f.startswith("tests/") and f.endswith(".py")]


def _old_pristine_outcomes(root: Path, name: str) -> dict[str, dict[str, str]]:
    """{patch file name: outcomes on the old pristine} from build/report.json's proof section, when present."""
    from . import proof

    try:
        entries = json.loads((root / proof.REPORT).read_text(encoding="utf-8")).get("proof", [])
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return {Path(e["patch"]).name: e.get("pristine", {}).get("outcomes", {}) for e in entries
            if e.get("upstream") == name and "patch" in e}


def _landed_checks(root: Path, repo: Repo, state: dict, new: Pin, tree: Path, env_factory: EnvFactory,
                   runner: Runner) -> dict[str, dict]:
    wheel = fetch.fetch(new, "wheel")
    old_pristine = _old_pristine_outcomes(root, state["name"])
    env: TestEnv | None = None
    made = False
    out: dict[str, dict] = {}
    for name, commit in zip(state["patches"], state["old_commits"]):
        files = _tests_of(repo, commit)
        if not files:
            out[name] = {"verdict": "no tests", "tests": []}
            continue
        if not made:
            env, made = env_factory(root, new, tree, wheel), True
        if env is None:
            out[name] = {"verdict": "not run", "tests": files}
            continue
        work = rebase_dir(root, new.name) / "landed" / Path(name).stem
        if work.exists():
            shutil.rmtree(work)
        for f in files:
            (work / f).parent.mkdir(parents=True, exist_ok=True)
            (work / f).write_bytes(repo("show", f"{commit}:{f}", strip=False).encode("utf-8", "surrogateescape"))
        outcomes = runner(work, files, env)
        from .proof import summarize

        verdict = "landed" if is_landed(outcomes) else "not landed"
        entry = {"verdict": verdict, "tests": files, "outcomes": outcomes, "summary": summarize(outcomes),
                 "env": env.label}
        if verdict == "not landed" and "passed" in outcomes.values():
            # Some of its tests pass upstream now: part of the fix landed (those that were red on the old pristine).
            before = old_pristine.get(name, {})
            now_green = sorted(t for t, o in outcomes.items() if o == "passed" and before.get(t, "failed") == "failed")
            if now_green:
                entry.update(verdict="partly landed", now_passing=now_green,
                             still_failing=sorted(t for t, o in outcomes.items() if o == "failed"))
        out[name] = entry
        ui.info(f"{name}: its tests on pristine {new.version}: {summarize(outcomes)} -> {entry['verdict']}")
        for t in entry.get("now_passing", []):
            ui.info(f"    now passes upstream: {t}")
        for t in entry.get("still_failing", []):
            ui.info(f"    still fails upstream: {t}")
    return out


def _confirm(names: list[str], question: str) -> list[str]:
    if not names or not sys.stdin.isatty():
        return []
    chosen = []
    for n in names:
        answer = input(f"  {question} {n}? [y/N] ").strip().lower()
        if answer in ("y", "yes"):
            chosen.append(n)
    return chosen


def start(root: Path, requirement: str, *, drop: list[str] | None = None, env_factory: EnvFactory = wheel_env,
          runner: Runner = pytest_runner) -> int:
    name, version = parse_requirement(requirement)
    all_pins = pins_mod.load(root)
    pin = _find_pin(all_pins, name)
    if _load_state(root, pin.name):
        raise UsageError(f"a rebase of {pin.name} is already in progress. Go on with `make rebase-continue` "
                         "or undo it with `make rebase-abort`.")
    if version == pin.version:
        raise UsageError(f"{pin.name} is already pinned to {version}; nothing to rebase.")
    series = series_mod.load(root, pin.name)
    names = [p.name for p in series.patches]
    drops = match_patches(_split(drop), names, pin.name)
    repo = _require_clean_checkout(root, pin, series)
    ui.step("rebase", f"{pin.name} {pin.version} -> {version}: download (trust on first use)")
    new = download_new(pin, version)
    old_state = checkout.read_state(repo.path)
    state = {
        "name": pin.name, "old": dataclasses.asdict(pin), "new": dataclasses.asdict(new), "patches": names,
        "old_commits": old_state["commits"][1 : 1 + len(names)], "next": 0, "results": [], "drop": drops,
        "phase": "starting",
    }
    state["saved"] = _save(root, pin, repo)
    _save_state(root, state)
    ui.step("rebase", f"pristine {new.version} -> tag {checkout.upstream_tag(new)} in vendor/{pin.name}")
    _, tree = _import_pristine(root, repo, new)
    ui.step("rebase", f"each patch's own tests on pristine {new.version} (landed?)")
    state["landed"] = _landed_checks(root, repo, state, new, tree, env_factory, runner)
    landed = [n for n in names if state["landed"][n]["verdict"] == "landed" and n not in drops]
    state["drop"] = drops + _confirm(landed, "its tests pass on the pristine new upstream: drop")
    repo("checkout", "-q", "-f", "-B", BRANCH, checkout.upstream_tag(new))
    state["phase"] = "replaying"
    _save_state(root, state)
    return _replay(root, state)


# --------------------------------------------------------------------------- replay

def _row(result: dict) -> None:
    extra = f"  ({result['detail']})" if result.get("detail") else ""
    ui.info(f"{result['patch']:<60} {result['status']}{extra}")


RANGE_DIFF_LINES = 40


def _verdict_text(ev: dict) -> str:
    return {"not landed": "still needed", "partly landed": "partly landed (carry only what is still missing)",
            "landed": "landed"}.get(ev.get("verdict", ""), ev.get("verdict", ""))


def _show_range_diff(result: dict, new: Pin) -> None:
    """The range-diff of old and new patch, at most RANGE_DIFF_LINES lines (all of it is in the JSON report)."""
    lines = result.get("range_diff", "").splitlines()
    for line in lines[:RANGE_DIFF_LINES]:
        ui.info(f"    {line}")
    if len(lines) > RANGE_DIFF_LINES:
        ui.info(f"    ... {len(lines) - RANGE_DIFF_LINES} more lines: the whole range-diff is in "
                f"{REBASE_DIR}/{new.name}-{new.version}.json")


def _unmerged(repo: Repo) -> list[str]:
    return [f for f in repo("diff", "--name-only", "--diff-filter=U").splitlines() if f.strip()]


def _patch_hunks(patch: Path) -> dict[str, list[str]]:
    hunks: dict[str, list[str]] = {}
    current = None
    for line in patch.read_text(encoding="utf-8", errors="replace").splitlines():
        m = re.match(r"^diff --git a/(\S+) b/(\S+)", line)
        if m:
            current = m.group(2)
            hunks.setdefault(current, [])
        elif current and line.startswith("@@ "):
            hunks[current].append(line)
    return hunks


def _markers(path: Path) -> list[str]:
    regions, begin = [], None
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return regions
    for i, line in enumerate(lines, 1):
        if line.startswith("<<<<<<< "):
            begin = i
        elif line.startswith(">>>>>>> ") and begin is not None:
            regions.append(f"lines {begin}-{i}")
            begin = None
    return regions


def conflict_report(repo: Repo, patch: Path, err: str) -> tuple[list[str], str]:
    files = _unmerged(repo)
    hunks = _patch_hunks(patch)
    lines = []
    if files:
        for f in files:
            where = ", ".join(_markers(repo.path / f)) or "no markers (deleted or binary on one side)"
            lines.append(f"  {f}: conflict markers at {where}")
            for h in hunks.get(f, []):
                lines.append(f"      patch hunk {h}")
    else:
        files = checkout._failing_files(repo, patch) or sorted(hunks)
        for f in files:
            lines.append(f"  {f}: does not apply")
            for h in hunks.get(f, []):
                lines.append(f"      patch hunk {h}")
        lines.append(checkout._hunk_lines(err))
    return files, "\n".join(lines).rstrip()


def _range_diff(repo: Repo, old: str, new: str) -> str:
    ok, out = repo.try_("range-diff", "--no-color", f"{old}^..{old}", f"{new}^..{new}")
    return out if ok else f"(range-diff failed: {out.strip()})"


def _replay(root: Path, state: dict) -> int:
    name = state["name"]
    new = Pin(**state["new"])
    repo = Repo(root / "vendor" / name)
    saved_patches = rebase_dir(root, name) / "saved" / "patches"
    ui.step("rebase", f"replay patches/{name}/ on {checkout.upstream_tag(new)} (git am -3)")
    while state["next"] < len(state["patches"]):
        i = state["next"]
        pname = state["patches"][i]
        patch = saved_patches / pname
        landed = state["landed"].get(pname, {})
        is_l = landed.get("verdict") == "landed"
        result = {"patch": pname, "status": "", "detail": ""}
        if pname in state["drop"]:
            textual = "applies clean" if repo.try_("apply", "--check", str(patch))[0] else "does not apply as is"
            result.update(status="landed" if is_l else "dropped",
                          detail=f"dropped as confirmed; {textual}" + (f"; tests on pristine: {landed['summary']}" if is_l else ""))
        else:
            before = repo.head()
            clean = repo.try_("apply", "--check", str(patch))[0]
            ok, out = repo.try_(*AM, "--no-3way" if clean else "--3way", str(patch))
            if not ok and clean:  # apply --check said yes, am said no: let the merge try
                repo.try_("am", "--abort")
                clean = False
                ok, out = repo.try_(*AM, "--3way", str(patch))
            if ok and repo.head() == before:
                result.update(status="empty", detail="git am: no changes, the new upstream already has them")
            elif ok:
                result["status"] = "clean" if clean else "3-way"
                result["commit"] = repo.head()
                if not clean:
                    result["range_diff"] = _range_diff(repo, state["old_commits"][i], repo.head())
            elif "Patch is empty" in out or "patch is empty" in out.lower():
                repo("am", "--skip")
                result.update(status="empty", detail="git am: the patch is empty")
            else:
                files, report = conflict_report(repo, patch, out)
                state["phase"] = "conflict"
                state["conflict"] = {"patch": pname, "before": before, "files": files}
                _save_state(root, state)
                result.update(status="conflict", detail=", ".join(files))
                _row(result)
                num = pname[:4]
                hint = ""
                if landed.get("verdict") == "partly landed":
                    hint = (f" Part of it landed upstream: on pristine {new.version} its tests give {landed['summary']} "
                            f"(now passing: {', '.join(t.rsplit('::', 1)[-1] for t in landed['now_passing'])}; still "
                            f"failing: {', '.join(t.rsplit('::', 1)[-1] for t in landed['still_failing'])}): keep what "
                            "upstream did and carry only what is still missing.")
                if is_l:
                    hint = (f" Its own tests already pass on pristine {new.version} ({landed['summary']}): it has "
                            f"landed upstream; dropping it is likely right: `make rebase-continue DROP={num}`.")
                raise PatchConflict(
                    f"patches/{name}/{pname} conflicts with {new.distribution} {new.version}; vendor/{name} is stopped "
                    f"in `git am` on branch {BRANCH}.{hint} Resolve it: cd vendor/{name}; fix the files listed below "
                    f"(conflict markers); git add them; then `make rebase-continue`. Or drop this patch: "
                    f"`make rebase-continue DROP={num}`. Or undo everything: `make rebase-abort`.",
                    details=report,
                )
            if is_l and result["status"] in ("clean", "3-way"):
                result["detail"] = (f"applies {result['status']}, but its tests pass on pristine {new.version} "
                                    f"({landed['summary']})")
                result["textual"] = result["status"]
                result["status"] = "landed"
        _row(result)
        _show_range_diff(result, new)
        state["results"].append(result)
        state["next"] = i + 1
        state["phase"] = "replaying"
        state.pop("conflict", None)
        _save_state(root, state)
    return _finish(root, state)


def _finish(root: Path, state: dict) -> int:
    name = state["name"]
    new = Pin(**state["new"])
    old = Pin(**state["old"])
    results = state["results"]
    ui.step("rebase", f"{name} {old.version} -> {new.version}: summary")
    for r in results:
        _row(r)
        ev = state["landed"].get(r["patch"], {})
        if ev.get("summary"):
            ui.info(f"    its tests on pristine {new.version}: {ev['summary']} -> {_verdict_text(ev)}")
        for t in ev.get("now_passing", []):
            ui.info(f"      now passes upstream: {t.rsplit('::', 1)[-1]}")
        for t in ev.get("still_failing", []):
            ui.info(f"      still fails upstream: {t.rsplit('::', 1)[-1]}")
    kept_landed = [r for r in results if r["status"] == "landed" and r.get("commit")]
    for r in results:
        ev = state["landed"].get(r["patch"], {})
        if r["status"] == "empty":
            ui.info(f"dropped {r['patch']}: empty on {new.version} ({r['detail']})")
        elif r["status"] == "landed" and not r.get("commit"):
            ui.info(f"dropped {r['patch']}: landed ({ev.get('summary')} on {ev.get('env')})")
    for r in kept_landed:
        ui.warn(f"{r['patch']} looks landed ({r['detail']}) but was kept (not confirmed). To drop it later: "
                f"`make rebase-abort` now and `make rebase PIN={new.distribution}=={new.version} DROP={r['patch'][:4]}`, "
                f"or remove it from patches/{name}/ after this rebase and `make apply`.")
    by_hand = [r["patch"] for r in results if r["status"] == "conflict" and r.get("commit")]
    for pname in by_hand:
        ui.warn(f"{pname} was resolved by hand: its commit message and tests still describe {old.version}. Review "
                f"them on {new.version} (cd vendor/{name}; git rebase -i {checkout.upstream_tag(new)}; make export), "
                "then `make build test`.")
    # The replay commits become the series (a patch dropped as confirmed was never committed).
    ui.step("rebase", f"export patches/{name}/, pin {new.requirement}, apply")
    export_mod.export(root, new)
    write_pin(root, new)
    ui.info(f"vendor/pins.toml: [{name}] -> {new.version} (sdist sha256 {new.sdist_sha256}, wheel sha256 {new.wheel_sha256})")
    report = {"name": name, "from": old.version, "to": new.version,
              "results": [{k: v for k, v in r.items()} for r in results], "landed": state["landed"]}
    atomic_write_json(root / REBASE_DIR / f"{name}-{new.version}.json", report)
    checkout.apply(root, new)
    shutil.rmtree(rebase_dir(root, name))
    ui.info(f"done: report in {REBASE_DIR}/{name}-{new.version}.json; review and commit vendor/pins.toml and patches/{name}/")
    return 0


# --------------------------------------------------------------------------- continue / abort

def _in_progress(root: Path, name: str | None) -> dict:
    base = root / REBASE_DIR
    found = sorted(p.name for p in base.iterdir() if (p / STATE).exists()) if base.exists() else []
    if name:
        found = [n for n in found if n == name]
    if not found:
        raise UsageError("no rebase in progress. Start one with `make rebase PIN=name==version`.")
    if len(found) > 1:
        raise UsageError(f"rebases of {', '.join(found)} are in progress: choose one with --only NAME (ONLY=NAME).")
    state = _load_state(root, found[0])
    assert state is not None
    return state


def _staged_markers(repo: Repo) -> list[str]:
    bad = []
    for f in repo("diff", "--cached", "--name-only").splitlines():
        if f.strip() and _markers(repo.path / f):
            bad.append(f)
    return bad


def resume(root: Path, name: str | None = None, *, drop: list[str] | None = None) -> int:
    state = _in_progress(root, name)
    name = state["name"]
    state["drop"] = list(dict.fromkeys(state["drop"] + match_patches(_split(drop), state["patches"], name)))
    repo = Repo(root / "vendor" / name)
    if state["phase"] == "starting":
        raise UsageError(f"the rebase of {name} stopped before the replay began. Undo it with `make rebase-abort` "
                         "and start again.")
    if state["phase"] == "conflict":
        conflict = state["conflict"]
        pname = conflict["patch"]
        landed = state["landed"].get(pname, {})
        result = {"patch": pname}
        if pname in state["drop"]:
            if repo.am_in_progress():
                repo("am", "--skip")
            elif repo.head() != conflict["before"]:
                repo("reset", "-q", "--hard", conflict["before"])
            is_l = landed.get("verdict") == "landed"
            result.update(status="landed" if is_l else "dropped",
                          detail="conflicted; dropped as confirmed" + (f"; tests on pristine: {landed['summary']}" if is_l else ""))
        elif repo.am_in_progress():
            left = _unmerged(repo)
            marked = _staged_markers(repo)
            if left or marked:
                raise PatchConflict(
                    f"{pname} is not resolved yet in vendor/{name}. Fix the files, `git add` them, then "
                    f"`make rebase-continue` (or drop it: `make rebase-continue DROP={pname[:4]}`).",
                    details="\n".join([f"  unmerged: {f}" for f in left] + [f"  still has conflict markers: {f}" for f in marked]),
                )
            ok, out = repo.try_("am", "--continue")
            if not ok:
                if "No changes" in out or "nothing" in out.lower():
                    repo("am", "--skip")
                    result.update(status="empty", detail="resolved to no change")
                else:
                    raise PatchConflict(f"git am --continue failed in vendor/{name}; fix what it says, then "
                                        "`make rebase-continue` again.", details=out)
            else:
                result.update(status="conflict", detail="resolved by hand", commit=repo.head())
        else:  # resolved (or skipped) with git am directly
            if repo.head() == conflict["before"]:
                result.update(status="dropped", detail="skipped in git am")
            else:
                result.update(status="conflict", detail="resolved by hand", commit=repo.head())
        if result["status"] == "conflict":
            result["range_diff"] = _range_diff(repo, state["old_commits"][state["next"]], repo.head())
        _row(result)
        _show_range_diff(result, Pin(**state["new"]))
        state["results"].append(result)
        state["next"] += 1
        state["phase"] = "replaying"
        state.pop("conflict", None)
        _save_state(root, state)
    elif repo.am_in_progress():
        raise UnsavedWork(f"vendor/{name} is in `git am` but the rebase did not stop there; finish or abort it "
                          "(git am --abort), then `make rebase-continue`.")
    return _replay(root, state)


def abort(root: Path, name: str | None = None) -> int:
    state = _in_progress(root, name)
    name = state["name"]
    ui.step("rebase-abort", f"{name}: restoring vendor/pins.toml, patches/{name}/ and vendor/{name}")
    _restore(root, state)
    shutil.rmtree(rebase_dir(root, name))
    old = Pin(**state["old"])
    ui.info(f"{name} is back on {old.version}: pins, patches and checkout as before the rebase")
    return 0


# --------------------------------------------------------------------------- command line

def _root(args: argparse.Namespace) -> Path:
    return Path(args.root).resolve()


def _only(args: argparse.Namespace) -> str | None:
    return args.only[0] if getattr(args, "only", None) else None


def _factory(args: argparse.Namespace) -> EnvFactory:
    return source_env if getattr(args, "landed_env", "wheel") == "source" else wheel_env


def cmd_rebase(args: argparse.Namespace) -> int:
    return start(_root(args), args.requirement, drop=args.drop, env_factory=_factory(args))


def cmd_rebase_continue(args: argparse.Namespace) -> int:
    return resume(_root(args), _only(args), drop=args.drop)


def cmd_rebase_abort(args: argparse.Namespace) -> int:
    return abort(_root(args), _only(args))


def add_parsers(sub) -> None:
    r = sub.add_parser("rebase", help="move one upstream's series to a new release (NAME==VERSION)")
    r.add_argument("requirement", help="e.g. transformers==5.23.0")
    r.add_argument("--drop", action="append", metavar="P1,P2", help="drop these patches if found landed/empty (0002, file name)")
    r.add_argument("--landed-env", choices=["wheel", "source"], default="wheel",
                   help="where a patch's tests run for the landed check: the official wheel over build/envs/pristine "
                        "(default) or the pristine source tree on PYTHONPATH")
    r.set_defaults(func=cmd_rebase)
    c = sub.add_parser("rebase-continue", help="go on with a rebase stopped on a conflict")
    c.add_argument("--drop", action="append", metavar="P1,P2", help="drop these patches (e.g. the conflicting one)")
    c.set_defaults(func=cmd_rebase_continue)
    sub.add_parser("rebase-abort", help="undo a rebase: pins, patches and checkout as before").set_defaults(func=cmd_rebase_abort)

