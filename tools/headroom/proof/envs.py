"""The two isolated test environments: "pristine" (official wheels) and "patched" (dist/).

Both get the same torch (``torch==<version>`` installed first and alone, so no package can
pull another torch build: the line's primary torch, 2.13.0, is the CPU wheel) and the same test requirements (``requirements/test-env.txt``); they
differ only in the pinned upstreams (every table of vendor/pins.toml): the official wheel of
each in "pristine", the headroom build of each in "patched". All of them go into one pip
resolution, so a dependency between upstreams (peft needs accelerate) is met by the pinned
build and never by another release from the index. An environment is rebuilt only when its
inputs change, and never depends on its history: when only the upstreams' wheels change, they
are swapped in one resolution with their dependencies, what nothing needs any more is removed
and ``pip check`` must pass, so the result is what a fresh environment would hold. Another torch is another
environment (build/envs/<env>-torch<version>, :func:`folder`): never one torch swapped for another.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..ground import proc, ui
from ..ground.errors import DependencyUnresolved, NotApplied, ProofFailed, RequirementsConflict
from ..ground.fsutil import atomic_write, read_json_state, sha256_bytes, sha256_file
from ..sources import fetch
from ..sources.lines import PRIMARY_TORCH
from ..sources.pins import Pin
from ..wheels import build as build_mod

ENVS_DIR = Path("build") / "envs"
TORCH = f"torch=={PRIMARY_TORCH}"  # the primary torch's requirement (a line's own: vendor/lines.toml torch)
REQUIREMENTS = Path("requirements") / "test-env.txt"
STAMP = ".headroom-env.json"
MADE = ".headroom-made.json"  # how long a new environment took to make and its size (figures, never a key)


def built_wheel(root: Path, pin: Pin) -> Path | None:
    """The headroom wheel of ``pin`` in dist/ (the last `make build`), or None when there is none."""
    state = build_mod.read_built(root, pin.key)
    if not state:
        return None
    wheel = root / build_mod.DIST_DIR / state["wheel"]
    return wheel if wheel.exists() else None


def wheels_for(root: Path, pins: list[Pin], env: str, selected: list[Pin] | None = None) -> list[Path]:
    """One wheel per pin, in pins.toml order: the official ones for 'pristine', the headroom builds for 'patched'.

    ``selected`` (``--only``) are the upstreams under test: 'patched' must have their headroom builds. Any other
    pin gets its headroom build when dist/ has one, else its official wheel (said), so the environments always
    hold every pinned upstream."""
    if env == "pristine":
        return [fetch.fetch(pin, "wheel") for pin in pins]
    under_test = {p.name for p in (selected if selected is not None else pins)}
    out = []
    for pin in pins:
        wheel = built_wheel(root, pin)
        if wheel is None and pin.name in under_test:
            raise NotApplied(f"no headroom wheel of {pin.name} in dist/. Run `make build` first.")
        if wheel is None:
            ui.warn(f"patched: no headroom build of {pin.name} in dist/, using the official {pin.wheel}")
            wheel = fetch.fetch(pin, "wheel")
        out.append(wheel)
    return out


def requirement_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, requirement) for each requirement line of a requirements file's ``text``: comments cut off,
    empty lines and options ("-r other.txt", "--index-url ...") skipped."""
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if line and not line.startswith("-"):
            yield number, line


def check_requirements(text: str, pins: list[Pin], path: Path = REQUIREMENTS) -> None:
    """The test requirements must not name a pinned upstream: it comes from pins.toml (official or ours)."""
    pinned = {canonicalize_name(p.distribution): p.name for p in pins}
    for number, line in requirement_lines(text):
        try:
            name = canonicalize_name(Requirement(line).name)
        except InvalidRequirement:
            continue  # pip reports it with the line
        if name in pinned:
            raise RequirementsConflict(
                f"{path}:{number}: {line!r} names {name}, an upstream pinned in vendor/pins.toml [{pinned[name]}]. "
                "The environments get it from the pin (the official wheel in pristine, the headroom build in "
                f"patched); remove the line from {path}."
            )


def torch_requirement(version: str) -> str:
    return f"torch=={version}"


def folder(env: str, torch: str, primary: str) -> str:
    """The environment's folder under envs/: ``env`` on the line's primary torch, ``env-torch<version>`` on another
    (a fresh environment of its own per torch: none depends on which torch it held before)."""
    return env if torch == primary else f"{env}-torch{torch}"


def _shown(env: str, envs_dir: Path = ENVS_DIR) -> str:
    """The environment's folder as messages name it (build/envs/<env>, or a line's or another torch's)."""
    return (Path(envs_dir) / env).as_posix()


