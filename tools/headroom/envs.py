"""The two isolated test environments: "pristine" (official wheels) and "patched" (dist/).

Both get the same torch (``torch==2.13.0`` installed first and alone, so no package can
pull a CUDA build), accelerate, safetensors and pytest; they differ only in the
transformers and peft wheels. An environment is rebuilt only when its inputs change.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from . import build as build_mod, fetch, proc, ui
from .errors import NotApplied, ProofFailed
from .fsutil import atomic_write, read_json_state, sha256_bytes, sha256_file
from .pins import Pin

ENVS_DIR = Path("build") / "envs"
TORCH = "torch==2.13.0"
REQUIREMENTS = Path("requirements") / "test-env.txt"
STAMP = ".headroom-env.json"


def wheels_for(root: Path, pins: list[Pin], env: str) -> list[Path]:
    if env == "pristine":
        return [fetch.fetch(pin, "wheel") for pin in pins]
    out = []
    for pin in pins:
        state = build_mod.read_built(root, pin.name)
        if not state:
            raise NotApplied(f"no headroom wheel of {pin.name} in dist/. Run `make build` first.")
        wheel = root / build_mod.DIST_DIR / state["wheel"]
        if not wheel.exists():
            raise NotApplied(f"{wheel} is missing. Run `make build`.")
        out.append(wheel)
    return out


def python(root: Path, env: str) -> Path:
    return root / ENVS_DIR / env / "bin" / "python"


def _specs(root: Path, env: str, wheels: list[Path]) -> list[str | Path]:
    """What pip installs: 'patched' goes through our own index (dist/simple) by exact version,
    which proves the index with a real client on every run; 'pristine' installs the verified files."""
    if env != "patched":
        return list(wheels)
    index = (root / build_mod.DIST_DIR / "simple").as_uri()
    specs: list[str | Path] = ["--extra-index-url", index]
    specs += [f"{w.name.split('-')[0]}=={w.name.split('-')[1]}" for w in wheels]
    return specs


def ensure(root: Path, env: str, wheels: list[Path], requirements_file: Path = REQUIREMENTS) -> Path:
    """Create or reuse build/envs/<env>; return its python. ``requirements_file``: what goes in beside torch and
    ``wheels`` (the bench's release environments take a smaller set than the test environments)."""
    where = root / ENVS_DIR / env
    requirements = (root / requirements_file).read_text(encoding="utf-8")
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
        # Same torch and test requirements: swap only the transformers/peft wheels.
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


ORIGIN_PROBE = (
    "import json, sys, transformers, peft, torch;"
    "print(json.dumps({'prefix': sys.prefix, 'transformers': [transformers.__file__, transformers.__version__],"
    "'peft': [peft.__file__, peft.__version__], 'torch': torch.__version__}))"
)


def check_origin(py: Path, env: str, cwd: Path) -> dict:
    """Assert the env imports its own transformers/peft, and that only 'patched' carries +headroom."""
    cwd.mkdir(parents=True, exist_ok=True)
    result = proc.run([py, "-c", ORIGIN_PROBE], cwd=cwd, quiet=True, what=f"import probe ({env})",
                      env={"PYTHONPATH": "", "PYTHONNOUSERSITE": "1"})
    info = json.loads(result.output.strip().splitlines()[-1])
    prefix = Path(info["prefix"]).resolve()
    for dist in ("transformers", "peft"):
        file, version = info[dist]
        if prefix not in Path(file).resolve().parents:
            raise ProofFailed(f"{env}: {dist} is imported from {file}, not from the environment {prefix}.")
        if ("+headroom" in version) != (env == "patched"):
            raise ProofFailed(f"{env}: {dist} {version} is the wrong build for this environment.")
    ui.info(f"{env}: transformers {info['transformers'][1]}, peft {info['peft'][1]}, torch {info['torch']} (from {prefix})")
    return info
