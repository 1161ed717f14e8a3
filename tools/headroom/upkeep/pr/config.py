"""How ``make pr`` drafts for one upstream: data in ``pr_data/<name>.toml``, validated strictly.

Adding an upstream is configuration: a ``<name>.toml`` (and the copies of its templates) in
``pr_data/``. Every key is optional; an upstream without a file gets a plain draft (and a
warning), never an error. Layout::

    [pull_request]
    template = "<name>/PULL_REQUEST_TEMPLATE.md"  # a copy of upstream's template, relative to pr_data/
    source = "https://..."                        # where the copy comes from (shown in the draft)
    description_after = "# What does this PR do?" # our text goes below this heading (after its comment)
    fixes_placeholder = "Fixes # (issue)"         # replaced by the patch's "Fixes #N" (else: in the description)
    reviewers_after = "## Who can review?"        # reviewers tagged at the end of this section (else: description)

    [policy]                                      # what upstream says about generated text, from its own files
    generated_description = "refused"             # refused | not stated | accepted: only "accepted" gets our prose
    quote = "We will also close PRs with ..."     # upstream's words ("" when it states nothing)
    source = "..."                                # the file read: template copy, sdist member, or "not in the sdist"
    confirm = "- [ ] I confirm that ..."          # a line of the template only the person answers (said on the terminal)

    [issue]                                       # upstream's bug report form, section by section
    source = "https://..."
    sections = [{ title = "System Info", fill = "versions" }, { title = "Tasks", boxes = ["..."] }, ...]

    [lint]
    ruff_pin_file = "setup.py"                    # the sdist file that pins ruff
    ruff_pin_pattern = '"ruff==([0-9.]+)"'        # its first group is the version

    [[reviewers]]                                 # one table per area
    area = "trainer"
    paths = ["src/transformers/trainer*.py"]      # fnmatch patterns of the changed source files
    handles = ["@SunMarc"]

Reproduction scripts for ``ISSUE.md`` live in ``pr_data/<name>/repro/<slug>.py``: the patch's whole
subject, lowercased, every run of other characters a ``-``.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from ...ground.errors import DataError

DATA = Path(__file__).resolve().parent / "pr_data"
FILLS = ("versions", "reviewers", "reproduction", "expected")
POLICIES = ("refused", "not stated", "accepted")  # does upstream accept a pull request description we generate?


@dataclass(frozen=True)
class Section:
    title: str  # the heading of upstream's form
    fill: str = ""  # what we put there: one of FILLS, or "" for a section of boxes
    boxes: tuple[str, ...] = ()  # checkbox options, always left unticked for the person


@dataclass(frozen=True)
class Area:
    area: str  # the name the template's "who to tag" list uses
    paths: tuple[str, ...]  # fnmatch patterns of files in the upstream's tree
    handles: tuple[str, ...]  # GitHub handles, with the @


@dataclass(frozen=True)
class PrConfig:
    name: str
    template: Path | None = None  # copy of upstream's pull request template
    template_source: str = ""
    description_after: str = ""
    fixes_placeholder: str = ""
    reviewers_after: str = ""
    issue_source: str = ""
    issue_sections: tuple[Section, ...] = ()
    ruff_pin_file: str = ""
    ruff_pin_pattern: str = ""
    reviewers: tuple[Area, ...] = field(default_factory=tuple)
    path: Path | None = None  # the toml file, None when the upstream has none
    policy: str = "not stated"  # generated descriptions: one of POLICIES; no file: not stated
    policy_quote: str = ""  # upstream's own words about it ("" when it says nothing)
    policy_source: str = ""  # the file those words (or their absence) come from
    policy_confirm: str = ""  # a line of the template only the person answers (a box, a sentence to add)
    bench_sections: tuple[tuple[str, str], ...] = ()  # (patch number, section of build/bench's results) from [bench]

    def bench_section(self, patch_name: str) -> str | None:
        """The bench results' section that measures this patch ([bench].sections), None when there is none."""
        return next((section for number, section in self.bench_sections if patch_name.startswith(number)), None)

    @property
    def person_writes_description(self) -> bool:
        """Unless upstream says it accepts generated descriptions, the person writes it (the conservative default)."""
        return self.policy != "accepted"

    def areas_for(self, files: list[str]) -> list[Area]:
        """The areas whose paths match one of the changed (non-test) files, in the file's order."""
        return [a for a in self.reviewers if any(fnmatch.fnmatch(f, p) for f in files for p in a.paths)]

    def repro_script(self, slug: str) -> Path:
        return (self.path.parent if self.path else DATA) / self.name / "repro" / f"{slug}.py"


_TABLES = {
    "pull_request": ("template", "source", "description_after", "fixes_placeholder", "reviewers_after"),
    "issue": ("source", "sections"),
    "lint": ("ruff_pin_file", "ruff_pin_pattern"),
    "policy": ("generated_description", "quote", "source", "confirm"),
    "reviewers": ("area", "paths", "handles"),
    "bench": ("sections",),
}


def _check_keys(path: Path, where: str, table: dict, allowed: tuple[str, ...]) -> None:
    for key in table:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else f" Allowed: {', '.join(allowed)}."
            raise DataError(f"{path}: [{where}] has an unknown key {key!r}.{hint}")


def _strings(path: Path, where: str, value: object, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v for v in value):
        raise DataError(f"{path}: [{where}].{key} must be a non-empty list of strings.")
    return tuple(value)


