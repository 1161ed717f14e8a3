"""Fix 2 across official transformers releases, beside the patched build, on the same model files.

For each release: its official wheel's sha256 is read from the package index's metadata
(``pip install --dry-run --report``), recorded under build/bench/releases/, and the wheel is
fetched through fetch.py (``pip download --require-hashes``, content-addressed cache,
hashed again). Each (transformers, accelerate) pair gets its own environment,
build/envs/release-<version>-acc<accelerate>, made and cached by envs.py like the two test
environments, with requirements/bench-env.txt's accelerate line replaced by the pair's (a release
list item ``5.23.0@1.15.0``; without ``@``, bench-env.txt's own). The pinned release with the
pinned accelerate reuses build/envs/pristine when the pin has the same wheel. A pair whose
dependencies do not resolve (envs.ensure: DependencyUnresolved) is a row "not installable",
naming the requirement without a match and the newest version the index has of it. Each
environment then runs:

* the memory job (bench_data/fsdp_worker.py, 2 ranks): rank 1's RssAnon rise across
  ``from_pretrained`` and its peak through Accelerate's FSDP2 ``prepare``;
* the correctness job (bench_data/fsdp_correctness.py, 2 ranks): a checkpoint missing a
  token-classification head (weight + bias) through ``prepare`` and a few SGD steps.

A release whose job cannot run (an API it lacks, a crash) gets "n/a" with the reason, taken
from the job's own output. The one-node figure runs all ``node_ranks`` ranks of one node,
load only, for the most affected release measured and for the patched build.
"""

from __future__ import annotations

import datetime
import json
import sys
import tempfile
from pathlib import Path

from packaging.version import InvalidVersion, Version

from ..ground import proc, ui
from ..ground.errors import CommandFailed, DependencyUnresolved, ReleaseNotFound, UsageError
from ..ground.fsutil import atomic_write_json
from ..sources import fetch, pins as pins_mod
from ..proof import envs
from .common import MIB, PLAN, SIZES
from .fix2 import checkpoint, run_fsdp
from .jobs import RUN_DIR, torchrun
from .machine import probe_env, too_big
from .release_envs import RECORDS, default_accelerate, env_name, explain, label, requirements_for
from .releases_report import node_summary, projection

PIN = "pin"  # in a release list: the pinned transformers release
SEP = "@"  # in a release list: transformers@accelerate ("5.23.0@1.15.0")
CORRECTNESS_STEPS = 3
RANKS = 2
EXACT = 1e-5  # largest |FSDP - single process| still counted as the same result (float32, a few SGD steps)


def _exact(item: str, version: str) -> str:
    try:
        parsed = Version(version)
    except InvalidVersion:
        raise UsageError(f"--transformers (TRANSFORMERS=): {item!r} is not a release version (expected e.g. 5.5.4,5.23.0@1.15.0).") from None
    if parsed.is_devrelease or parsed.local or str(parsed) != version:
        raise UsageError(f"--transformers (TRANSFORMERS=): {item!r} is not an exact official release version (e.g. 5.22.2, 5.23.0@1.15.0).")
    return version


def parse(text: str | None, mode: str, pinned: str, accelerate: str) -> list[tuple[str, str]]:
    """(transformers, accelerate) pairs of ``--transformers`` ("5.5.4,5.23.0@1.15.0"), or the mode's default; "pin" is
    the pinned transformers release, and an item without "@accelerate" gets ``accelerate`` (bench-env.txt's)."""
    items = [v.strip() for v in text.split(",")] if text else list(PLAN[mode]["releases"])
    out = []
    for item in items:
        name, at, acc = item.partition(SEP)
        pair = (_exact(item, pinned if name == PIN else name), _exact(item, acc) if at else accelerate)
        if pair not in out:
            out.append(pair)
    if not out:
        raise UsageError("--transformers (TRANSFORMERS=) is empty: give one or more transformers releases, e.g. 5.5.4,5.23.0@1.15.0.")
    return out


def from_report(report: dict, version: str) -> dict:
    """The wheel file, URL and sha256 of ``transformers==version`` in a ``pip install --report`` document."""
    for item in report.get("install", []):
        meta = item.get("metadata", {})
        if meta.get("name", "").lower() != "transformers" or meta.get("version") != version:
            continue
        info = item.get("download_info", {})
        url = info.get("url", "")
        sha = info.get("archive_info", {}).get("hashes", {}).get("sha256")
        name = url.rsplit("/", 1)[-1]
        if not sha or not name.endswith(".whl"):
            raise ReleaseNotFound(f"the package index gives no wheel sha256 for transformers {version} ({url or 'no URL'}).")
        return {"version": version, "wheel": name, "sha256": sha, "url": url}
    raise ReleaseNotFound(f"pip's report names no transformers {version} wheel.")


