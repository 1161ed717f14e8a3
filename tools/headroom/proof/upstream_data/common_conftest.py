"""headroom's conftest layer for every upstream suite (upstream.py writes it first into
build/upstream/<name>/<env>/conftest.py, followed by <name>_conftest.py where there is one).

* pytest's end-of-run FAILURES section looks up each failed test's teardown report by scanning
  every report of the session (``TerminalReporter._get_teardown_reports``, once per failure:
  pytest-dev/pytest#13360). With ``UPSTREAM=full``, peft's 11,800 offline-hub failures among
  37,000 tests made that scan 14 of the suite's 19 minutes, after the last test had finished,
  in the one process that writes the summary (so pytest-xdist workers could not help). The
  teardown reports are indexed once instead; what is printed stays the same.
"""

import pytest


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    # Runs before the terminal summary: the terminal reporter prints it after every other sessionfinish hook.
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or not hasattr(reporter, "_get_teardown_reports"):
        return
    teardowns = {}
    for report in reporter.getreports(""):
        if report.when == "teardown":
            # the key pytest's own lookup compares: `id` (pytest 9), `nodeid` before it
            teardowns.setdefault(getattr(report, "id", report.nodeid), []).append(report)
    reporter._get_teardown_reports = lambda node_id: teardowns.get(node_id, [])
