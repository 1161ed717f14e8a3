"""Safe extraction of sdists and ``git archive`` tarballs.

Every member is checked before anything is written: no absolute paths, no ``..``, no
links that leave the tree, no device files. The single top-level folder of an sdist is
stripped.
"""

from __future__ import annotations

import gzip
import os
import posixpath
import tarfile
import zlib
from pathlib import Path

from ..ground.errors import CorruptArchive, UnsafeArchive

# What reading a truncated or non-gzip file raises (ENOSPC and other OSErrors are not among them).
UNREADABLE = (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile)


def _check(member: tarfile.TarInfo, archive: Path) -> str:
    name = member.name
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise UnsafeArchive(f"refusing {archive}: member {name!r} has an absolute path. The archive is not a normal sdist.")
    norm = posixpath.normpath(name)
    if norm == ".." or norm.startswith("../") or "/../" in f"/{name}/":
        raise UnsafeArchive(f"refusing {archive}: member {name!r} contains '..'. The archive is not a normal sdist.")
    if member.issym() or member.islnk():
        target = member.linkname
        base = posixpath.dirname(norm) if member.issym() else ""
        joined = posixpath.normpath(posixpath.join(base, target))
        if target.startswith("/") or joined == ".." or joined.startswith("../"):
            raise UnsafeArchive(
                f"refusing {archive}: link {name!r} -> {target!r} points outside the tree. The archive is not a normal sdist."
            )
    elif not (member.isfile() or member.isdir()):
        raise UnsafeArchive(f"refusing {archive}: member {name!r} is a device or fifo. The archive is not a normal sdist.")
    return norm


def extract(archive: Path, dest: Path, *, strip_top: bool) -> int:
    """Extract ``archive`` into ``dest`` (created); return the newest member mtime (the release time)."""
    try:
        return _extract(archive, dest, strip_top=strip_top)
    except UNREADABLE as exc:
        raise CorruptArchive(f"{archive} is not a readable gzip tar archive ({type(exc).__name__}: {exc})") from None


def _extract(archive: Path, dest: Path, *, strip_top: bool) -> int:
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        names = [_check(m, archive) for m in members]
        if strip_top:
            tops = {n.split("/", 1)[0] for n in names}
            if len(tops) != 1:
                raise UnsafeArchive(f"refusing {archive}: an sdist has one top-level folder, this has {sorted(tops)[:5]}.")
            top = tops.pop()
            keep = []
            for m, n in zip(members, names):
                if n == top:
                    continue
                m.name = n[len(top) + 1 :]
                if m.islnk():
                    m.linkname = posixpath.normpath(m.linkname)[len(top) + 1 :]
                keep.append(m)
            members = keep
        dest.mkdir(parents=True, exist_ok=True)
        tar.extractall(dest, members=members, filter="data")
    newest = max((m.mtime for m in members if m.isfile()), default=0)
    # Directory mtimes are not tracked by git; file modes are (only the x bit).
    os.utime(dest, None)
    return int(newest)


def unpacked_size(archive: Path) -> int:
    """Bytes the archive's files take once extracted."""
    with tarfile.open(archive) as tar:
        return sum(m.size for m in tar.getmembers() if m.isfile())
