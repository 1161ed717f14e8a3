"""rebase on a release line (vendor/lines.toml): which line a rebase moves, and what it owes the other lines that
apply the same series.

:func:`resolve` picks the line (``LINE=``, or the one line that pins the upstream; several: a usage error naming
each). One series serves every line that pins an upstream, so a line's rebase keeps another line's diff of a patch
as that line's own copy when only the context changed (:func:`keep_for_other_lines`), and a patch may not leave the
series while another line still applies it (:func:`shared_series`).
"""

from __future__ import annotations

import re
from pathlib import Path

from ...ground import ui
from ...ground.errors import UsageError
from ...ground.fsutil import atomic_write
from ...sources import lines as lines_mod, pins as pins_mod, series as series_mod
from ...sources.pins import Pin
from . import state as state_mod
from .state import REBASE_DIR


def parse_requirement(text: str) -> tuple[str, str]:
    m = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([0-9][A-Za-z0-9.+!_-]*)\s*", text or "")
    if not m:
        raise UsageError(f"give the upstream and its new version as NAME==VERSION (e.g. transformers==5.23.0), not {text!r}.")
    return m.group(1), m.group(2)


def find_pin(pins: list[Pin], name: str) -> Pin:
    for p in pins:
        if p.name == name or p.distribution == name:
            return p
    return pins_mod.select(pins, [name])[0]  # raises with a "did you mean"


def resolve(root: Path, requirement: str, line: str | None = None) -> tuple[lines_mod.Line, Pin]:
    """The release line a rebase moves and its pin of the upstream named in ``requirement``. ``line`` (LINE=) picks
    one; without it the one line that pins the upstream, and a usage error naming each line when several do."""
    name, version = parse_requirement(requirement)
    lines = lines_mod.load(root)
    if line:
        (chosen,) = lines_mod.select(lines, line)
        pin = next((p for p in chosen.pins if name in (p.name, p.distribution)), None)
        if pin is None:
            raise UsageError(f"the {chosen.name} line does not pin {name} ({chosen.pins_file} pins "
                             f"{', '.join(p.name for p in chosen.pins)}). To add it to the line, add a [{name}] table "
                             f"there and `make apply LINE={chosen.name}`; to move another line, name it: "
                             f"LINE={' or LINE='.join(ln.name for ln in lines if ln.carries(name)) or '?'}.")
        return chosen, pin
    carrying = [(ln, p) for ln in lines for p in ln.pins if name in (p.name, p.distribution)]
    if not carrying:
        find_pin([p for ln in lines for p in ln.pins], name)  # raises with a "did you mean"
    if len(carrying) > 1:
        which = ", ".join(f"{ln.name} ({p.name} {p.version}, {ln.pins_file})" for ln, p in carrying)
        raise UsageError(f"{name} is pinned on {len(carrying)} release lines: {which}. Say which one moves: "
                         + " or ".join(f"`make rebase PIN={name}=={version} LINE={ln.name}`" for ln, _ in carrying)
                         + ". `make canary` says which line a release is for.")
    return carrying[0]


def on(state: dict) -> str:
    """`` LINE=<line>`` for the messages of a line's rebase (nothing without lines)."""
    return f" LINE={state['line']}" if state.get("line") else ""


def report_path(root: Path, pin: Pin) -> Path:
    """build/rebase/<name>-<version>.json; a line's other than the home line's: build/rebase/<line>/<name>-<version>.json."""
    return root / REBASE_DIR / pin.folder / f"{pin.name}-{pin.version}.json"


def siblings(root: Path, line: lines_mod.Line, name: str) -> list[str]:
    """The other lines that pin upstream ``name``: they apply the same series (patches/<name>/series)."""
    return [ln.name for ln in lines_mod.load(root) if ln.name != line.name and ln.carries(name)] if line.name else []


