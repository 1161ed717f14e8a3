"""The pure parts of `headroom bench` on fixture data: statistics, ratios, schema, table, plots. No torchrun here."""

from __future__ import annotations

import copy
import importlib.util
import json

import pytest

from headroom import bench

MiB = 2**20


def rank(r: int, rise: float, peak: float, before: float = 250.0) -> dict:
    return {"rank": r, "world_size": 2, "fsdp_enabled": True, "local_rank_0": r == 0, "rss_before_mib": before,
            "load_rise_mib": rise, "prepare_peak_mib": peak, "prepare_peak_rise_mib": peak - before,
            "after_prepare_mib": before + 100.0}


def case(size: str, model_mib: float, ranks: int, pristine_rise: float, patched_rise: float) -> dict:
    model_bytes = int(model_mib * MiB)
    envs = {}
    for env, rise in (("pristine", pristine_rise), ("patched", patched_rise)):
        data = [rank(0, 0.3, 300.0)] + [rank(r, rise, 250.0 + 2 * rise + 10) for r in range(1, ranks)]
        envs[env] = {"ranks": data, "summary": bench.env_summary(data), "seconds": 12.0}
    c = {"size": size, "params": model_bytes // 4, "model_bytes": model_bytes, "shard_bytes": model_bytes // ranks,
         "ranks": ranks, "dtype": "torch.float32", "envs": envs}
    c["ratio"] = bench.case_ratio(c)
    return c


@pytest.fixture
def results() -> dict:
    skipped = {"pristine": {"skipped": "no CUDA"}, "patched": {"skipped": "no CUDA"}}
    return {
        "schema": bench.SCHEMA,
        "mode": "full",
        "date": "2026-11-21T23:59:00Z",
        "seconds": 1234.5,
        "environment": {
            "machine": {"nproc": 2, "cpu_model": "Test CPU", "ram_gib": 23.5},
            "gpu": None,
            "envs": {
                "pristine": {"packages": {"transformers": "5.22.2", "peft": "0.21.2"}, "fix2_in_loader": False},
                "patched": {"packages": {"transformers": "5.22.2+headroom.1", "peft": "0.21.2+headroom.2"},
                            "fix2_in_loader": True},
            },
        },
        "fix2": {"sweep_ranks": 2, "cases": [
            case("60M", 229.0, 2, 229.7, 0.7),
            case("250M", 935.0, 2, 936.0, 2.0),
            case("250M", 935.0, 4, 936.0, 2.0),
        ]},
        "fix1": copy.deepcopy(skipped),
        "fix3": copy.deepcopy(skipped),
        "pipeline": {"note": "fixture", "steps": {
            "cold_total": bench.summary([100.0, 90.0, 110.0]),
            "noop_total": bench.summary([1.0, 1.2, 1.1]),
            "force_build": bench.summary([50.0, 52.0, 51.0]),
            "floor": bench.summary([40.0, 40.0, 41.0]),
        }},
    }


