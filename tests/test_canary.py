"""canary on two synthetic upstreams: toypkg (pinned 1.0.0, series tests/fixtures/series-rebase) and toyext
(pinned 1.0.0, builds on toypkg's ``memory.load``; series tests/fixtures/canary/series-toyext).

The releases on the local find-links index, and what the canary must say of them:

=======  ==========================================================  =============================================
release  what it changes                                             verdicts
=======  ==========================================================  =============================================
1.1.0    stages on the CPU, clears the state, greets "Hello"         toypkg/0002 landed; toyext/0001 landed and
                                                                      toyext/0002 partly landed (cross-upstream);
                                                                      toypkg/0005 still needed; replay: clean,
                                                                      conflict, empty, 3-way; battery: upstream
                                                                      regression (the greet guard)
1.3.0    renames ``memory.load`` (breaks the tests' imports)         toypkg/0002 and toyext/* unknown (an
                                                                      ImportError, not the reference's failure);
                                                                      battery ok
1.4.0    requires toydep>=2 (the index has toydep 1.0.0 only)        not installable; the replay still runs
=======  ==========================================================  =============================================

The tests run on the pristine source trees (``canary.source_env``): no pip installs, no torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import FIXTURES, TOY, Project, make_sdist, make_wheel, toy_pin
from headroom import cli
from headroom.ground import errors
from headroom.sources import fetch, pins as pins_mod
from headroom.upkeep import canary
from headroom.upkeep.canary import install, needed, plan

CANARY = FIXTURES / "canary"
TOYPKG = {"1.0.0": TOY, "1.1.0": FIXTURES / "toypkg-1.1.0", "1.3.0": CANARY / "toypkg-1.3.0", "1.4.0": TOY}
RELEASES = "toypkg==1.1.0,toypkg==1.3.0,toypkg==1.4.0"


@pytest.fixture(scope="session")
def canary_index(tmp_path_factory) -> Path:
    index = tmp_path_factory.mktemp("index-canary")
    for version, tree in TOYPKG.items():
        make_sdist(index, version=version, tree=tree)
        if version == "1.4.0":
            make_wheel(index, version=version, requires=("toydep>=2,<3",))
        else:
            make_wheel(index, version=version)
    make_sdist(index, tree=CANARY / "toyext", name="toyext")
    make_wheel(index, name="toyext")
    make_wheel(index, name="toydep")
    return index


def make_project(root: Path, index: Path) -> Project:
    p = Project(root, index, toy_pin(index))
    (root / "vendor").mkdir(parents=True)
    pins = pins_mod.render([p.pin, toy_pin(index, name="toyext")])
    (root / "vendor" / "pins.toml").write_text(pins, encoding="utf-8")
    shutil.copytree(FIXTURES / "series-rebase", root / "patches" / "toypkg")
    shutil.copytree(CANARY / "series-toyext", root / "patches" / "toyext")
    assert p.run("apply") == 0
    return p


def digest(*trees: Path, skip: tuple[str, ...] = (".locks",)) -> str:
    """One sha256 over every file (path and bytes, .git included) under ``trees``."""
    h = hashlib.sha256()
    for tree in trees:
        for dirpath, dirnames, filenames in sorted(os.walk(tree)):
            dirnames[:] = sorted(d for d in dirnames if d not in skip)
            for f in sorted(filenames):
                path = Path(dirpath) / f
                h.update(str(path.relative_to(tree)).encode() + b"\0" + (b"" if path.is_symlink() else path.read_bytes()))
    return h.hexdigest()


@pytest.fixture(scope="module")
def ran(tmp_path_factory, canary_index, shared_cache):
    """One canary run over the four releases (module scope: every test below reads its report)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("PIP_NO_INDEX", "1")
    mp.setenv("PIP_FIND_LINKS", str(canary_index))
    mp.setenv("HEADROOM_CACHE", str(shared_cache))
    mp.delenv("V", raising=False)
    mp.setattr(canary, "BASE_REQUIREMENTS", ())
    try:
        p = make_project(tmp_path_factory.mktemp("canary") / "proj", canary_index)
        before = digest(p.root / "vendor", p.root / "patches")
        code = cli.main(["--root", str(p.root), "canary", "--releases", RELEASES, "--env", "source",
                         "--guards", str(CANARY / "guards")])
        after = digest(p.root / "vendor", p.root / "patches")
        report = json.loads((p.root / "build" / "canary" / "report.json").read_text())
    finally:
        # at once, not at the module's end: the real-pins test below must see the machine's own index settings
        mp.undo()
    yield {"project": p, "code": code, "before": before, "after": after, "report": report,
           "by": {c["id"]: c for c in report["candidates"]}}


