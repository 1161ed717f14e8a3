"""vendor/pins.toml: what each upstream is pinned to, validated strictly.

Each top-level table is one upstream, in the order they are applied and built::

    [transformers]
    distribution = "transformers"        # the name on the package index
    version = "5.22.2"                   # the release the series applies to
    sdist = "transformers-5.22.2.tar.gz" # the source distribution's file name
    sdist_sha256 = "..."                 # its sha256, checked before anything is extracted
    wheel = "transformers-5.22.2-py3-none-any.whl"  # the official wheel: the "pristine" build
    wheel_sha256 = "..."
    repository = "https://github.com/huggingface/transformers"
    tag = "v5.22.2"                      # upstream's release tag (for pull requests)
    tests = "sdist"                      # optional: where upstream's own tests come from: "sdist"
                                         # (the default: vendor/<name>/tests) or "git" (tests/ of `tag`
                                         # in `repository`, fetched by testsource.py; needs network)
"""

from __future__ import annotations

import difflib
import re
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path

from ..ground.errors import PinsError, UsageError
from ..ground.fsutil import atomic_write

PINS_FILE = Path("vendor") / "pins.toml"
LINES_FILE = Path("vendor") / "lines.toml"  # the release lines (sources/lines.py)
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


@dataclass(frozen=True)
class Pin:
    name: str  # the table name: the folder under vendor/ and patches/
    distribution: str  # project name on the index
    version: str  # upstream release version
    sdist: str  # sdist file name
    sdist_sha256: str  # sha256 of the sdist
    wheel: str  # official wheel file name (the pristine comparison build)
    wheel_sha256: str  # sha256 of the official wheel
    repository: str  # upstream repository URL
    tag: str  # upstream release tag
    tests: str = "sdist"  # optional: where upstream's tests come from, one of TEST_SOURCES
    # Not keys of pins.toml: set by sources/lines.py for a pin of a release line (vendor/lines.toml).
    line: str = ""  # the line's name ("" without vendor/lines.toml): in the local version and the SBOM
    folder: str = ""  # the line's folder under vendor/ ("" = vendor/<name>, "newest" = vendor/newest/<name>)

    @property
    def requirement(self) -> str:
        return f"{self.distribution}=={self.version}"

    @property
    def key(self) -> str:
        """This pin's checkout, relative to vendor/: ``transformers`` or ``newest/transformers``."""
        return f"{self.folder}/{self.name}" if self.folder else self.name

    @property
    def vendor(self) -> str:
        """Its checkout as the messages name it: ``vendor/transformers``, ``vendor/newest/transformers``."""
        return f"vendor/{self.key}"

    def identity(self) -> dict:
        """The fields that make a checkout (the line's only when there is one: a checkout made before lines existed
        keeps its key)."""
        return {k: v for k, v in self.__dict__.items() if k not in _LINE_FIELDS or v}


TEST_SOURCES = ("sdist", "git")
# Optional keys and their allowed values; the first is the default (written out only when changed).
_OPTIONAL = {"tests": TEST_SOURCES}
_LINE_FIELDS = ("line", "folder")
_KEYS = [f.name for f in fields(Pin) if f.name != "name" and f.name not in _LINE_FIELDS]
_REQUIRED = [k for k in _KEYS if k not in _OPTIONAL]


def _error(path: Path, message: str) -> PinsError:
    return PinsError(f"{path}: {message}")


def reject_unknown_keys(path: Path, where: str, table: dict, allowed: tuple[str, ...] | list[str],
                        label: str = "Allowed keys") -> None:
    """A key of ``table`` that is not ``allowed``: a PinsError naming the file, the table and the closest key."""
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" {label}: {', '.join(allowed)}."
            raise _error(path, f"{where}: unknown key {key!r}.{hint}")


