"""The pure parts of the accelerate `prepare` bench (headroom.bench.prepare) on fixture data. No torchrun here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headroom import bench
from headroom.bench import prepare as bench_prepare

RANKS = json.loads((Path(__file__).parent / "fixtures" / "bench_prepare" / "ranks.json").read_text(encoding="utf-8"))


def case(size: str = "1B", ranks: int = 2) -> dict:
    envs = {env: {"ranks": RANKS[env], "summary": bench_prepare.env_summary(RANKS[env]), "seconds": 30.0}
            for env in bench_prepare.ENVS}
    c = {"size": size, "params": 10**9, "model_bytes": 985661440, "ranks": ranks, "largest_param_bytes": 262144000,
         "config": {}, "envs": envs}
    c["ratio"] = bench_prepare.case_ratio(c)
    return c


def test_env_summary_takes_rank_one_and_the_slowest_rank():
    s = bench_prepare.env_summary(RANKS["pristine"])
    assert s["rank1_peak_mib"] == 1230.0
    assert s["rank1_final_mib"] == 975.0
    assert s["rank1_peak_over_final"] == pytest.approx(1230 / 975, abs=1e-3)
    assert s["rank1_exact_peak_rise_mib"] == 730.0  # VmHWM 1420 - VmRSS before 690
    assert s["rank1_shard_mib"] == 470.0
    assert s["prepare_seconds"] == 17.0  # rank 0 was slower


def test_env_summary_without_an_exact_peak_and_without_rank_one():
    ranks = [dict(r, rss_peak_mib=None) for r in RANKS["patched"]]
    assert bench_prepare.env_summary(ranks)["rank1_exact_peak_rise_mib"] is None
    with pytest.raises(ValueError, match="rank 1"):
        bench_prepare.env_summary(RANKS["patched"][:1])


def test_ratios_and_goal():
    c = case()
    assert c["ratio"] == {"rank1_peak": round(1230 / 980, 3), "prepare_seconds": round(17.0 / 9.0, 3)}
    assert not bench_prepare.goal_met(c["envs"]["pristine"]["summary"])
    assert bench_prepare.goal_met(c["envs"]["patched"]["summary"])  # 980 / 975 <= 1.05


def test_a_skipped_side_gives_no_ratio_and_says_why_in_the_table():
    c = case()
    c["envs"]["pristine"] = {"skipped": "skipped: needs ~9.0 GiB, 4.0 GiB available"}
    assert bench_prepare.case_ratio(c) is None
    rows = bench_prepare.table_rows({"cases": [c]})
    assert rows[1][3] == "skipped: needs ~9.0 GiB, 4.0 GiB available"
    assert rows[1][5] == "-"
    assert "incomplete" in bench_prepare.terminal_lines({"cases": [c]})[0]


def test_table_lines_and_terminal_lines():
    section = {"cases": [case("250M", 2), case("1B", 4)]}
    lines = bench_prepare.table_lines(section)
    header = [line for line in lines if line.startswith("| model")]
    assert len(header) == 1 and header[0].count("|") == len(bench_prepare.table_rows(section)[0]) + 1
    body = [line for line in lines if line.startswith("| 1B")]
    assert body and "| 4 |" in body[0] and "1.25x" in body[0] and "1.89x" in body[0]
    term = bench_prepare.terminal_lines(section)
    assert term[0].startswith("accelerate prepare, 250M, 2 ranks: rank-1 peak 1,230 -> 980 MiB")
    assert "goal met" in term[0]


def test_bench_table_includes_the_section_when_present():
    results = {"schema": bench.SCHEMA, "mode": "quick", "date": "2026-11-29T00:00:00Z", "seconds": 1.0,
               "environment": {"machine": {}, "gpu": None, "envs": {e: {"packages": {}} for e in bench.ENVS}},
               "fix2": {"cases": []}, "pipeline": {},
               **{fix: {e: {"skipped": "no CUDA"} for e in bench.ENVS} for fix in ("fix1", "fix3")},
               "accelerate_prepare": {"cases": [case()]}}
    text = bench.render_table(results)
    assert "## Accelerate FSDP2 `prepare`" in text
    del results["accelerate_prepare"]
    assert "## Accelerate FSDP2 `prepare`" not in bench.render_table(results)


def test_estimated_bytes_counts_the_full_parameter_only_on_pristine():
    meta = {"bytes": 1000 * 2**20, "largest_param_bytes": 250 * 2**20}
    assert bench_prepare.estimated_bytes("pristine", meta, 4) - bench_prepare.estimated_bytes("patched", meta, 4) == 750 * 2**20
