"""test: every patch's own tests must fail on pristine and pass on patched.

The test files a patch adds under ``tests/`` are copied out of the checkout (so they run
outside the source tree) and run with pytest in both environments. Verdict per patch:
``red->green`` when pristine has a failing test and patched has none (and passes some).
Then the upstream suites run (``upstream.py``). Results go to build/report.json.
"""

from __future__ import annotations

import json
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

from . import checkout, envs, pins as pins_mod, proc, series as series_mod, ui
from .errors import NotApplied, ProofFailed
from .fsutil import atomic_write_json
from .pins import Pin
from .vcs import Repo

PROOF_DIR = Path("build") / "proof"
REPORT = Path("build") / "report.json"
# Lines a patch's test prints with its measured figures (source lines in tracebacks have braces).
FIGURE = re.compile(r"^[^{}\n]*\b(?:RssAnon rise|memory_reserved|reserved-but-unallocated)\b[^{}\n]*$", re.M)
# The hub is unreachable here: offline, and any stray request fails at once on a closed local port.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_ENDPOINT": "http://127.0.0.1:9",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONPATH": "",
    "PYTHONNOUSERSITE": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}


def patch_tests(root: Path, pin: Pin) -> list[tuple[Path, list[str]]]:
    """(patch file, test files it adds under tests/) for each patch of the series."""
    dest = checkout.vendor_dir(root, pin)
    state = checkout.read_state(dest)
    series = series_mod.load(root, pin.name)
    if state.get("state") != "done" or state.get("key") != checkout.apply_key(pin, series):
        raise NotApplied(f"vendor/{pin.name} does not match patches/{pin.name}/. Run `make apply build` first.")
    repo = Repo(dest)
    commits = state["commits"][1 : 1 + len(series.patches)]
    out = []
    for patch, commit in zip(series.patches, commits):
        added = repo("diff-tree", "--no-commit-id", "--name-only", "--diff-filter=A", "-r", commit).split()
        out.append((patch, [f for f in added if f.startswith("tests/") and f.endswith(".py")]))
    return out


def _junit(path: Path) -> dict[str, str]:
    outcomes: dict[str, str] = {}
    if not path.exists():
        return outcomes
    for case in ET.parse(path).getroot().iter("testcase"):
        node = f"{case.get('classname', '')}::{case.get('name', '')}"
        tags = {child.tag for child in case}
        outcomes[node] = "failed" if tags & {"failure", "error"} else "skipped" if "skipped" in tags else "passed"
    return outcomes


def summarize(outcomes: dict[str, str]) -> str:
    counts = {k: sum(1 for v in outcomes.values() if v == k) for k in ("passed", "failed", "skipped")}
    if not outcomes:
        return "no tests"
    return ", ".join(f"{n} {k}" for k, n in counts.items() if n)


def verdict(pristine: dict[str, str], patched: dict[str, str]) -> str:
    red = any(v == "failed" for v in pristine.values())
    green = patched and not any(v == "failed" for v in patched.values()) and any(v == "passed" for v in patched.values())
    if red and green:
        return "red->green"
    if not red:
        return "NOT RED on pristine (the test proves nothing)"
    return "NOT GREEN on patched"


def run_patch_tests(root: Path, pin: Pin, patch: Path, files: list[str], pythons: dict[str, Path]) -> dict:
    stem = patch.stem
    where = root / PROOF_DIR / pin.name / stem
    if where.exists():
        shutil.rmtree(where)
    vendor = checkout.vendor_dir(root, pin)
    for f in files:
        (where / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(vendor / f, where / f)
    (where / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    entry = {"upstream": pin.name, "patch": str(patch.relative_to(root)), "tests": files}
    figures: list[str] = []
    for env, py in pythons.items():
        junit = root / PROOF_DIR / f"junit-{env}-{pin.name}-{stem}.xml"
        ui.info(f"{patch.name}: running {len(files)} test file(s) on {env}")
        with ui.Timer() as t:
            result = proc.run(
                [py, "-m", "pytest", "-p", "no:cacheprovider", "-rA", "-c", where / "pytest.ini",
                 "--rootdir", where, f"--junitxml={junit}", *files],
                cwd=where, env=OFFLINE_ENV, check=False, what=f"pytest ({env})",
            )
        (root / PROOF_DIR / f"{env}-{pin.name}-{stem}.log").write_text(result.output, encoding="utf-8")
        outcomes = _junit(junit)
        if not outcomes:
            raise ProofFailed(
                f"{patch.name}: pytest collected nothing on {env} (exit {result.returncode}); see "
                f"build/proof/{env}-{pin.name}-{stem}.log"
            )
        entry[env] = {"outcomes": outcomes, "summary": summarize(outcomes), "exit": result.returncode,
                      "seconds": round(t.seconds, 1)}
        for line in FIGURE.findall(result.output):
            figures.append(f"{env}: {line.strip()}")
    entry["figures"] = sorted(set(figures))
    entry["verdict"] = verdict(entry["pristine"]["outcomes"], entry["patched"]["outcomes"])
    return entry


def write_report(root: Path, section: str, data: object) -> None:
    path = root / REPORT
    report = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    report[section] = data
    atomic_write_json(path, report)


def _table(entries: list[dict]) -> None:
    rows = [("patch", "pristine", "patched", "verdict")]
    rows += [(f"{e['upstream']}/{Path(e['patch']).name[:48]}", e["pristine"]["summary"], e["patched"]["summary"],
              e["verdict"]) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, r in enumerate(rows):
        print("  " + " | ".join(c.ljust(w) for c, w in zip(r, widths)), flush=True)
        if i == 0:
            print("  " + "-+-".join("-" * w for w in widths))


def prove(root: Path, pins: list[Pin], pythons: dict[str, Path]) -> list[dict]:
    entries = []
    for pin in pins:
        for patch, files in patch_tests(root, pin):
            if not files:
                entries.append({"upstream": pin.name, "patch": str(patch.relative_to(root)), "tests": [],
                                "pristine": {"summary": "no tests"}, "patched": {"summary": "no tests"},
                                "verdict": "NO TEST (a patch must add its own test under tests/)", "figures": []})
                continue
            entries.append(run_patch_tests(root, pin, patch, files, pythons))
    return entries


def run(root: Path, pins: list[Pin], *, upstream: str = "default", tinyhub: bool = True) -> int:
    all_pins = pins_mod.load(root)  # the environments hold every pinned upstream, `--only` or not
    ui.step("test", "environments")
    pythons = {}
    for env in ("pristine", "patched"):
        py = envs.ensure(root, env, envs.wheels_for(root, all_pins, env, pins), all_pins)
        envs.check_origin(py, env, root / PROOF_DIR, all_pins, pins)
        pythons[env] = py
    ui.step("test", "each patch's own tests: red on pristine, green on patched")
    entries = prove(root, pins, pythons)
    _table(entries)
    for e in entries:
        for f in e["figures"]:
            ui.info(f"{Path(e['patch']).name[:40]}: {f}")
    write_report(root, "proof", entries)
    bad = [e for e in entries if e["verdict"] != "red->green"]
    failures = []
    if bad:
        failures.append("patches not proven: " + "; ".join(f"{e['patch']}: {e['verdict']}" for e in bad))
    if upstream != "none":
        from . import upstream as upstream_mod

        failures += upstream_mod.run(root, pins, pythons, selection=upstream, use_tinyhub=tinyhub)
    ui.info(f"report: {REPORT}")
    if failures:
        raise ProofFailed("; ".join(failures) + ". Logs are under build/proof/ and build/upstream/.")
    return 0
