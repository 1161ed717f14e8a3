"""patches/<name>/series: the explicit order of a patch series.

One patch file name a line; blank lines and ``#`` comments are ignored. Every
``*.patch`` file in the folder must be listed, and every listed file must exist, so
the order never comes from a glob.

patches/<name>/retired.toml (optional) records the patches the series no longer carries
because upstream made them unnecessary; their history is in git::

    [[retired]]
    patch = "0002-....patch"          # the file name it had in the series
    subject = "..."                   # its commit subject
    fixed = "..."                     # one line: what it fixed
    retired_in = "accelerate 1.16.0"  # the upstream release that made it unnecessary
    how = "..."                       # one line: how upstream fixed it
    found_by = "..."                  # one line: how headroom found out
    last_commit = "<40 hex>"          # the headroom commit that last carried it
"""

from __future__ import annotations

import difflib
import hashlib
import re
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from ..ground.errors import SeriesError, UsageError

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


@dataclass(frozen=True)
class Retired:
    """One entry of patches/<name>/retired.toml: a patch upstream made unnecessary."""

    patch: str  # the file name it had in the series
    subject: str  # its commit subject
    fixed: str  # one line: what it fixed
    retired_in: str  # the upstream release that made it unnecessary, e.g. "accelerate 1.16.0"
    how: str  # one line: how upstream fixed it
    found_by: str  # one line: how headroom found out
    last_commit: str  # the headroom commit (40 hex) that last carried it

    def line(self, upstream: str) -> str:
        """What ``make pr`` says instead of drafting it."""
        return (f"{upstream}/{self.patch[:4]} is retired: {self.retired_in} made it unnecessary ({self.how}); "
                f"last carried in {self.last_commit[:12]}. Nothing to draft.")


RETIRED_FILE = "retired.toml"
_RETIRED_KEYS = tuple(f.name for f in fields(Retired))


