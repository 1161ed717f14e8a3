"""Upstream suites: classification of JUnit outcomes and the pristine/patched comparison.

No real suite runs here: the JUnit XML below is what pytest writes, cut down to the cases
that matter (fixtures as data).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from headroom.ground import errors
from headroom.proof import testrun, upstream
from headroom.sources.pins import Pin

PEFT_PIN = Pin("peft", "peft", "0.21.2", "peft-0.21.2.tar.gz", "a" * 64, "peft-0.21.2-py3-none-any.whl",
               "a" * 64, "https://example.invalid/peft", "v0.21.2")


def _junit_of(pytest_args) -> Path:
    """The --junitxml=<path> of a pytest command line that upstream.run_suite built."""
    return Path(next(str(a) for a in pytest_args if str(a).startswith("--junitxml=")).split("=", 1)[1])

PRISTINE = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="0" failures="1" skipped="1" tests="6">
  <testcase classname="tests.test_other.TestA" name="test_stays_green" time="0.1"/>
  <testcase classname="tests.test_other.TestA" name="test_broken_by_series" time="0.1"/>
  <testcase classname="tests.test_other.TestA" name="test_gpu_only" time="0.0">
    <skipped type="pytest.skip" message="test requires a GPU">skip</skipped>
  </testcase>
  <testcase classname="tests.test_hub.TestHub" name="test_from_hub" time="0.2">
    <failure message="huggingface_hub.errors.LocalEntryNotFoundError: Cannot find an appropriate cached snapshot folder">
huggingface_hub.errors.LocalEntryNotFoundError: Cannot find an appropriate cached snapshot folder for the specified
revision on the local disk and outgoing traffic has been disabled. To enable repo look-ups and downloads online,
pass 'local_files_only=False' as input.</failure>
  </testcase>
  <testcase classname="tests.test_other.TestA" name="test_upstream_bug" time="0.1">
    <failure message="ModuleNotFoundError: No module named 'attr'">E   ModuleNotFoundError: No module named 'attr'</failure>
  </testcase>
  <testcase classname="tests.test_other.TestA" name="test_vanishes" time="0.1"/>
</testsuite></testsuites>
"""

PATCHED = """<?xml version="1.0" encoding="utf-8"?>
<testsuites><testsuite name="pytest" errors="1" failures="2" skipped="1" tests="6">
  <testcase classname="tests.test_other.TestA" name="test_stays_green" time="0.1"/>
  <testcase classname="tests.test_other.TestA" name="test_broken_by_series" time="0.1">
    <failure message="AssertionError: assert 2 == 1">E   AssertionError: assert 2 == 1</failure>
  </testcase>
  <testcase classname="tests.test_other.TestA" name="test_gpu_only" time="0.0">
    <skipped type="pytest.skip" message="test requires a GPU">skip</skipped>
  </testcase>
  <testcase classname="tests.test_hub.TestHub" name="test_from_hub" time="0.2">
    <error message="requests.exceptions.ConnectionError: HTTPConnectionPool(host='127.0.0.1', port=9)">
ConnectionError: HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /api/models/x
(Caused by NewConnectionError: Failed to establish a new connection: [Errno 111] Connection refused')).
We couldn't connect to 'http://127.0.0.1:9' to load the files.</error>
  </testcase>
  <testcase classname="tests.test_other.TestA" name="test_upstream_bug" time="0.1">
    <failure message="ModuleNotFoundError: No module named 'attr'">E   ModuleNotFoundError: No module named 'attr'</failure>
  </testcase>
</testsuite></testsuites>
"""

KNOWN = """
# comments and blank lines are ignored

text:No module named 'attr' | peft/tuners/lora/corda.py imports attrs, which peft does not declare
tests.test_other.TestB::test_flaky[* | an example of a node id glob
"""


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def known():
    return testrun.parse_known(KNOWN)


def test_classification_of_each_outcome(tmp_path, known):
    got = testrun.read_junit(write(tmp_path, "p.xml", PRISTINE), known)
    outcome = {node: o for node, (o, _) in got.items()}
    assert outcome == {
        "tests.test_other.TestA::test_stays_green": "passed",
        "tests.test_other.TestA::test_broken_by_series": "passed",
        "tests.test_other.TestA::test_gpu_only": "skipped",
        "tests.test_hub.TestHub::test_from_hub": "needs_hub",
        "tests.test_other.TestA::test_upstream_bug": "known",
        "tests.test_other.TestA::test_vanishes": "passed",
    }
    assert got["tests.test_other.TestA::test_upstream_bug"][1].startswith("peft/tuners/lora/corda.py")
    assert testrun.counts(got) == {"passed": 3, "failed": 0, "known": 1, "skipped": 1, "needs_hub": 1}