def cell(ran, release: str, patch: str) -> dict:
    return next(c for pid, c in ran["by"][release]["patches"].items() if pid.startswith(patch))


def test_exit_code_says_a_person_is_needed(ran):
    assert ran["code"] == errors.CanaryAttention.exit_code == 60
    assert [c["id"] for c in ran["report"]["candidates"]] == RELEASES.split(",")


def test_vendor_pins_and_patches_are_byte_identical(ran):
    assert ran["before"] == ran["after"]
    p = ran["project"]
    assert p.run("apply") == 0  # still the applied checkout, untouched
    assert not (p.root / "vendor" / ".toypkg.new").exists()
    assert (p.root / "build" / "canary" / "checkouts" / "toypkg" / ".git").is_dir()


def test_landed(ran):
    c = cell(ran, "toypkg==1.1.0", "toypkg/0002")
    assert c["verdict"] == "landed" and c["confirmed"] is True and c["replay"] == "conflict"
    assert c["log"].endswith(".log") and "range_diff" in cell(ran, "toypkg==1.1.0", "toypkg/0004")


def test_partly_landed_and_cross_upstream_landed(ran):
    # toyext has no new release: toypkg 1.1.0 fixes toyext/0001, and half of toyext/0002.
    ext1 = cell(ran, "toypkg==1.1.0", "toyext/0001")
    assert ext1["verdict"] == "landed" and ext1["replay"] is None
    ext2 = cell(ran, "toypkg==1.1.0", "toyext/0002")
    assert ext2["verdict"] == "partly landed" and ext2["confirmed"]
    assert [t.rsplit("::", 1)[-1] for t in ext2["now_passing"]] == ["test_describe_on_cpu"]
    assert [t.rsplit("::", 1)[-1] for t in ext2["still_failing"]] == ["test_describe_names_the_file"]


def test_still_needed_and_every_replay_status(ran):
    c = cell(ran, "toypkg==1.1.0", "toypkg/0005")
    assert c["verdict"] == "still needed" and "AssertionError" in c["tests"][next(iter(c["tests"]))]["kind"]
    assert c["replay"] == "conflict" and c["files"] == ["src/toypkg/__init__.py"]
    assert "patch hunk @@" in c["detail"]
    replays = {pid.split("/")[1][:4]: x["replay"] for pid, x in ran["by"]["toypkg==1.1.0"]["patches"].items()
               if pid.startswith("toypkg/")}
    assert replays == {"0001": "clean", "0002": "conflict", "0003": "empty", "0004": "3-way", "0005": "conflict"}
    assert cell(ran, "toypkg==1.1.0", "toypkg/0003")["verdict"] == "no tests"


def test_unknown_when_a_release_breaks_the_tests_import(ran):
    c = cell(ran, "toypkg==1.3.0", "toypkg/0002")
    assert c["verdict"] == "unknown"
    assert "ImportError" in c["error"] and "cannot import name 'load'" in c["error"]
    assert "on the reference: " in c["why"]
    assert cell(ran, "toypkg==1.3.0", "toyext/0001")["verdict"] == "unknown"
    assert cell(ran, "toypkg==1.3.0", "toypkg/0005")["verdict"] == "still needed"


def test_not_installable_names_the_requirement_and_the_newest_version(ran):
    c = ran["by"]["toypkg==1.4.0"]
    assert c["install"]["verdict"] == "not installable"
    assert c["install"]["requirement"] == "toydep<3,>=2" and c["install"]["newest"] == "1.0.0"
    assert "the index has up to 1.0.0" in c["install"]["error"]
    assert cell(ran, "toypkg==1.4.0", "toypkg/0001")["replay"] == "clean"  # the replay still ran
    assert cell(ran, "toypkg==1.4.0", "toypkg/0002")["verdict"] == "not run"
    assert c["battery"]["verdict"] == "not run"
    assert ran["by"]["toypkg==1.1.0"]["install"]["verdict"] == "installable"


