"""canary's third and fourth questions: is each patch still needed, and do the regression guards still pass?

A patch's own tests (the files it adds) run on the new OFFICIAL release (every upstream of the candidate in one
environment) and, once per canary run, on today's pins (the reference). Compared test by test:

* ``landed``: all its tests pass on the new release (confirmed by a second run);
* ``partly landed``: some that failed on the reference pass now, the others fail as they did there (confirmed);
* ``still needed``: every failing test fails as on the reference (same test, same kind of failure);
* ``unknown``: a test fails differently from the reference (a collection error, an ImportError, a new exception,
  or it passed there), shown with its error line; never counted as still needed.

The battery: every guard test file (``<guards>/<upstream>/test_*.py``) of the upstreams in the environment, on the
reference and on the new release. A guard that passes on the reference and not on the new release is an
``upstream regression``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ...sources import fetch
from ...sources.pins import Pin
from ...proof import testrun, upstream
from ...proof.testrun import TestEnv

GUARDS = upstream.GUARDS

# (root, every upstream's pin for this environment, a short key, torch=<version>) -> an environment, or why it
# cannot be made. Tests pass source_env; the real path uses wheel_env (build/envs/canary-<key>, envs.ensure).
EnvFactory = Callable[..., "TestEnv | str"]
# (folder holding the test files, the files, environment, junit path) -> the run (JUnit XML and log)
Runner = Callable[[Path, list[str], TestEnv, Path], testrun.Run]

_KIND = re.compile(r"\b([A-Z]\w*(?:Error|Exception|Failure|Interrupt|Exit))\b")


def source_env(root: Path, pins: Sequence[Pin], key: str, torch: str | None = None) -> TestEnv | str:
    """Every upstream's pristine source tree on PYTHONPATH (src layout or flat): for pure-Python upstreams (tests);
    the running Python's own torch, if any (``torch`` is not installed)."""
    from .replay import pristine_tree

    paths = []
    for pin in pins:
        where = root / "build" / "canary" / "trees" / f"{pin.name}-{pin.version}"
        if not where.exists():
            where, _ = pristine_tree(root, pin)
        paths.append(testrun.source_root(where))
    return TestEnv(Path(sys.executable), tuple(paths), "source trees " + ", ".join(f"{p.name} {p.version}" for p in pins))


def wheel_env(root: Path, pins: Sequence[Pin], key: str, torch: str | None = None) -> TestEnv | str:
    """build/envs/canary-<key>: torch (``torch``, a version; default the primary), the test requirements and every
    upstream's official wheel (envs.ensure), made under the build/envs/ lock."""
    from ...ground import lock
    from ...proof import envs
    from ...ground.errors import CommandFailed

    wheels = [fetch.fetch(pin, "wheel") for pin in pins]
    path, what = lock.resource_path(root, "envs")
    try:
        with lock.hold(path, what):
            py = envs.ensure(root, f"canary-{key}", wheels, list(pins),
                             torch=envs.torch_requirement(torch) if torch else envs.TORCH)
    except CommandFailed as exc:
        return f"the environment could not be made: {exc.message}"
    return TestEnv(py, (), f"build/envs/canary-{key}: " + ", ".join(f"{p.name} {p.version}" for p in pins)
                   + (f", torch {torch}" if torch else ""))


def run_tests(work: Path, files: list[str], env: TestEnv, junit: Path) -> testrun.Run:
    """The patch's (or guards') test files in ``env`` through testrun's one pytest invocation."""
    return testrun.pytest(env.python, ["-rA", *files], cwd=work, junit=junit, log=junit.with_suffix(".log"),
                          what=f"pytest ({env.label})", env={"PYTHONPATH": os.pathsep.join(str(p) for p in env.pythonpath)})


def results(run: testrun.Run) -> dict[str, dict]:
    """{test id: {"outcome": passed|failed|skipped, "kind": the kind of failure, "error": its line}}."""
    plain = testrun.outcomes(run.junit)
    why = testrun.failures(run.junit)
    raw = testrun.read_junit(run.junit)
    out = {}
    for node, outcome in plain.items():
        entry = {"outcome": outcome}
        if outcome == "failed":
            reason = raw[node][1] or why.get(node, "")
            m = _KIND.search(reason) or _KIND.search(why.get(node, ""))
            kind = m.group(1) if m else ("AssertionError" if reason.lstrip().startswith("assert") else "failed")
            if "::" not in node and "collect" in (why.get(node, "") + reason).lower():
                kind = f"collection error ({kind})"
            entry.update(kind=kind, error=why.get(node, reason)[:300])
        out[node] = entry
    if not out:  # nothing ran: pytest itself failed (usage, import of a conftest)
        last = [line for line in run.output.strip().splitlines() if line.strip()][-1:] or ["no output"]
        out["(pytest)"] = {"outcome": "failed", "kind": f"pytest exit {run.returncode}", "error": last[0][:300]}
    return out


def compare(now: dict[str, dict], reference: dict[str, dict]) -> dict:
    """A patch's verdict from its tests on the new release (``now``) and on today's pins (``reference``)."""
    passed = [t for t, r in now.items() if r["outcome"] == "passed"]
    failed = [t for t, r in now.items() if r["outcome"] == "failed"]
    unknown, still = [], []
    for t in failed:
        ref = reference.get(t)
        if ref and ref["outcome"] == "failed" and ref.get("kind") == now[t].get("kind"):
            still.append(t)
        else:
            was = f"{ref['outcome']} ({ref.get('kind')})" if ref and ref["outcome"] == "failed" else \
                (ref["outcome"] if ref else "not there")
            unknown.append((t, f"{now[t].get('kind')}, on the reference: {was}"))
    now_passing = [t for t in passed if reference.get(t, {}).get("outcome") != "passed"]
    if unknown:
        t, why = unknown[0]
        return {"verdict": "unknown", "error": f"{t.rsplit('::', 1)[-1]}: {now[t].get('error', '')}", "why": why,
                "unknown": [u for u, _ in unknown], "still_failing": still}
    if passed and not failed:
        return {"verdict": "landed", "now_passing": now_passing}
    if failed and now_passing:
        first = still[0]
        return {"verdict": "partly landed", "now_passing": now_passing, "still_failing": still,
                "error": f"{first.rsplit('::', 1)[-1]}: {now[first].get('error', '')}"}
    if failed:
        first = failed[0]
        return {"verdict": "still needed", "still_failing": still,
                "error": f"{first.rsplit('::', 1)[-1]}: {now[first].get('error', '')}"}
    return {"verdict": "not run", "error": "every test skipped here (e.g. it needs CUDA)"}


def guard_files(guards: Path, names: Sequence[str]) -> list[str]:
    """The guard test modules of ``names`` relative to ``guards`` (``<upstream>/test_*.py``): the ones `make test` runs
    (upstream.guard_files)."""
    return [f.split("/", 1)[1] for name in names for f in upstream.guard_files(name, guards)]


def battery(now: dict[str, dict], reference: dict[str, dict]) -> dict:
    """``upstream regression`` when a guard passes on the reference and does not on the new release."""
    regressed = [t for t, r in now.items() if r["outcome"] != "passed" and reference.get(t, {}).get("outcome") == "passed"]
    if regressed:
        first = regressed[0]
        return {"verdict": "upstream regression", "regressed": regressed,
                "error": f"{first.rsplit('::', 1)[-1]}: {now[first].get('error', now[first]['outcome'])}"}
    failing_ref = [t for t, r in reference.items() if r["outcome"] == "failed"]
    return {"verdict": "ok", "failing_on_reference": failing_ref}