@pytest.mark.parametrize("text", [
    "huggingface_hub.errors.OfflineModeIsEnabled: Cannot reach https://huggingface.co/api/models/x: offline mode is enabled",
    "OSError: We couldn't connect to 'https://huggingface.co' to load the files, and couldn't find them in the cached files.",
    "requests.exceptions.ConnectionError: HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded",
    "httpx.ConnectError: [Errno 111] Connection refused (http://127.0.0.1:9/api/models/peft-internal-testing/x)",
])
def test_hub_errors_are_needs_hub_never_passed(text):
    case = ET.fromstring(f'<testcase classname="t.T" name="n"><error message="boom">{text}</error></testcase>')
    assert testrun.classify(case)[0] == "needs_hub"


def test_an_ordinary_failure_is_failed_even_if_it_mentions_a_port_like_9000():
    case = ET.fromstring('<testcase classname="t.T" name="n"><failure message="assert 1 == 2">'
                         "E assert 1 == 2 (server at 127.0.0.1:9000)</failure></testcase>")
    assert testrun.classify(case) == ("failed", "assert 1 == 2")


def test_a_test_passing_on_pristine_and_failing_on_patched_is_a_regression(tmp_path, known):
    pristine = testrun.read_junit(write(tmp_path, "p.xml", PRISTINE), known)
    patched = testrun.read_junit(write(tmp_path, "q.xml", PATCHED), known)
    assert testrun.counts(patched)["failed"] == 1
    assert testrun.regressions(pristine, patched) == [
        "tests.test_other.TestA::test_broken_by_series (passed on pristine, failed on patched)",
        "tests.test_other.TestA::test_vanishes (passed on pristine, not run on patched)",
    ]
    # Failing (or hub-bound, or skipped) on both sides is not the series' doing.
    assert testrun.regressions(patched, patched) == []


def test_teardown_error_after_a_pass_counts_as_the_failure(tmp_path):
    xml = """<testsuites><testsuite>
      <testcase classname="t.T" name="n"/>
      <testcase classname="t.T" name="n"><error message="teardown">E   RuntimeError: leak</error></testcase>
    </testsuite></testsuites>"""
    assert testrun.read_junit(write(tmp_path, "t.xml", xml)) == {"t.T::n": ("failed", "teardown")}


def test_collection_error_without_classname_is_a_failure(tmp_path):
    xml = """<testsuites><testsuite>
      <testcase classname="" name="tests.test_x"><error message="collection failure">ImportError: boom</error></testcase>
    </testsuite></testsuites>"""
    # pytest's fixed message, and the error that stopped the import (the text's last error line)
    assert testrun.read_junit(write(tmp_path, "c.xml", xml)) == {
        "tests.test_x": ("failed", "collection failure: ImportError: boom")}


def test_missing_or_broken_junit_reads_as_nothing(tmp_path):
    assert testrun.read_junit(tmp_path / "absent.xml") == {}
    assert testrun.read_junit(write(tmp_path, "bad.xml", "<testsuites><testsuite>")) == {}


def test_known_failures_by_node_glob_and_malformed_lines():
    (k,) = testrun.parse_known("tests.test_a.T::test_b[* | needs bitsandbytes\n")
    assert k.matches("tests.test_a.T::test_b[lora-1]", "") and not k.matches("tests.test_a.T::test_c", "")
    with pytest.raises(errors.DataError, match="line 1"):
        testrun.parse_known("tests.test_a.T::test_b without a reason\n")


def test_shipped_known_failures_file_parses_and_every_entry_has_a_reason():
    for k in upstream.load_known():
        assert k.pattern and len(k.reason) > 10


def test_selections_are_well_formed():
    assert set(upstream.SELECTIONS) == {"default", "full", "guards"}
    assert upstream.SELECTIONS["guards"] == ()  # the guards alone: every selection adds them
    for suites in upstream.SELECTIONS.values():
        names = [s.name for s in suites]
        assert len(names) == len(set(names))
        for s in suites:
            for f in s.ours:
                assert (upstream.DATA / f).is_file()
    assert (upstream.DATA / "peft_conftest.py").is_file()


def test_unknown_selection_is_a_failure_message(tmp_path):
    (msg,) = upstream.run(tmp_path, [], {}, selection="everything")
    assert "unknown upstream selection" in msg


