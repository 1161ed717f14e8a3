"""Release lines (vendor/lines.toml): strict validation (each case a file under tests/fixtures/lines/), a line's own
copy of a patch (the same change as the original, or refused), and two lines of one upstream applied, exported,
built and indexed side by side."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import FIXTURES, SERIES, make_sdist, make_wheel, toy_pin
from headroom.ground.errors import PinsError, SeriesError, UsageError
from headroom.sources import lines, pins as pins_mod, series as series_mod

CASES = FIXTURES / "lines"


def _pins_text() -> str:
    from test_pins import GOOD

    return GOOD


def _root(tmp_path: Path, case: Path) -> Path:
    root = tmp_path / "root"
    (root / "vendor").mkdir(parents=True)
    for name in ("pins.toml", "new.pins.toml", "toy.pins.toml"):
        (root / "vendor" / name).write_text(_pins_text(), encoding="utf-8")
    shutil.copyfile(case, root / "vendor" / "lines.toml")
    return root


@pytest.mark.parametrize("case", sorted(CASES.glob("*.toml")), ids=lambda p: p.stem)
def test_lines_toml_cases(tmp_path, case):
    expect = case.read_text(encoding="utf-8").splitlines()[0].removeprefix("# expect: ")
    root = _root(tmp_path, case)
    if expect == "ok":
        new, old = lines.load(root)
        assert (new.name, new.folder, new.build, new.original) == ("new", "new", Path("build/lines/new"), True)
        assert (old.name, old.folder, old.build, old.original) == ("old", "", Path("build"), False)
        assert [p.key for p in new.pins] == ["new/toy"] and [p.vendor for p in old.pins] == ["vendor/toy"]
        assert new.unproven == {"toy/0001": "its test needs an upstream this line does not carry"}
        assert (new.torch, new.primary_torch, new.newest_torch) == (("2.13.0", "2.15.0", "2.14.1"), "2.13.0", "2.15.0")
        assert old.torch == (lines.PRIMARY_TORCH,)  # a line that declares none: the primary alone
        assert pins_mod.load(root)[0].line == "old"  # vendor/pins.toml's pins are the home line's
        return
    with pytest.raises(PinsError) as exc:
        lines.load(root)
    assert expect in exc.value.message and "lines.toml" in exc.value.message


def test_without_lines_toml_one_unnamed_line(tmp_path):
    (tmp_path / "vendor").mkdir()
    (tmp_path / "vendor" / "pins.toml").write_text(_pins_text(), encoding="utf-8")
    (line,) = lines.load(tmp_path)
    assert line.name == "" and line.build == Path("build") and line.pins[0].key == "toy"
    assert not {"line", "folder"} & set(line.pins[0].identity())  # a checkout made before lines keeps its key


def test_torch_choices_name_what_the_line_declares(tmp_path):
    new, old = lines.load(_root(tmp_path, CASES / "good.toml"))
    assert new.torches(None) == new.torches("primary") == ["2.13.0"]
    assert new.torches("newest") == ["2.15.0"] and new.torches("2.14.1") == ["2.14.1"]
    assert new.torches("all") == ["2.13.0", "2.15.0", "2.14.1"]
    assert old.torches("newest") == old.torches("all") == [lines.PRIMARY_TORCH]
    with pytest.raises(UsageError, match=r"not proven on torch 2.12.0\. Name one it declares \(2.13.0, 2.15.0, 2.14.1\)"):
        new.torches("2.12.0")


def test_select_names_the_known_lines(tmp_path):
    ls = lines.load(_root(tmp_path, CASES / "good.toml"))
    assert [ln.name for ln in lines.select(ls, "old")] == ["old"] and lines.select(ls, None) == ls
    with pytest.raises(UsageError, match="no line named 'nwe'.*Did you mean 'new'"):
        lines.select(ls, "nwe")


# ---- one fix, several copies ------------------------------------------------------------------------------------

def _patch() -> bytes:
    return next(iter(sorted((SERIES / "clean").glob("0001-*.patch")))).read_bytes()


def _moved(data: bytes) -> bytes:
    """The same patch exported from another release: other line numbers and blob ids, same hunks."""
    out = []
    for line in data.decode().splitlines(keepends=True):
        if line.startswith("index "):
            line = "index 1111111111111111111111111111111111111111..2222222222222222222222222222222222222222 100644\n"
        elif line.startswith("@@ -"):
            line = "@@ -90,7 +90,7 @@" + line.split("@@", 2)[2]
        out.append(line)
    return "".join(out).encode()


def test_same_change_ignores_line_numbers_and_blob_ids():
    data = _patch()
    assert series_mod.same_change(data, _moved(data))
    assert not series_mod.same_change(data, data.replace(b"Subject: ", b"Subject: other ", 1))
    assert series_mod.drift(data, _moved(data)) == ""


def test_drift_names_what_differs():
    data = _patch()
    added = next(ln for ln in data.decode().splitlines() if ln.startswith("+") and not ln.startswith("+++"))
    assert "adds or removes other lines" in series_mod.drift(data, data.replace(added.encode(), added.encode() + b"#x"))
    assert series_mod.drift(data, data.replace(b"Subject: ", b"Subject: other ", 1)) == "its message differs"


def test_a_line_uses_its_copy_and_a_drifting_copy_is_refused(tmp_path):
    folder = tmp_path / "patches" / "toypkg"
    shutil.copytree(SERIES / "clean", folder)
    first = sorted(folder.glob("0001-*.patch"))[0]
    copy = series_mod.copy_path(folder, "old", first.name)
    copy.parent.mkdir(parents=True)
    copy.write_bytes(_moved(first.read_bytes()))
    assert series_mod.load(tmp_path, "toypkg", "old").patches[0] == copy
    assert series_mod.load(tmp_path, "toypkg", "new").patches[0] == first
    added = next(ln for ln in first.read_text().splitlines() if ln.startswith("+") and not ln.startswith("+++"))
    copy.write_text(first.read_text().replace(added, added + "  # another fix"))
    with pytest.raises(SeriesError, match="is not the same fix as the original"):
        series_mod.load(tmp_path, "toypkg", "old")
    (copy.parent / "9999-stray.patch").write_bytes(first.read_bytes())
    with pytest.raises(SeriesError, match="a line's copy of a patch that"):
        series_mod.load(tmp_path, "toypkg")


# ---- two lines of one upstream, end to end ----------------------------------------------------------------------

LINES = (FIXTURES / "lines-new-old.toml").read_text(encoding="utf-8")  # two lines: new (original), old


@pytest.fixture
def two_lines(project):
    make_sdist(project.index, version="1.4.0")  # the same tree: the series applies as it is
    make_wheel(project.index, version="1.4.0")
    (project.root / "vendor" / "new.pins.toml").write_text(
        pins_mod.render([toy_pin(project.index, "1.4.0")]), encoding="utf-8")
    (project.root / "vendor" / "lines.toml").write_text(LINES, encoding="utf-8")
    return project


def test_two_lines_apply_export_build_one_index(two_lines, capsys):
    proj = two_lines
    assert proj.run("apply") == 0
    assert (proj.root / "vendor" / "toypkg" / ".git").is_dir() and (proj.root / "vendor" / "new" / "toypkg" / ".git").is_dir()
    assert proj.run("export", "--check") == 0
    assert proj.run("build") == 0
    wheels = sorted(p.name for p in (proj.root / "dist").glob("*.whl"))
    assert [w.split("-")[1].rsplit(".", 1)[0] for w in wheels] == ["1.0.0+headroom.old", "1.4.0+headroom.new"]
    page = (proj.root / "dist" / "simple" / "toypkg" / "index.html").read_text()
    assert all(w in page for w in wheels)
    assert (proj.root / "build" / "state" / "new" / "toypkg.json").is_file()
    capsys.readouterr()
    assert proj.run("--line", "new", "apply") == 0
    out = capsys.readouterr().out
    assert "(new line)" in out and "(old line)" not in out
    assert proj.run("--line", "nwe", "apply") == 2
    assert proj.run("rebase", "toypkg==1.2.0") == 2  # both lines pin toypkg: LINE= says which (test_rebase.py)
    assert proj.run("--line", "new", "serve") == 2  # not a line-aware command: refused


def test_export_keeps_a_shared_patch_and_writes_a_line_copy(two_lines):
    proj = two_lines
    assert proj.run("apply") == 0
    before = {p.name: p.read_bytes() for p in proj.patches.glob("*.patch")}
    assert proj.run("export") == 0  # each line exports the same change: no byte moves
    assert {p.name: p.read_bytes() for p in proj.patches.glob("*.patch")} == before
    assert not (proj.patches / "lines").exists()


# ---- the canary's advice on the lines ---------------------------------------------------------------------------

def test_canary_says_when_a_line_can_take_peft_and_the_other_can_retire(tmp_path):
    from headroom.upkeep.canary import lineup

    root = _root(tmp_path, CASES / "good.toml")
    peft = _pins_text().replace("[toy]", "[peft]").replace('distribution = "toypkg"', 'distribution = "peft"')
    (root / "vendor" / "pins.toml").write_text(_pins_text() + "\n" + peft, encoding="utf-8")
    table = root / "vendor" / "new" / "toy" / "src" / "toy" / "dependency_versions_table.py"
    table.parent.mkdir(parents=True)
    table.write_text('deps = {\n    "peft": "peft>=0.22.0",\n}\n', encoding="utf-8")
    waiting = lineup.advise(root, lambda name: ["0.21.2", "0.22.0rc1"])
    assert waiting == ["the new line waits for peft>=0.22.0: no such release on the index"]
    ready = lineup.advise(root, lambda name: ["0.21.2", "0.22.0"])
    assert ready[0].startswith("the new line can take peft 0.22.0 (toy 1.0.0 require peft>=0.22.0)")
    assert ready[1].startswith("the old line can then retire")


def test_the_report_table_is_patches_by_lines(tmp_path):
    from headroom.proof import proof, testrun

    root = _root(tmp_path, CASES / "good.toml")
    testrun.write_report(root, "proof", [{"upstream": "toy", "patch": "patches/toy/0001-a.patch",
                                          "verdict": proof.UNPROVEN}], line="new", home=False)
    testrun.write_report(root, "proof", [{"upstream": "toy", "patch": "patches/toy/0001-a.patch",
                                          "verdict": "red->green"}], line="old", home=True)
    report = testrun.read_report(root)
    assert report["proof"][0]["verdict"] == "red->green" and set(report["lines"]) == {"new", "old"}  # home: top too
    rows = proof.lines_table(root, lines.load(root))
    assert rows == [["patch", "new (toy 1.0.0, torch 2.13.0)", "new (toy 1.0.0, torch 2.15.0)",
                     "new (toy 1.0.0, torch 2.14.1)", "old (toy 1.0.0, torch 2.13.0)"],
                    ["toy/0001", "applied, not provable on this line", "not run", "not run", "red->green"]]


def test_pr_proposes_from_the_original_line_unless_told(tmp_path):
    from headroom.upkeep import pr

    root = _root(tmp_path, CASES / "good.toml")
    assert pr.line_pin(root, "toy").key == "new/toy"  # the original line's checkout: closest to upstream's main
    assert pr.line_pin(root, "toy", "old").key == "toy"
    with pytest.raises(UsageError, match="no line named"):
        pr.line_pin(root, "toy", "nope")


def test_canary_reads_what_a_line_requires_from_its_sdist_on_a_fresh_clone(tmp_path, monkeypatch):
    """No checkout applied: the requirement comes from the line's pinned sdist (its dependency table); the advice
    names the [unproven] entries that waited for it and how the other line retires."""
    import io
    import tarfile

    from headroom.upkeep.canary import lineup

    root = _root(tmp_path, CASES / "good.toml")
    peft = _pins_text().replace("[toy]", "[peft]").replace('distribution = "toypkg"', 'distribution = "peft"')
    (root / "vendor" / "pins.toml").write_text(_pins_text() + "\n" + peft, encoding="utf-8")
    lines_toml = (root / "vendor" / "lines.toml").read_text().replace("needs an upstream", "needs peft, an upstream")
    (root / "vendor" / "lines.toml").write_text(lines_toml, encoding="utf-8")
    sdist = tmp_path / "toy-1.0.0.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        data = b'deps = {\n    "peft": "peft>=0.22.0",\n}\n'
        info = tarfile.TarInfo("toy-1.0.0/src/toy/dependency_versions_table.py")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    monkeypatch.setattr(lineup.fetch, "fetch", lambda pin, kind: sdist)
    assert lineup.requirement(root, lines.load(root)[0], "peft") == ">=0.22.0"
    assert lineup.advise(root, lambda name: ["0.21.2"]) == ["the new line waits for peft>=0.22.0: no such release on the index"]
    ready = lineup.advise(root, lambda name: ["0.21.2", "0.22.0"])
    assert ready[0] == ("the new line can take peft 0.22.0 (toy 1.0.0 require peft>=0.22.0): add a [peft] table to "
                        "vendor/new.pins.toml, remove toy/0001 from [new.unproven], then `make apply build test LINE=new`")
    assert ready[1].startswith("the old line can then retire: the new line serves its people (peft, toy) once "
                               "`make test LINE=new` proves it with peft 0.22.0: record it in vendor/retired-lines.toml")


def test_a_retired_line_is_configuration_and_line_names_its_successor(tmp_path):
    root = _root(tmp_path, CASES / "good.toml")
    shutil.copyfile(CASES / "retired" / "retired-lines.toml", root / "vendor" / "retired-lines.toml")
    ls = lines.load(root)
    (older,) = lines.load_retired(root, [ln.name for ln in ls])
    assert (older.line, older.successor) == ("older", "new")
    with pytest.raises(UsageError, match=r"the older line is retired: peft 0.21.0 on the new line let the new line "
                       r"serve its people .* last built in 0123456789ab.* Use LINE=new"):
        lines.select(ls, "older", root)
    assert lines.select(ls, "new", root) == [ls[0]]
    text = (root / "vendor" / "retired-lines.toml").read_text()
    (root / "vendor" / "retired-lines.toml").write_text(text.replace('"older"', '"old"'))
    with pytest.raises(PinsError, match="the old line is still in vendor/lines.toml"):
        lines.select(ls, "new", root)
    (root / "vendor" / "retired-lines.toml").write_text(text.replace("successor", "sucessor"))
    with pytest.raises(PinsError, match="Did you mean 'successor'"):
        lines.select(ls, "new", root)
