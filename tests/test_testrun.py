"""testrun: the proof's verdicts from JUnit XML fixtures (red on pristine and green on patched, or not), and the
measures that keep it the one place that runs tests."""

from pathlib import Path

import pytest

from headroom.proof import testrun

JUNIT = Path(__file__).parent / "fixtures" / "junit"


def outcomes(name: str) -> dict[str, str]:
    return testrun.outcomes(JUNIT / f"{name}.xml")


def test_junit_outcomes():
    assert outcomes("pristine") == {
        "tests.trainer.test_x.T::test_cpu": "failed",
        "tests.trainer.test_x.T::test_guard": "passed",
        "tests.trainer.test_x.T::test_gpu": "skipped",
    }
    assert outcomes("error") == {"tests.test_y::test_setup": "failed"}
    assert testrun.summarize(outcomes("pristine")) == "1 passed, 1 failed, 1 skipped"


@pytest.mark.parametrize(
    ("pristine", "patched", "expected"),
    [
        ("pristine", "patched", "red->green"),
        ("patched", "patched", "NOT RED on pristine (the test proves nothing)"),
        ("pristine", "pristine", "NOT GREEN on patched"),
        ("pristine", "error", "NOT GREEN on patched"),
    ],
)
def test_verdicts(pristine, patched, expected):
    assert testrun.verdict(outcomes(pristine), outcomes(patched)) == expected


def test_all_skipped_is_not_green():
    skipped = {"a::b": "skipped"}
    assert testrun.verdict(outcomes("pristine"), skipped) == "NOT GREEN on patched"


def test_figures_skip_source_lines_from_tracebacks():
    text = (
        '    f"fsdp-cpu-ram-efficient-loading: rank1 RssAnon rise {rise:.1f} MiB"\n'
        "fsdp-cpu-ram-efficient-loading: rank1 RssAnon rise 247.6 MiB = 101.0% of model 245.0 MiB\n"
    )
    assert testrun.FIGURE.findall(text) == [
        "fsdp-cpu-ram-efficient-loading: rank1 RssAnon rise 247.6 MiB = 101.0% of model 245.0 MiB"
    ]


def test_a_teardown_error_after_a_pass_makes_the_proof_red(tmp_path):
    """The proof reads JUnit like the suites do: the worst outcome of a test reported twice wins."""
    junit = tmp_path / "t.xml"
    junit.write_text('<testsuites><testsuite><testcase classname="t.T" name="n"/>'
                     '<testcase classname="t.T" name="n"><error message="teardown">leak</error></testcase>'
                     '</testsuite></testsuites>', encoding="utf-8")
    assert testrun.outcomes(junit) == {"t.T::n": "failed"}
    assert testrun.verdict({"t.T::n": "failed"}, testrun.outcomes(junit)) == "NOT GREEN on patched"


def test_failures_say_why_in_a_line(tmp_path):
    """A patch not proven in CI, where only the end of the output is shown: the error names each failing test, the first
    line of its message and, from the workers' combined stderr, the last line that names an error (a rank's, not
    torchrun's summary)."""
    junit = tmp_path / "t.xml"
    message = ("RuntimeError: 'python -m torch.distributed.run t.py memory' failed with returncode 1&#10;&#10;"
               "The combined stderr from workers follows:&#10;[rank1]: Traceback (most recent call last):&#10;"
               "[rank1]: AssertionError: rise 250.1 MiB&#10;torch.distributed.elastic.ChildFailedError: t.py FAILED&#10;"
               "  rank: 1")
    junit.write_text('<testsuites><testsuite><testcase classname="t.T" name="ok"/>'
                     '<testcase classname="t.T" name="skip"><skipped message="no cuda"/></testcase>'
                     f'<testcase classname="t.T" name="dist"><failure message="{message}">trace</failure></testcase>'
                     '<testcase classname="t.T" name="bare"><error>trace</error></testcase>'
                     '</testsuite></testsuites>', encoding="utf-8")
    assert testrun.failures(junit) == {
        "t.T::dist": "RuntimeError: 'python -m torch.distributed.run t.py memory' failed with returncode 1 ... "
                     "[rank1]: AssertionError: rise 250.1 MiB",
        "t.T::bare": "trace",
    }


def test_a_patch_not_green_names_its_failing_tests():
    from headroom.proof import proof

    entry = {"patch": "patches/t/0002-x.patch", "verdict": "NOT GREEN on patched",
             "pristine": {"failures": {"t.T::a": "AssertionError: 2 != 1"}},
             "patched": {"failures": {"t.T::b": "[rank1]: AssertionError: rise 250.1 MiB"}}}
    assert proof._not_proven(entry) == (
        "patches/t/0002-x.patch: NOT GREEN on patched (b: [rank1]: AssertionError: rise 250.1 MiB)")
    entry |= {"verdict": "NOT RED on pristine (the test proves nothing)", "pristine": {"failures": {}}}
    assert proof._not_proven(entry) == "patches/t/0002-x.patch: NOT RED on pristine (the test proves nothing)"