def test_upstream_regression(ran):
    b = ran["by"]["toypkg==1.1.0"]["battery"]
    assert b["verdict"] == "upstream regression" and "test_greet_is_lower_case" in b["error"]
    assert ran["by"]["toypkg==1.3.0"]["battery"]["verdict"] == "ok"
    assert any("upstream regression" in a for a in ran["report"]["attention"])


def test_reports_md_and_html_carry_the_grid(ran):
    out = ran["project"].root / "build" / "canary"
    md = (out / "report.md").read_text()
    assert "| release | torch | install | toypkg/0001 |" in md and "| toypkg==1.4.0 | 2.13.0 | not installable |" in md
    page = (out / "report.html").read_text()
    assert 'id="canary-grid"' in page and 'class="v-upstream-regression"' in page and 'class="v-unknown"' in page
    logs = [a.split('"')[0] for a in page.split('<a href="')[1:]]
    assert logs and all((out / rel).is_file() for rel in logs)


def test_report_html_renders_in_headless_chromium(ran):
    """The page a browser builds from report.html has the grid: a row per release set, a cell per patch."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if not browser:
        pytest.skip("chromium is not installed (Debian package `chromium`; CI would need .ci/run to install it)")
    page = ran["project"].root / "build" / "canary" / "report.html"
    result = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", page.as_uri()],
                            capture_output=True, text=True, timeout=180)
    dom = result.stdout
    assert '<table id="canary-grid">' in dom, result.stderr[-2000:]
    grid = dom.split('<table id="canary-grid">', 1)[1].split("</table>", 1)[0]
    assert grid.count("<tr>") == 1 + len(RELEASES.split(","))
    assert 'class="v-landed"' in grid and 'class="v-not-installable"' in grid
    assert "cannot import name" in grid  # the unknown cell's error line
    assert "conflict in src/toypkg/memory.py" in grid


def test_reading_vendor_takes_its_lock(tmp_path, canary_index, shared_cache, monkeypatch):
    """Another run holds vendor/toypkg: with --no-wait the canary stops at once (exit 40), having written nothing
    there."""
    import fcntl

    for k, v in {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(canary_index), "HEADROOM_CACHE": str(shared_cache)}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(canary, "BASE_REQUIREMENTS", ())
    p = make_project(tmp_path / "proj", canary_index)
    lock_file = p.root / "vendor" / ".locks" / "vendor-toypkg.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_file, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        code = p.run("--no-wait", "canary", "--releases", "toypkg==1.1.0", "--env", "source")
    assert code == errors.Locked.exit_code
    assert not (p.root / "build" / "canary" / "checkouts" / "toypkg").exists()


def test_nothing_new_exits_0(project: Project, capsys, monkeypatch):
    monkeypatch.setattr(canary, "BASE_REQUIREMENTS", ())
    assert project.run("apply") == 0
    assert project.run("canary", "--env", "source") == 0  # the index has toypkg 1.0.0 only
    assert "toypkg 1.0.0: no newer release" in capsys.readouterr().out
    report = json.loads((project.root / "build" / "canary" / "report.json").read_text())
    assert report["candidates"] == [] and report["attention"] == []


def test_plan_finds_newer_releases_and_the_combination(canary_index, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(canary_index))
    assert fetch.index_versions("toypkg") == ["1.4.0", "1.3.0", "1.1.0", "1.0.0"]
    p = toy_pin(canary_index, "1.1.0")
    assert plan.newer(p, ["1.0.0", "1.2.0", "1.3.0rc1", "1.10.0", "x"], pre=False) == ["1.2.0", "1.10.0"]
    assert plan.newer(p, ["1.3.0rc1"], pre=True) == ["1.3.0rc1"]
    e = toy_pin(canary_index, name="toyext")
    cands = plan.candidates([p, e], {"toypkg": ["1.2.0", "1.10.0"], "toyext": ["1.1.0"]})
    assert [(c.id, c.kind) for c in cands] == [("toypkg==1.2.0", "release"), ("toypkg==1.10.0", "release"),
                                               ("toyext==1.1.0", "release"),
                                               ("toypkg==1.10.0,toyext==1.1.0", "combination")]
    assert plan.parse_releases("toypkg==1.2.0, toyext==1.1.0", [p, e]) == {"toypkg": ["1.2.0"], "toyext": ["1.1.0"]}
    for bad in ("toypkg", "nope==1.0", "toypkg==1.1.0"):
        with pytest.raises(errors.UsageError):
            plan.parse_releases(bad, [p, e])


def test_compare_test_by_test_with_the_reference():
    fail = lambda kind: {"outcome": "failed", "kind": kind, "error": f"{kind}: x"}  # noqa: E731
    ok, skip = {"outcome": "passed"}, {"outcome": "skipped"}
    ref = {"t::a": fail("AssertionError"), "t::b": fail("AssertionError"), "t::c": ok}
    assert needed.compare({"t::a": ok, "t::b": ok, "t::c": ok}, ref)["verdict"] == "landed"
    partly = needed.compare({"t::a": ok, "t::b": fail("AssertionError"), "t::c": ok}, ref)
    assert partly["verdict"] == "partly landed" and partly["now_passing"] == ["t::a"] and partly["still_failing"] == ["t::b"]
    assert needed.compare({"t::a": fail("AssertionError"), "t::b": fail("AssertionError"), "t::c": ok}, ref)[
        "verdict"] == "still needed"
    new_kind = needed.compare({"t::a": fail("ValueError"), "t::b": fail("AssertionError"), "t::c": ok}, ref)
    assert new_kind["verdict"] == "unknown" and "on the reference: failed (AssertionError)" in new_kind["why"]
    assert needed.compare({"t::a": fail("AssertionError"), "t::c": fail("AssertionError")}, ref)["verdict"] == "unknown"
    assert needed.compare({"t": fail("collection error (ImportError)")}, ref)["verdict"] == "unknown"
    assert needed.compare({"t::a": skip}, ref)["verdict"] == "not run"
    assert needed.battery({"g::x": fail("AssertionError")}, {"g::x": ok})["verdict"] == "upstream regression"
    assert needed.battery({"g::x": fail("AssertionError")}, {"g::x": fail("AssertionError")})["verdict"] == "ok"


def test_pip_explanations():
    out = ("ERROR: Could not find a version that satisfies the requirement kernels<0.20,>=0.19.1 (from transformers) "
           "(from versions: 0.1.0, 0.9.0, 0.17.2)\nERROR: No matching distribution found for kernels<0.20,>=0.19.1\n")
    e = install.explain(out)
    assert e["requirement"] == "kernels<0.20,>=0.19.1" and e["newest"] == "0.17.2" and e["required_by"] == "transformers"
    assert e["error"] == "no match for kernels<0.20,>=0.19.1 (required by transformers): the index has up to 0.17.2"
    assert install.explain("ERROR: Could not find a version that satisfies the requirement x==9 (from versions: none)\n")[
        "newest"] is None


@pytest.mark.integration
@pytest.mark.slow
def test_real_pins_canary(tmp_path):
    """The real pins against the configured index (network, torch environments: 5-10 minutes)."""
    repo = Path(__file__).resolve().parents[1]
    if os.environ.get("HEADROOM_REAL_CANARY") != "1":
        pytest.skip("a real canary (network, a torch environment per candidate; 10-40 minutes): HEADROOM_REAL_CANARY=1")
    if not all((repo / "vendor" / n / ".git").exists() for n in ("accelerate", "transformers", "peft")):
        pytest.skip("needs `make apply` in this checkout first")
    result = subprocess.run([str(repo / ".venv" / "bin" / "headroom"), "canary"], cwd=repo, capture_output=True, text=True)
    assert result.returncode in (0, errors.CanaryAttention.exit_code), result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads((repo / "build" / "canary" / "report.json").read_text())
    assert report["reference"]["patches"]


# ---- release lines: each line judged against the releases that are for it ----------------------------------------

# The two-line project (new: toypkg alone, the original; old: toypkg and toyext, the home line), and a patch the new
# line says it cannot prove (as transformers/0001 on the newest line, which carries no peft).
UNPROVEN_WHY = "its test needs toyext, which this line does not carry"
LINES = (FIXTURES / "lines-new-old.toml").read_text(encoding="utf-8") + f"""
[new.unproven]
"toypkg/0001" = "{UNPROVEN_WHY}"
"""


@pytest.fixture(scope="module")
def ran_lines(tmp_path_factory, canary_index, shared_cache):
    """Two lines: ``new`` (toypkg 1.0.0 alone, the original) and ``old`` (toypkg 1.0.0 and toyext 1.0.0, the home
    line). toypkg 1.5.0 requires toyext>=2.0.0 (its dependency table): it is the new line's, never the old line's."""
    index = tmp_path_factory.mktemp("index-lines")
    for f in canary_index.iterdir():
        shutil.copy(f, index)
    tree = tmp_path_factory.mktemp("toypkg-1.5.0") / "toypkg"
    shutil.copytree(TOY, tree)
    shutil.copytree(CANARY / "toypkg-1.5.0-overlay", tree, dirs_exist_ok=True)
    make_sdist(index, version="1.5.0", tree=tree)
    make_wheel(index, version="1.5.0")
    mp = pytest.MonkeyPatch()
    for k, v in {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(index), "HEADROOM_CACHE": str(shared_cache)}.items():
        mp.setenv(k, v)
    mp.delenv("V", raising=False)
    mp.setattr(canary, "BASE_REQUIREMENTS", ())
    try:
        p = make_project(tmp_path_factory.mktemp("canary-lines") / "proj", index)
        (p.root / "vendor" / "new.pins.toml").write_text(pins_mod.render([p.pin]), encoding="utf-8")
        (p.root / "vendor" / "lines.toml").write_text(LINES, encoding="utf-8")
        assert p.run("apply") == 0
        before = digest(p.root / "vendor", p.root / "patches")
        code = cli.main(["--root", str(p.root), "canary", "--releases", "toypkg==1.1.0,toypkg==1.5.0", "--env",
                         "source", "--guards", str(CANARY / "guards")])
        after = digest(p.root / "vendor", p.root / "patches")
        report = json.loads((p.root / "build" / "canary" / "report.json").read_text())
    finally:
        mp.undo()
    yield {"project": p, "code": code, "before": before, "after": after, "report": report}


def test_each_line_is_judged_on_the_releases_for_it(ran_lines):
    r = ran_lines["report"]
    assert ran_lines["before"] == ran_lines["after"]  # neither line's checkout nor patches/ moved
    assert [(c["line"], c["id"]) for c in r["candidates"]] == [("new", "toypkg==1.1.0"), ("new", "toypkg==1.5.0"),
                                                               ("old", "toypkg==1.1.0")]
    assert [(ln["line"], ln["pins"]) for ln in r["lines"]] == [("new", {"toypkg": "1.0.0"}),
                                                               ("old", {"toypkg": "1.0.0", "toyext": "1.0.0"})]
    assert r["lines"][1]["refused"] == {"toypkg": {"1.5.0": [
        "toypkg 1.5.0 requires toyext>=2.0.0; the old line pins 1.0.0"]}}
    new, old = ({pid: cell for pid, cell in c["patches"].items()} for c in r["candidates"] if c["id"] == "toypkg==1.1.0")
    assert set(new) < set(old) and any(p.startswith("toyext/") for p in old)  # each line's own series
    assert new["toypkg/0002-memory-stage-loads-on-the-CPU.patch"]["verdict"] == "landed"
    unproven = [cell for pid, cell in new.items() if pid.startswith("toypkg/0001-")]
    assert unproven and unproven[0]["verdict"] == "not run" and "tests" not in unproven[0]  # never run, never guessed
    assert unproven[0]["error"] == f"not provable on this line: {UNPROVEN_WHY}"
    assert [c for pid, c in old.items() if pid.startswith("toypkg/0001-")][0]["verdict"] != "not run"  # old line: runs
    assert old["toyext/0001-ext-stage-on-the-CPU.patch"]["verdict"] == "landed"
    assert all("lines/new/" in c["log"] for c in new.values() if c.get("log"))  # its own folder
    assert r["reference"] == r["lines"][0]["reference"] and r["lines"][1]["reference"]["patches"]


def test_the_canary_says_what_moves_each_line(ran_lines):
    lineup = ran_lines["report"]["lineup"]
    assert "toypkg 1.5.0: move the new line: `make rebase PIN=toypkg==1.5.0 LINE=new` (then `make apply build test " \
        "LINE=new`)" in lineup
    assert "toypkg 1.1.0: the old line can move: `make rebase PIN=toypkg==1.1.0 LINE=old` (then `make apply build " \
        "test LINE=old`)" in lineup
    assert "toypkg 1.5.0: not for the old line (toypkg 1.5.0 requires toyext>=2.0.0; the old line pins 1.0.0): it " \
        "stays on toypkg 1.1.0" in lineup
    assert any(a.startswith("the new line can take toyext 1.0.0") for a in lineup)
    assert any(a.startswith("the old line can then retire") for a in lineup)


def test_the_reports_name_the_line(ran_lines):
    out = ran_lines["project"].root / "build" / "canary"
    md = (out / "report.md").read_text()
    assert "| new: toypkg==1.5.0 |" in md and "| old: toypkg==1.1.0 |" in md
    assert ("Pins: new line: toypkg 1.0.0, torch 2.13.0 (the primary); old line: toypkg 1.0.0, toyext 1.0.0, torch 2.13.0 (the primary)") in md and "## Release lines" in md
    page = (out / "report.html").read_text()
    assert "<th>old: toypkg==1.1.0</th>" in page and 'id="lineup"' in page
    logs = [a.split('"')[0] for a in page.split('<a href="')[1:]]
    assert logs and all((out / rel).is_file() for rel in logs)
    assert any(a.startswith("old: toypkg==1.1.0: toyext/0001") for a in ran_lines["report"]["attention"])


def test_line_picks_one_line(ran_lines, monkeypatch, capsys):
    p = ran_lines["project"]
    assert p.run("--line", "nwe", "canary") == errors.UsageError.exit_code
    assert "Did you mean 'new'" in capsys.readouterr().err
    assert p.run("--line", "new", "canary", "--releases", "toyext==9.0.0") == errors.UsageError.exit_code  # not its pin


def test_moves_the_rule():
    """What a release does to a line, on synthetic lines (no index, no download)."""
    from headroom.sources.lines import Line
    from headroom.upkeep.canary import lineup

    def pin(name, version, line):
        return pins_mod.Pin(name, name, version, f"{name}-{version}.tar.gz", "0" * 64, f"{name}-{version}.whl", "0" * 64,
                            "https://example.invalid", f"v{version}", line=line, folder="" if line == "peft" else line)

    newest = Line("newest", "newest", "x", Path("vendor/newest.pins.toml"),
                  (pin("accelerate", "1.16.0", "newest"), pin("transformers", "5.25.0", "newest")), original=True)
    peft = Line("peft", "PEFT", "y", Path("vendor/pins.toml"),
                (pin("accelerate", "1.16.0", "peft"), pin("transformers", "5.23.0", "peft"), pin("peft", "0.21.2", "peft")))
    why = ["transformers 5.24.0 requires peft>=0.22.0; the peft line pins 0.21.2"]
    advice = lineup.moves([
        {"line": newest, "taken": {"transformers": ["5.25.1", "5.26.0"]}, "refused": {}},
        {"line": peft, "taken": {"transformers": ["5.23.1"]},
         "refused": {"transformers": {"5.24.0": why, "5.26.0": why}}}])
    assert advice == [
        "transformers 5.26.0: move the newest line: `make rebase PIN=transformers==5.26.0 LINE=newest` (then "
        "`make apply build test LINE=newest`)",
        "transformers 5.23.1: the peft line can move: `make rebase PIN=transformers==5.23.1 LINE=peft` (then "
        "`make apply build test LINE=peft`)",
        f"transformers 5.24.0 and newer: not for the peft line ({why[0]}): it stays on transformers 5.23.1"]
    # a new major, and a release that refuses what the newest line pins: the newest line stays, a new line is proposed
    refuse = ["transformers 5.30.0 requires accelerate>=2.0.0; the newest line pins 1.16.0"]
    advice = lineup.moves([{"line": newest, "taken": {"transformers": ["6.0.0"]},
                            "refused": {"transformers": {"5.30.0": refuse}}}])
    assert [a.split(";")[0] for a in advice] == ["transformers 6.0.0: propose a new line",
                                                 "transformers 5.30.0: propose a new line"]
    assert "add [transformers-6-0] to vendor/lines.toml with pins = \"transformers-6-0.pins.toml\"" in advice[0]
    assert "`make rebase PIN=transformers==6.0.0 LINE=transformers-6-0`" in advice[0]
    assert "a new major of transformers (the line pins 5.25.0)" in advice[0] and refuse[0] in advice[1]
