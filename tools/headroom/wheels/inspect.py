"""inspect: what a headroom wheel or installed distribution is, read from its SBOM.

``headroom inspect dist/transformers-...whl`` reads the SBOM inside the wheel;
``headroom inspect transformers [--python build/envs/patched/bin/python]`` asks that
interpreter (default: the activated virtual environment's, else headroom's own) where
the installed distribution keeps it (``importlib.metadata``; PEP 770 ``sboms/``). It
prints the upstream release, every patch with its upstream links, and whether the
release and the patches are the ones in this checkout's ``vendor/pins.toml`` and
``patches/`` (compared by sha256).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from ..ground import proc, ui
from ..ground.errors import HeadroomError, SbomMissing
from ..sources import lines as lines_mod, pins as pins_mod, series as series_mod
from . import sbom
from .index import normalize

_MARK = "HEADROOM-SBOM "
# Run by the target interpreter: find the distribution and its SBOM files, print them as JSON.
_QUERY = r"""
import importlib.metadata as md, json, sys
try:
    d = md.distribution(sys.argv[1])
except md.PackageNotFoundError:
    print(sys.argv[2] + json.dumps({"error": "not-installed", "python": sys.executable})); sys.exit(0)
files = [f for f in (d.files or []) if f.parent.name == "sboms" and f.parent.parent.name.endswith(".dist-info")]
out = {"name": d.metadata["Name"], "version": d.version, "python": sys.executable,
       "sboms": {str(f): f.read_text(encoding="utf-8") for f in files}}
