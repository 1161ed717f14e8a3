"""The two isolated test environments: "pristine" (official wheels) and "patched" (dist/).

Both get the same torch (``torch==2.13.0`` installed first and alone, so no package can
pull a CUDA build) and the same test requirements (``requirements/test-env.txt``); they
differ only in the pinned upstreams (every table of vendor/pins.toml): the official wheel of
each in "pristine", the headroom build of each in "patched". All of them go into one pip
resolution, so a dependency between upstreams (peft needs accelerate) is met by the pinned
build and never by another release from the index. An environment is rebuilt only when its
inputs change.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from . import build as build_mod, fetch, proc, ui
from .errors import NotApplied, ProofFailed, RequirementsConflict
from .fsutil import atomic_write, read_json_state, sha256_bytes, sha256_file
from .pins import Pin

ENVS_DIR = Path("build") / "envs"
TORCH = "torch==2.13.0"
REQUIREMENTS = Path("requirements") / "test-env.txt"
STAMP = ".headroom-env.json"


def built_wheel(root: Path, pin: Pin) -> Path | None:
    """The headroom wheel of ``pin`` in dist/ (the last `make build`), or None when there is none."""
    state = build_mod.read_built(root, pin.name)
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


def check_requirements(text: str, pins: list[Pin], path: Path = REQUIREMENTS) -> None:
    """The test requirements must not name a pinned upstream: it comes from pins.toml (official or ours)."""
    pinned = {canonicalize_name(p.distribution): p.name for p in pins}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
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


def python(root: Path, env: str) -> Path:
    return root / ENVS_DIR / env / "bin" / "python"


def _specs(root: Path, env: str, wheels: list[Path]) -> list[str | Path]:
    """What pip installs: 'patched' goes through our own index (dist/simple) by exact version,
    which proves the index with a real client on every run; 'pristine' installs the verified files."""
    if env != "patched":
        return list(wheels)
    index = (root / build_mod.DIST_DIR / "simple").as_uri()
    specs: list[str | Path] = ["--extra-index-url", index]
    for w in wheels:  # an official wheel stands in for an upstream that has no headroom build (see wheels_for)
        specs.append(f"{w.name.split('-')[0]}=={w.name.split('-')[1]}" if "+headroom" in w.name else w)
    return specs


def ensure(root: Path, env: str, wheels: list[Path], pins: list[Pin] = (), requirements_file: Path = REQUIREMENTS) -> Path:
    """Create or reuse build/envs/<env>; return its python. ``pins``: every pinned upstream (checked against the
    requirements); ``requirements_file``: what goes in beside torch and ``wheels`` (the bench's release environments
    take a smaller set than the test environments)."""
    where = root / ENVS_DIR / env
    requirements = (root / requirements_file).read_text(encoding="utf-8")
    check_requirements(requirements, list(pins))
    base_key = sha256_bytes(json.dumps([TORCH, requirements, sys.version]).encode())
    wheels_key = sha256_bytes(json.dumps([(w.name, sha256_file(w)) for w in wheels]).encode())
    stamp = where / STAMP
    recorded = read_json_state(stamp)  # missing or malformed: the environment is made again
    py = python(root, env)
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    if recorded.get("base") == base_key and py.exists():
        if recorded.get("wheels_key") == wheels_key:
            ui.info(f"build/envs/{env}: up to date")
            return py
        # Same torch and test requirements: swap only the upstreams' wheels.
        ui.info(f"build/envs/{env}: installing {', '.join(w.name for w in wheels)}")
        stamp.unlink()
        proc.run([*pip, "--no-deps", "--force-reinstall", *_specs(root, env, wheels)], what=f"pip install wheels ({env})")
    else:
        if where.exists():
            shutil.rmtree(where)
        ui.info(f"build/envs/{env}: creating (torch first, then {', '.join(w.name for w in wheels)}; a few minutes)")
        proc.run([sys.executable, "-m", "venv", where], what=f"python -m venv ({env})")
        proc.run([*pip, TORCH], what=f"pip install {TORCH} ({env})")
        proc.run([*pip, "-r", root / requirements_file, *_specs(root, env, wheels)], what=f"pip install test requirements ({env})")
    record = {"base": base_key, "wheels_key": wheels_key, "wheels": [w.name for w in wheels]}
    atomic_write(stamp, json.dumps(record, indent=2) + "\n")
    return py


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


def check_origin(py: Path, env: str, cwd: Path, pins: list[Pin], selected: list[Pin] | None = None) -> dict:
    """Assert the env imports each pinned upstream from itself, and that the builds are the right ones: never
    +headroom in 'pristine'; +headroom in 'patched' for the upstreams under test (``selected``, default all)."""
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
                              f"{version}: a stale install. Remove build/envs/{env} and run `make test` again.")
        if version.split("+")[0] != pin.version:
            raise ProofFailed(f"{env}: {pin.distribution} {version} is installed, vendor/pins.toml pins {pin.version}.")
        headroom = "+headroom" in version
        if (env == "pristine" and headroom) or (env == "patched" and pin.name in under_test and not headroom):
            raise ProofFailed(f"{env}: {pin.distribution} {version} is the wrong build for this environment.")
    shown = ", ".join(f"{d} {e['version']}" for d, e in info["dists"].items())
    ui.info(f"{env}: {shown}, torch {info['torch']} (from {prefix})")
    return info