def test_summary_median_and_spread():
    s = bench.summary([3.0, 1.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["spread"]) == (2.0, 1.0, 3.0, 2.0)
    assert s["runs"] == [3.0, 1.0, 2.0]
    assert bench.summary([1.5, 2.5])["median"] == 2.0
    one = bench.summary([7.0])
    assert (one["median"], one["spread"]) == (7.0, 0.0)
    with pytest.raises(ValueError):
        bench.summary([])


def test_ratio_and_its_floor():
    assert bench.ratio(100.0, 10.0) == (10.0, False)
    assert bench.ratio(100.0, 0.25) == (100.0, True)  # patched below 1 MiB: a lower bound
    assert bench.ratio(100.0, -3.0) == (100.0, True)
    with pytest.raises(ValueError):
        bench.ratio(1.0, 1.0, floor=0)
    assert bench.format_ratio(10.0, False) == "10.0x"
    assert bench.format_ratio(229.7, True) == ">=230x"


def test_env_summary_sums_the_non_zero_ranks():
    data = [rank(0, 0.5, 300.0), rank(1, 900.0, 2000.0), rank(2, 910.0, 2100.0), rank(3, 905.0, 2050.0)]
    s = bench.env_summary(data)
    assert s["rank1_load_rise_mib"] == 900.0
    assert s["nonzero_ranks_load_rise_mib"] == 2715.0
    assert s["rank0_load_rise_mib"] == 0.5
    assert s["rank1_prepare_peak_rise_mib"] == 1750.0
    assert s["fsdp_enabled"] is True
    with pytest.raises(ValueError):
        bench.env_summary([rank(0, 1.0, 300.0)])


def test_case_ratio(results):
    c = results["fix2"]["cases"][2]
    r = bench.case_ratio(c)
    assert r["rank1_load_rise"] == pytest.approx(468.0)
    assert r["nonzero_ranks_load_rise"] == pytest.approx(468.0)
    assert not r["rank1_load_rise_lower_bound"]
    assert bench.case_ratio(results["fix2"]["cases"][0])["rank1_load_rise_lower_bound"]
    c["envs"]["patched"] = {"skipped": "skipped: needs ~30 GiB"}
    assert bench.case_ratio(c) is None


def test_schema_accepts_the_fixture_and_rejects_holes(results):
    assert bench.validate(results) == []
    assert bench.validate(json.loads(json.dumps(results))) == []  # survives a JSON round trip
    broken = copy.deepcopy(results)
    del broken["pipeline"]
    assert bench.validate(broken) == ["missing pipeline"]
    broken = copy.deepcopy(results)
    broken["fix2"]["cases"][1]["envs"]["patched"] = {}
    assert any("cases[1].envs.patched" in p for p in bench.validate(broken))
    broken = copy.deepcopy(results)
    broken["fix1"]["patched"] = {}
    assert bench.validate(broken) == ["fix1.patched: neither results nor skipped"]
    broken = copy.deepcopy(results)
    broken["mode"] = "slow"
    assert bench.validate(broken) == ["mode 'slow'"]
    broken = copy.deepcopy(results)
    broken["fix2"]["cases"] = []
    assert bench.validate(broken) == ["fix2.cases is empty"]


def test_table_rendering(results):
    table = bench.render_table(results)
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| model |"))
    assert lines[header + 1].startswith("|---|---:|")
    rows = lines[header + 2 : header + 5]
    assert rows[0].startswith("| 60M | 60M | 2 | 229.0 | 114.5 | 229.7 | 0.7 | >=230x |")
    assert rows[2].startswith("| 250M | 245M | 4 | 935.0 | 233.8 | 936.0 | 2.0 | 468x |")
    assert rows[2].endswith("| 2,808.0 | 6.0 | 468x |")  # sums over ranks 1..3
    assert "fix 2 in the loader: yes" in table and "fix 2 in the loader: no" in table
    assert table.count("skipped: no CUDA") == 2
    pipe = next(line for line in lines if line.startswith("| cold `apply` + `build`"))
    assert pipe == "| cold `apply` + `build` | 3 | 100.00 | 90.00-110.00 | 20.00 | 2.50 |"
    assert "| floor: `python -m build --wheel` of the same trees | 3 | 40.00 | 40.00-41.00 | 1.00 | 1.00 |" in lines


def test_table_with_gpu_results_and_a_skipped_case(results):
    for fix, key in (("fix1", "extra_bytes"), ("fix3", "reserved_unallocated_bytes")):
        for env, value in (("pristine", 512 * MiB), ("patched", 0)):
            results[fix][env] = {"gpu": "H100", "results": [{"lora_rank": 1024, "adapter_bytes": 256 * MiB, key: value}]}
    results["fix2"]["cases"][2]["envs"]["pristine"] = {"skipped": "skipped: needs ~30.0 GiB, 10.0 GiB available"}
    assert bench.validate(results) == []
    table = bench.render_table(results)
    assert "| 1024 | 256.0 | 512.0 | 0.0 | >=512x |" in table
    assert "skipped: needs ~30.0 GiB" in table
    assert "incomplete" in bench.terminal_ratios(results)[2]


def test_terminal_ratios_cover_every_size_and_rank_count(results):
    lines = bench.terminal_ratios(results)
    assert len(lines) == 3
    assert "60M (229 MiB), 2 ranks" in lines[0] and "(>=230x)" in lines[0]
    assert "250M (935 MiB), 4 ranks" in lines[2] and "2,808.0 -> 6.0 MiB (468x)" in lines[2]


def test_plan_fits_this_kind_of_machine():
    assert len(bench.PLAN["quick"]["sizes"]) == 1 and not bench.PLAN["quick"]["scaling_ranks"]
    assert len(bench.PLAN["full"]["sizes"]) >= 3
    # the 4-rank pristine job must fit well under 24 GiB (a 250M float32 model is ~0.93 GiB)
    need = bench.estimated_bytes("pristine", int(0.93 * 2**30), max(bench.PLAN["full"]["scaling_ranks"]))
    assert need < 16 * 2**30
    assert bench.estimated_bytes("patched", 2**30, 4) < bench.estimated_bytes("pristine", 2**30, 4)
    assert bench.estimated_bytes("pristine", 2**30, 4) > bench.estimated_bytes("pristine", 2**30, 2)


def test_probe_detects_the_fix_in_the_fsdp_branch():
    spec = importlib.util.spec_from_file_location("bench_probe", bench.DATA / "probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    pristine = (
        "        if is_fsdp_enabled() and not is_local_dist_rank_0() and not is_quantized:\n"
        "            for key, param in self.named_parameters():\n"
        "                value = torch.zeros_like(param, device='cpu')\n"
        "            for key, buffer in self.named_buffers():\n"
        "                value = torch.zeros_like(buffer, device='cpu')\n"
        "            return\n"
        "        for key, buffer in self.named_non_persistent_buffers():\n"
    )
    patched = pristine.replace("self.named_buffers()", "self.named_non_persistent_buffers()")
    assert probe.fix2_in_source(pristine) is False
    assert probe.fix2_in_source(patched) is True
    assert probe.fix2_in_source("def f():\n    return\n") is False


def test_plots_are_small_pngs(results, tmp_path):
    pytest.importorskip("matplotlib")
    plt = bench.ensure_matplotlib(tmp_path)  # already importable: installs nothing
    written = bench.plot(results, tmp_path, plt)
    assert [p.name for p in written] == ["fix2-rank1-memory.png", "fix2-per-rank.png"]
    for p in written:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert p.stat().st_size < 200 * 1024


def test_table_without_pipeline_steps(results):
    results["mode"] = "quick"
    results["pipeline"] = {"steps": {}, "note": "skipped: `apply` + `build` failed on the copy (x)"}
    assert bench.validate(results) == []
    table = bench.render_table(results)
    assert "skipped: `apply` + `build` failed on the copy (x)" in table
    assert "| step |" not in table