def python(root: Path, env: str, envs_dir: Path = ENVS_DIR) -> Path:
    return root / envs_dir / env / "bin" / "python"


def _specs(root: Path, env: str, wheels: list[Path]) -> list[str | Path]:
    """What pip installs: 'patched' goes through our own index (dist/simple) by exact version,
    which proves the index with a real client on every run; 'pristine' installs the verified files."""
    if env.split("-torch")[0] != "patched":
        return list(wheels)
    index = (root / build_mod.DIST_DIR / "simple").as_uri()
    specs: list[str | Path] = ["--extra-index-url", index]
    for w in wheels:  # an official wheel stands in for an upstream that has no headroom build (see wheels_for)
        specs.append(f"{w.name.split('-')[0]}=={w.name.split('-')[1]}" if "+headroom" in w.name else w)
    return specs


def _pip_install(py: Path) -> list[str | Path]:
    return [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]


def _pip_uninstall(py: Path) -> list[str | Path]:
    return [py, "-m", "pip", "uninstall", "-y", "-q", "--disable-pip-version-check"]


# pip's words for a requirement it cannot meet: "No matching distribution found for kernels>=0.3",
# "Could not find a version that satisfies the requirement kernels>=0.3 (from transformers==5.25.0)", and the
# resolver's "The conflict is caused by:" block (two requirements that exclude each other).
NO_MATCH = re.compile(r"Could not find a version that satisfies the requirement (.+?)(?: \(from versions:[^)]*\))?$"
                      r"|No matching distribution found for (\S+)", re.M)
CONFLICT = re.compile(r"The conflict is caused by:\n((?:[ \t]+\S.*\n?)+)")
CANNOT = re.compile(r"Cannot install (.+?) because these package versions have conflicting dependencies")  # pip -q


def unresolved(env: str, folder: str | None = None) -> Callable[[str], DependencyUnresolved | None]:
    """proc.run's ``diagnose`` for a pip install of the environment ``env`` in ``folder`` (default build/envs/<env>;
    a line's or another torch's is elsewhere): a requirement without a match is named."""
    folder = folder or f"build/envs/{env}"

    def diagnose(output: str) -> DependencyUnresolved | None:
        matches = NO_MATCH.findall(output)
        found = [a for a, _ in matches if a] or [b for _, b in matches if b]  # with "(from <who needs it>)" if said
        conflict = CONFLICT.search(output)
        cannot = [r.strip() for part in CANNOT.findall(output) for r in re.split(r",| and ", part) if r.strip()]
        if not found and not conflict and not cannot:
            return None
        what = (f"no distribution on the package index matches {found[0]}" if found
                else "pip finds requirements that exclude each other"
                + (f" ({', '.join(cannot)} cannot be installed)" if cannot else ""))
        if any(re.match(r"torch(?![\w.-])", r) for r in [*found, *cannot]):
            what += (" (a pip constraints file can cap torch: `pip config list` shows global.constraint; "
                     "PIP_CONSTRAINT=/path/to/an-empty-file lifts it for one run)")
        lines = [f"  no match: {r}" for r in dict.fromkeys(found)]
        lines += [f"  conflict: {line.strip()}" for line in (conflict.group(1).splitlines() if conflict else [])]
        return DependencyUnresolved(
            f"Make every requirement of the wheels installable from the package index pip uses (PIP_INDEX_URL, "
            f"PIP_FIND_LINKS), or choose a release whose dependencies resolve: {folder} cannot be made, "
            f"{what}. It is made again on the next run (it was not stamped).", details="\n".join(lines))

    return diagnose


def _roots(requirements: str, wheels: list[Path], torch: str = TORCH) -> list[Requirement]:
    """What a fresh environment is made of: torch, each line of the test requirements and each upstream."""
    texts = [torch, *(line for _, line in requirement_lines(requirements))]
    texts += [w.name.split("-")[0] for w in wheels]
    return [Requirement(t) for t in texts]


def needed(where: Path, roots: list[Requirement]) -> set[str]:
    """The distributions installed in ``where`` that ``roots`` need, transitively (markers and extras evaluated)."""
    dists = _distributions(where)
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = [(req, ("",)) for req in roots]
    while todo:
        req, extras = todo.pop()
        if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras):
            continue
        name, key = canonicalize_name(req.name), (canonicalize_name(req.name), frozenset(req.extras))
        if key in seen or name not in dists:
            continue
        seen.add(key)
        todo += [(Requirement(text), ("", *sorted(req.extras))) for text in dists[name].requires or []]
    return {name for name, _ in seen} | BASE


