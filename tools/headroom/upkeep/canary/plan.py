"""canary's plan: which releases are new, and which release sets ("candidates") are looked at.

New releases come from the machine's own pip index settings (``pip index versions NAME``, through
:func:`fetch.index_versions`), compared with :mod:`packaging.version`; pre-releases only when asked. Or they are given
(``RELEASES=accelerate==1.16.0,transformers==5.25.0``). Each new release is a candidate alone (the other
upstreams stay on their pins); when more than one upstream has a new release, the newest of each together
is one more candidate: the combination.

torch is looked at like an upstream: on the index, the newest release of each torch minor newer than every torch the
home line declares (vendor/lines.toml ``torch``: those are proven by `make test TORCH=...`; 2.16.1 stands for 2.16.x;
a local build such as 2.13.0+cpu is no release of its own), or given (``TORCH=2.14.1``, ``TORCH=newest`` or
``RELEASES=torch==2.14.1``: any release but the primary). A torch candidate keeps every upstream on its pin and is
compared with the reference on the primary torch; the combination takes the newest torch too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from packaging.version import InvalidVersion, Version

from ...ground import ui
from ...ground.errors import UsageError
from ...sources import fetch
from ...sources.pins import Pin


@dataclass(frozen=True)
class Candidate:
    """One set of releases to look at: ``changes`` {upstream name: new version}; every other upstream on its pin."""

    changes: tuple[tuple[str, str], ...]
    kind: str  # "release" (one new release alone) or "combination" (the newest of every upstream that has one)

    @property
    def id(self) -> str:
        return ",".join(f"{n}=={v}" for n, v in self.changes)

    @property
    def slug(self) -> str:
        return re.sub(r"[^A-Za-z0-9.+-]+", "_", "-".join(f"{n}-{v}" for n, v in self.changes))

    def version_of(self, name: str) -> str | None:
        return dict(self.changes).get(name)

    def torch(self, primary: str) -> str:
        """The torch this candidate runs on: the one it changes to, else the primary."""
        return self.version_of(TORCH) or primary


TORCH = "torch"  # the name torch goes by in candidates, RELEASES= and the reports


def _release(text: str) -> Version | None:
    """A release version (no local part: 2.13.0+cpu is a build of 2.13.0), or None."""
    try:
        v = Version(text)
    except InvalidVersion:
        return None
    return None if v.local else v


def newer_torch(since: str, versions: list[str], *, pre: bool) -> list[str]:
    """torch's releases newer than ``since``, the newest of each minor (2.14.1 stands for 2.14.x), oldest first."""
    current = Version(since)
    by_minor: dict[tuple[int, int], Version] = {}
    for text in versions:
        v = _release(text)
        if v is None or v <= current or (not pre and (v.is_prerelease or v.is_devrelease)):
            continue
        key = (v.major, v.minor)
        by_minor[key] = max(by_minor.get(key, v), v)
    return [str(v) for v in sorted(by_minor.values())]


def parse_torch(text: str) -> list[str]:
    """``TORCH=`` of the canary: versions, comma-separated, or ``newest`` (the newest on the index)."""
    out = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        if item != "newest" and _release(item) is None:
            raise UsageError(f"TORCH: give torch releases as versions, comma-separated (e.g. 2.14.1,2.15.0), or newest "
                             f"(the newest on the index), not {item!r}.")
        out.append(item)
    if not out:
        raise UsageError("TORCH: name a torch release (e.g. TORCH=2.14.1) or newest.")
    return out


def torch_releases(given: list[str], primary: str, *, pre: bool, versions_of=fetch.index_versions) -> list[str]:
    """The torch releases named by ``TORCH=`` (``newest`` looked up on the index), each other than the primary."""
    out = []
    for item in given:
        if item == "newest":
            found = newer_torch(primary, versions_of(TORCH), pre=pre)
            if not found:
                ui.info(f"torch {primary}: no newer release on the index (TORCH=newest)")
                continue
            item = found[-1]
        if item == primary:
            raise UsageError(f"TORCH: {primary} is the primary torch already (vendor/lines.toml); name another release.")
        if item not in out:
            out.append(item)
    return out