def shared_series(pin: Pin, line: str, siblings: list[str], lost: list[str], on: str) -> str:
    """Why a line's rebase cannot leave a patch out while another line applies the same series, and what to do."""
    return (f"{', '.join(lost)} would leave patches/{pin.name}/series, and the {' and '.join(siblings)} line(s) apply "
            f"the same series (one series serves every line that pins {pin.name}): it would be dropped there too, "
            f"where its release still needs it. Keep it on the {line} line for now (`make rebase PIN={pin.name}==<version>"
            f"{on}` without DROP=; a landed patch that still applies is kept and said), or first move or retire the "
            f"{' and '.join(siblings)} line(s) (docs/how-to/pick-a-line.md).")


def other_lines(root: Path, state: dict) -> dict[str, dict[str, bytes]]:
    """{line: {patch file name: the bytes it applies today}} for every other line that pins this upstream and uses
    the original of a patch (no copy of its own): what this rebase's export must not take from it."""
    name, line = state["name"], state.get("line", "")
    if not line:
        return {}
    out: dict[str, dict[str, bytes]] = {}
    for other in lines_mod.load(root):
        if other.name != line and other.carries(name):
            series = series_mod.load(root, name, other.name)
            out[other.name] = {p.name: p.read_bytes() for p in series.patches if p.parent == series.folder}
    return out


def keep_for_other_lines(root: Path, name: str, others: dict[str, dict[str, bytes]], results: list[dict]) -> None:
    """The export rewrote (or removed) an original another line still applies: that line keeps what it had. A patch
    whose new diff is the same fix in other context becomes that line's own copy; any other change is said, with the
    command that carries it over."""
    folder = root / series_mod.PATCHES_DIR / name
    for line, used in others.items():
        for pname, old in used.items():
            new = (folder / pname).read_bytes() if (folder / pname).is_file() else None
            if new == old:
                continue
            if new is not None and not series_mod.drift(new, old):
                copy = series_mod.copy_path(folder, line, pname)
                atomic_write(copy, old)
                ui.info(f"the {line} line keeps its diff of {pname} as its own copy "
                        f"({copy.relative_to(root)}): the same fix, its release's context")
                continue
            what = "was dropped" if new is None else "changed its fix"
            ui.warn(f"patches/{name}/{pname} {what} on this line, and the {line} line applies the same series: "
                    f"check it there (`make apply test LINE={line}`); a patch that line still needs is restored from "
                    f"git (`git show HEAD:patches/{name}/{pname}`) as its own copy, "
                    f"patches/{name}/lines/{line}/{pname}.")


def in_progress(root: Path, name: str | None, line: str | None = None) -> dict:
    """The one rebase in progress (of upstream ``name``, on ``line``, when given): its state, which names its line."""
    found = [s for s in state_mod.found(root) if (not name or s["name"] == name) and (not line or s.get("line") == line)]
    if not found:
        raise UsageError("no rebase in progress" + (f" of {name}" if name else "") + (f" on the {line} line" if line else "")
                         + ". Start one with `make rebase PIN=name==version" + (f" LINE={line}" if line else "") + "`.")
    if len(found) > 1:
        which = ", ".join(f"vendor/{state_mod.key(s)}" for s in found)
        raise UsageError(f"rebases of {which} are in progress: choose one with ONLY=NAME and LINE=LINE "
                         f"(e.g. `make rebase-continue ONLY={found[0]['name']}{on(found[0])}`).")
    return found[0]


def lock_keys(root: Path, requirement: str | None, line: str | None, only: list[str] | None) -> list[str]:
    """The checkouts a rebase command locks: ``rebase``, the one of the line it moves; ``rebase-continue`` and
    ``rebase-abort`` (no requirement), every line's (``line``: one line's) of the upstreams (``only``: those named)."""
    if requirement is not None:
        return [resolve(root, requirement, line)[1].key]
    known = [p for ln in lines_mod.select(lines_mod.load(root), line) for p in ln.pins]
    pins_mod.select(known, only)  # an unknown name: a usage error naming the known ones
    return [p.key for p in known if not only or p.name in only]