def resolve(root: Path, version: str) -> dict:
    """transformers ``version``'s official wheel and sha256: recorded under build/bench/releases/, or from the index."""
    record = root / RECORDS / f"{version}.json"
    if record.exists():
        data = json.loads(record.read_text(encoding="utf-8"))
        return {**data, "source": f"index metadata recorded {data.get('resolved', 'earlier')}"}
    with tempfile.TemporaryDirectory(prefix="headroom-bench-release-") as tmp:
        report = Path(tmp) / "report.json"
        result = proc.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-deps", "--ignore-installed",
                           "--only-binary", ":all:", "--disable-pip-version-check", "--quiet", "--report", report,
                           f"transformers=={version}"], quiet=True, check=False, what=f"pip report transformers=={version}")
        if result.returncode != 0 or not report.exists():
            raise ReleaseNotFound(f"transformers {version}: the package index has no such release with a wheel. "
                                  "Check the version (pip index versions transformers).",
                                  details="\n".join(line[:300] for line in result.output.splitlines()
                                                    if line.startswith("ERROR")) or result.output[-2000:])
        data = from_report(json.loads(report.read_text(encoding="utf-8")), version)
    data["resolved"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    atomic_write_json(record, data)
    return {**data, "source": "index metadata"}


def wheel(root: Path, rec: dict) -> Path:
    """The verified local wheel of a resolved release, through the same hash-checked path as the pins."""
    pin = pins_mod.Pin(name="transformers", distribution="transformers", version=rec["version"], sdist="",
                       sdist_sha256="", wheel=rec["wheel"], wheel_sha256=rec["sha256"], repository="", tag="")
    return fetch.fetch(pin, "wheel")


def environment(root: Path, rec: dict, pin: pins_mod.Pin | None, accelerate_pin: pins_mod.Pin | None) -> tuple[str, Path]:
    """(env name, python) for a release: build/envs/pristine when it holds the same wheels (transformers and
    accelerate), else release-<version>-acc<accelerate>."""
    version, accelerate = rec["version"], rec["accelerate"]
    if pin is not None and pin.version == version and pin.wheel_sha256 == rec["sha256"] and \
            accelerate_pin is not None and accelerate_pin.version == accelerate and envs.python(root, "pristine").exists():
        return "pristine", envs.python(root, "pristine")
    name = env_name(version, accelerate)  # `headroom bench` holds the build/envs/ lock (lock.py): a second bench waits
    return name, envs.ensure(root, name, [rec["path"]], requirements_file=requirements_for(root, accelerate))


def memory(root: Path, py: Path, label: str, ckpt: Path, size: str) -> dict:
    try:
        entry = run_fsdp(root, py, label, ckpt, RANKS, size)
    except CommandFailed as exc:
        return {"n/a": exc.message}
    return {"summary": entry["summary"], "seconds": entry["seconds"], "ranks": entry["ranks"]}


def correctness(root: Path, py: Path, label: str, ckpt: Path) -> dict:
    try:
        ranks = torchrun(root, py, label, "fsdp_correctness.py", [ckpt, RUN_DIR, str(CORRECTNESS_STEPS)], RANKS, "correctness")
    except CommandFailed as exc:
        return {"n/a": exc.message}
    zero = ranks[0]
    return {
        "aliased": any(r["aliased"] for r in ranks),
        "aliased_ranks": [r["rank"] for r in ranks if r["aliased"]],
        "not_in_optimizer": sorted({n for r in ranks for n in r["not_in_optimizer"]}),
        "meta_after_load": {str(r["rank"]): r["meta_after_load"] for r in ranks},
        "max_abs_diff": zero["max_abs_diff"],
        "max_abs_diff_param": zero["max_abs_diff_param"],
        "exact": zero["max_abs_diff"] <= EXACT,
        "steps": CORRECTNESS_STEPS,
        "losses": zero["losses"],
        "reference_losses": zero["reference_losses"],
    }


def measure(root: Path, label: str, py: Path, ckpt: Path, size: str, tiny: Path) -> dict:
    info = probe_env(py)
    row = {"label": label, "packages": info["packages"], "fsdp_branch": info.get("fsdp_branch")}
    row["memory"] = memory(root, py, label, ckpt, size)
    row["correctness"] = correctness(root, py, label, tiny)
    m, c = row["memory"], row["correctness"]
    ui.info(f"{label}: " + (f"n/a ({m['n/a']})" if "n/a" in m else
                            f"rank 1 rise {m['summary']['rank1_load_rise_mib']:,.1f} MiB, peak in prepare "
                            f"{m['summary']['rank1_prepare_peak_mib']:,.1f} MiB")
            + "; " + (f"correctness n/a ({c['n/a']})" if "n/a" in c else
                      f"optimizer params aliased: {'yes' if c['aliased'] else 'no'}, max |diff| {c['max_abs_diff']:.3g}"))
    return row


def node(root: Path, rows: list[dict], pythons: dict[str, Path], mode: str) -> dict:
    """All ranks of one node, load only: the most affected release measured, and the patched build."""
    plan = PLAN[mode]
    ranks, size = plan["node_ranks"], plan["node_size"]
    if not ranks:
        return {"skipped": f"{mode} mode: not measured (full mode runs it)"}
    measured = [r for r in rows if r["kind"] == "release" and "summary" in r["memory"]]
    if not measured:
        return {"skipped": "no release was measured"}
    worst = max(measured, key=lambda r: r["memory"]["summary"]["rank1_load_rise_mib"])
    ckpt, meta = checkpoint(root, size, pythons["pristine"])
    out = {"size": size, "ranks": ranks, "model_bytes": meta["bytes"], "params": meta["params"], "runs": {}}
    for row in (worst, next(r for r in rows if r["kind"] == "patched")):
        need = int(meta["bytes"] * (0.3 + (ranks - 1) * 1.1) + ranks * 450 * MIB)
        ui.step("bench", f"one node: {ranks} ranks, {size} model, {row['label']} (from_pretrained only)")
        reason = too_big(need, f"one node ({row['label']})")
        if reason:
            out["runs"][row["label"]] = {"skipped": reason}
            continue
        try:
            data = torchrun(root, Path(row["python"]), row["label"], "fsdp_worker.py", [ckpt, RUN_DIR, "load"], ranks, f"node-{size}")
        except CommandFailed as exc:
            out["runs"][row["label"]] = {"n/a": exc.message}
            continue
        out["runs"][row["label"]] = {"ranks": data, **node_summary(data)}
        s = out["runs"][row["label"]]
        ui.info(f"{row['label']}: node total {s['node_peak_mib']:,.0f} MiB (sum of each rank's peak RssAnon in "
                f"from_pretrained), rise {s['node_rise_mib']:,.0f} MiB")
    return out


def prepare(root: Path, mode: str, text: str | None) -> list[dict]:
    """Check the release list and resolve and fetch every wheel, before any measurement starts."""
    pin = pinned(root)
    recs = []
    for version, accelerate in parse(text, mode, pin.version if pin else "", default_accelerate(root)):
        rec = {**resolve(root, version), "accelerate": accelerate}
        rec["path"] = wheel(root, rec)
        ui.info(f"transformers {version}: {rec['wheel']} sha256 {rec['sha256']} ({rec['source']}; file verified), "
                f"with accelerate {accelerate}")
        recs.append(rec)
    return recs


def pinned(root: Path, distribution: str = "transformers") -> pins_mod.Pin | None:
    return next((p for p in pins_mod.load(root) if p.distribution == distribution), None)


def releases(root: Path, pythons: dict[str, Path], mode: str, recs: list[dict]) -> dict:
    """The ``releases`` section of results.json, for the releases ``prepare`` resolved."""
    pin, accelerate_pin, default = pinned(root), pinned(root, "accelerate"), default_accelerate(root)
    size = PLAN[mode]["release_size"]
    ckpt, meta = checkpoint(root, size, pythons["pristine"])
    tiny, _ = checkpoint(root, "tiny", pythons["pristine"])
    rows = []
    for rec in recs:
        version, name = rec["version"], label(rec["version"], rec["accelerate"], default)
        ui.step("bench", f"releases: {name} (sha256 {rec['sha256']}), accelerate {rec['accelerate']}")
        about = dict(kind="release", version=version, accelerate=rec["accelerate"], wheel=rec["wheel"],
                     sha256=rec["sha256"], url=rec.get("url"), hash_source=rec["source"])
        try:
            env, py = environment(root, rec, pin, accelerate_pin)
        except DependencyUnresolved as exc:
            note = explain(exc)
            ui.warn(f"{name}: {note}")
            rows.append({"label": name, **about, "env": None, "not_installable": note, "memory": {"n/a": note},
                         "correctness": {"n/a": note}})
            continue
        row = measure(root, name, py, ckpt, size, tiny)
        row.update(**about, env=env, python=str(py))
        rows.append(row)
    row = measure(root, "patched", pythons["patched"], ckpt, size, tiny)
    row.update(kind="patched", version=row["packages"]["transformers"], accelerate=row["packages"].get("accelerate"),
               env="patched", python=str(pythons["patched"]))
    rows.append(row)
    section = {"size": size, "model_bytes": meta["bytes"], "params": meta["params"], "ranks": RANKS,
               "config": SIZES[size], "correctness_steps": CORRECTNESS_STEPS, "exact_tolerance": EXACT, "rows": rows}
    section["node"] = node(root, rows, pythons, mode)
    section["projection"] = projection(section)
    for r in rows:
        r.pop("python", None)
    return section


def done_jobs(section: dict) -> dict:
    """{(size, ranks, env): fix 2 entry} of the memory jobs this section ran in build/envs/pristine or patched."""
    out = {}
    for row in section["rows"]:
        if row.get("env") in ("pristine", "patched") and "summary" in row["memory"]:
            out[(section["size"], section["ranks"], row["env"])] = {**row["memory"], "measured_in": "releases"}
    return out