def parse(text: str, path: Path, name: str) -> PrConfig:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DataError(f"{path}: not valid TOML ({exc}).") from None
    _check_keys(path, "top level", data, tuple(_TABLES))
    pr = data.get("pull_request", {})
    issue = data.get("issue", {})
    lint = data.get("lint", {})
    policy = data.get("policy", {})
    for where, table in (("pull_request", pr), ("issue", issue), ("lint", lint), ("policy", policy)):
        if not isinstance(table, dict):
            raise DataError(f"{path}: {where} must be a table [{where}].")
        _check_keys(path, where, table, _TABLES[where])
        for key, value in table.items():
            if key != "sections" and (not isinstance(value, str) or not (value or (where, key) == ("policy", "quote"))):
                raise DataError(f"{path}: [{where}].{key} must be a non-empty string.")
    if policy:
        if policy.get("generated_description") not in POLICIES:
            raise DataError(f"{path}: [policy].generated_description must be one of {', '.join(map(repr, POLICIES))} "
                            f"(got {policy.get('generated_description')!r}).")
        if "source" not in policy:
            raise DataError(f"{path}: [policy] needs a source: the upstream file it was read from.")
        if policy["generated_description"] != "not stated" and not policy.get("quote"):
            raise DataError(f"{path}: [policy].quote must give upstream's own words for {policy['generated_description']!r}.")
    template = None
    if "template" in pr:
        template = path.parent / pr["template"]
        if not template.is_file():
            raise DataError(f"{path}: [pull_request].template names {pr['template']!r}, which is not a file in {path.parent}.")
    if pr.get("description_after") and template and pr["description_after"] not in template.read_text(encoding="utf-8"):
        raise DataError(f"{path}: [pull_request].description_after {pr['description_after']!r} is not a line of {template}.")
    text = template.read_text(encoding="utf-8") if template else ""
    for key in ("quote", "confirm"):  # words said to be the template's must be in it (when they come from it)
        value = " ".join(policy.get(key, "").split())
        if value and template and (key == "confirm" or pr.get("template", "\0") in policy["source"]) \
                and value not in " ".join(text.split()):
            raise DataError(f"{path}: [policy].{key} {policy[key]!r} is not in {template}.")
    if bool(lint.get("ruff_pin_file")) != bool(lint.get("ruff_pin_pattern")):
        raise DataError(f"{path}: [lint] needs both ruff_pin_file and ruff_pin_pattern.")
    if lint.get("ruff_pin_pattern"):
        try:
            if re.compile(lint["ruff_pin_pattern"]).groups < 1:
                raise DataError(f"{path}: [lint].ruff_pin_pattern needs a group ( ) around the version.")
        except re.error as exc:
            raise DataError(f"{path}: [lint].ruff_pin_pattern is not a regular expression ({exc}).") from None
    sections = []
    for i, s in enumerate(issue.get("sections", [])):
        where = f"issue.sections[{i}]"
        if not isinstance(s, dict) or not isinstance(s.get("title"), str) or not s["title"]:
            raise DataError(f"{path}: {where} must be an inline table with a title.")
        _check_keys(path, where, s, ("title", "fill", "boxes"))
        if ("fill" in s) == ("boxes" in s):
            raise DataError(f"{path}: {where} ({s['title']!r}) needs exactly one of fill or boxes.")
        if "fill" in s and s["fill"] not in FILLS:
            raise DataError(f"{path}: {where}.fill must be one of {', '.join(FILLS)} (got {s['fill']!r}).")
        boxes = _strings(path, where, s["boxes"], "boxes") if "boxes" in s else ()
        sections.append(Section(s["title"], s.get("fill", ""), boxes))
    bench = data.get("bench", {})
    if not isinstance(bench, dict):
        raise DataError(f"{path}: bench must be a table [bench].")
    _check_keys(path, "bench", bench, _TABLES["bench"])
    sections_of = bench.get("sections", {})
    if not isinstance(sections_of, dict) or not all(
            re.fullmatch(r"\d{4}", k) and isinstance(v, str) and v for k, v in sections_of.items()):
        raise DataError(f"{path}: [bench].sections must map patch numbers to result sections, "
                        'e.g. sections = { "0001" = "accelerate_prepare" }.')
    areas = []
    reviewers = data.get("reviewers", [])
    if not isinstance(reviewers, list):
        raise DataError(f"{path}: reviewers must be an array of tables [[reviewers]].")
    for i, r in enumerate(reviewers):
        where = f"reviewers[{i}]"
        _check_keys(path, where, r, _TABLES["reviewers"])
        if not isinstance(r.get("area"), str) or not r["area"]:
            raise DataError(f"{path}: [{where}] needs an area name.")
        handles = _strings(path, where, r.get("handles"), "handles")
        bad = [h for h in handles if not re.fullmatch(r"@[A-Za-z0-9][A-Za-z0-9-]*", h)]
        if bad:
            raise DataError(f"{path}: [{where}].handles must be GitHub handles such as @name (got {', '.join(bad)}).")
        areas.append(Area(r["area"], _strings(path, where, r.get("paths"), "paths"), handles))
    return PrConfig(
        name=name, template=template, template_source=pr.get("source", ""),
        description_after=pr.get("description_after", ""), fixes_placeholder=pr.get("fixes_placeholder", ""),
        reviewers_after=pr.get("reviewers_after", ""), issue_source=issue.get("source", ""),
        issue_sections=tuple(sections), ruff_pin_file=lint.get("ruff_pin_file", ""),
        ruff_pin_pattern=lint.get("ruff_pin_pattern", ""), reviewers=tuple(areas), path=path,
        bench_sections=tuple(sorted(sections_of.items())),
        policy=policy.get("generated_description", "not stated"), policy_quote=policy.get("quote", ""),
        policy_source=policy.get("source", ""), policy_confirm=policy.get("confirm", ""),
    )


def load(name: str, data: Path = DATA) -> PrConfig:
    path = data / f"{name}.toml"
    if not path.exists():
        return PrConfig(name=name)
    return parse(path.read_text(encoding="utf-8"), path, name)
