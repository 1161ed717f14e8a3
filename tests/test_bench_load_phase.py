"""The load-phase part of `headroom bench` on fixture data: the node sampler's aggregation (one total per instant,
not a sum of per-rank peaks), the floors, the targets and the table. No torchrun here."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

from headroom import bench
from headroom.bench import load_phase

FIXTURES = Path(__file__).parent / "fixtures" / "bench_load_phase"
NODEMEM = Path(bench.__file__).parent / "bench_data" / "nodemem.py"


def nodemem():
    """bench_data/nodemem.py, which runs inside the bench environments (stdlib only), loaded as a module."""
    spec = importlib.util.spec_from_file_location("nodemem", NODEMEM)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_node_total_is_taken_at_each_instant_not_summed_from_the_ranks_peaks():
    data = json.loads((FIXTURES / "samples.json").read_text(encoding="utf-8"))
    totals = nodemem().NodeTotals()
    for t, phase, readings in data["samples"]:
        totals.add(t, phase, readings)
    result, expected = totals.result(), data["expected"]
    assert result["baseline_mib"] == expected["baseline_mib"]
    assert result["peak_mib"] == expected["peak_mib"] and result["peak_phase"] == expected["peak_phase"]
    assert {name: p["peak_mib"] for name, p in result["phases"].items()} == expected["phase_peaks"]
    assert result["sum_of_rank_peaks_mib"] == expected["sum_of_rank_peaks_mib"] > result["peak_mib"]
    assert result["series"] == expected["series"]
    assert result["samples"] == len(data["samples"])


def test_the_phase_before_gives_the_baseline_and_never_the_peak():
    totals = nodemem().NodeTotals()
    totals.add(0.0, "before", {0: 900.0})  # e.g. a warm-up that was not trimmed yet
    totals.add(0.1, "from_pretrained", {0: 500.0})
    result = totals.result()
    assert result["baseline_mib"] == 900.0 and result["peak_mib"] == 500.0
    assert result["peak_phase"] == "from_pretrained"


def test_the_sampler_reads_every_rank_of_its_node(tmp_path):
    import os

    sampler = nodemem().NodeSampler({0: os.getpid(), 1: os.getpid()}).start()
    sampler.set_phase("from_pretrained")
    result = sampler.stop()
    own = nodemem().rss_anon_mib(os.getpid())
    assert result["samples"] >= 3 and set(result["rank_peaks_mib"]) == {"0", "1"}
    assert result["peak_mib"] == pytest.approx(2 * own, rel=0.2)
    assert nodemem().rss_anon_mib(2**22 + 12345) == 0.0  # a rank that is gone reads 0


@pytest.mark.parametrize("node,nodes,floor,released", [(0, 1, 2.0, 1.0), (0, 2, 1.5, 1.0), (1, 2, 0.5, 0.5),
                                                       (1, 4, 0.25, 0.25)])
def test_the_floor_of_a_node_is_rank_0s_copy_plus_its_own_shards(node, nodes, floor, released):
    assert load_phase.floor_x(node, nodes) == floor
    assert load_phase.floor_released_x(node, nodes) == released


def node_memory(baseline: float, peaks: dict, sum_of_rank_peaks: float) -> dict:
    phases = {"before": {"peak_mib": baseline}, **{k: {"peak_mib": v} for k, v in peaks.items()}}
    peak = max(peaks.values())
    return {"baseline_mib": baseline, "peak_mib": peak, "peak_phase": max(peaks, key=peaks.get),
            "phases": phases, "sum_of_rank_peaks_mib": sum_of_rank_peaks, "samples": 10}


def test_a_node_summary_is_the_rise_above_its_baseline_in_models():
    s = load_phase.node_summary(node_memory(1000.0, {"from_pretrained": 1100.0, "prepare": 1210.0,
                                                     "step": 1150.0}, 1500.0), 100.0, 0, 2)
    assert s["peak_rise_mib"] == 210.0 and s["peak_x"] == pytest.approx(2.1) and s["peak_phase"] == "prepare"
    assert s["phases"]["from_pretrained"]["peak_x"] == pytest.approx(1.0)
    assert s["sum_of_rank_peaks_x"] == pytest.approx(5.0)
    assert s["floor_x"] == 1.5 and s["target_x"] == pytest.approx(1.6)


def ranks(nodes: int, per_node: int, peaks: list[dict], exact: bool = True) -> list[dict]:
    out = []
    for r in range(nodes * per_node):
        node, local = divmod(r, per_node)
        out.append({"rank": r, "node": node, "local_rank": local, "fsdp_enabled": True, "model_bytes": 100 * 2**20,
                    "seconds": {"from_pretrained": 1.0, "prepare": 2.0 + r, "step": 0.5},
                    "exact": {"exact": exact, "different": [] if exact else ["lm_head.weight"]} if r == 0 else None,
                    "node_memory": node_memory(1000.0, peaks[node], 2000.0) if local == 0 else None})
    return out


def section(official: list[dict], patched: list[dict], nodes: int, per_node: int, exact: bool = True) -> dict:
    return {"margin": load_phase.TARGET_MARGIN, "cases": [{
        "load": "moe", "what": "", "nodes": nodes, "ranks_per_node": per_node, "envs": {
            "pristine": {"summary": load_phase.summary(ranks(nodes, per_node, official), nodes)},
            "patched": {"summary": load_phase.summary(ranks(nodes, per_node, patched, exact), nodes)}}}]}


def test_the_targets_say_met_or_not_met_per_node_and_how_far_official_is_above():
    official = [{"from_pretrained": 1800.0, "prepare": 1900.0, "step": 1300.0},
                {"from_pretrained": 1400.0, "prepare": 1450.0, "step": 1100.0}]
    patched = [{"from_pretrained": 1100.0, "prepare": 1155.0, "step": 1100.0},
               {"from_pretrained": 1001.0, "prepare": 1070.0, "step": 1050.0}]
    lines = load_phase.targets(section(official, patched, 2, 4))
    assert lines[0].startswith("met: moe, 2 x 4, node 0, whole phase: patched peak 1.55x the model (target <= "
                               "floor 1.50x + 0.10x = 1.60x; at its highest in prepare)")
    assert lines[0].endswith("official 9.00x, +7.40x from that line")
    assert lines[1].startswith("met: moe, 2 x 4, node 0, to the end of prepare: patched peak 1.55x")
    assert lines[2].startswith("NOT met: moe, 2 x 4, node 1, whole phase: patched peak 0.70x")  # 0.7 > 0.5 + 0.1
    patched[0]["step"] = 1300.0  # the step alone above the line: the whole phase misses, the loading does not
    lines = load_phase.targets(section(official, patched, 2, 4))
    assert lines[0].startswith("NOT met: moe, 2 x 4, node 0, whole phase: patched peak 3.00x")
    assert "at its highest in step" in lines[0] and lines[1].startswith("met: moe, 2 x 4, node 0, to the end")
    patched[0]["step"] = 1100.0
    patched[1]["prepare"] = 1055.0
    lines = load_phase.targets(section(official, patched, 2, 4))
    assert all(line.startswith("met") for line in lines)
    lines = load_phase.targets(section(official, patched, 2, 4, exact=False))  # not exact: never met
    assert all(line.startswith("NOT met") and "NOT exact" in line for line in lines)


def test_the_summary_wants_one_sampler_per_node():
    data = ranks(2, 2, [{"prepare": 1100.0}, {"prepare": 1050.0}])
    data[2]["node_memory"] = None
    with pytest.raises(ValueError, match="1 node sampler"):
        load_phase.summary(data, 2)


def test_the_part_renders_its_table_the_projection_and_the_targets():
    results = json.loads((FIXTURES / "results.json").read_text(encoding="utf-8"))
    assert bench.validate(results) == []
    table = bench.render_table(results)
    assert table.startswith("# headroom bench (quick, load_phase only)")
    assert "## The load phase, per node" in table and "| seed: official GB |" in table
    assert "| moe | 1 x 2 | 100.1 | 0 | 2.00x | 310.6 (3.10x) | 180.5 (1.80x) | 936.5 (9.35x) | 975.6 (9.74x) | step |" in table
    assert "| moe | 1 x 2 | 480 | 189 | 60 | 110 | 122 | 61 |" in table
    assert "- met: moe, 1 x 2, node 0, to the end of prepare: patched peak 1.80x the model" in table
    assert "- NOT met: moe, 1 x 2, node 0, whole phase: patched peak 9.74x" in table  # the step's own memory
    official = copy.deepcopy(results["load_phase"])
    for case in official["cases"]:
        case["envs"]["patched"] = case["envs"]["pristine"]
    assert any(line.startswith("NOT met") for line in load_phase.targets(official))
