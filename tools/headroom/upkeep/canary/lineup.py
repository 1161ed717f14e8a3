"""canary's questions about the release lines (vendor/lines.toml): which new releases are for which line, does a new
release move a line or call for a new one, can a line take an upstream it waits for, and can a line then retire?

Which releases are for a line (:func:`refusals`): a new release of an upstream the line pins is the line's when it
accepts every other release the line pins. What a release accepts is its dependency table
(``src/<name>/dependency_versions_table.py`` in its sdist, where transformers writes ``"peft": "peft>=0.22.0"``):
transformers 5.24.0 refuses peft 0.21.2, so it is not for the PEFT line, which stays on 5.23.x.

What a release does to a line (:func:`moves`), the rule:

* the original line (``original = true``: the newest) tracks the newest releases. A new release it accepts moves it:
  ``make rebase PIN=transformers==5.26.0 LINE=newest``.
* a new release that refuses something the newest line pins (its requirement no release of the line meets), or a new
  major, does not move it: the newest line stays for the people it serves, and the canary proposes a new line of the
  new release (a table in vendor/lines.toml, its pins file, ``original`` moved to it), as the newest line was made
  beside the PEFT line when transformers 5.24.0 refused peft 0.21.2.
* another line takes the new releases it accepts (patch releases of its pins, mostly): ``make rebase ... LINE=peft``;
  the ones it refuses are said once, with the requirement.

A line that does not pin an upstream another line pins (the newest line has no peft) waits for a release of it that
the line's own releases accept: the requirement comes from the line's checkouts, the releases from the package
index (:func:`advise`). A line retires when a newer line serves the same people: when another line pins every
upstream it pins; how, in docs/how-to/pick-a-line.md (configuration: vendor/lines.toml and
vendor/retired-lines.toml).
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Callable
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from ...ground.errors import HeadroomError
from ...sources import checkout, fetch, lines as lines_mod
from ...sources.lines import Line
from ...sources.pins import Pin

TABLE = "dependency_versions_table.py"


def table(text: str) -> dict[str, str]:
    """{distribution: specifier} of a dependency table (``"peft": "peft>=0.22.0"`` -> {"peft": ">=0.22.0"})."""
    return {m.group(1): m.group(2).strip() for m in re.finditer(r'"([A-Za-z0-9._-]+)":\s*"\1([^"]*)"', text)}


def requirement(root: Path, line: Line, upstream: str) -> str | None:
    """The specifier (``>=0.22.0``) ``line``'s releases require of ``upstream``, or None when none says: from its
    checkouts, or (a fresh clone: none applied) from its pinned sdists, verified by their sha256."""
    for pin in line.pins:
        paths = sorted(checkout.vendor_dir(root, pin).glob(f"src/*/{TABLE}"))
        found = table(paths[0].read_text(encoding="utf-8")) if paths else _pinned_table(pin)
        if found.get(upstream) is not None:
            return found[upstream]
    return None


def _pinned_table(pin: Pin) -> dict[str, str]:
    try:
        return sdist_table(fetch.fetch(pin, "sdist"))
    except HeadroomError:  # not downloadable here: the line's requirement is unknown, and said so
        return {}


def sdist_table(sdist: Path) -> dict[str, str]:
    """The dependency table of a release's sdist (``<top>/src/<name>/dependency_versions_table.py``); {} without."""
    try:
        with tarfile.open(sdist) as tar:
            for member in tar:
                parts = member.name.split("/")
                if member.isfile() and len(parts) == 4 and parts[1] == "src" and parts[3] == TABLE:
                    f = tar.extractfile(member)
                    return table(f.read().decode("utf-8", errors="replace")) if f else {}
    except (tarfile.TarError, OSError):
        return {}
    return {}


