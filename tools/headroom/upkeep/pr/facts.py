"""FACTS.md: what a person needs to write a short description and answer a reviewer, as facts, not sentences.

Rendered from ``checks.json`` alone (the dict ``pr.make`` writes), so every figure in it is one this run measured
or read: the failure in one line, the reproduction and its real output on the official release and with the fix,
the red->green table, the measured figures, what the diff changes, the upstream links from the patch's trailers,
what the fix costs, and what is left to the person. :func:`unsourced` names any number in the text that
``checks.json`` does not hold (the test of this module, and a warning in ``make pr``).
"""

from __future__ import annotations

import json
import re

from .draft import outcome_table
from .evidence import _num, two_column_table

_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?")


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _fence(text: str) -> list[str]:
    return ["```", text.rstrip("\n") or "(no output)", "```"]


def _tail(text: str, n: int) -> str:
    return "\n".join(text.rstrip("\n").splitlines()[-n:])


def failure_line(checks: dict) -> str:
    """The failure in one line: the first failing test's own message on the official release, from this run."""
    t = checks.get("tests", {})
    failures = t.get("pristine", {}).get("failures") or {}
    if failures:
        node, why = next(iter(failures.items()))
        return f"`{node.rsplit('::', 1)[-1]}` on {checks['official']}: {why}"
    repro = checks.get("repro", {})
    if repro.get("pristine"):
        return f"`{repro['command']}` on {checks['official']}: {_tail(repro['pristine'], 1)}"
    return f"not measured in this run (tests: {t.get('status', 'not run')})"


def _left(checks: dict) -> list[str]:
    lines = [f"- {item}" for item in checks.get("left_to_you", [])]
    if checks.get("push_commands"):
        lines += ["", "The commands (make pr never runs them):", "", "```", *checks["push_commands"], "```"]
    return lines


def _reproduce(checks: dict) -> list[str]:
    t, official = checks.get("tests", {}), checks["official"]
    lines: list[str] = []
    if t.get("status") == "run":
        lines += [f"The new test: `python -m pytest {' '.join(t['tests'])}`", "", f"{official}:", ""]
        lines += _fence("\n".join(t["pristine"].get("tail", [])) or t["pristine"]["summary"])
        lines += ["", "With the fix:", ""]
        lines += _fence("\n".join(t["alone"].get("tail", [])) or t["alone"]["summary"])
    else:
        lines.append(f"The new test: {t.get('status')} ({t.get('reason', t.get('verdict', ''))})")
    repro = checks.get("repro", {})
    if repro.get("pristine") is not None and repro.get("alone") is not None:
        lines += ["", f"The standalone script `{repro['script']}`: `{repro['command']}` (its last lines)", "",
                  f"{official}:", "", *_fence(_tail(repro["pristine"], 6)), "", "With the fix:", "",
                  *_fence(_tail(repro["alone"], 6))]
    elif repro.get("status"):
        lines += ["", f"Standalone script: {repro['status']}"]
    return lines


def _red_green(checks: dict) -> list[str]:
    t = checks.get("tests", {})
    if t.get("status") != "run":
        return [f"not run ({t.get('reason', t.get('verdict', t.get('status')))})"]
    rows = outcome_table(t["pristine"]["outcomes"], t["alone"]["outcomes"], checks["official"], "with the fix")
    return rows + ["", f"verdict: {t['verdict']} (pristine: {t['pristine']['summary']}; with the fix: {t['alone']['summary']})"]


def _measured(checks: dict) -> list[str]:
    figures = checks.get("figures", {})
    lines: list[str] = []
    tests = figures.get("tests", [])
    if tests:
        rows = [(_cell(label), _cell(a), _cell(b)) for label, a, b in tests]
        lines += ["What the new test printed:", "", *two_column_table(rows, checks["official"], "with the fix"), ""]
    for table in figures.get("bench", []):
        rows = [(_cell(label), _num(a), _num(b)) for label, _key, a, b in table["rows"]]
        lines += [f"{table['title']} ({table['source']}):", "",
                  *two_column_table(rows, checks["official"], "with the fix"), ""]
    return lines or ["no measured figure for this patch in this run (no test figure, no build/bench result)"]


