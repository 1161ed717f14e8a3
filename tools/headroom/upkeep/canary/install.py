"""canary's first question: can a candidate be installed at all?

pip resolves the candidate's releases with their declared dependencies, the other pins and the base
requirements (``torch==2.13.0`` for the real upstreams) against the machine's own index settings, without
installing anything (``pip install --dry-run --ignore-installed --report``). When it cannot, the verdict is
``not installable`` and names the requirement that has no match and the newest version the index has.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from ...ground import proc
from ...ground.fsutil import atomic_write
from ...sources import fetch

# pip: "Could not find a version that satisfies the requirement kernels<0.20,>=0.19.1 (from transformers)
# (from versions: 0.1.0, 0.17.2)" then "No matching distribution found for kernels<0.20,>=0.19.1".
_NO_MATCH = re.compile(r"Could not find a version that satisfies the requirement (?P<req>\S+)(?: \(from (?P<by>[^)]*)\))?"
                       r"(?: \(from versions: (?P<versions>[^)]*)\))?")
_CONFLICT = re.compile(r"^\s*(The user requested .*|\S+ \S+ depends on .*)$", re.M)


def explain(output: str) -> dict:
    """What pip's failed resolution says: the requirement without a match and the newest available, or the
    conflict, or pip's last error line."""
    m = _NO_MATCH.search(output)
    if m:
        versions = (m.group("versions") or "").strip()
        newest = fetch.newest(versions.split(",")) if versions and versions != "none" else None
        by = f" (required by {m.group('by')})" if m.group("by") else ""
        tail = f"the index has up to {newest}" if newest else "the index has no version of it"
        return {"requirement": m.group("req"), "required_by": m.group("by") or "", "newest": newest,
                "error": f"no match for {m.group('req')}{by}: {tail}"}
    conflict = _CONFLICT.findall(output)
    if "ResolutionImpossible" in output and conflict:
        return {"requirement": "", "required_by": "", "newest": None,
                "error": "conflicting requirements: " + "; ".join(c.strip() for c in conflict[:4])}
    errors = [line.strip() for line in output.splitlines() if line.startswith("ERROR:")]
    return {"requirement": "", "required_by": "", "newest": None,
            "error": errors[-1] if errors else (output.strip().splitlines() or ["pip failed"])[-1]}


def check(requirements: Sequence[str], log: Path, *, pre: bool = False) -> dict:
    """``{"verdict": "installable"|"not installable", ...}`` for ``requirements`` (a dry-run resolution)."""
    report = log.with_suffix(".json")
    report.parent.mkdir(parents=True, exist_ok=True)
    report.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--disable-pip-version-check",
            "--report", report, *(["--pre"] if pre else []), *requirements]
    result = proc.run(argv, what="pip install --dry-run (installable?)", check=False)
    atomic_write(log, result.output)
    if result.returncode == 0:
        try:
            installs = json.loads(report.read_text(encoding="utf-8")).get("install", [])
            resolved = {i["metadata"]["name"]: i["metadata"]["version"] for i in installs}
        except (OSError, ValueError, KeyError, TypeError):
            resolved = {}
        return {"verdict": "installable", "resolved": resolved, "requirements": list(requirements)}
    return {"verdict": "not installable", "requirements": list(requirements), **explain(result.output)}