def test_run_reports_counts_and_regressions(tmp_path, monkeypatch, known):
    """run() end to end with pytest replaced by canned JUnit XML."""
    from headroom.ground import proc
    from headroom.proof import proof

    (tmp_path / "vendor" / "peft" / "tests").mkdir(parents=True)
    (tmp_path / "vendor" / "peft" / "tests" / "test_x.py").write_text("def test_x():\n    pass\n")
    suite = upstream.Suite("peft-x", "peft", ("tests/test_x.py",))
    monkeypatch.setitem(upstream.SELECTIONS, "default", (suite,))
    monkeypatch.setattr(upstream, "load_known", lambda: known)
    monkeypatch.setattr(upstream, "_patch_added_tests", lambda root, pin: [])

    def fake_run(args, **kwargs):
        junit = _junit_of(args)
        junit.write_text(PRISTINE if "pristine" in junit.name else PATCHED, encoding="utf-8")
        return proc.Result(list(args), 1, "output\n")

    monkeypatch.setattr(proc, "run", fake_run)
    failures = upstream.run(tmp_path, [PEFT_PIN], {"pristine": Path("py1"), "patched": Path("py2")}, selection="default")
    assert any("1 unexplained failure(s): tests.test_other.TestA::test_broken_by_series" in f for f in failures)
    assert any("peft-x: 2 regression(s)" in f for f in failures)
    report = json.loads((tmp_path / proof.REPORT).read_text())["upstream"]
    entry = report["suites"]["peft-x"]
    assert entry["pristine"]["passed"] == 3 and entry["pristine"]["needs_hub"] == 1
    assert entry["patched"]["failed"] == 1 and entry["patched"]["known"] == 1
    assert len(entry["regressions"]) == 2
    layer = tmp_path / "build" / "upstream" / "peft" / "patched"
    assert (layer / "tests" / "__init__.py").exists() and (layer / "conftest.py").exists()
    assert not (tmp_path / "vendor" / "peft" / "tests" / "__init__.py").exists()


def test_missing_vendor_tests_is_a_failure_message(tmp_path):
    failures = upstream.run(tmp_path, [PEFT_PIN], {"pristine": Path("py")}, selection="default")
    assert failures == ["upstream peft: vendor/peft/tests is missing; run `make apply` first"]


@pytest.mark.parametrize("use_tinyhub", [True, False])
def test_tinyhub_switch_picks_the_cache_each_suite_runs_with(tmp_path, monkeypatch, use_tinyhub):
    """A suite marked for the tiny hub gets it (built in the env's own python) unless --no-tinyhub;
    an unmarked suite always runs with the empty cache."""
    from headroom.ground import proc
    from headroom.proof import proof

    (tmp_path / "vendor" / "peft" / "tests").mkdir(parents=True)
    suites = (upstream.Suite("peft-hub", "peft", ("tests",), tinyhub=True), upstream.Suite("peft-plain", "peft", ("tests",)))
    monkeypatch.setitem(upstream.SELECTIONS, "default", suites)
    monkeypatch.setattr(upstream, "load_known", lambda: [])
    monkeypatch.setattr(upstream, "_patch_added_tests", lambda root, pin: [])
    built, homes = [], {}
    monkeypatch.setattr(upstream.tinyhub, "build_cache",
                        lambda hf_home, py: built.append((hf_home, py)) or {"generated": ["x/y"], "kept": [], "seconds": 0.1})

    def fake_run(args, env=None, **kwargs):
        junit = _junit_of(args)
        homes[junit.name] = env["HF_HOME"]
        junit.write_text(PRISTINE, encoding="utf-8")
        return proc.Result(list(args), 0, "output\n")

    monkeypatch.setattr(proc, "run", fake_run)
    upstream.run(tmp_path, [PEFT_PIN], {"patched": Path("py2")}, selection="default", use_tinyhub=use_tinyhub)
    out = tmp_path / "build" / "upstream"
    assert homes["junit-peft-plain-patched.xml"] == str(out / "hf-home")
    report = json.loads((tmp_path / proof.REPORT).read_text())["upstream"]
    assert report["tinyhub"] is use_tinyhub
    if use_tinyhub:
        assert built == [(out / "tinyhub" / "patched", Path("py2"))]
        assert homes["junit-peft-hub-patched.xml"] == str(out / "tinyhub" / "patched")
        assert report["suites"]["peft-hub"]["patched"]["tinyhub"]["generated"] == ["x/y"]
    else:
        assert built == [] and homes["junit-peft-hub-patched.xml"] == str(out / "hf-home")
        assert "tinyhub" not in report["suites"]["peft-hub"]["patched"]


@pytest.mark.parametrize(("jobs", "cpus", "n", "threads"), [("1", 2, 1, None), ("auto", 2, 2, 1), ("auto", 16, 16, 1),
                                                          ("2", 2, 2, 1), ("2", 16, 2, 8), ("3", 16, 3, 5), ("8", 2, 8, 1)])