def refusals(new: Pin, sdist: Path, line: Line) -> list[str]:
    """Why ``new`` (a release of an upstream ``line`` pins) is not for ``line``: each other release the line pins that
    its dependency table refuses ([] when it is the line's)."""
    wanted = sdist_table(sdist)
    out = []
    for p in line.pins:
        spec = wanted.get(p.distribution)
        if p.name == new.name or spec is None:
            continue
        try:
            ok = Version(p.version) in SpecifierSet(spec)
        except (InvalidSpecifier, InvalidVersion):
            continue
        if not ok:
            out.append(f"{new.name} {new.version} requires {p.distribution}{spec}; the {line.label} line pins {p.version}")
    return out


def new_line_name(name: str, version: str) -> str:
    """The name proposed for a line of a release: ``transformers-6-0``."""
    v = Version(version)
    return f"{name}-{v.major}-{v.minor}"


def moves(judged: list[dict]) -> list[str]:
    """What each line's new releases do to it (the rule in this module's docstring), one advice a line. ``judged``:
    per line {"line": Line, "taken": {upstream: [versions for it]}, "refused": {upstream: {version: [why]}}}."""
    out = []
    for j in judged:
        line: Line = j["line"]
        on = f" LINE={line.name}" if line.name else ""
        for pin in line.pins:
            taken = sorted(j["taken"].get(pin.name, []), key=Version)
            refused = sorted(j["refused"].get(pin.name, {}).items(), key=lambda kv: Version(kv[0]))
            major = [v for v in taken if Version(v).major > Version(pin.version).major]
            taken = [v for v in taken if v not in major]
            if taken:
                v = taken[-1]
                what = f"move the {line.label} line" if line.original or not line.name else f"the {line.label} line can move"
                out.append(f"{pin.name} {v}: {what}: `make rebase PIN={pin.distribution}=={v}{on}`"
                           + (f" (then `make apply build test{on}`)" if line.name else ""))
            for v, why in ([(major[-1], [f"a new major of {pin.name} (the line pins {pin.version})"])] if major else []) + \
                    (refused[:1] if line.original else []):
                name = new_line_name(pin.name, v)
                out.append(f"{pin.name} {v}: propose a new line; the {line.label} line stays for the people it serves "
                           f"({'; '.join(why)}): add [{name}] to vendor/lines.toml with pins = \"{name}.pins.toml\" "
                           f"(a copy of {line.pins_file}, without what {v} refuses) and original = true (moved from "
                           f"[{line.name}]), then `make apply LINE={name}` and `make rebase PIN={pin.distribution}=={v} "
                           f"LINE={name}` (docs/how-to/pick-a-line.md)")
            if refused and not line.original:
                v, why = refused[0]
                later = " and newer" if len(refused) > 1 or v != refused[-1][0] else ""
                out.append(f"{pin.name} {v}{later}: not for the {line.label} line ({'; '.join(why)}): it stays on "
                           f"{pin.name} {taken[-1] if taken else pin.version}")
    return out


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
            waiting = [p for p, why in line.unproven.items() if name in why]
            out.append(f"the {line.name} line can take {name} {found[-1]} ({line.releases()} require "
                       f"{name}{spec or ''}): add a [{name}] table to {line.pins_file}"
                       + (f", remove {', '.join(waiting)} from [{line.name}.unproven]" if waiting else "")
                       + f", then `make apply build test LINE={line.name}`")
            after = {p.name for p in line.pins} | {name}
            for other in lines:
                if other is not line and {p.name for p in other.pins} <= after:
                    out.append(f"the {other.name} line can then retire: the {line.name} line serves its people "
                               f"({', '.join(sorted(after))}) once `make test LINE={line.name}` proves it with {name} "
                               f"{found[-1]}: record it in vendor/retired-lines.toml and remove [{other.name}] from "
                               "vendor/lines.toml (docs/how-to/pick-a-line.md#retire-a-line)")
    return out


def _ok(version: str, wanted: SpecifierSet) -> bool:
    try:
        return not Version(version).is_prerelease and Version(version) in wanted
    except InvalidVersion:
        return False
