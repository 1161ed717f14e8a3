"""The texts ``make pr`` drafts for a person to read, edit and post: PR.md, COMMENT.md, ISSUE.md.

Everything here is pure text from data (the patch's commit message and trailers, the checks,
the upstream's template and form from ``pr_data/``); nothing runs. The upstream's template is
kept whole: our text goes where its configuration says, its boxes stay unticked.

Trailers a patch may carry about what exists upstream (one per line, at the end of the message)::

    Fixes: https://github.com/<owner>/<repo>/issues/N      the upstream issue the patch fixes
    Upstream-Issue: https://.../issues/N | none             an issue upstream tracks it by (or: none exists)
    Upstream-PR: https://.../pull/N (open|merged|closed)    a pull request upstream that proposes this fix
    Related: https://... (note)                             anything else a reviewer may ask about

An open ``Upstream-PR`` means: comment there (COMMENT.md) rather than open a second PR.
No upstream issue (no ``Fixes:``/``Upstream-Issue:`` into the upstream's repository) means: ISSUE.md.

Whether PR.md gets a description of ours is the upstream's policy (``[policy]`` in pr_data): unless it accepts
generated descriptions, the description section keeps the template's own comment and one line pointing to FACTS.md.
"""

from __future__ import annotations

import re

from ...sources.pins import Pin
from .config import PrConfig
from .evidence import two_column_table

TRAILER = re.compile(r"^(Fixes|Closes|Resolves|Upstream-Issue|Upstream-PR|Related)\s*:\s*(.+)$", re.IGNORECASE)
_TRAILER_NAMES = {"fixes": "Fixes", "closes": "Closes", "resolves": "Resolves", "upstream-issue": "Upstream-Issue",
                  "upstream-pr": "Upstream-PR", "related": "Related"}
PR_STATES = ("open", "merged", "closed")


# --------------------------------------------------------------------------- the commit message

def parse_message(text: str) -> dict:
    """Subject, body (trailers removed), and the trailers about upstream."""
    lines = text.strip("\n").splitlines()
    subject = lines[0] if lines else ""
    fixes, issues, prs, related, links, keep = [], [], [], [], [], []
    issue_none = False
    for line in lines[1:]:
        m = TRAILER.match(line.strip())
        if not m:
            keep.append(line)
            continue
        key, value = m.group(1).lower(), m.group(2).strip()
        url = value.split()[0]
        links.append({"trailer": _TRAILER_NAMES[key], "url": url, "note": value[len(url):].strip().strip("()")})
        if key == "related":
            related.append(url)
        elif key in ("fixes", "closes", "resolves"):
            fixes.append(url)  # the note stays in links (FACTS.md)
        elif key == "upstream-issue":
            if value.lower().startswith("none"):
                issue_none = True
            else:
                issues.append(value.split()[0])
        else:
            url = value.split()[0]
            state = re.search(r"\((\w+)", value)
            prs.append({"url": url, "number": _number(url), "state": (state.group(1).lower() if state else "unknown"),
                        "note": value[len(url):].strip()})
    body = "\n".join(keep).strip("\n")
    return {"subject": subject, "body": body, "fixes": fixes, "upstream_issues": issues, "upstream_issue_none": issue_none,
            "upstream_prs": prs, "related": related, "links": links}


def cost_paragraph(body: str) -> str:
    """The body's paragraph that says what the change costs ("What it costs: ..."), or ""."""
    return next((p for p in paragraphs(body) if re.match(r"(?i)what (it|this|the fix|the change) costs", p)), "")


def strip_trailers(text: str, keys: tuple[str, ...] = ("upstream-issue", "upstream-pr", "related")) -> str:
    """The commit message without our bookkeeping trailers (for the branch proposed upstream)."""
    out = [line for line in text.splitlines() if not ((m := TRAILER.match(line.strip())) and m.group(1).lower() in keys)]
    return "\n".join(out).rstrip("\n") + "\n"


def _number(url: str) -> str:
    m = re.search(r"/(\d+)/?$", url)
    return m.group(1) if m else url


def _base(repository: str) -> str:
    return repository.rstrip("/").removesuffix(".git")


def _ref(url: str, repository: str) -> str:
    """#N for the upstream's own issues and pulls, the URL otherwise."""
    m = re.fullmatch(re.escape(_base(repository)) + r"/(issues|pull)/(\d+)/?", url)
    return f"#{m.group(2)}" if m else url


def upstream_issues(message: dict, repository: str) -> list[str]:
    """The upstream's own issues the patch names (Fixes: or Upstream-Issue:)."""
    base = _base(repository)
    return [u for u in message["fixes"] + message["upstream_issues"] if re.fullmatch(re.escape(base) + r"/issues/\d+/?", u)]