def test_each_xdist_worker_gets_its_share_of_the_cores(monkeypatch, jobs, cpus, n, threads):
    monkeypatch.setattr(upstream.os, "sched_getaffinity", lambda pid: set(range(cpus)))
    assert (upstream.workers(jobs), upstream.worker_threads(jobs)) == (n, threads)


@pytest.mark.parametrize(("jobs", "expected", "threads"), [("1", None, None), ("2", "2", "1"), ("auto", "2", "1")])
def test_jobs_spread_a_suite_over_xdist_workers_unless_it_is_serial_only(tmp_path, monkeypatch, jobs, expected,
                                                                          threads):
    """--jobs N gives the suites that may run in parallel `-n N` (pytest-xdist), each worker one thread per core it
    has (2 cores here); --jobs 1 and a serial-only suite run in one process with torch's own thread count."""
    from headroom.ground import proc

    monkeypatch.setattr(upstream.os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    (tmp_path / "vendor" / "peft" / "tests").mkdir(parents=True)
    suites = (upstream.Suite("peft-par", "peft", ("tests",)), upstream.Suite("peft-ser", "peft", ("tests",), parallel=False))
    monkeypatch.setitem(upstream.SELECTIONS, "default", suites)
    monkeypatch.setattr(upstream, "load_known", lambda: [])
    monkeypatch.setattr(upstream, "_patch_added_tests", lambda root, pin: [])
    workers, omp = {}, {}

    def fake_run(args, **kwargs):
        junit = _junit_of(args)
        argv = [str(a) for a in args]
        workers[junit.name] = argv[argv.index("-n") + 1] if "-n" in argv else None
        omp[junit.name] = kwargs["env"].get("OMP_NUM_THREADS")
        junit.write_text(PRISTINE, encoding="utf-8")
        return proc.Result(argv, 0, "output\n")

    monkeypatch.setattr(proc, "run", fake_run)
    upstream.run(tmp_path, [PEFT_PIN], {"patched": Path("py")}, selection="default", use_tinyhub=False, jobs=jobs)
    assert workers == {"junit-peft-par-patched.xml": expected, "junit-peft-ser-patched.xml": None}
    assert omp == {"junit-peft-par-patched.xml": threads, "junit-peft-ser-patched.xml": None}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's own setting wins (proc.run passes it through)
    omp.clear()
    upstream.run(tmp_path, [PEFT_PIN], {"patched": Path("py")}, selection="default", use_tinyhub=False, jobs=jobs)
    assert omp == {"junit-peft-par-patched.xml": None, "junit-peft-ser-patched.xml": None}
    report = json.loads((tmp_path / "build" / "report.json").read_text())["upstream"]
    assert report["jobs"] == jobs


# 20 failing tests, each with a fixture that prints while tearing down (a "Captured stdout teardown" section), and a
# spy that counts how often the terminal summary asks for all reports of the session.
_MANY_FAILURES = '''
import pytest

@pytest.fixture
def noisy():
    yield
    print("tearing down")

@pytest.mark.parametrize("i", range(20))
def test_fails(noisy, i):
    assert i < 0
'''
_SPY = '''
import pytest
from _pytest.terminal import TerminalReporter

calls = []
_real = TerminalReporter.getreports

def _counted(self, name):
    calls.append(name)
    return _real(self, name)

TerminalReporter.getreports = _counted

def pytest_unconfigure(config):
    print("getreports('') calls:", calls.count(""))
'''


def test_common_conftest_prints_the_same_summary_with_one_scan_of_the_reports(tmp_path):
    """pytest scans every report once per failure to find its teardown output (quadratic: 14 of full's 19 minutes);
    the common conftest layer indexes them once. The FAILURES section must not change."""
    import subprocess
    import sys

    runs = {}
    for name, layer in (("pytest", ""), ("layer", (upstream.DATA / "common_conftest.py").read_text())):
        where = tmp_path / name
        where.mkdir()
        (where / "test_many.py").write_text(_MANY_FAILURES)
        (where / "spy.py").write_text(_SPY)
        (where / "conftest.py").write_text("pytest_plugins = ['spy']\n" + layer)
        result = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "--tb=native",
                                 "-o", "pythonpath=.", "test_many.py"], cwd=where, capture_output=True, text=True)
        assert result.returncode == 1, result.stdout + result.stderr
        runs[name] = result.stdout.replace(str(where), "<dir>")
    summary = {k: v[v.index("= FAILURES ="):v.index("short test summary")] for k, v in runs.items()}
    assert summary["pytest"].count("Captured stdout teardown") == 20
    assert summary["layer"] == summary["pytest"]
    scans = {k: int(v.split("getreports('') calls:")[1].split()[0]) for k, v in runs.items()}
    assert scans["pytest"] >= 20 and scans["layer"] <= 2, scans