def installed(where: Path) -> set[str]:
    return set(_distributions(where))


def _distributions(where: Path) -> dict[str, importlib.metadata.Distribution]:
    """{canonical name: distribution} for what is installed in the environment ``where`` (its site-packages)."""
    site = [str(p) for p in where.glob("lib/python*/site-packages")]
    return {canonicalize_name(d.metadata["Name"]): d for d in importlib.metadata.distributions(path=site)}


# What `python -m venv` itself installs: never an orphan.
BASE = {"pip"} | ({"setuptools"} if sys.version_info < (3, 12) else set())


def _swap(root: Path, env: str, wheels: list[Path], recorded: dict, requirements: str, requirements_file: Path,
          envs_dir: Path = ENVS_DIR, torch: str = TORCH) -> None:
    """Same torch and test requirements, other upstream wheels: the environment a fresh one would be.

    The old and new upstreams are uninstalled, the new ones installed with torch and the test requirements in one
    resolution (a new release's new dependencies are installed, or named when nothing matches), what only the old
    wheels needed is uninstalled, and ``pip check`` must pass."""
    where, shown = root / envs_dir / env, _shown(env, envs_dir)
    py = python(root, env, envs_dir)
    upstreams = {canonicalize_name(w.split("-")[0]) for w in [*recorded.get("wheels", []), *(w.name for w in wheels)]}
    ui.info(f"{shown}: installing {', '.join(w.name for w in wheels)} and their dependencies")
    proc.run([*_pip_uninstall(py), *sorted(upstreams & installed(where))],
             what=f"pip uninstall the old upstreams ({env})")
    proc.run([*_pip_install(py), torch, "-r", root / requirements_file, *_specs(root, env, wheels)],
             what=f"pip install wheels ({env})", diagnose=unresolved(env, shown))
    orphans = sorted(installed(where) - needed(where, _roots(requirements, wheels, torch)))
    if orphans:
        ui.info(f"{shown}: removing {', '.join(orphans)} (nothing needs them any more)")
        proc.run([*_pip_uninstall(py), *orphans], what=f"pip uninstall what nothing needs ({env})")
    check = proc.run([py, "-m", "pip", "check", "--disable-pip-version-check"], check=False, what=f"pip check ({env})")
    if check.returncode != 0:
        raise DependencyUnresolved(
            f"Make the wheels' requirements installable together (or choose another release): after installing "
            f"{', '.join(w.name for w in wheels)}, `pip check` fails in {shown}. It is made again on the "
            "next run (it was not stamped).", details=check.output.rstrip())


def ensure(root: Path, env: str, wheels: list[Path], pins: list[Pin] = (), requirements_file: Path = REQUIREMENTS,
           envs_dir: Path = ENVS_DIR, torch: str = TORCH) -> Path:
    """Create or reuse build/envs/<env>; return its python. ``pins``: every pinned upstream (checked against the
    requirements); ``requirements_file``: what goes in beside torch and ``wheels`` (the bench's release environments
    take a smaller set than the test environments); ``torch``: its requirement (``torch==<version>``). An environment
    never depends on its history: one whose wheels changed (same torch and requirements) is swapped to what a fresh
    one would hold (:func:`_swap`); another torch or other requirements make it afresh. A new one's creation time and
    size are written beside its stamp (:data:`MADE`)."""
    where, shown = root / envs_dir / env, _shown(env, envs_dir)  # build/envs/<env>, or a line's or another torch's
    requirements = (root / requirements_file).read_text(encoding="utf-8")
    check_requirements(requirements, list(pins))
    base_key = sha256_bytes(json.dumps([torch, requirements, sys.version]).encode())
    wheels_key = sha256_bytes(json.dumps([(w.name, sha256_file(w)) for w in wheels]).encode())
    stamp = where / STAMP
    recorded = read_json_state(stamp)  # missing or malformed: the environment is made again
    py = python(root, env, envs_dir)
    if recorded.get("base") == base_key and py.exists():
        if recorded.get("wheels_key") == wheels_key:
            ui.info(f"{shown}: up to date")
            return py
        stamp.unlink()
        _swap(root, env, wheels, recorded, requirements, requirements_file, envs_dir, torch)
    else:
        if where.exists():
            shutil.rmtree(where)
        ui.info(f"{shown}: creating ({torch} first, then {', '.join(w.name for w in wheels)}; a few minutes)")
        start = time.monotonic()
        proc.run([sys.executable, "-m", "venv", where], what=f"python -m venv ({env})")
        proc.run([*_pip_install(py), torch], what=f"pip install {torch} ({env})", diagnose=unresolved(env, shown))
        proc.run([*_pip_install(py), torch, "-r", root / requirements_file, *_specs(root, env, wheels)],
                 what=f"pip install test requirements ({env})", diagnose=unresolved(env, shown))
        made = {"torch": torch, "created_seconds": round(time.monotonic() - start, 1), "bytes": size(where)}
        atomic_write(where / MADE, json.dumps(made, indent=2) + "\n")
        ui.info(f"{shown}: created in {made['created_seconds']:.0f} s, {made['bytes'] / 1e9:.2f} GB")
    record = {"base": base_key, "wheels_key": wheels_key, "wheels": [w.name for w in wheels]}
    atomic_write(stamp, json.dumps(record, indent=2) + "\n")
    return py