print(sys.argv[2] + json.dumps(out))
"""


@dataclass(frozen=True)
class Source:
    where: str  # what the user named, for messages
    member: str  # the SBOM's path inside the wheel or the environment
    text: str


def default_python() -> str:
    venv = os.environ.get("VIRTUAL_ENV")
    if venv and (Path(venv) / "bin" / "python").exists():
        return str(Path(venv) / "bin" / "python")
    return sys.executable


def from_installed(name: str, python: str | None) -> Source:
    py = python or default_python()
    if not Path(py).exists():
        raise SbomMissing(f"--python {py}: no such interpreter. "
                          "Name an environment's python, e.g. build/envs/patched/bin/python.")
    result = proc.run([py, "-c", _QUERY, name, _MARK], check=False, quiet=True, what=f"importlib.metadata in {py}")
    lines = [ln for ln in result.output.splitlines() if ln.startswith(_MARK)]
    if result.returncode != 0 or not lines:
        raise SbomMissing(f"could not ask {py} about {name!r}:\n{result.output.strip()}")
    found = json.loads(lines[-1][len(_MARK):])
    if found.get("error") == "not-installed":
        raise SbomMissing(f"{name!r} is not installed in the environment of {found['python']}. "
                          "Name the environment with --python PATH (make inspect WHEEL=name PY=PATH), or give a wheel file.")
    ours = {k: v for k, v in found["sboms"].items() if k.endswith(f"/sboms/{sbom.SBOM_FILE}")}
    if not ours:
        others = f" (other SBOMs: {', '.join(found['sboms'])})" if found["sboms"] else ""
        raise SbomMissing(f"{found['name']} {found['version']} in {found['python']} carries no headroom SBOM{others}: "
                          "it is not a headroom build (the official wheel, or one built before SBOMs existed).")
    member, text = sorted(ours.items())[0]
    return Source(f"{found['name']} {found['version']} installed in {found['python']}", member, text)


def load(target: str, python: str | None = None) -> Source:
    """The headroom SBOM of a wheel file (a path ending in .whl) or of an installed distribution."""
    path = Path(target)
    if target.endswith(".whl") or path.is_file():
        member, text = sbom.read_wheel(path)
        return Source(str(path), member, text)
    return from_installed(target, python)


# --- comparing with this checkout ----------------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    pin: pins_mod.Pin | None  # this checkout's pin of the same distribution
    release: list[str]  # how the pinned release differs from the SBOM's ("" list: the same)
    patches: list[str]  # per SBOM patch: what this checkout has for it
    series_same: bool  # patches/<name>/series lists exactly these files, in this order, with these bytes
    extra: list[str]  # patches in this checkout that the SBOM does not name
    note: str  # why nothing could be compared, if so

    @property
    def same(self) -> bool:
        return self.pin is not None and not self.release and self.series_same


def compare(root: Path, prov: sbom.Provenance) -> Comparison:
    try:
        lines = lines_mod.load(root)
    except HeadroomError as exc:
        return Comparison(None, [], [], False, [], f"no headroom checkout to compare with ({exc.message.split('.')[0]})")
    line = next((ln for ln in lines if ln.name == prov.line), None)
    if line is None:
        return Comparison(None, [], [], False, [], f"the release line {prov.line!r} is not in vendor/lines.toml "
                          f"(retired? lines here: {', '.join(ln.name for ln in lines)})")
    pins = list(line.pins)
    pin = next((p for p in pins if normalize(p.distribution) == normalize(prov.name)), None)
    if pin is None:
        return Comparison(None, [], [], False, [], f"{line.pins_file} pins no {prov.name}")
    release = [f"{key}: SBOM {want}, vendor/pins.toml {have}" for key, want, have in (
        ("version", prov.upstream_version, pin.version), ("sdist", prov.sdist, pin.sdist),
        ("sdist_sha256", prov.sdist_sha256, pin.sdist_sha256),
        ("repository", prov.repository, pin.repository.rstrip("/")), ("tag", prov.tag, pin.tag)) if want != have]
    try:
        series = series_mod.load(root, pin.name, pin.line)
    except HeadroomError as exc:
        return Comparison(pin, release, [], False, [], f"patches/{pin.name}/ is not readable: {exc.message}")
    ours = [sbom.patch_facts(p, i) for i, p in enumerate(series.patches, 1)]
    by_sha = {f.sha256: f for f in ours}
    by_name = {f.file: f for f in ours}
    status = []
    for rec in prov.patches:
        if rec.sha256 in by_sha:
            f = by_sha[rec.sha256]
            status.append(f"matches patches/{pin.name}/{f.file}" if f.file == rec.file
                          else f"same bytes as patches/{pin.name}/{f.file} (another name)")
        elif rec.file in by_name:
            status.append(f"DIFFERS from patches/{pin.name}/{rec.file} (sha256 {by_name[rec.file].sha256[:16]}...)")
        else:
            status.append(f"NOT in patches/{pin.name}/")
    named = {r.sha256 for r in prov.patches}
    extra = [f"{f.file} (not in the SBOM)" for f in ours if f.sha256 not in named]
    same = [(f.file, f.sha256) for f in ours] == [(r.file, r.sha256) for r in prov.patches]
    return Comparison(pin, release, status, same, extra, "")


# --- the command ---------------------------------------------------------------------------

def show(root: Path, target: str, python: str | None = None) -> sbom.Provenance:
    src = load(target, python)
    ui.step("inspect", src.where)
    sbom.validate(src.text, where=src.member)
    prov = sbom.parse(src.text, where=src.member)
    cmp = compare(root, prov)
    ui.info(f"{prov.name} {prov.version}  {prov.purl}" + (f"  (release line {prov.line})" if prov.line else ""))
    ui.info(f"SBOM {src.member}: CycloneDX {sbom.SPEC_VERSION}, schema-valid; written by {prov.tool} at {prov.timestamp}")
    ui.info(f"upstream: {prov.name} {prov.upstream_version}  {prov.upstream_purl}")
    ui.info(f"  sdist   {prov.sdist}  sha256 {prov.sdist_sha256}")
    ui.info(f"  source  {prov.repository}  tag {prov.tag}")
    if cmp.pin is not None:
        ui.info("  this checkout: " + ("vendor/pins.toml pins the same release" if not cmp.release
                                       else "vendor/pins.toml DIFFERS: " + "; ".join(cmp.release)))
    ui.info(f"patches: {len(prov.patches)} (series sha256 {prov.series_sha256})")
    for i, rec in enumerate(prov.patches):
        ui.info(f"  {rec.position}. {rec.file}")
        ui.info(f"     {rec.subject}")
        ui.info(f"     sha256 {rec.sha256}" + ("" if rec.content is not None else "  (the embedded patch is MISSING or altered)"))
        for trailer, url in rec.links:
            ui.info(f"     {trailer}: {url}")
        if not rec.links:
            ui.info("     (no Fixes:/Upstream-Issue:/Upstream-PR: trailer)")
        if cmp.patches:
            ui.info(f"     this checkout: {cmp.patches[i]}")
    for line in cmp.extra:
        ui.info(f"  this checkout also has {line}")
    if cmp.note:
        ui.info(f"this checkout: {cmp.note}; nothing compared")
    elif cmp.same:
        ui.info(f"this checkout: same release and same series as patches/{cmp.pin.name}/ (`headroom verify` rebuilds it)")
    else:
        ui.info("this checkout: NOT the release and series this build was made from (see above)")
    return prov


def cmd_inspect(args) -> int:
    show(Path(args.root).resolve(), args.target, args.python)
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show a wheel's or an installed distribution's SBOM: upstream, patches, links")
    p.add_argument("target", help="a wheel file, or the name of an installed distribution (e.g. transformers)")
    p.add_argument("--python", metavar="PATH", help="the interpreter of the environment to look in (default: the "
                   "activated virtual environment's, else headroom's own), e.g. build/envs/patched/bin/python")
    p.set_defaults(func=cmd_inspect)
