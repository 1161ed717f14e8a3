"""test: every patch's own tests must fail on pristine and pass on patched.

The test files a patch adds under ``tests/`` are copied out of the checkout (so they run
outside the source tree) and run with pytest in both environments. Verdict per patch:
``red->green`` when pristine has a failing test and patched has none (and passes some).
Then the upstream suites run (``upstream.py``). Results go to build/report.json.
"""

from __future__ import annotations

from pathlib import Path

from ..ground import ui
from ..ground.errors import ProofFailed
from ..sources import checkout, pins as pins_mod
from ..sources.pins import Pin
from . import envs, testrun

PROOF_DIR = Path("build") / "proof"
REPORT = testrun.REPORT


def run_patch_tests(root: Path, pin: Pin, patch: Path, files: list[str], pythons: dict[str, Path]) -> dict:
    stem = patch.stem
    where = testrun.copy_tests(testrun.from_tree(checkout.vendor_dir(root, pin)), files,
                               root / PROOF_DIR / pin.name / stem)
    entry = {"upstream": pin.name, "patch": str(patch.relative_to(root)), "tests": files}
    figures: list[str] = []
    for env, py in pythons.items():
        ui.info(f"{patch.name}: running {len(files)} test file(s) on {env}")
        run = testrun.pytest(py, ["-rA", *files], cwd=where, what=f"pytest ({env})",
                             junit=root / PROOF_DIR / f"junit-{env}-{pin.name}-{stem}.xml",
                             log=root / PROOF_DIR / f"{env}-{pin.name}-{stem}.log")
        outcomes = testrun.outcomes(run.junit)
        if not outcomes:
            raise ProofFailed(
                f"{patch.name}: pytest collected nothing on {env} (exit {run.returncode}); see "
                f"build/proof/{env}-{pin.name}-{stem}.log"
            )
        entry[env] = {"outcomes": outcomes, "summary": testrun.summarize(outcomes), "exit": run.returncode,
                      "seconds": run.seconds, "failures": testrun.failures(run.junit)}
        figures += [f"{env}: {line}" for line in testrun.figures(run.output)]
    entry["figures"] = sorted(set(figures))
    entry["verdict"] = testrun.verdict(entry["pristine"]["outcomes"], entry["patched"]["outcomes"])
    return entry


def _table(entries: list[dict]) -> None:
    rows = [("patch", "pristine", "patched", "verdict")]
    rows += [(f"{e['upstream']}/{Path(e['patch']).name[:48]}", e["pristine"]["summary"], e["patched"]["summary"],
              e["verdict"]) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for i, r in enumerate(rows):
        print("  " + " | ".join(c.ljust(w) for c, w in zip(r, widths)), flush=True)
        if i == 0:
            print("  " + "-+-".join("-" * w for w in widths))


def _not_proven(entry: dict) -> str:
    """The patch, its verdict and, when patched fails, which tests and why: CI shows only the end of the output."""
    text = f"{entry['patch']}: {entry['verdict']}"
    failed = entry.get("patched", {}).get("failures", {})
    if entry["verdict"].startswith("NOT GREEN") and failed:
        text += " (" + "; ".join(f"{node.rsplit('::', 1)[-1]}: {why}" for node, why in failed.items()) + ")"
    return text


def prove(root: Path, pins: list[Pin], pythons: dict[str, Path]) -> list[dict]:
    entries = []
    for pin in pins:
        for patch, files in testrun.series_tests(root, pin):
            if not files:
                entries.append({"upstream": pin.name, "patch": str(patch.relative_to(root)), "tests": [],
                                "pristine": {"summary": "no tests"}, "patched": {"summary": "no tests"},
                                "verdict": "NO TEST (a patch must add its own test under tests/)", "figures": []})
                continue
            entries.append(run_patch_tests(root, pin, patch, files, pythons))
    return entries


def run(root: Path, pins: list[Pin], *, upstream: str = "default", tinyhub: bool = True, jobs: str = "1") -> int:
    all_pins = pins_mod.load(root)  # the environments hold every pinned upstream, `--only` or not
    ui.step("test", "environments")
    pythons = {}
    for env in ("pristine", "patched"):
        with ui.leaves(f"build/envs/{env} is unfinished (it has no stamp); the next `make test` makes it again"):
            py = envs.ensure(root, env, envs.wheels_for(root, all_pins, env, pins), all_pins)
        envs.check_origin(py, env, root / PROOF_DIR, all_pins, pins)
        pythons[env] = py
    ui.step("test", "each patch's own tests: red on pristine, green on patched")
    entries = prove(root, pins, pythons)
    _table(entries)
    for e in entries:
        for f in e["figures"]:
            ui.info(f"{Path(e['patch']).name[:40]}: {f}")
        for env in ("pristine", "patched"):
            for node, why in e.get(env, {}).get("failures", {}).items():
                ui.info(f"{Path(e['patch']).name[:40]}: {env}: failed {node.rsplit('::', 1)[-1]}: {why}")
    testrun.write_report(root, "proof", entries)
    bad = [e for e in entries if e["verdict"] != "red->green"]
    failures = []
    if bad:
        failures.append("patches not proven: " + "; ".join(_not_proven(e) for e in bad))
    if upstream != "none":
        from . import upstream as upstream_mod

        failures += upstream_mod.run(root, pins, pythons, selection=upstream, use_tinyhub=tinyhub, jobs=jobs)
    ui.info(f"report: {REPORT}")
    if failures:
        raise ProofFailed("; ".join(failures) + ". Logs are under build/proof/ and build/upstream/.")
    return 0
