"""The pure parts of the accelerate `prepare` bench (headroom.bench.prepare) on fixture data. No torchrun here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headroom import bench
from headroom.bench import prepare as bench_prepare

FIXTURES = Path(__file__).parent / "fixtures" / "bench_prepare"
RANKS = json.loads((FIXTURES / "ranks.json").read_text(encoding="utf-8"))  # a case that meets the goal
MISSED = json.loads((FIXTURES / "missed.json").read_text(encoding="utf-8"))  # one that misses it


def case(size: str = "1B", ranks: int = 2, data: dict = RANKS) -> dict:
    paths = {path: {"env": env, "mode": mode, "ranks": data[path], "summary": bench_prepare.env_summary(data[path]),
                    "seconds": 30.0}
             for path, (env, mode) in bench_prepare.PATHS.items()}
    return {"size": size, "params": 10**9, "model_bytes": 985661440, "ranks": ranks, "largest_param_bytes": 262144000,
            "config": {}, "paths": paths}


def test_env_summary_takes_rank_one_and_the_slowest_rank():
    s = bench_prepare.env_summary(RANKS["official"])
    assert s["rank1_peak_mib"] == 1230.0
    assert s["rank1_final_mib"] == 975.0
    assert s["rank1_peak_over_final"] == pytest.approx(1230 / 975, abs=1e-3)
    assert s["rank1_exact_peak_rise_mib"] == 730.0  # VmHWM 1420 - VmRSS before 690
    assert s["rank1_shard_mib"] == 470.0
    assert s["prepare_seconds"] == 17.0  # rank 0 was slower
    assert s["shard_seconds"] is None  # accelerate shards inside prepare
    assert s["exact"] is True
    assert s["layout"]["fsdp_units"] == ["<root>", "lm_head", "model.embed_tokens", "model.norm"]
    assert bench_prepare.env_summary(RANKS["torch"])["shard_seconds"] == 0.05


def test_env_summary_without_an_exact_peak_and_without_rank_one():
    ranks = [dict(r, rss_peak_mib=None) for r in RANKS["patched"]]
    assert bench_prepare.env_summary(ranks)["rank1_exact_peak_rise_mib"] is None
    with pytest.raises(ValueError, match="rank 1"):
        bench_prepare.env_summary(RANKS["patched"][:1])


def test_exact_is_every_rank_and_unknown_for_an_older_worker():
    assert bench_prepare.env_summary(MISSED["patched"])["exact"] is False  # rank 0 differs, rank 1 does not
    older = [{k: v for k, v in r.items() if k not in ("exact", "shard_seconds")} for r in RANKS["patched"]]
    s = bench_prepare.env_summary(older)
    assert s["exact"] is None and s["shard_seconds"] is None


def test_floor_multiples_and_a_goal_met():
    c = case()
    assert bench_prepare.floor_multiples(c) == {"official": 2.43, "patched": 1.29, "torch": 2.14, "floor": 1.0}
    g = bench_prepare.goal(c)
    assert g["met"] is True and g["text"] == "MET"
    assert g["checks"]["floor"]["text"] == "MET (1.29x)"
    assert g["checks"]["peak"]["text"] == "MET (1.005)"
    assert g["checks"]["official"]["text"] == "MET (1.89x faster, peak 250.0 MiB lower)"
    assert g["checks"]["torch"]["text"] == "MET (1.67x faster, peak 260.0 MiB lower)"
    assert bench_prepare.same_layout(c) is True


def test_a_goal_missed_says_by_how_much():
    c = case("250M", 4, MISSED)
    g = bench_prepare.goal(c)
    assert g["met"] is False
    assert g["checks"]["floor"] == {"met": False, "text": "misses by 0.50x (2.00x of the floor, goal 1.5x)"}
    assert g["checks"]["peak"] == {"met": False, "text": "misses by 5.0 points (1.100, goal 1.05; 100.0 MiB over "
                                                         "final, largest parameter 250.0 MiB)"}
    assert g["checks"]["official"]["met"] is True
    # slower than torch, but lower on peak: only the time is named
    assert g["checks"]["torch"] == {"met": False, "text": "misses: time +1.00 s (1.11x torch's)"}
    assert g["checks"]["exact"]["met"] is False
    assert g["text"] == "NOT met: floor, peak, torch, exact"
    assert bench_prepare.same_layout(c) is False  # torch's units differ in this fixture


def test_a_skipped_path_gives_no_multiple_and_an_incomplete_goal():
    c = case()
    c["paths"]["floor"] = {"env": "pristine", "skipped": "skipped: needs ~9.0 GiB, 4.0 GiB available"}
    assert set(bench_prepare.floor_multiples(c).values()) == {None}
    g = bench_prepare.goal(c)
    assert g["met"] is None and g["text"] == "incomplete"
    assert g["checks"]["floor"] == {"met": None, "text": "no floor"}
    rows = bench_prepare.table_rows({"cases": [c]})
    floor = [r for r in rows[1:] if r[2] == "floor"][0]
    assert floor[4] == "skipped: needs ~9.0 GiB, 4.0 GiB available" and floor[5:] == ["-"] * 8
    assert [r for r in rows[1:] if r[2] == "patched"][0][10] == "-"
    del c["paths"]["patched"]
    assert bench_prepare.goal(c)["text"] == "patched not measured"


def test_an_older_case_reads_as_official_and_patched():
    older = case()
    older["envs"] = {"pristine": older["paths"]["official"], "patched": older["paths"]["patched"]}
    del older["paths"]
    sums = bench_prepare.summaries(older)
    assert sums["official"]["rank1_peak_mib"] == 1230.0 and sums["torch"] is None and sums["floor"] is None
    rows = bench_prepare.table_rows({"cases": [older]})
    assert [r[2] for r in rows[1:]] == list(bench_prepare.PATHS)
    assert rows[3][4] == "not run"


def test_table_lines_and_terminal_lines():
    section = {"cases": [case("250M", 2), case("1B", 4, MISSED)]}
    lines = bench_prepare.table_lines(section)
    headers = [line for line in lines if line.startswith("| model")]
    assert len(headers) == 2
    assert headers[0].count("|") == len(bench_prepare.table_rows(section)[0]) + 1
    assert headers[1].count("|") == len(bench_prepare.goal_rows(section)[0]) + 1
    body = [line for line in lines if line.startswith("| 250M | 2 | patched")]
    assert body == ["| 250M | 2 | patched | patched | 470.0 | 980.0 | 975.0 | 1.005 | 475.0 | 9.00 | 1.29x "
                    "| in prepare | yes |"]
    assert [line for line in lines if line.startswith("| 250M | 2 | torch")][0].endswith("| 2.14x | 0.05 | yes |")
    goals = [line for line in lines if line.startswith("| 1B | 4 | misses")]
    assert goals and goals[0].endswith("| NOT met: floor, peak, torch, exact |")
    assert any("layouts differ" in line for line in lines)
    term = bench_prepare.terminal_lines(section)
    assert term[0].startswith("accelerate prepare, 250M, 2 ranks: official 17.0s (2.43x floor), peak/final 1.262")
    assert "floor 7.0s, peak/final 1.003" in term[0] and term[0].endswith("goal: MET")
    assert term[1].endswith("goal: NOT met: floor, peak, torch, exact")


def test_bench_table_includes_the_section_when_present():
    results = {"schema": bench.SCHEMA, "mode": "quick", "date": "2026-11-29T00:00:00Z", "seconds": 1.0,
               "environment": {"machine": {}, "gpu": None, "envs": {e: {"packages": {}} for e in bench.ENVS}},
               "fsdp_loading": {"cases": []}, "pipeline": {},
               **{fix: {e: {"skipped": "no CUDA"} for e in bench.ENVS} for fix in ("trainer_best_adapter", "peft_load_adapter")},
               "accelerate_prepare": {"cases": [case()]}}
    text = bench.render_table(results)
    assert "## Accelerate FSDP2 `prepare`" in text and "same FSDP units and placements" in text
    del results["accelerate_prepare"]
    assert "## Accelerate FSDP2 `prepare`" not in bench.render_table(results)


def test_estimated_bytes_counts_the_full_parameter_where_it_is_broadcast():
    meta = {"bytes": 1000 * 2**20, "largest_param_bytes": 250 * 2**20}
    est = {path: bench_prepare.estimated_bytes(path, meta, 4) for path in bench_prepare.PATHS}
    assert est["official"] - est["patched"] == 750 * 2**20
    assert est["torch"] == est["official"] and est["floor"] == est["patched"]


def test_a_real_quick_run_renders_with_one_layout_and_exact_shards():
    quick = json.loads((FIXTURES / "quick-60M.json").read_text(encoding="utf-8"))
    c = case("60M", 2, quick)
    assert bench_prepare.same_layout(c) is True
    assert all(s["exact"] for s in bench_prepare.summaries(c).values())
    assert bench_prepare.floor_multiples(c)["floor"] == 1.0
    g = bench_prepare.goal(c)
    assert g["checks"]["peak"]["met"] is True and g["checks"]["official"]["met"] is True
    rows = bench_prepare.table_rows({"cases": [c]})
    assert [r[2] for r in rows[1:]] == ["official", "patched", "torch", "floor"]


def test_the_prepare_part_runs_alone(tmp_path, monkeypatch, capsys):
    """`headroom bench --part prepare`: Accelerate's prepare bench alone, in part-prepare/, a full run's left alone."""
    env = {"machine": {}, "gpu": None, "envs": {e: {"packages": {}} for e in bench.ENVS}}
    section = {"cases": [case()]}
    monkeypatch.setattr(bench, "_pythons", lambda root: {"pristine": Path("p"), "patched": Path("q")})
    monkeypatch.setattr(bench, "environment", lambda pythons, root: env)
    monkeypatch.setattr(bench.prepare, "run", lambda root, pythons, mode: section)
    assert bench.run(tmp_path, mode="full", part="prepare") == 0
    out = tmp_path / "build" / "bench" / "part-prepare"
    written = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert written["part"] == "prepare" and written["accelerate_prepare"] == section and "fsdp_loading" not in written
    assert bench.validate(written) == []
    table = (out / "table.md").read_text(encoding="utf-8")
    assert table.startswith("# headroom bench (full, prepare only)") and "## Accelerate FSDP2 `prepare`" in table
    assert "## FSDP loading" not in table and table in capsys.readouterr().out
    assert not (tmp_path / "build" / "bench" / "results.json").exists()
    del written["accelerate_prepare"]
    assert bench.validate(written) == ["missing accelerate_prepare"]