def _diff(checks: dict) -> list[str]:
    d = checks.get("diff", {})
    rows = ["| file | + | - | functions | lines (with the fix) |", "| --- | ---: | ---: | --- | --- |"]
    for f in d.get("files", []):
        names = f["functions"]
        if f["path"].startswith("tests/"):  # a new test file: its test cases, not every helper
            names = [x for x in names if x.startswith("test")] or names
        rows.append(f"| `{f['path']}` | {f['added']} | {f['removed']} | {', '.join(f'`{x}`' for x in names) or '-'} "
                    f"| {', '.join(f['lines']) or '-'} |")
    return rows


def _links(checks: dict) -> list[str]:
    links = checks.get("upstream", {}).get("links", [])
    if not links:
        return ["none recorded in the patch's trailers (Fixes:, Upstream-Issue:, Upstream-PR:, Related:)"]
    rows = ["| trailer | link | note |", "| --- | --- | --- |"]
    return rows + [f"| {x['trailer']} | {x['url']} | {_cell(x['note']) or '-'} |" for x in links]


def _cost(checks: dict) -> list[str]:
    d = checks.get("diff", {})
    lines = [f"- source: +{d.get('source_added', 0)} -{d.get('source_removed', 0)} lines in "
             f"{d.get('source_files', 0)} file(s); tests: +{d.get('test_added', 0)} -{d.get('test_removed', 0)}"]
    worse = [(t["title"], label, a, b) for t in checks.get("figures", {}).get("bench", [])
             for label, _key, a, b in t["rows"] if isinstance(a, (int, float)) and isinstance(b, (int, float)) and b > a]
    if checks.get("figures", {}).get("bench"):
        lines += [f"- higher with the fix: {label} {_num(a)} -> {_num(b)} ({title})" for title, label, a, b in worse] \
            or ["- no measured figure is higher with the fix"]
    if checks.get("commit", {}).get("cost_paragraph"):
        lines.append("- the commit message's own \"What it costs\" paragraph (its words, not measured here): check it")
    return lines


def _policy(checks: dict) -> list[str]:
    p = checks.get("policy", {})
    lines = [f"- generated descriptions: {p.get('generated_description', 'not stated')}"]
    if p.get("quote"):
        lines.append(f"- upstream's words: \"{p['quote']}\"")
    lines.append(f"- source: {p.get('source') or 'no pr_data file for this upstream'}")
    return lines


def render(checks: dict) -> str:
    head = [f"# FACTS: {checks['subject']}", "",
            "<!-- For you, not for upstream: what to cite in the description you write, and when a reviewer asks. "
            "Every figure is from this run's checks.json. -->", "",
            "| | |", "| --- | --- |",
            f"| patch | `{checks['patch']}` |",
            f"| branch | `{checks['branch']}` = `{checks['base']}` + this patch, author {checks['author']} |",
            f"| failure | {_cell(failure_line(checks))} |",
            f"| drafts | {', '.join(checks.get('drafts', []))} |", ""]
    sections = [("Left to you", _left(checks)), ("Reproduce", _reproduce(checks)), ("Red -> green", _red_green(checks)),
                ("Measured", _measured(checks)), ("What the diff changes", _diff(checks)),
                ("Upstream links", _links(checks)), ("What it costs", _cost(checks)),
                ("Upstream's policy on generated text", _policy(checks))]
    lines = head
    for title, body in sections:
        lines += [f"## {title}", "", *body, ""]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).rstrip("\n") + "\n"


def _numbers(text: str) -> set[str]:
    return {m.replace(",", "") for m in _NUMBER.findall(text)}


def unsourced(text: str, checks: dict) -> list[str]:
    """The numbers in ``text`` that ``checks`` does not hold (as written there, or as FACTS.md rounds a float)."""
    known = _numbers(json.dumps(checks, ensure_ascii=False))
    known |= {f"{v:.1f}" for v in _floats(checks)}
    return sorted(_numbers(text) - known)


def _floats(node: object) -> list[float]:
    if isinstance(node, float):
        return [node]
    if isinstance(node, dict):
        return [x for v in node.values() for x in _floats(v)]
    if isinstance(node, list):
        return [x for v in node for x in _floats(v)]
    return []
