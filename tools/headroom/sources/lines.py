"""vendor/lines.toml: the release lines, validated strictly.

A line is a set of pinned releases built, proven and served together. Each table is one line, in the order
``make apply build test`` runs them::

    [newest]
    pins = "newest.pins.toml"   # its pins (the format of vendor/pins.toml), relative to vendor/: "pins.toml" (the
                                # home line: checkouts vendor/<name>, outputs build/) or "<line>.pins.toml"
                                # (checkouts vendor/<line>/<name>, outputs build/lines/<line>/)
    title = "newest"            # one line: what the docs and the report call it
    serves = "..."              # one line: who it is for
    original = true             # optional, one line at most: its copy of a patch is the original (patches/<name>/);
                                # another line's own copy lives in patches/<name>/lines/<line>/
    torch = ["2.13.0", "2.15.0"] # the torch releases the line is proven on: the first is the primary (what
                                # `make test` runs on), the highest is "newest" (`make test TORCH=newest`); each a
                                # release version (torch==<version> is what its environments install), no repeats.
                                # Optional: without it, the line is proven on PRIMARY_TORCH alone
    [newest.unproven]           # optional: a patch carried whose test needs an upstream this line does not carry
    "transformers/0001" = "..." # one line: why (the proof gives it its own verdict, never red->green)

Without vendor/lines.toml there is one line, unnamed, of vendor/pins.toml (the fixtures' layout), on PRIMARY_TORCH.

vendor/retired-lines.toml (optional) records the lines that retired: a newer line serves their people. A line retires
by configuration, as a patch does (patches/<name>/retired.toml): its table leaves vendor/lines.toml, its pins file and
its own copies (patches/<name>/lines/<line>/) are deleted, and a record is added here; its history is in git::

    [[retired]]
    line = "peft"                                  # its name (also in its wheels' versions: +headroom.peft.<hash>)
    releases = "accelerate 1.16.0, transformers 5.23.0, peft 0.21.2"  # what it pinned last
    served = "..."                                 # one line: who it was for
    successor = "newest"                           # the line that serves them now (a line of vendor/lines.toml)
    retired_in = "peft 0.22.0 on the newest line"  # what let it retire
    last_commit = "<40 hex>"                       # the headroom commit that last built it

``LINE=<retired line>`` is then a usage error that names its successor (:func:`select`).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from packaging.version import InvalidVersion, Version

from ..ground.errors import PinsError, UsageError
from . import pins as pins_mod
from .pins import Pin

LINES_FILE = pins_mod.LINES_FILE
RETIRED_FILE = Path("vendor") / "retired-lines.toml"
_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_PATCH = re.compile(r"^[a-z0-9][a-z0-9_-]*/\d{4}$")
_KEYS = ("pins", "title", "serves", "original", "torch", "unproven")
PRIMARY_TORCH = "2.13.0"  # the torch of a line that declares none (and of the fixtures' one unnamed line)
TORCH_CHOICES = ("primary", "newest", "all")  # what TORCH= may say besides a version the line declares
_REQUIRED = ("pins", "title", "serves")


@dataclass(frozen=True)
class Line:
    name: str  # the table name ("" for the one unnamed line without vendor/lines.toml)
    title: str  # what the docs and the report call it
    serves: str  # who it is for
    pins_file: Path  # its pins, relative to the repository root
    pins: tuple[Pin, ...]  # each with line= and folder= set
    original: bool = False  # its copy of a patch is the original (what `make pr` proposes)
    unproven: dict[str, str] = field(default_factory=dict)  # {"transformers/0001": why its test cannot run here}
    torch: tuple[str, ...] = (PRIMARY_TORCH,)  # the torch releases it is proven on; the first is the primary

    @property
    def primary_torch(self) -> str:
        """The torch `make test` proves the line on (the first of ``torch``)."""
        return self.torch[0]

    @property
    def newest_torch(self) -> str:
        """The highest torch the line declares (`make test TORCH=newest`)."""
        return max(self.torch, key=Version)

    def torches(self, choice: str | None) -> list[str]:
        """The torch versions ``choice`` (TORCH=) names on this line: primary (also None or ""), newest, all, or one
        the line declares; anything else is a usage error naming what the line declares."""
        if not choice or choice == "primary":
            return [self.primary_torch]
        if choice == "newest":
            return [self.newest_torch]
        if choice == "all":
            return list(self.torch)
        if choice in self.torch:
            return [choice]
        raise UsageError(f"TORCH={choice}: the {self.label} line is not proven on torch {choice}. Name one it declares "
                         f"({', '.join(self.torch)}), or primary, newest or all; to prove it on another, add the "
                         f"version to torch = [...] under [{self.name}] in vendor/lines.toml.")

    @property
    def folder(self) -> str:
        """Its folder under vendor/ ("" for the home line, whose checkouts are vendor/<name>)."""
        return "" if self.pins_file.name == "pins.toml" else self.name

    @property
    def build(self) -> Path:
        """Its outputs: build/ for the home line (envs/, proof/, upstream/), build/lines/<line>/ for the others."""
        return Path("build") / "lines" / self.folder if self.folder else Path("build")

    @property
    def label(self) -> str:
        return self.name or "pins"

    def carries(self, upstream: str) -> bool:
        return any(p.name == upstream for p in self.pins)

    def releases(self) -> str:
        return ", ".join(f"{p.name} {p.version}" for p in self.pins)


@dataclass(frozen=True)
class RetiredLine:
    """One entry of vendor/retired-lines.toml: a line a newer line took over."""

    line: str  # its name (in its wheels' local versions too)
    releases: str  # what it pinned last
    served: str  # one line: who it was for
    successor: str  # the line that serves them now
    retired_in: str  # what let it retire, e.g. "peft 0.22.0 on the newest line"
    last_commit: str  # the headroom commit (40 hex) that last built it

    def message(self) -> str:
        """What LINE=<this line> says."""
        return (f"the {self.line} line is retired: {self.retired_in} let the {self.successor} line serve its people "
                f"({self.served}); it was {self.releases}, last built in {self.last_commit[:12]}, and its published "
                f"wheels (+headroom.{self.line}.*) stay installable. Use LINE={self.successor} "
                f"({RETIRED_FILE}).")


_RETIRED_KEYS = tuple(f.name for f in dataclasses.fields(RetiredLine))


def load_retired(root: Path, live: list[str] | None = None) -> tuple[RetiredLine, ...]:
    """vendor/retired-lines.toml, validated strictly; no file means no retired line. ``live``: today's line names
    (a retired line's name is not one of them; its successor is)."""
    path = root / RETIRED_FILE
    if not path.exists():
        return ()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise _error(path, f"not valid TOML ({exc}). Fix the syntax (the format: tools/headroom/sources/lines.py).") from None
    if set(data) - {"retired"} or not isinstance(data.get("retired", []), list):
        raise _error(path, "holds only [[retired]] tables, one per retired line.")
    out: list[RetiredLine] = []
    for i, entry in enumerate(data.get("retired", [])):
        where = f"[[retired]] #{i + 1}"
        if not isinstance(entry, dict):
            raise _error(path, f"{where} must be a table.")
        pins_mod.reject_unknown_keys(path, where, entry, _RETIRED_KEYS, label="Allowed")
        missing = [k for k in _RETIRED_KEYS if k not in entry]
        if missing:
            raise _error(path, f"{where} lacks {', '.join(missing)}.")
        bad = [k for k in _RETIRED_KEYS if not isinstance(entry[k], str) or not entry[k].strip() or "\n" in entry[k]]
        if bad:
            raise _error(path, f"{where}: {', '.join(bad)} must be one non-empty line of text.")
        if not re.fullmatch(r"[0-9a-f]{40}", entry["last_commit"]):
            raise _error(path, f"{where}: last_commit {entry['last_commit']!r} is not a 40-hex commit.")
        if live is not None and entry["line"] in live:
            raise _error(path, f"{where}: the {entry['line']} line is still in {LINES_FILE}. A line retires when its "
                         "table leaves that file; remove one of the two.")
        if live is not None and entry["successor"] not in live:
            raise _error(path, f"{where}: its successor {entry['successor']!r} is not a line of {LINES_FILE} "
                         f"({', '.join(live) or 'none'}).")
        out.append(RetiredLine(**entry))
    return tuple(out)


_error = pins_mod._error  # "<file>: <what is wrong>", as vendor/pins.toml's errors


def parse(text: str, path: Path, root: Path) -> list[Line]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise _error(path, f"not valid TOML ({exc}). Fix the syntax and run again.") from None
    if not data:
        raise _error(path, "declares no line. Add a table such as [newest] (see the file's header), or delete the "
                     "file for the one line of vendor/pins.toml.")
    lines: list[Line] = []
    for name, table in data.items():
        where = f"[{name}]"
        if not isinstance(table, dict):
            raise _error(path, f"top-level key {name!r} must be a table [{name}] describing one line.")
        if not _NAME.match(name):
            raise _error(path, f"{where}: a line's name must be lowercase letters, digits, '-' or '_', a letter first.")
        pins_mod.reject_unknown_keys(path, where, table, _KEYS)
        missing = [k for k in _REQUIRED if k not in table]
        if missing:
            raise _error(path, f"{where}: missing key(s) {', '.join(missing)}. Every line needs: {', '.join(_REQUIRED)}.")
        for key in _REQUIRED:
            if not isinstance(table[key], str) or not table[key].strip() or "\n" in table[key]:
                raise _error(path, f"{where}.{key} must be one non-empty line of text.")
        if table["pins"] not in ("pins.toml", f"{name}.pins.toml"):
            raise _error(path, f'{where}.pins must be "pins.toml" (the home line) or "{name}.pins.toml" '
                         f"(got {table['pins']!r}): a line's pins are named after it, like its checkouts vendor/{name}/.")
        if not isinstance(table.get("original", False), bool):
            raise _error(path, f"{where}.original must be true or false.")
        unproven = table.get("unproven", {})
        if not isinstance(unproven, dict):
            raise _error(path, f"{where}.unproven must be a table of \"upstream/NNNN\" = \"why\".")
        for patch, why in unproven.items():
            if not _PATCH.match(patch):
                raise _error(path, f"{where}.unproven: {patch!r} is not a patch (upstream/NNNN, e.g. transformers/0001).")
            if not isinstance(why, str) or not why.strip() or "\n" in why:
                raise _error(path, f"{where}.unproven.{patch!r} must say why, in one line of text.")
        torch = _torch(table.get("torch", [PRIMARY_TORCH]), path, where)
        pins_file = Path("vendor") / table["pins"]
        folder = "" if table["pins"] == "pins.toml" else name
        pins = [dataclasses.replace(p, line=name, folder=folder)
                for p in pins_mod.parse(_read(root / pins_file, path), root / pins_file)]
        for patch in unproven:
            if patch.split("/")[0] not in {p.name for p in pins}:
                raise _error(path, f"{where}.unproven: {patch} is a patch of an upstream this line does not pin.")
        lines.append(Line(name, table["title"].strip(), table["serves"].strip(), pins_file, tuple(pins),
                          table.get("original", False), dict(unproven), torch))
    homes = [ln.name for ln in lines if not ln.folder]
    if len(homes) > 1:
        raise _error(path, f"lines {', '.join(homes)} all use vendor/pins.toml; one line at most is the home line.")
    originals = [ln.name for ln in lines if ln.original]
    if len(originals) != 1 and len(lines) > 1:
        raise _error(path, f"{len(originals)} lines say original = true ({', '.join(originals) or 'none'}); exactly "
                     "one line holds the original of each patch (the newest: upstream's main is closest to it).")
    upstreams = {p.name for ln in lines for p in ln.pins}
    clash = sorted(upstreams & {ln.name for ln in lines if ln.folder})  # the home line has no vendor/<line>/
    if clash:
        raise _error(path, f"line {clash[0]!r} has an upstream's name: vendor/{clash[0]}/ would be both. Rename the line.")
    return lines


def _torch(value: object, path: Path, where: str) -> tuple[str, ...]:
    """A line's ``torch = ["2.13.0", "2.15.0"]``: release versions, at least one, none twice."""
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise _error(path, f'{where}.torch must be a list of torch versions, the primary first (e.g. torch = '
                     f'["{PRIMARY_TORCH}", "2.15.0"]).')
    for v in value:
        try:
            parsed = Version(v)
        except InvalidVersion:
            parsed = None
        if parsed is None or str(parsed) != v or parsed.local or parsed.is_prerelease or parsed.is_devrelease:
            raise _error(path, f"{where}.torch: {v!r} is not a torch release version (like \"2.15.0\"; no local "
                         "part such as +cpu: the environments install torch==<version>, whatever build the index has).")
    twice = sorted({v for v in value if value.count(v) > 1})
    if twice:
        raise _error(path, f"{where}.torch names {twice[0]} twice.")
    return tuple(value)


def _read(pins_file: Path, lines_file: Path) -> str:
    try:
        return pins_file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _error(lines_file, f"{pins_file} is not there: every line names its pins file.") from None


def load(root: Path) -> list[Line]:
    """The lines of vendor/lines.toml, in its order; without the file, one unnamed line of vendor/pins.toml."""
    path = root / LINES_FILE
    if not path.exists():
        return [Line("", "", "", pins_mod.PINS_FILE, tuple(pins_mod.load(root)), original=True)]
    return parse(path.read_text(encoding="utf-8"), path, root)


def select(lines: list[Line], name: str | None, root: Path | None = None) -> list[Line]:
    """All lines, or the one named (LINE=); an unknown name is a usage error naming the known ones (a retired one,
    with ``root``: its record, and the line that serves its people now)."""
    if not name:
        return lines
    known = [ln.name for ln in lines]
    retired = {r.line: r for r in load_retired(root, known)} if root is not None else {}
    if name in retired:
        raise UsageError(retired[name].message())
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise UsageError(f"no line named {name!r} in vendor/lines.toml.{hint} Known: {', '.join(known) or '(none)'}.")
    return [ln for ln in lines if ln.name == name]


def original(lines: list[Line]) -> Line:
    return next((ln for ln in lines if ln.original), lines[0])



PROVEN_ON = Path("docs/reference/torch.md")  # generated by `make docs-ref` from vendor/lines.toml and patches/


def generated_pages(root: Path) -> dict[Path, str]:
    """The reference pages generated from vendor/lines.toml (`make docs-ref`): none without the file."""
    return {PROVEN_ON: proven_on_page(root)} if (root / LINES_FILE).is_file() else {}


def proven_on_page(root: Path) -> str:
    """docs/reference/torch.md: the torch releases each patch is proven on, per line (vendor/lines.toml ``torch``
    and the series each line carries), byte-stable. The verdicts themselves are build/report.json's (``torch``)."""
    from . import series as series_mod  # series loads lines.py's sibling pins; imported here to keep this module light

    all_lines = load(root)
    cells: dict[str, dict[str, str]] = {}
    for ln in all_lines:
        for pin in ln.pins:
            for patch in series_mod.load(root, pin.name, pin.line).patches:
                pid = f"{pin.name}/{patch.name[:4]}"
                why = ln.unproven.get(pid)
                cells.setdefault(pid, {})[ln.name] = (
                    f"not provable here ({why})" if why else
                    ", ".join(f"{t} (primary)" if t == ln.primary_torch else t for t in ln.torch))
    order = {name: i for i, name in enumerate(dict.fromkeys(p.name for ln in all_lines for p in ln.pins))}
    out = ["<!-- Generated by `make docs-ref` (headroom docs) from vendor/lines.toml and patches/: do not edit by "
           "hand. -->", "", "# The torch each fix is proven on", "",
           "Each release line declares the torch releases its fixes must be proven on (`torch = [...]` in "
           "`vendor/lines.toml`, the primary first). This page is that declaration; what a run measured is in its "
           "report, and the dated figures are under `reports/`. `make test` proves every patch on the primary torch (2.13.0 is the CPU wheel); "
           "`make test TORCH=newest` proves every patch and the regression guards on the line's newest torch, in "
           "environments of their own (`build/envs/<env>-torch<version>/`); `TORCH=all` on each. The verdicts are "
           "in `build/report.json` under `torch.<version>` (per line under `lines.<line>.torch`) and in its "
           "`lines_table` (a column per line and torch); `make canary` says what a torch released since does "
           "([verdicts](verdicts.md)).", ""]
    head = ["patch", *(f"{ln.name or 'pins'} line ({ln.releases()})" for ln in all_lines)]
    out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for pid in sorted(cells, key=lambda p: (order.get(p.split("/")[0], len(order)), p)):
        row = [f"`{pid}`", *(cells[pid].get(ln.name, "not carried") for ln in all_lines)]
        out.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return "\n".join(out) + "\n"