def load_retired(root: Path, name: str) -> tuple[Retired, ...]:
    """patches/<name>/retired.toml, validated strictly; no file means no retired patch."""
    path = root / PATCHES_DIR / name / RETIRED_FILE
    if not path.exists():
        return ()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SeriesError(f"{path}: not valid TOML ({exc}). Fix the file (its format is in "
                          "tools/headroom/sources/series.py).") from None
    for key in data:
        if key != "retired":
            raise SeriesError(f"{path}: unknown top-level key {key!r}; the file holds only [[retired]] tables.")
    entries = data.get("retired", [])
    if not isinstance(entries, list):
        raise SeriesError(f"{path}: retired must be an array of tables [[retired]].")
    out: list[Retired] = []
    for i, entry in enumerate(entries):
        where = f"{path}: [[retired]] #{i + 1}"
        if not isinstance(entry, dict):
            raise SeriesError(f"{where} must be a table.")
        for key in entry:
            if key not in _RETIRED_KEYS:
                close = difflib.get_close_matches(key, _RETIRED_KEYS, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else f" Allowed: {', '.join(_RETIRED_KEYS)}."
                raise SeriesError(f"{where} has an unknown key {key!r}.{hint}")
        missing = [k for k in _RETIRED_KEYS if k not in entry]
        if missing:
            raise SeriesError(f"{where} lacks {', '.join(missing)}.")
        bad = [k for k in _RETIRED_KEYS if not isinstance(entry[k], str) or not entry[k].strip() or "\n" in entry[k]]
        if bad:
            raise SeriesError(f"{where}: {', '.join(bad)} must be one non-empty line of text.")
        if "/" in entry["patch"] or not re.fullmatch(r"\d{4}-.+\.patch", entry["patch"]):
            raise SeriesError(f"{where}: patch {entry['patch']!r} is not a patch file name (NNNN-name.patch).")
        if not re.fullmatch(r"[0-9a-f]{40}", entry["last_commit"]):
            raise SeriesError(f"{where}: last_commit {entry['last_commit']!r} is not a 40-hex commit.")
        if entry["patch"] in (r.patch for r in out):
            raise SeriesError(f"{where}: {entry['patch']} is retired twice. Remove the duplicate table.")
        out.append(Retired(**entry))
    return tuple(out)


LINES_DIR = "lines"  # patches/<name>/lines/<line>/NNNN-*.patch: a line's own copy of a patch of the series


def copy_path(folder: Path, line: str, patch: str) -> Path:
    return folder / LINES_DIR / line / patch


def load(root: Path, name: str, line: str = "") -> Series:
    """patches/<name>/'s series; for ``line``, each patch that line holds its own copy of (patches/<name>/lines/<line>/)
    is that copy. A copy of a patch the series does not list is an error."""
    series = _load(root, name)
    copies = series.folder / LINES_DIR
    if not copies.is_dir():
        return series
    names = {p.name for p in series.patches}
    for stray in sorted(p for p in copies.glob("*/*.patch") if p.name not in names):
        raise SeriesError(f"{stray} is a line's copy of a patch that {series.folder / 'series'} does not list. "
                          "Delete it, or add the patch to the series.")
    if not line:
        return series
    for p in series.patches:
        copy = copy_path(series.folder, line, p.name)
        why = copy.is_file() and drift(p.read_bytes(), copy.read_bytes())
        if why:
            raise SeriesError(f"{copy} is not the same fix as the original {p}: {why}. A line's own copy may differ "
                              "only in context; change the fix in the original and export every line again.")
    return Series(name, series.folder, tuple(copy_path(series.folder, line, p.name)
                                             if copy_path(series.folder, line, p.name).is_file() else p
                                             for p in series.patches))


def _load(root: Path, name: str) -> Series:
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
    both = [r.patch for r in load_retired(root, name) if r.patch in listed]
    if both:
        raise SeriesError(f"{series_file} lists {', '.join(both)}, which {folder / RETIRED_FILE} says is retired. "
                          "Remove it from one of them.")
    return Series(name, folder, tuple(folder / n for n in listed))


def hits_for(token: str, names: list[str], upstream: str) -> list[str]:
    """The names ``token`` may mean: a number (``2``, ``0002``), a stem, a file name, with or without ``upstream/``."""
    t = token.strip().removeprefix(f"{upstream}/")
    return [n for n in names if t in (n, n.removesuffix(".patch")) or n.startswith(f"{t}-")
            or (t.isdigit() and n.startswith(f"{int(t):04d}-"))] if t else []


def match(tokens: list[str], names: list[str], upstream: str, flag: str = "--drop") -> list[str]:
    """Patch file names meant by ``tokens`` (``0002``, ``2``, ``toypkg/0002``, a stem or a file name)."""
    out = []
    for raw in tokens:
        if not raw.strip().removeprefix(f"{upstream}/"):
            continue
        hits = hits_for(raw, names, upstream)
        if len(hits) != 1:
            raise UsageError(f"{flag} {raw!r} matches {len(hits)} patch(es) of patches/{upstream}/; "
                             f"name one of: {', '.join(n[:4] for n in names)} (or the file name).")
        if hits[0] not in out:
            out.append(hits[0])
    return out


# ---- one fix, several copies: what "the same change" means -------------------------------------------------------

def _split(patch: bytes) -> tuple[str, list[str]]:
    """A ``git format-patch`` file: (its message: the mail header and body, up to the first diff; its diff lines)."""
    text = patch.decode("utf-8", errors="replace")
    head, sep, body = text.partition("\ndiff --git ")
    return head, (sep.lstrip("\n") + body).splitlines() if sep else []


def same_change(a: bytes, b: bytes) -> bool:
    """Two exports of one commit on two releases: the same message and the same hunks, line numbers and blob ids
    aside (what ``git patch-id`` ignores too). Then the file one line exported serves the other as it is."""
    (ma, da), (mb, db) = _split(a), _split(b)

    def norm(lines: list[str]) -> list[str]:
        return [re.sub(r"^@@ -\d+(,\d+)? \+\d+(,\d+)? @@", "@@", ln) for ln in lines if not ln.startswith("index ")]

    return ma == mb and norm(da) == norm(db)


def changed_lines(patch: bytes) -> dict[str, list[str]]:
    """{file: its added and removed lines, in order}: the change a patch makes, its context aside."""
    out: dict[str, list[str]] = {}
    current, in_hunk = None, False
    for ln in _split(patch)[1]:
        if ln.startswith("diff --git "):
            current, in_hunk = ln.split(" b/", 1)[-1], False
            out.setdefault(current, [])
        elif ln.startswith("@@"):
            in_hunk = True
        elif in_hunk and current and ln[:1] in "+-" and ln[:1]:
            out[current].append(ln)
    return out


def drift(original: bytes, copy: bytes) -> str:
    """Why a line's copy of a patch is not the same fix as the original ("" when it is): its message, or the lines it
    adds and removes, differ (only the context may)."""
    if _split(original)[0] != _split(copy)[0]:
        return "its message differs"
    want, have = changed_lines(original), changed_lines(copy)
    if sorted(want) != sorted(have):
        return f"it changes other files ({', '.join(sorted(set(want) ^ set(have)))})"
    files = [f for f in want if want[f] != have[f]]
    return f"it adds or removes other lines in {', '.join(files)}" if files else ""
