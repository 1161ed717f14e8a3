"""canary's plan: which releases are new, and which release sets ("candidates") are looked at.

New releases come from the machine's own pip index settings (``pip index versions NAME``, through
:func:`fetch.index_versions`), compared with :mod:`packaging.version`; pre-releases only when asked. Or they are given
(``RELEASES=accelerate==1.16.0,transformers==5.25.0``). Each new release is a candidate alone (the other
upstreams stay on their pins); when more than one upstream has a new release, the newest of each together
is one more candidate: the combination.
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


def parse_releases(text: str, pins: list[Pin]) -> dict[str, list[str]]:
    """``accelerate==1.16.0,transformers==5.25.0`` -> {upstream: [versions]}; names are pins' names or distributions."""
    by = {p.name: p for p in pins} | {p.distribution: p for p in pins}
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
                             f"(pinned: {', '.join(p.name for p in pins)}).")
        if m.group(2) == pin.version:
            raise UsageError(f"RELEASES: {pin.name} is pinned to {pin.version} already; name a newer release.")
        out.setdefault(pin.name, [])
        if m.group(2) not in out[pin.name]:
            out[pin.name].append(m.group(2))
    return out


def discover(pins: list[Pin], *, pre: bool, versions_of=fetch.index_versions) -> dict[str, list[str]]:
    """{upstream: new versions, oldest first} from the index, for every pin."""
    out = {}
    for pin in pins:
        found = newer(pin, versions_of(pin.distribution), pre=pre)
        ui.info(f"{pin.name} {pin.version}: " + (f"new on the index: {', '.join(found)}" if found else "no newer release"))
        if found:
            out[pin.name] = found
    return out


def candidates(pins: list[Pin], new: dict[str, list[str]]) -> list[Candidate]:
    """Each new release alone, in pins.toml order, then the newest of every upstream together (when 2+ have one)."""
    order = [p.name for p in pins if p.name in new]
    out = [Candidate(((name, v),), "release") for name in order for v in new[name]]
    if len(order) > 1:
        newest = tuple((name, max(new[name], key=Version)) for name in order)
        out.append(Candidate(newest, "combination"))
    return out
