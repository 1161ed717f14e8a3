"""test: every patch's own tests must fail on pristine and pass on patched.

The test files a patch adds under ``tests/`` are copied out of the checkout (so they run
outside the source tree) and run with pytest in both environments. Verdict per patch:
``red->green`` when pristine has a failing test and patched has none (and passes some).
Then the upstream suites run (``upstream.py``). Results go to build/report.json.

On one torch per run: the line's primary (vendor/lines.toml torch, the first) unless ``torch`` names another, which
gets environments, proof and suite outputs of its own (``<env>-torch<version>``, ``proof-torch<version>``,
``upstream-torch<version>``) and, by default, the regression guards alone of the upstream suites. Every run's
results are also kept by torch version in build/report.json (``torch.<version>``, per line under ``lines``); the
top-level ``proof`` and ``upstream`` stay the primary torch's (what `make pr` and `make rebase` read).
"""

from __future__ import annotations

from pathlib import Path

from ..ground import ui
from ..ground.errors import ProofFailed
from ..sources import checkout
from ..sources.lines import Line
from ..sources.pins import Pin
from . import envs, testrun

PROOF_DIR = Path("build") / "proof"
REPORT = testrun.REPORT


def run_patch_tests(root: Path, pin: Pin, patch: Path, files: list[str], pythons: dict[str, Path],
                    proof_dir: Path = PROOF_DIR) -> dict:
    stem = patch.stem
    where = testrun.copy_tests(testrun.from_tree(checkout.vendor_dir(root, pin)), files,
                               root / proof_dir / pin.name / stem)
    entry = {"upstream": pin.name, "patch": str(patch.relative_to(root)), "tests": files}
    figures: list[str] = []
    for env, py in pythons.items():
        ui.info(f"{patch.name}: running {len(files)} test file(s) on {env}")
        run = testrun.pytest(py, ["-rA", *files], cwd=where, what=f"pytest ({env})",
                             junit=root / proof_dir / f"junit-{env}-{pin.name}-{stem}.xml",
                             log=root / proof_dir / f"{env}-{pin.name}-{stem}.log")
        outcomes = testrun.outcomes(run.junit)
        if not outcomes:
            raise ProofFailed(
                f"{patch.name}: pytest collected nothing on {env} (exit {run.returncode}); see "
                f"{proof_dir}/{env}-{pin.name}-{stem}.log"
            )
        entry[env] = {"outcomes": outcomes, "summary": testrun.summarize(outcomes), "exit": run.returncode,
                      "seconds": run.seconds, "failures": testrun.failures(run.junit)}
        figures += [f"{env}: {line}" for line in testrun.figures(run.output)]
    entry["figures"] = sorted(set(figures))
    entry["verdict"] = testrun.verdict(entry["pristine"]["outcomes"], entry["patched"]["outcomes"])
    return entry


def _table(entries: list[dict]) -> None:
    rows = [("patch", "torch", "pristine", "patched", "verdict")]
    rows += [(f"{e['upstream']}/{Path(e['patch']).name[:48]}", e.get("torch", "?"), e["pristine"]["summary"],
              e["patched"]["summary"], e["verdict"]) for e in entries]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
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


UNPROVEN = "applied, not provable on this line"  # the verdict of a line's [unproven] patch (vendor/lines.toml)


def prove(root: Path, pins: list[Pin], pythons: dict[str, Path], line: Line | None = None,
          proof_dir: Path | None = None) -> list[dict]:
    entries = []
    proof_dir = proof_dir or (line.build / "proof" if line else PROOF_DIR)
    for pin in pins:
        for patch, files in testrun.series_tests(root, pin):
            why = line.unproven.get(f"{pin.name}/{patch.name[:4]}") if line else None
            if why:  # its test needs an upstream the line does not carry: never run, never "red->green"
                entries.append({"upstream": pin.name, "patch": str(patch.relative_to(root)), "tests": files,
                                "pristine": {"summary": "not run"}, "patched": {"summary": "not run"},
                                "verdict": UNPROVEN, "why": why, "figures": []})
                continue
            if not files:
                entries.append({"upstream": pin.name, "patch": str(patch.relative_to(root)), "tests": [],
                                "pristine": {"summary": "no tests"}, "patched": {"summary": "no tests"},
                                "verdict": "NO TEST (a patch must add its own test under tests/)", "figures": []})
                continue
            entries.append(run_patch_tests(root, pin, patch, files, pythons, proof_dir))
    return entries


