"""The PEP 440 local version a patched build carries, and the commit that sets it."""

from __future__ import annotations

import re
from pathlib import Path

from ..ground.errors import BuildError
from .series import Series

LOCAL_LABEL = "headroom"


def local_version(version: str, series: Series, line: str = "") -> str:
    """``5.25.0+headroom.newest.<8 hex of the series>``: a release line's name keeps the builds of one release on two
    lines apart (accelerate 1.16.0 is on both today); without vendor/lines.toml, ``<version>+headroom.<8 hex>``."""
    return f"{version}+{LOCAL_LABEL}.{line + '.' if line else ''}{series.short()}"


def _candidates(tree: Path) -> list[Path]:
    names = ["setup.py", "setup.cfg", "pyproject.toml", "PKG-INFO"]
    found = [tree / n for n in names if (tree / n).is_file()]
    for pattern in ("src/*/__init__.py", "src/*/version.py", "src/*/_version.py", "*/__init__.py", "*/version.py"):
        found.extend(sorted(p for p in tree.glob(pattern) if "tests" not in p.parts))
    return found


def stamp(tree: Path, version: str, local: str) -> list[str]:
    """Replace the declared ``version`` with ``local`` everywhere the package declares it."""
    v = re.escape(version)
    code = re.compile(r"(?i)(\b(?:__version__|version)\s*[=:]\s*)([\"'])" + v + r"\2")
    pkg_info = re.compile(r"(?m)^(Version:\s*)" + v + r"\s*$")
    changed = []
    for path in _candidates(tree):
        text = path.read_text(encoding="utf-8")
        if path.name == "PKG-INFO":
            new = pkg_info.sub(lambda m: m.group(1) + local, text, count=1)
        else:
            new = code.sub(lambda m: f"{m.group(1)}{m.group(2)}{local}{m.group(2)}", text)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(str(path.relative_to(tree)))
    code_files = [c for c in changed if c.endswith(".py") and c != "setup.py"]
    meta_files = [c for c in changed if c in ("setup.py", "setup.cfg", "pyproject.toml")]
    if not code_files or not meta_files:
        raise BuildError(
            f"could not find where {tree.name} declares version {version!r} (found: {changed or 'nothing'}). "
            "headroom looks for `version = \"...\"` in setup.py/setup.cfg/pyproject.toml and `__version__ = \"...\"` "
            "in the package's __init__.py; a package that reads its version dynamically needs a new rule in "
            "tools/headroom/sources/version.py."
        )
    return changed
