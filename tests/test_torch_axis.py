"""torch as a pinned axis of the release lines (vendor/lines.toml ``torch``): an environment per torch, the report and
the lines table keyed by torch version, the canary's torch candidates and its torch column, pip's cap on torch named.
Fast and CPU-only: no environment is made, no torch imported (the config cases are in test_lines.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from conftest import FIXTURES, toy_pin
from headroom import cli
from headroom.ground import errors
from headroom.proof import envs, proof, testrun
from headroom.sources import lines
from headroom.upkeep.canary import plan, report

CASES = FIXTURES / "torch"


def _root(tmp_path: Path) -> Path:
    from test_pins import GOOD

    root = tmp_path / "root"
    (root / "vendor").mkdir(parents=True)
    for name in ("pins.toml", "new.pins.toml"):
        (root / "vendor" / name).write_text(GOOD, encoding="utf-8")
    shutil.copyfile(FIXTURES / "lines" / "good.toml", root / "vendor" / "lines.toml")
    return root


def test_another_torch_has_environments_of_its_own():
    assert envs.folder("pristine", "2.13.0", "2.13.0") == "pristine"
    assert envs.folder("patched", "2.15.0", "2.13.0") == "patched-torch2.15.0"
    assert envs.torch_requirement("2.15.0") == "torch==2.15.0" and envs.TORCH == f"torch=={lines.PRIMARY_TORCH}"


def test_a_torch_that_pip_caps_is_named_with_the_way_out():
    diagnosis = envs.unresolved("pristine-torch2.15.0")((CASES / "pip-capped.txt").read_text())
    assert diagnosis is not None
    assert "torch==2.15.0 cannot be installed" in diagnosis.message and "PIP_CONSTRAINT=" in diagnosis.message
    assert envs.unresolved("pristine")("Successfully installed x\n") is None
    elsewhere = envs.unresolved("pristine-torch2.15.0", "build/lines/newest/envs/pristine-torch2.15.0")
    assert "build/lines/newest/envs/pristine-torch2.15.0 cannot be made" in elsewhere(
        (CASES / "pip-capped.txt").read_text()).message  # the folder it is in, not always build/envs/<env>


def test_the_report_is_keyed_by_torch(tmp_path):
    testrun.write_torch_report(tmp_path, "2.15.0", "proof", [{"verdict": "red->green"}], line="new", home=False)
    testrun.write_torch_report(tmp_path, "2.15.0", "envs", {"pristine": {"bytes": 1}}, line="old", home=True)
    data = testrun.read_report(tmp_path)
    assert data["lines"]["new"]["torch"]["2.15.0"]["proof"] == [{"verdict": "red->green"}]
    assert data["lines"]["old"]["torch"]["2.15.0"]["envs"] == data["torch"]["2.15.0"]["envs"]
    assert "proof" not in data  # another torch never replaces the primary's top-level sections


def test_the_lines_table_has_a_column_per_line_and_torch(tmp_path):
    root = _root(tmp_path)
    (root / "build").mkdir()
    shutil.copyfile(CASES / "report.json", root / testrun.REPORT)
    rows = proof.lines_table(root, lines.load(root))
    assert rows[0] == ["patch", "new (toy 1.0.0, torch 2.13.0)", "new (toy 1.0.0, torch 2.15.0)",
                       "new (toy 1.0.0, torch 2.14.1)", "old (toy 1.0.0, torch 2.13.0)"]
    assert rows[1] == ["toy/0001", "red->green", "NOT RED (pristine passes every test)", "not run", "red->green"]


def test_the_cli_refuses_a_torch_the_line_does_not_declare(tmp_path, capsys):
    root = _root(tmp_path)
    assert cli.main(["--root", str(root), "--line", "new", "test", "--torch", "2.12.0"]) == errors.UsageError.exit_code
    assert "add the version to torch = [...] under [new]" in capsys.readouterr().err
    assert not (root / "build").exists()


# ---- the canary -------------------------------------------------------------------------------------------------

INDEX = ["2.15.0", "2.14.1", "2.14.0", "2.13.0+cpu", "2.13.0", "2.12.1", "2.16.0rc1", "x"]


def test_the_canary_looks_at_the_newest_torch_of_each_minor():
    assert plan.newer_torch("2.13.0", INDEX, pre=False) == ["2.14.1", "2.15.0"]  # 2.13.0+cpu is no release of its own
    assert plan.newer_torch("2.13.0", INDEX, pre=True) == ["2.14.1", "2.15.0", "2.16.0rc1"]
    assert plan.newer_torch("2.15.0", INDEX, pre=False) == []
    assert plan.torch_releases(["newest", "2.14.1"], "2.13.0", pre=False, versions_of=lambda _: INDEX) == ["2.15.0", "2.14.1"]
    assert plan.parse_torch("2.14.1, newest") == ["2.14.1", "newest"]
    for bad in ("", "two", "2.14.1+cu130"):
        with pytest.raises(errors.UsageError):
            plan.parse_torch(bad)
    with pytest.raises(errors.UsageError, match="primary torch already"):
        plan.torch_releases(["2.13.0"], "2.13.0", pre=False, versions_of=lambda _: INDEX)


def test_torch_is_a_candidate_like_an_upstream(tmp_path):
    pin = toy_pin(_index(tmp_path))
    versions = lambda d: INDEX if d == "torch" else ["1.0.0", "1.1.0"]  # noqa: E731
    assert plan.discover([pin], pre=False, versions_of=versions, torch="2.15.0") == {"toypkg": ["1.1.0"]}
    new = plan.discover([pin], pre=False, versions_of=versions, torch="2.13.0")  # newer than the newest declared
    assert new == {"toypkg": ["1.1.0"], "torch": ["2.14.1", "2.15.0"]}
    cands = plan.candidates([pin], new)
    assert [(c.id, c.kind, c.torch("2.13.0")) for c in cands] == [
        ("toypkg==1.1.0", "release", "2.13.0"), ("torch==2.14.1", "release", "2.14.1"),
        ("torch==2.15.0", "release", "2.15.0"), ("toypkg==1.1.0,torch==2.15.0", "combination", "2.15.0")]
    assert plan.parse_releases("torch==2.14.1", [pin], "2.13.0") == {"torch": ["2.14.1"]}
    with pytest.raises(errors.UsageError, match="the primary torch is 2.13.0 already"):
        plan.parse_releases("torch==2.13.0", [pin], "2.13.0")
    with pytest.raises(errors.UsageError, match="not pinned"):
        plan.parse_releases("torch==2.14.1", [pin])  # without a primary torch, torch is no candidate


def test_the_grid_has_a_torch_column():
    data = json.loads((FIXTURES / "torch" / "canary.json").read_text())
    rows = report.grid(data)
    assert rows[0][:3] == ["release", "torch", "install"]
    assert rows[1][:3] == ["torch==2.14.1", "2.14.1", "installable"] and rows[1][-1] == "ok"
    page = report.page(data, [])
    assert '<td class="torch torch-new">2.14.1</td>' in page and "torch 2.13.0 (the primary)" in page
    assert "| torch==2.14.1 | 2.14.1 | installable | still needed |" in report.markdown(data, [])


def _index(tmp_path: Path) -> Path:
    from conftest import make_sdist, make_wheel

    index = tmp_path / "index"
    make_sdist(index)
    make_wheel(index)
    return index
