"""The release environments of the bench's releases part: which accelerate goes beside each transformers release, and
what a row says when a pair's dependencies do not resolve.

A release environment holds torch, one official transformers wheel and requirements/bench-env.txt, whose accelerate
line a release list item ``5.23.0@1.15.0`` replaces (a copy under build/bench/releases/; bench-env.txt itself for its
own accelerate). When envs.ensure raises DependencyUnresolved, :func:`explain` names the requirement pip found no
match for and the newest final release of it on the index (:func:`fetch.index_versions`), or says unknown.
"""

from __future__ import annotations

import re
from pathlib import Path

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..ground.errors import CommandFailed, DataError, DependencyUnresolved
from ..ground.fsutil import atomic_write
from ..sources import fetch
from ..proof import envs
from .common import OUT_DIR

ENV_REQUIREMENTS = Path("requirements") / "bench-env.txt"
RECORDS = OUT_DIR / "releases"


def env_name(version: str, accelerate: str) -> str:
    return f"release-{version}-acc{accelerate}"


def bench_accelerate(text: str) -> str:
    """The accelerate version requirements/bench-env.txt pins (``accelerate==X``): the releases' default."""
    for _, line in envs.requirement_lines(text):
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if canonicalize_name(req.name) == "accelerate" and len(req.specifier) == 1:
            spec = next(iter(req.specifier))
            if spec.operator == "==":
                return spec.version
    raise DataError(f"{ENV_REQUIREMENTS} pins no accelerate (a line accelerate==<version>): the bench's release "
                    "environments need one. Add it.")


def with_accelerate(text: str, version: str) -> str:
    """bench-env.txt's text with its accelerate line pinned to ``version`` instead (the rest unchanged)."""
    old = bench_accelerate(text)
    lines = [f"accelerate=={version}" if raw.split("#", 1)[0].strip().replace(" ", "") == f"accelerate=={old}" else raw
             for raw in text.splitlines()]
    return f"# {ENV_REQUIREMENTS} with accelerate=={version} (headroom bench --transformers X@{version})\n" \
        + "\n".join(lines) + "\n"


def requirements_for(root: Path, accelerate: str) -> Path:
    """The requirements file of a release environment with this accelerate: bench-env.txt itself for its own
    version, else a copy with the accelerate line replaced, under build/bench/releases/."""
    text = (root / ENV_REQUIREMENTS).read_text(encoding="utf-8")
    if bench_accelerate(text) == accelerate:
        return ENV_REQUIREMENTS
    path = RECORDS / f"bench-env-accelerate-{accelerate}.txt"
    atomic_write(root / path, with_accelerate(text, accelerate))
    return path


def default_accelerate(root: Path) -> str:
    return bench_accelerate((root / ENV_REQUIREMENTS).read_text(encoding="utf-8"))


def label(version: str, accelerate: str, default: str) -> str:
    """A row's name: "transformers X", and "+ accelerate Y" when Y is not bench-env.txt's."""
    return f"transformers {version}" + ("" if accelerate == default else f" + accelerate {accelerate}")


def missing_requirement(exc: DependencyUnresolved) -> str | None:
    """The first requirement pip found no match for (envs.unresolved's "no match:" line), without "(from ...)"."""
    for line in exc.details.splitlines():
        if line.strip().startswith("no match:"):
            return re.sub(r"(\s*\(from [^)]*\))+$", "", line.split("no match:", 1)[1].strip())
    return None


def newest_on_index(name: str) -> str | None:
    """The newest final release of ``name`` on the index (what ``pip index versions`` without ``--pre`` names), or
    None when there is none or pip fails."""
    try:
        return fetch.newest(fetch.index_versions(name), final=True)
    except CommandFailed:
        return None


def not_installable(requirement: str | None, newest: str | None, fallback: str = "") -> str:
    """What a row says for a release whose dependencies do not resolve."""
    if requirement is None:
        return f"not installable: {fallback or 'its dependencies do not resolve'}"
    return f"not installable: {requirement} (newest on the index: {newest or 'unknown'})"


def explain(exc: DependencyUnresolved) -> str:
    requirement = missing_requirement(exc)
    newest = None
    if requirement is not None:
        try:
            newest = newest_on_index(Requirement(requirement).name)
        except InvalidRequirement:
            pass
    conflict = next((line.strip() for line in exc.details.splitlines() if line.strip()), "")
    return not_installable(requirement, newest, conflict)
