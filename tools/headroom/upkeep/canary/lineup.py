"""canary's question about the release lines (vendor/lines.toml): can a line take an upstream it waits for, can a
line then retire, and does a new release move the newest line?

A line that does not pin an upstream another line pins (the newest line has no peft) waits for a release of it that
the line's own releases accept: the requirement comes from the line's checkouts (``dependency_versions_table.py``,
where transformers writes ``"peft": "peft>=0.22.0"``), the releases from the package index. A line retires when a
newer line serves the same people: when another line pins every upstream it pins.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from ...sources import checkout, lines as lines_mod
from ...sources.lines import Line


def requirement(root: Path, line: Line, upstream: str) -> str | None:
    """The specifier (``>=0.22.0``) ``line``'s checkouts require of ``upstream``, or None when none says."""
    for pin in line.pins:
        for table in sorted(checkout.vendor_dir(root, pin).glob("src/*/dependency_versions_table.py")):
            m = re.search(rf'"{re.escape(upstream)}":\s*"{re.escape(upstream)}([^"]*)"', table.read_text(encoding="utf-8"))
            if m:
                return m.group(1).strip()
    return None


def advise(root: Path, versions_of: Callable[[str], list[str]]) -> list[str]:
    """One line of advice per thing that can move: a line that can take an upstream (and the line that can then
    retire), a line still waiting (and for what). [] without release lines."""
    try:
        lines = lines_mod.load(root)
    except Exception:  # noqa: BLE001 (a broken lines.toml is reported by every line-aware command, not here)
        return []
    if len(lines) < 2:
        return []
    out = []
    pinned = {p.name: p for ln in lines for p in ln.pins}
    for line in lines:
        for name in sorted(set(pinned) - {p.name for p in line.pins}):
            spec = requirement(root, line, name)
            try:
                wanted = SpecifierSet(spec or "")
                found = sorted((v for v in versions_of(pinned[name].distribution) if _ok(v, wanted)), key=Version)
            except InvalidSpecifier:
                continue
            if not found:
                out.append(f"the {line.name} line waits for {name}{spec or ''}: no such release on the index")
                continue
            out.append(f"the {line.name} line can take {name} {found[-1]} ({line.releases()} require "
                       f"{name}{spec or ''}): add it to {line.pins_file}, then `make apply build test LINE={line.name}`")
            after = {p.name for p in line.pins} | {name}
            for other in lines:
                if other is not line and {p.name for p in other.pins} <= after:
                    out.append(f"the {other.name} line can then retire: the {line.name} line serves its people "
                               f"({', '.join(sorted(after))}); see docs/how-to/pick-a-line.md")
    return out


def _ok(version: str, wanted: SpecifierSet) -> bool:
    try:
        return not Version(version).is_prerelease and Version(version) in wanted
    except InvalidVersion:
        return False