def newer(pin: Pin, versions: list[str], *, pre: bool) -> list[str]:
    """The versions newer than the pin, oldest first; pre-releases (and dev releases) only with ``pre``."""
    current = Version(pin.version)
    out = []
    for text in versions:
        try:
            v = Version(text)
        except InvalidVersion:
            continue
        if v > current and (pre or not (v.is_prerelease or v.is_devrelease)):
            out.append(v)
    return [str(v) for v in sorted(set(out))]


def parse_releases(text: str, pins: list[Pin], torch: str | None = None) -> dict[str, list[str]]:
    """``accelerate==1.16.0,transformers==5.25.0`` -> {upstream: [versions]}; names are pins' names or distributions,
    or ``torch`` (another release than the primary torch, ``torch``)."""
    by = {p.name: p for p in pins} | {p.distribution: p for p in pins}
    if torch and TORCH not in by:
        by[TORCH] = Pin(name=TORCH, distribution=TORCH, version=torch, sdist="", sdist_sha256="", wheel="",
                        wheel_sha256="", repository="", tag="")
    out: dict[str, list[str]] = {}
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([0-9][A-Za-z0-9.+!_-]*)", item)
        if not m:
            raise UsageError(f"RELEASES: give each release as NAME==VERSION, comma-separated "
                             f"(e.g. accelerate==1.16.0,transformers==5.25.0), not {item!r}.")
        pin = by.get(m.group(1))
        if pin is None:
            raise UsageError(f"RELEASES: {m.group(1)!r} is not pinned in vendor/pins.toml "
                             f"(pinned: {', '.join(p.name for p in pins)}{', and torch' if torch else ''}).")
        if m.group(2) == pin.version:
            what = "the primary torch is" if pin.name == TORCH and pin.name not in {p.name for p in pins} else \
                f"{pin.name} is pinned to"
            raise UsageError(f"RELEASES: {what} {pin.version} already; name a newer release.")
        out.setdefault(pin.name, [])
        if m.group(2) not in out[pin.name]:
            out[pin.name].append(m.group(2))
    return out


def discover(pins: list[Pin], *, pre: bool, versions_of=fetch.index_versions,
             torch: str | None = None) -> dict[str, list[str]]:
    """{upstream: new versions, oldest first} from the index, for every pin; and for torch (its newest release of
    each minor newer than ``torch``: the newest the home line declares), given one."""
    out = {}
    for pin in pins:
        found = newer(pin, versions_of(pin.distribution), pre=pre)
        ui.info(f"{pin.name} {pin.version}: " + (f"new on the index: {', '.join(found)}" if found else "no newer release"))
        if found:
            out[pin.name] = found
    if torch:
        found = newer_torch(torch, versions_of(TORCH), pre=pre)
        ui.info(f"torch {torch} (the newest the lines are proven on): "
                + (f"new on the index: {', '.join(found)} (the newest of each minor)" if found else "no newer release"))
        if found:
            out[TORCH] = found
    return out


def candidates(pins: list[Pin], new: dict[str, list[str]]) -> list[Candidate]:
    """Each new release alone, in pins.toml order and torch last, then the newest of every upstream (and torch)
    together (when 2+ have one)."""
    order = [p.name for p in pins if p.name in new] + ([TORCH] if TORCH in new else [])
    out = [Candidate(((name, v),), "release") for name in order for v in new[name]]
    if len(order) > 1:
        newest = tuple((name, max(new[name], key=Version)) for name in order)
        out.append(Candidate(newest, "combination"))
    return out


def check_options(lines: list, releases: str | None, torch: str | None) -> None:
    """RELEASES= and TORCH= of the canary, checked before any work (a UsageError names what is wrong): a release
    names an upstream one of the ``lines`` judged pins, or torch."""
    if releases is not None:
        parse_releases(releases, [p for ln in lines for p in ln.pins], lines[0].primary_torch)
    if torch is not None:
        parse_torch(torch)