def run(root: Path, line: Line, pins: list[Pin], *, upstream: str | None = None, tinyhub: bool = True,
        jobs: str = "1", torch: str | None = None) -> list[dict]:
    """The proof of one release line on one torch: ``pins`` (its pins, or those of --only) on its own environments
    (``line.build``/envs/). ``torch``: a version the line declares (default: its primary); ``upstream``: the suite
    selection (default: "default" on the primary torch, "guards" on another). Returns its entries; raises
    ProofFailed when a patch is not proven or a suite regressed."""
    all_pins = list(line.pins)  # the environments hold every upstream of the line, `--only` or not
    torch = torch or line.primary_torch
    primary = torch == line.primary_torch
    suffix = "" if primary else f"-torch{torch}"
    upstream = upstream or ("default" if primary else "guards")
    envs_dir, proof_dir, upstream_dir = line.build / "envs", line.build / f"proof{suffix}", line.build / f"upstream{suffix}"
    ui.step("test", f"environments{_of(line)}, torch {torch}" + ("" if primary else " (not the line's primary)"))
    pythons, made = {}, {}
    for env in ("pristine", "patched"):
        name = envs.folder(env, torch, line.primary_torch)
        with ui.leaves(f"{envs_dir}/{name} is unfinished (it has no stamp); the next `make test` makes it again"):
            py = envs.ensure(root, name, envs.wheels_for(root, all_pins, env, pins), all_pins, envs_dir=envs_dir,
                             torch=envs.torch_requirement(torch))
        info = envs.check_origin(py, env, root / proof_dir, all_pins, pins, torch=torch)
        pythons[env] = py
        made[env] = {"env": str(envs_dir / name), "torch_build": info["torch"], **envs.made_of(root, name, envs_dir)}
    ui.step("test", f"each patch's own tests: red on pristine, green on patched{_of(line)}, torch {torch}")
    entries = [{**e, "torch": torch} for e in prove(root, pins, pythons, line, proof_dir)]
    _table(entries)
    for e in entries:
        for f in e["figures"]:
            ui.info(f"{Path(e['patch']).name[:40]}: {f}")
        for env in ("pristine", "patched"):
            for node, why in e.get(env, {}).get("failures", {}).items():
                ui.info(f"{Path(e['patch']).name[:40]}: {env}: failed {node.rsplit('::', 1)[-1]}: {why}")
    home = not line.folder
    if primary:  # the top-level sections are the primary torch's (what `make pr` and `make rebase` read)
        testrun.write_report(root, "proof", entries, line=line.name, home=home)
    testrun.write_torch_report(root, torch, "proof", entries, line=line.name, home=home)
    testrun.write_torch_report(root, torch, "envs", made, line=line.name, home=home)
    if line.name:
        testrun.write_report(root, "pins", {p.name: p.version for p in line.pins}, line=line.name, home=False)
    bad = [e for e in entries if e["verdict"] not in ("red->green", UNPROVEN)]
    failures = []
    if bad:
        failures.append("patches not proven: " + "; ".join(_not_proven(e) for e in bad))
    if upstream != "none":
        from . import upstream as upstream_mod

        failures += upstream_mod.run(root, pins, pythons, selection=upstream, use_tinyhub=tinyhub, jobs=jobs,
                                     out=upstream_dir, line=line.name, home=home,
                                     carried={p.name for p in line.pins}, torch=torch, primary=primary)
    ui.info(f"report: {REPORT}")
    if failures:
        raise ProofFailed(f"{line.name + ': ' if line.name else ''}torch {torch}: " + "; ".join(failures)
                          + f". Logs are under {proof_dir}/ and {upstream_dir}/.")
    return entries


def _of(line: Line) -> str:
    return f" (the {line.name} line: {line.releases()})" if line.name else ""


def _proof_on(line_report: dict, torch: str, primary: bool) -> list[dict]:
    """A line's proof entries on ``torch`` from its part of build/report.json (a report written before torch was an
    axis holds the primary's only as ``proof``)."""
    by_torch = line_report.get("torch") if isinstance(line_report.get("torch"), dict) else {}
    entries = (by_torch.get(torch) or {}).get("proof")
    if entries is None and primary:
        entries = line_report.get("proof")
    return entries if isinstance(entries, list) else []


def lines_table(root: Path, lines: list[Line]) -> list[list[str]]:
    """Rows of patches by lines and torch versions from build/report.json: a column per line and torch it declares
    (vendor/lines.toml), each cell the patch's verdict there, "not carried" where the line does not pin its upstream,
    "not run" where that line has no proof on that torch yet. Printed and written to the report (``lines_table``)."""
    report = testrun.read_report(root).get("lines", {})
    report = report if isinstance(report, dict) else {}
    columns = [(ln, t) for ln in lines for t in ln.torch]
    cells: dict[str, dict[tuple[str, str], str]] = {}
    for ln, t in columns:
        for e in _proof_on(report.get(ln.name) or {}, t, t == ln.primary_torch):
            cells.setdefault(f"{e['upstream']}/{Path(e['patch']).name[:4]}", {})[(ln.name, t)] = e["verdict"]
    order = {name: i for i, name in enumerate(dict.fromkeys(p.name for ln in lines for p in ln.pins))}
    patches = sorted(cells, key=lambda p: (order.get(p.split("/")[0], len(order)), p))
    rows = [["patch", *(f"{ln.name} ({ln.releases()}, torch {t})" for ln, t in columns)]]
    for p in patches:
        rows.append([p, *(cells[p].get((ln.name, t)) or ("not carried" if not ln.carries(p.split("/")[0]) else "not run")
                          for ln, t in columns)])
    return rows


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  " + " | ".join(c.ljust(w) for c, w in zip(r, widths)), flush=True)
        if i == 0:
            print("  " + "-+-".join("-" * w for w in widths), flush=True)