def open_pr(message: dict) -> dict | None:
    return next((p for p in message["upstream_prs"] if p["state"] == "open"), None)


def fixes_line(fixes: list[str], repository: str, related: list[str] = ()) -> str:
    """The template's "Fixes #N" line: the issues fixed; the upstream's pulls followed up; the rest as Related
    (``related``: the Upstream-Issue and Related trailers, links that the change does not close)."""
    base = _base(repository)
    issues = [_ref(f, repository) for f in fixes if re.fullmatch(re.escape(base) + r"/issues/\d+/?", f)]
    pulls = [_ref(f, repository) for f in fixes if re.fullmatch(re.escape(base) + r"/pull/\d+/?", f)]
    others = list(dict.fromkeys([f for f in fixes if not f.startswith(base + "/")]
                                + [_ref(r, repository) for r in related if r not in fixes]))
    lines = []
    if issues:
        lines.append("Fixes " + ", ".join(issues))
    if pulls:
        lines.append("Follows up on " + ", ".join(pulls))
    if others:  # "Fixes" would make GitHub link or close something in another repository
        lines.append("Related: " + ", ".join(others))
    return "\n".join(lines)


def paragraphs(body: str) -> list[str]:
    """The body's paragraphs, each on one line (markdown re-wraps; lists keep their lines)."""
    out = []
    for block in re.split(r"\n\s*\n", body.strip()):
        lines = block.splitlines()
        if any(line.lstrip().startswith(("- ", "* ", "| ")) for line in lines):
            out.append("\n".join(lines))
        else:
            out.append(" ".join(line.strip() for line in lines))
    return [p for p in out if p]


# --------------------------------------------------------------------------- figures

_VALUE = re.compile(r"^(?P<label>.*?)\s*(?P<value>-?\d[\d.,]*\s*(?:MiB|GiB|MB|GB|KiB|bytes|B|%)\b.*)$")


def figures_table(left: list[str], right: list[str], left_title: str, right_title: str) -> list[str]:
    """A small table of the figures a test printed in two runs, paired by their label."""
    rows = figure_rows(left, right)
    return two_column_table(rows, left_title, right_title) if rows else []


def figure_rows(left: list[str], right: list[str]) -> list[tuple[str, str, str]]:
    """(label, value in the first run, value in the second) for the figures a test printed, paired by label."""
    def split(lines: list[str]) -> dict[str, str]:
        out = {}
        for line in lines:
            text = re.sub(r"^[\w.-]+:\s+", "", line.strip())  # the test's own prefix
            m = _VALUE.match(text)
            label, value = (m.group("label"), m.group("value")) if m else (text, "")
            out[label.strip() or text] = value or text
        return out

    a, b = split(left), split(right)
    return [(label, a.get(label, "-"), b.get(label, "-")) for label in dict.fromkeys([*a, *b])]


def outcome_table(left: dict[str, str], right: dict[str, str], left_title: str, right_title: str) -> list[str]:
    rows = [f"| test | {left_title} | {right_title} |", "| --- | --- | --- |"]
    for t in sorted(set(left) | set(right)):
        rows.append(f"| `{t.rsplit('::', 1)[-1]}` | {left.get(t, '-')} | {right.get(t, '-')} |")
    return rows


def _evidence(pin: Pin, checks: dict, bench: list[str], with_title: str) -> list[str]:
    t = checks["tests"]
    official = checks.get("official", f"{pin.distribution} {pin.version}")
    if t.get("status") != "run":
        return [f"Tests: {t.get('status')} ({t.get('reason', t.get('verdict', ''))})."]
    tests = ", ".join(f"`{f}`" for f in t["tests"])
    lines = [f"The new test ({tests}) fails on {official} and passes {with_title}:", ""]
    lines += outcome_table(t["pristine"]["outcomes"], t["alone"]["outcomes"], official, with_title)
    figs = figures_table(t["pristine"].get("figures", []), t["alone"].get("figures", []), official, with_title)
    if figs:
        lines += ["", "What the test measured:", "", *figs]
    if bench:
        lines += ["", *bench]
    lines += ["", f"Run it: `python -m pytest {' '.join(t['tests'])}` (CPU only; no hub access needed)."]
    return lines


def reviewers_line(areas: list, config: PrConfig) -> str:
    if not areas:
        if config.path is None:
            return f"(no pr_data/{config.name}.toml: pick the reviewers the upstream's template names)"
        return "(no reviewer area in pr_data matches the changed files: pick the reviewers yourself)"
    handles = list(dict.fromkeys(h for a in areas for h in a.handles))
    return " ".join(handles) + f" ({', '.join(a.area for a in areas)})"


# --------------------------------------------------------------------------- PR.md