def size(where: Path) -> int:
    """Bytes of the files under ``where`` (links not followed): what an environment takes on disk."""
    return sum(p.lstat().st_size for p in where.rglob("*") if p.is_file() and not p.is_symlink())


def made_of(root: Path, env: str, envs_dir: Path = ENVS_DIR) -> dict:
    """How build/envs/<env> was made: {"torch", "created_seconds", "bytes"}, {} when unknown."""
    return read_json_state(root / envs_dir / env / MADE)


# Prints, for each distribution named in argv, its installed version and location, and the version and file of
# its module when it imports under the same name (accelerate, transformers, peft).
ORIGIN_PROBE = """
import importlib, importlib.metadata as md, json, sys
out = {"prefix": sys.prefix, "dists": {}}
for name in sys.argv[1:]:
    d = md.distribution(name)
    entry = {"version": d.version, "location": str(d.locate_file(""))}
    try:
        module = importlib.import_module(name.replace("-", "_"))
        entry.update(module_version=getattr(module, "__version__", None), file=module.__file__)
    except ImportError:
        pass
    out["dists"][name] = entry
try:
    import torch
    out["torch"] = torch.__version__
except ImportError:
    out["torch"] = None
print(json.dumps(out))
"""


def check_origin(py: Path, env: str, cwd: Path, pins: list[Pin], selected: list[Pin] | None = None,
                 torch: str | None = None) -> dict:
    """Assert the env imports each pinned upstream from itself, and that the builds are the right ones: never
    +headroom in 'pristine'; +headroom in 'patched' for the upstreams under test (``selected``, default all); and,
    given ``torch`` (a version), that it imports that torch release (any build of it: 2.13.0+cpu is 2.13.0)."""
    cwd.mkdir(parents=True, exist_ok=True)
    names = [p.distribution for p in pins]
    result = proc.run([py, "-c", ORIGIN_PROBE, *names], cwd=cwd, quiet=True, what=f"import probe ({env})",
                      env={"PYTHONPATH": "", "PYTHONNOUSERSITE": "1"})
    info = json.loads(result.output.strip().splitlines()[-1])
    prefix = Path(info["prefix"]).resolve()
    under_test = {p.name for p in (selected if selected is not None else pins)}
    for pin in pins:
        entry = info["dists"][pin.distribution]
        version = entry["version"]
        for where in (entry["location"], entry.get("file")):
            if where and prefix not in Path(where).resolve().parents:
                raise ProofFailed(f"{env}: {pin.distribution} is imported from {where}, not from the environment {prefix}.")
        if entry.get("module_version") not in (None, version):
            raise ProofFailed(f"{env}: {pin.distribution}.__version__ is {entry['module_version']}, its metadata says "
                              f"{version}: a stale install. Remove {prefix} and run `make test` again.")
        if version.split("+")[0] != pin.version:
            pinned_by = f"the {pin.line} line" if pin.line else "vendor/pins.toml"
            raise ProofFailed(f"{env}: {pin.distribution} {version} is installed, {pinned_by} pins {pin.version}.")
        headroom = "+headroom" in version
        if (env == "pristine" and headroom) or (env == "patched" and pin.name in under_test and not headroom):
            raise ProofFailed(f"{env}: {pin.distribution} {version} is the wrong build for this environment.")
    if torch and (info["torch"] or "").split("+")[0] != torch:
        raise ProofFailed(f"{env}: torch {info['torch']} is imported, the line is proven here on torch {torch}. "
                          f"Remove the environment ({prefix}) and run `make test` again.")
    shown = ", ".join(f"{d} {e['version']}" for d, e in info["dists"].items())
    ui.info(f"{env}: {shown}, torch {info['torch']} (from {prefix})")
    return info
