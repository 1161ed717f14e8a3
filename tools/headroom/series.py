"""patches/<name>/series: the explicit order of a patch series.

One patch file name a line; blank lines and ``#`` comments are ignored. Every
``*.patch`` file in the folder must be listed, and every listed file must exist, so
the order never comes from a glob.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from .errors import SeriesError, UsageError

PATCHES_DIR = Path("patches")


@dataclass(frozen=True)
class Series:
    name: str
    folder: Path
    patches: tuple[Path, ...]

    def digest(self) -> str:
        """sha256 over the order and the bytes of every patch: the series' identity."""
        h = hashlib.sha256()
        for p in self.patches:
            h.update(p.name.encode() + b"\0")
            h.update(p.read_bytes())
            h.update(b"\0")
        return h.hexdigest()

    def short(self) -> str:
        return self.digest()[:8]


def load(root: Path, name: str) -> Series:
    folder = root / PATCHES_DIR / name
    series_file = folder / "series"
    if not folder.exists():
        return Series(name, folder, ())
    if not series_file.exists():
        stray = sorted(p.name for p in folder.glob("*.patch"))
        if stray:
            raise SeriesError(
                f"{series_file} is missing but {folder} holds {', '.join(stray)}. "
                "Create the series file listing the patches in the order they apply (or run `make export`)."
            )
        return Series(name, folder, ())
    listed: list[str] = []
    for lineno, raw in enumerate(series_file.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if "/" in line or not line.endswith(".patch"):
            raise SeriesError(f"{series_file}:{lineno}: {line!r} is not a patch file name in this folder (NNNN-name.patch).")
        if line in listed:
            raise SeriesError(f"{series_file}:{lineno}: {line} is listed twice. Remove the duplicate line.")
        if not (folder / line).is_file():
            raise SeriesError(f"{series_file}:{lineno}: {line} does not exist in {folder}. Restore the file or remove the line.")
        listed.append(line)
    unlisted = sorted(p.name for p in folder.glob("*.patch") if p.name not in listed)
    if unlisted:
        raise SeriesError(
            f"{folder} holds patch file(s) not listed in {series_file}: {', '.join(unlisted)}. "
            "Add them to the series in the order they apply, or delete them."
        )
    return Series(name, folder, tuple(folder / n for n in listed))


def match(tokens: list[str], names: list[str], upstream: str, flag: str = "--drop") -> list[str]:
    """Patch file names meant by ``tokens`` (``0002``, ``2``, ``toypkg/0002``, a stem or a file name)."""
    out = []
    for raw in tokens:
        t = raw.strip().removeprefix(f"{upstream}/")
        if not t:
            continue
        hits = [n for n in names if t in (n, n.removesuffix(".patch")) or n.startswith(f"{t}-")
                or (t.isdigit() and n.startswith(f"{int(t):04d}-"))]
        if len(hits) != 1:
            raise UsageError(f"{flag} {raw!r} matches {len(hits)} patch(es) of patches/{upstream}/; "
                             f"name one of: {', '.join(n[:4] for n in names)} (or the file name).")
        if hits[0] not in out:
            out.append(hits[0])
    return out