def _section_end(lines: list[str], start: int) -> int:
    """Index of the next heading of the same or a higher level after ``start``, or len(lines)."""
    level = len(lines[start]) - len(lines[start].lstrip("#"))
    for i in range(start + 1, len(lines)):
        m = re.match(r"^(#+) ", lines[i])
        if m and len(m.group(1)) <= level:
            return i
    return len(lines)


def _after_heading(lines: list[str], heading: str) -> int | None:
    """Index just after ``heading`` and the HTML comment (and blank lines) that follow it."""
    try:
        i = lines.index(heading) + 1
    except ValueError:
        return None
    while i < len(lines) and not lines[i].strip():
        i += 1
    if i < len(lines) and lines[i].lstrip().startswith("<!--"):
        while i < len(lines) and "-->" not in lines[i]:
            i += 1
        i += 1
    return i


def fill_template(template: str, config: PrConfig, description: list[str], fixes: str, reviewers: str) -> str:
    lines = template.rstrip("\n").splitlines()
    extra: list[str] = []
    if config.fixes_placeholder and config.fixes_placeholder in lines:
        i = lines.index(config.fixes_placeholder)
        if fixes:
            lines[i : i + 1] = fixes.splitlines()
    elif fixes:
        extra += ["", fixes]
    if config.reviewers_after and config.reviewers_after in lines:
        end = _section_end(lines, lines.index(config.reviewers_after))
        while end > 0 and not lines[end - 1].strip():
            end -= 1
        lines[end:end] = ["", f"Reviewers for this change: {reviewers}"]
    else:
        extra += ["", f"Reviewers for this change: {reviewers}"]
    at = _after_heading(lines, config.description_after) if config.description_after else None
    block = ["", *description, *extra, ""]
    if at is None:
        lines = [*lines, *block] if lines else block
    else:
        lines[at:at] = block
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip("\n") + "\n"


def plain_template(heading: str = "# What does this PR do?") -> str:
    return f"{heading}\n"


FACTS_POINTER = ("<!-- Write this description yourself; what to cite (failure, reproduction, red->green, figures, "
                 "diff, links) is in FACTS.md beside this file. -->")


def render_pr(config: PrConfig, pin: Pin, message: dict, checks: dict, bench: list[str], areas: list,
              issue_file: bool) -> str:
    """The upstream's template, whole. Unless upstream accepts generated descriptions (``[policy]``), the description
    section is the template's own comment and one line of ours pointing to FACTS.md: nothing written for the person."""
    if config.person_writes_description:
        description = [FACTS_POINTER]
    else:
        description = [line for p in paragraphs(message["body"]) for line in (p, "")]
        if issue_file:
            description += ["There is no issue for this yet: the bug report drafted with this PR (ISSUE.md) has a "
                            "standalone reproduction; open it first and link it here.", ""]
        description += _evidence(pin, checks, bench, "with this PR")
    template = config.template.read_text(encoding="utf-8") if config.template else plain_template()
    if config.template is None:
        config = PrConfig(name=config.name, description_after="# What does this PR do?")
    fixes = fixes_line(message["fixes"], pin.repository, message["upstream_issues"] + message["related"])
    return fill_template(template, config, description, fixes, reviewers_line(areas, config))


# --------------------------------------------------------------------------- COMMENT.md

def _details(summary: str, body: list[str]) -> list[str]:
    return ["<details>", f"<summary>{summary}</summary>", "", *body, "", "</details>", ""]


def render_comment(pin: Pin, message: dict, checks: dict, pr: dict, test_files: dict[str, str], source_diff: str) -> str:
    """A short comment for an open upstream PR: the evidence in a few lines, our change and test folded."""
    issues = [_ref(u, pin.repository) for u in upstream_issues(message, pin.repository)]
    lines = [f"<!-- A comment for {pr['url']}: read it, edit it, post it yourself (make pr never posts). "
             "Facts to cite: FACTS.md. -->", ""]
    lines += [f"A test for this fix{' (' + ', '.join(issues) + ')' if issues else ''}, on {pin.distribution} "
              f"{pin.version} and with the change:", ""]
    t = checks["tests"]
    if t.get("status") == "run":
        official = checks.get("official", f"{pin.distribution} {pin.version}")
        lines += outcome_table(t["pristine"]["outcomes"], t["alone"]["outcomes"], official, "with the change")
        figs = figures_table(t["pristine"].get("figures", []), t["alone"].get("figures", []), official,
                             "with the change")
        if figs:
            lines += ["", *figs]
        lines += ["", f"Run: `python -m pytest {' '.join(t['tests'])}` (CPU only, no hub access)."]
    else:
        lines.append(f"Tests: {t.get('status')} ({t.get('reason', t.get('verdict', ''))}).")
    lines.append("")
    lines += _details("Our change, to compare with this PR's", ["```diff", source_diff.rstrip("\n"), "```"])
    # The commit message says why, what it costs and how it differs: material to read, not the comment's words
    lines += _details("Our commit message (the why, the cost, how it differs)",
                      ["```text", message["subject"], "", message["body"].rstrip("\n"), "```"])
    for name, text in test_files.items():
        lines += _details(name, ["```python", text.rstrip("\n"), "```"])
    return "\n".join(lines).rstrip("\n") + "\n"


