"""lint: ruff as the upstream runs it, at the version the upstream pins.

The version comes from the upstream's own sdist (``[lint]`` of ``pr_data/<name>.toml``: the
file and the pattern that pin ruff, e.g. ``"ruff==0.14.10"`` in transformers' setup.py). That
ruff is installed once into ``build/tools/ruff-<version>/`` with pip (the index settings of the
machine apply) and run in the tree of the patch with the upstream's configuration
(``pyproject.toml``/``ruff.toml`` found by ruff itself): ``ruff check`` and ``ruff format --check``
on the Python files the patch changes.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path

from ...ground import proc, ui
from .config import PrConfig

TOOLS_DIR = Path("build") / "tools"
CONFIG_FILES = ("ruff.toml", ".ruff.toml", "pyproject.toml")

# (root, version) -> argv prefix of that ruff (e.g. [".../bin/ruff"])
Installer = Callable[[Path, str], list[str]]


def pinned_version(config: PrConfig, tree: Path) -> tuple[str | None, str]:
    """(version, where) of the ruff the upstream pins in ``tree``; (None, why) when it cannot be found."""
    if not config.ruff_pin_file:
        return None, f"no [lint] in pr_data/{config.name}.toml"
    path = tree / config.ruff_pin_file
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None, f"{config.ruff_pin_file} not found in the upstream's tree"
    m = re.search(config.ruff_pin_pattern, text)
    if not m:
        return None, f"no match for {config.ruff_pin_pattern!r} in {config.ruff_pin_file}"
    return m.group(1), f"{config.ruff_pin_file}: {m.group(0)}"


def pip_install(root: Path, version: str) -> list[str]:
    """ruff==version in build/tools/ruff-<version>/ (installed once); its executable."""
    target = root / TOOLS_DIR / f"ruff-{version}"
    exe = target / "bin" / "ruff"
    if not exe.exists():
        ui.info(f"installing ruff {version} into {target.relative_to(root)}/ (the version upstream pins)")
        proc.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                  "--target", target, f"ruff=={version}"], what=f"pip install ruff=={version}")
    return [str(exe)]


def run(root: Path, config: PrConfig, tree: Path, files: list[str], installer: Installer = pip_install) -> dict:
    """Lint the changed Python files of ``tree``; a dict for checks.json (status "passed", "failed" or why not run)."""
    py_files = [f for f in files if f.endswith(".py") and (tree / f).exists()]
    if not py_files:
        return {"status": "no Python files changed"}
    version, where = pinned_version(config, tree)
    if version is None:
        return {"status": f"not run: {where}"}
    argv = installer(root, version)
    config_file = next((c for c in CONFIG_FILES if (tree / c).exists()), "(ruff defaults)")
    out: dict = {"version": version, "pinned_in": where, "config": config_file, "files": py_files}
    ok = True
    for name, args in (("check", ["check", "--no-cache"]), ("format", ["format", "--check", "--no-cache"])):
        result = proc.run([*argv, *args, *py_files], cwd=tree, check=False, what=f"ruff {' '.join(args[:2])}")
        out[name] = {"status": "passed" if result.returncode == 0 else "failed", "output": result.output[-6000:]}
        ok = ok and result.returncode == 0
    out["status"] = "passed" if ok else "failed"
    return out
