"""pr's evidence, read rather than run: the memory figures of build/bench/*.json for a patch, what its diff changes
(files, functions, lines), and pytest's short summary. Kept in checks.json; PR.md and FACTS.md render them, each
figure written by :func:`_num` and each two-run table by :func:`two_column_table` (the same in both)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from ...ground.errors import CommandFailed, NotApplied
from ...ground.vcs import Repo
from ...sources.pins import Pin

BENCH_DIR = Path("build") / "bench"


def _leaves(data: object, prefix: str = "") -> list[tuple[str, object]]:
    if isinstance(data, dict):
        return [x for k, v in data.items() for x in _leaves(v, f"{prefix}.{k}" if prefix else str(k))]
    if isinstance(data, list) and all(not isinstance(v, (dict, list)) for v in data):
        return [(prefix, ", ".join(str(v) for v in data))]
    if isinstance(data, list):
        return [x for i, v in enumerate(data) for x in _leaves(v, f"{prefix}[{i}]")]
    return [(prefix, data)]


# The bench's sections were once keyed fix1/fix2/fix3, after "(fix N)" in the commit that added a patch; they are named
# after what they measure now. Results written before the rename (reports/, an old build/bench/) still read.
FIX_SECTIONS = {"1": "trainer_best_adapter", "2": "fsdp_loading", "3": "peft_load_adapter"}
OLD_KEYS = {name: f"fix{n}" for n, name in FIX_SECTIONS.items()}


def fix_section(root: Path, patch: Path) -> str | None:
    """The bench section of a patch whose adding commit says "(fix N)" (FIX_SECTIONS), when pr_data names none."""
    try:
        repo = Repo(root)
        subjects = repo("log", "--diff-filter=A", "--format=%s", "--", str(patch.relative_to(root)))
    except (CommandFailed, NotApplied, ValueError):  # not a git repository, git failed, or patch outside root: no mapping
        return None
    for subject in reversed(subjects.splitlines()):
        m = re.search(r"\(fix (\d+)\)", subject)
        if m:
            return FIX_SECTIONS.get(m.group(1))
    return None


_MEMORY_KEY = re.compile(r"(?i)mem|rss|reserved|alloc|peak|rise|bytes|mib|gib|seconds")


def _pairs(node: object, path: str = "", ctx: tuple[str, ...] = ()) -> list[tuple[str, str, dict, dict]]:
    """(path, context, pristine, patched) for every dict holding both a "pristine" and a "patched" dict; the
    context is the scalar fields of the enclosing dicts (e.g. a benchmark case's size, ranks and dtype)."""
    out = []
    if isinstance(node, dict):
        here = ctx + tuple(f"{k}={v}" for k, v in node.items()
                           if isinstance(v, (str, int, float)) and not isinstance(v, bool) and len(str(v)) <= 40)
        # the official side is "pristine" (the test environment), or "official" where a bench compares paths
        base = "pristine" if isinstance(node.get("pristine"), dict) else "official"
        if isinstance(node.get(base), dict) and isinstance(node.get("patched"), dict):
            out.append((path, ", ".join(here), node[base], node["patched"]))
        for k, v in node.items():
            if k not in (base, "patched"):
                out += _pairs(v, f"{path}.{k}" if path else str(k), here)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _pairs(v, f"{path}[{i}]", ctx)
    return out


def _memory_leaves(side: dict) -> dict[str, object]:
    base = side.get("summary") if isinstance(side.get("summary"), dict) else side
    return {k: v for k, v in _leaves(base) if isinstance(v, (int, float)) and not isinstance(v, bool) and _MEMORY_KEY.search(k)}


_WORDS = {"mib": "(MiB)", "gib": "(GiB)", "bytes": "(bytes)", "rss": "RSS", "rssanon": "RssAnon", "pct": "(%)"}


def human(key: str) -> str:
    """rank1_load_rise_mib -> "rank 1 load rise (MiB)": a figure's JSON key as a person reads it."""
    last = key.rsplit(".", 1)[-1]
    words = [_WORDS.get(w.lower(), w) for w in re.split(r"[_\s]+", re.sub(r"(rank)(\d+)", r"\1 \2", last)) if w]
    return " ".join(words)


def _num(value: object) -> str:
    return f"{value:,.1f}" if isinstance(value, float) else f"{value:,}" if isinstance(value, int) else str(value)


def two_column_table(rows: list[tuple[str, str, str]], left_title: str, right_title: str) -> list[str]:
    """A markdown table of figures from two runs, one line per (label, left, right): cells written by the caller."""
    return [f"| | {left_title} | {right_title} |", "| --- | ---: | ---: |",
            *(f"| {label} | {a} | {b} |" for label, a, b in rows)]


def bench_tables(root: Path, pin: Pin, patch: Path, section: str | None = None) -> list[dict]:
    """The memory figures of build/bench/*.json for this patch, pristine vs patched: [{title, source, rows:
    [[label, key, pristine, patched]]}] (kept in checks.json; PR.md and FACTS.md render them)."""
    folder = root / BENCH_DIR
    if not folder.exists():
        return []
    section = section or fix_section(root, patch)
    tables: list[dict] = []
    # a whole bench's results, and a part run alone (build/bench/part-<part>/results.json: `make bench PART=...`)
    for f in sorted(folder.glob("*.json")) + sorted(folder.glob("part-*/results.json")):
        try:
            data = json.loads(f.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if not isinstance(data, dict):
            continue
        name = f.relative_to(folder).as_posix()
        key = section if section in data else OLD_KEYS.get(section or "")
        if section and key in data:
            node, where = data[key], f"{name}, {key}"
        elif any(k in json.dumps(data) for k in (patch.stem, patch.name)):
            node, where = data, name
        else:
            continue
        for path, label, pristine, patched in _pairs(node):
            if "skipped" in pristine or "skipped" in patched:
                continue  # e.g. a GPU part on a machine without CUDA: no figure to show
            a, b = _memory_leaves(pristine), _memory_leaves(patched)
            keys = [k for k in a if k in b][:8]
            if keys:
                tables.append({"title": f"Memory ({label or where})", "source": f"build/bench/{where}" + (f", {path}" if path else ""),
                               "rows": [[human(k), k, a[k], b[k]] for k in keys]})
    return tables


def bench_figures(root: Path, pin: Pin, patch: Path, section: str | None = None,
                  tables: list[dict] | None = None) -> list[str]:
    """Markdown lines with the memory figures of build/bench/*.json for this patch: pristine vs patched."""
    lines: list[str] = []
    for t in bench_tables(root, pin, patch, section) if tables is None else tables:
        rows = [(label, _num(a), _num(b)) for label, _key, a, b in t["rows"]]
        table = two_column_table(rows, f"{pin.distribution} {pin.version}", "with this change")
        lines += ["", f"{t['title']}:", "", *table, ""]
    return lines


# --------------------------------------------------------------------------- the diff

_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)(?:,(\d+))? @@ ?(.*)$")
_DEF = re.compile(r"^\+\s*(?:async\s+)?(def|class)\s+(\w+)")
_CONTEXT = re.compile(r"(?:async\s+)?(?:def|class)\s+(\w+)")


def diff_facts(repo: Repo, base: str, commit: str, work: Path) -> dict:
    """Files, functions and lines the commit changes: ``git diff --numstat`` and the hunks of ``-U0`` with git's
    python function headers (the function each hunk is in, and the functions it adds)."""
    attributes = work / "diff-attributes"
    attributes.write_text("*.py diff=python\n", encoding="utf-8")
    files: dict[str, dict] = {}
    for line in repo("diff", "--numstat", base, commit).splitlines():
        added, removed, path = line.split("\t", 2)
        files[path] = {"path": path, "added": int(added) if added.isdigit() else 0,
                       "removed": int(removed) if removed.isdigit() else 0, "functions": [], "lines": []}
    current = None
    for line in repo("-c", f"core.attributesFile={attributes}", "diff", "-U0", "--no-color", base, commit, strip=False).splitlines():
        if line.startswith("+++ "):
            current = files.get(line[6:] if line.startswith("+++ b/") else "")
        elif current is not None and (m := _HUNK.match(line)):
            start, count = int(m.group(1)), int(m.group(2) or 1)
            if count:
                current["lines"].append(f"{start}-{start + count - 1}" if count > 1 else str(start))
            ctx = _CONTEXT.search(m.group(3))
            if ctx and ctx.group(1) not in current["functions"]:
                current["functions"].append(ctx.group(1))
        elif current is not None and (m := _DEF.match(line)) and m.group(2) not in current["functions"]:
            current["functions"].append(m.group(2))
    source = [f for f in files.values() if not f["path"].startswith("tests/")]
    tests = [f for f in files.values() if f["path"].startswith("tests/")]
    return {"files": list(files.values()), "source_files": len(source),
            "source_added": sum(f["added"] for f in source), "source_removed": sum(f["removed"] for f in source),
            "test_added": sum(f["added"] for f in tests), "test_removed": sum(f["removed"] for f in tests)}


def summary_tail(log: str, limit: int = 8) -> list[str]:
    """pytest's short summary (``-rA``) and its last line, as a person reads them: a run's real output, short."""
    lines = log.rstrip("\n").splitlines()
    start = next((i + 1 for i, line in enumerate(lines) if "short test summary info" in line), len(lines) - 1)
    body = [line.strip().strip("=").strip()[:200] for line in lines[start:] if line.strip()]
    return body[:limit - 1] + body[-1:] if len(body) > limit else body