def parse(text: str, path: Path) -> list[Pin]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _error(path, f"not valid TOML ({exc}). Fix the syntax and run again.") from None
    if not data:
        raise _error(path, "no upstream is pinned. Add a table such as [transformers] (see the file's header).")
    pins = []
    for name, table in data.items():
        if not isinstance(table, dict):
            raise _error(path, f"top-level key {name!r} must be a table [{name}] describing one upstream.")
        if not _NAME.match(name):
            raise _error(path, f"[{name}]: a table name must be lowercase letters, digits, '-' or '_'.")
        reject_unknown_keys(path, f"[{name}]", table, _KEYS)
        missing = [k for k in _REQUIRED if k not in table]
        if missing:
            raise _error(path, f"[{name}]: missing key(s) {', '.join(missing)}. Every upstream needs all of: {', '.join(_REQUIRED)}.")
        for key, allowed in _OPTIONAL.items():
            if key in table and table[key] not in allowed:
                choices = " or ".join(f'"{a}"' for a in allowed)
                raise _error(path, f"[{name}].{key} must be {choices} (got {table[key]!r}).")
        for key in _REQUIRED:
            if not isinstance(table[key], str) or not table[key]:
                raise _error(path, f"[{name}].{key} must be a non-empty string.")
        for key in ("sdist_sha256", "wheel_sha256"):
            if not _SHA256.match(table[key]):
                raise _error(path, f"[{name}].{key} must be 64 lowercase hex digits (a sha256), got {table[key]!r}.")
        for key in ("sdist", "wheel"):
            if "/" in table[key] or "\\" in table[key]:
                raise _error(path, f"[{name}].{key} must be a plain file name, got {table[key]!r}.")
        if not table["sdist"].endswith((".tar.gz", ".zip")):
            raise _error(path, f"[{name}].sdist must end in .tar.gz (got {table['sdist']!r}).")
        if not table["wheel"].endswith(".whl"):
            raise _error(path, f"[{name}].wheel must end in .whl (got {table['wheel']!r}).")
        if table["version"] not in table["sdist"] or table["version"] not in table["wheel"]:
            raise _error(path, f"[{name}]: sdist and wheel file names must contain the version {table['version']!r}.")
        pins.append(Pin(name=name, **{k: table[k] for k in _KEYS if k in table}))
    return pins


def load(root: Path, path: Path | None = None) -> list[Pin]:
    """The pins of ``path``; by default vendor/pins.toml's, as pins of the home line (vendor/lines.toml's line of
    "pins.toml", whose checkouts are vendor/<name>: sources/lines.py checks that file)."""
    home = path is None
    path = path or root / PINS_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _error(path, "not found. Run headroom from the repository root (where vendor/pins.toml lives).") from None
    pins = parse(text, path)
    line = home_line(root) if home else ""
    return [replace(p, line=line) for p in pins] if line else pins


def home_line(root: Path) -> str:
    """The name of the line whose pins are vendor/pins.toml ("" without vendor/lines.toml, or when none is)."""
    try:
        data = tomllib.loads((root / LINES_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, tomllib.TOMLDecodeError):
        return ""  # a broken file is reported by sources/lines.py, which every line-aware command loads
    return next((name for name, t in data.items() if isinstance(t, dict) and t.get("pins") == "pins.toml"), "")


def select(pins: list[Pin], names: list[str] | None) -> list[Pin]:
    """The pins named (all when ``names`` is empty), in pins.toml order. An unknown name is a usage error (the file is
    fine; the command line is not)."""
    if not names:
        return pins
    known = {p.name for p in pins}
    for n in names:
        if n not in known:
            close = difflib.get_close_matches(n, sorted(known), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise UsageError(f"no upstream named {n!r} in vendor/pins.toml.{hint} Known: {', '.join(sorted(known))}.")
    return [p for p in pins if p.name in names]


def render(pins: list[Pin]) -> str:
    """TOML text for ``pins`` (used by tests and by ``rebase`` when it records a new pin)."""
    out = []
    for p in pins:
        out.append(f"[{p.name}]")
        for k in _KEYS:
            if k in _OPTIONAL and getattr(p, k) == _OPTIONAL[k][0]:
                continue
            out.append(f'{k} = "{getattr(p, k)}"')
        out.append("")
    return "\n".join(out)


def write(root: Path, new: Pin, path: Path | None = None) -> None:
    """Record ``new`` in ``path`` (default vendor/pins.toml), keeping the other pins, comments and layout as they are."""
    path = path or root / PINS_FILE
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    out, inside = [], False
    for line in lines:
        header = re.match(r"^\s*\[([^\]]+)\]\s*(#.*)?$", line)
        if header:
            inside = header.group(1).strip() == new.name
        elif inside:
            m = re.match(r'^(\s*)([a-z0-9_]+)(\s*=\s*)"[^"]*"(.*)$', line.rstrip("\n"))
            if m and hasattr(new, m.group(2)) and m.group(2) != "name":
                line = f'{m.group(1)}{m.group(2)}{m.group(3)}"{getattr(new, m.group(2))}"{m.group(4)}\n'
        out.append(line)
    candidate = "".join(out)
    try:
        parsed = parse(candidate, path)
    except PinsError:
        parsed = []
    if new not in parsed:
        candidate = render([new if p.name == new.name else p for p in load(root, path)])
    atomic_write(path, candidate)