def lines_before_details(text: str) -> int:
    """Lines of text (not blank) before the first ``<details>``: what a reader sees unfolded at the top."""
    head = text.split("<details>", 1)[0]
    return sum(1 for line in head.splitlines() if line.strip())


# --------------------------------------------------------------------------- ISSUE.md

def _docstring_part(script: str, name: str) -> str:
    """The paragraph(s) after ``Name:`` in the script's module docstring (up to the next ``Word:`` line)."""
    m = re.match(r'\s*(?:#.*\n)*\s*"""(.*?)"""', script, re.S)
    doc = m.group(1) if m else ""
    m = re.search(rf"^{name}:\s*(.*?)(?=^\w[\w ]*:|\Z)", doc, re.S | re.M)
    return " ".join(m.group(1).split()) if m else ""


def symptom(script: str) -> str:
    """The script's module docstring before its first ``Word:`` line: the symptom, in the script's words."""
    m = re.match(r'\s*(?:#.*\n)*\s*"""(.*?)"""', script, re.S)
    lead = re.split(r"^\w[\w ]*:", m.group(1), maxsplit=1, flags=re.M)[0] if m else ""
    return " ".join(lead.split())


def run_command(script: str) -> str:
    return _docstring_part(script, "Run") or "python repro.py"


def versions_line(versions: str) -> str:
    """``repro.versions``' list (- `x` version: 1.0 / - Platform: ...) on one line: "x 1.0, ..., Python 3.12, Linux-..."."""
    parts = []
    for line in versions.strip().splitlines():
        m = re.match(r"^-\s*`?([^`:]+?)`?(?: version)?:\s*(.+)$", line.strip())
        if m:
            parts.append(m.group(2).strip() if m.group(1) == "Platform" else f"{m.group(1)} {m.group(2).strip()}")
        elif line.strip():
            parts.append(line.strip())
    return ", ".join(parts)


def _last(text: str, n: int = 3) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-n:])


def render_issue(config: PrConfig, pin: Pin, message: dict, areas: list, script: str | None, runs: dict,
                 versions: str) -> str:
    """A bug report in the order of the upstream's form (or a plain one when pr_data has none): the symptom, the
    command and the last lines of its real output unfolded; the script and the whole outputs folded."""
    sections = config.issue_sections or ()
    if not sections:
        from .config import Section

        sections = tuple(Section(t, f) for t, f in (("System Info", "versions"), ("Reproduction", "reproduction"),
                                                    ("Expected behavior", "expected")))
    paras = paragraphs(message["body"])
    official = f"{pin.distribution} {pin.version}"
    lines = [f"<!-- Title: {message['subject']} -->",
             f"<!-- A bug report for {_base(pin.repository)}/issues/new, in the order of its form"
             + (f" ({config.issue_source})" if config.issue_source else "") + ". Read it, edit it, file it yourself. -->", ""]
    for s in sections:
        lines += [f"### {s.title}", ""]
        if s.boxes:
            lines += [f"- [ ] {b}" for b in s.boxes]
        elif s.fill == "versions":
            lines.append(versions_line(versions) or official)
        elif s.fill == "reviewers":
            lines.append(reviewers_line(areas, config))
        elif s.fill == "reproduction":
            lines += [(symptom(script) if script else "") or (paras[0] if paras else message["subject"]), ""]
            if script is None:
                lines.append("(no standalone script in pr_data: write one and paste it here)")
            else:
                lines.append(f"`{run_command(script)}` with the script below (CPU only, no hub access)"
                             + (f"; on {official} it ends with:" if runs.get("pristine") else "."))
                if runs.get("pristine"):
                    lines += ["", "```", _last(runs["pristine"]), "```"]
                lines += ["", *_details("repro.py", ["```python", script.rstrip("\n"), "```"])]
                if runs.get("pristine"):
                    lines += _details(f"Whole output on {official}", ["```", runs["pristine"].rstrip("\n"), "```"])
        elif s.fill == "expected":
            expected = _docstring_part(script, "Expected") if script else ""
            lines.append(expected[:1].upper() + expected[1:] if expected else "(say what should happen)")
            if runs.get("alone"):
                lines += ["", "With the fix (the pull request drafted with this report) it ends with:", "", "```",
                          _last(runs["alone"]), "```", "",
                          *_details("Whole output with the fix", ["```", runs["alone"].rstrip("\n"), "```"])]
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"
