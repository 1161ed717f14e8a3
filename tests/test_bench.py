"""The pure parts of `headroom bench` on fixture data: statistics, ratios, schema, table, plots. No torchrun here."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

import pytest

from headroom import bench
from headroom.sources import fetch
from headroom.proof import envs
from headroom.bench import jobs, plots, release_envs, releases, releases_report
from headroom.ground.errors import CommandFailed, DataError, DependencyUnresolved, ReleaseNotFound, UsageError

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


def release_row(label: str, kind: str, rise: float | None, aliased: bool | None, diff: float = 0.0,
                accelerate: str = "1.16.0") -> dict:
    memory = {"n/a": "ImportError: cannot import name 'x' (torchrun a, b: no result from rank 0, exit 1; log: l)"} \
        if rise is None else {"summary": {"rank1_load_rise_mib": rise, "rank1_prepare_peak_mib": 400.0 + rise}}
    correctness = {"n/a": "KeyError: 'score.bias'"} if aliased is None else \
        {"aliased": aliased, "exact": diff <= 1e-5, "max_abs_diff": diff, "not_in_optimizer": []}
    row = {"label": label, "kind": kind, "memory": memory, "correctness": correctness, "accelerate": accelerate,
           "packages": {"accelerate": accelerate if kind == "release" else accelerate + "+headroom.1"}}
    if kind == "release":
        row["sha256"] = "ab" * 32
    return row


def releases_section(model_mib: float = 229.0) -> dict:
    rows = [release_row("transformers 5.5.4", "release", 0.8, False),
            release_row("transformers 5.6.0", "release", 229.5, False),
            release_row("transformers 5.23.0 + accelerate 1.15.0", "release", 1.1, True, 0.25, "1.15.0"),
            release_row("transformers 5.0.0", "release", None, None),
            release_row("patched", "patched", 0.7, False, 0.0)]
    section = {"size": "60M", "model_bytes": int(model_mib * MiB), "params": 60_000_000, "ranks": 2,
               "correctness_steps": 3, "exact_tolerance": 1e-5, "rows": rows,
               "node": {"size": "250M", "ranks": 8, "model_bytes": int(936 * MiB), "params": 245_000_000, "runs": {
                   "transformers 5.6.0": {"node_peak_mib": 8600.0, "node_rise_mib": 6560.0, "max_other_rank_rise_mib": 937.0},
                   "patched": {"node_peak_mib": 2100.0, "node_rise_mib": 8.0, "max_other_rank_rise_mib": 1.2}}}}
    section["projection"] = releases_report.projection(section)
    return section


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
        "fsdp_loading": {"sweep_ranks": 2, "cases": [
            case("60M", 229.0, 2, 229.7, 0.7),
            case("250M", 935.0, 2, 936.0, 2.0),
            case("250M", 935.0, 4, 936.0, 2.0),
        ]},
        "releases": releases_section(),
        "trainer_best_adapter": copy.deepcopy(skipped),
        "peft_load_adapter": copy.deepcopy(skipped),
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
    c = results["fsdp_loading"]["cases"][2]
    r = bench.case_ratio(c)
    assert r["rank1_load_rise"] == pytest.approx(468.0)
    assert r["nonzero_ranks_load_rise"] == pytest.approx(468.0)
    assert not r["rank1_load_rise_lower_bound"]
    assert bench.case_ratio(results["fsdp_loading"]["cases"][0])["rank1_load_rise_lower_bound"]
    c["envs"]["patched"] = {"skipped": "skipped: needs ~30 GiB"}
    assert bench.case_ratio(c) is None


def test_schema_accepts_the_fixture_and_rejects_holes(results):
    assert bench.validate(results) == []
    assert bench.validate(json.loads(json.dumps(results))) == []  # survives a JSON round trip
    broken = copy.deepcopy(results)
    del broken["pipeline"]
    assert bench.validate(broken) == ["missing pipeline"]
    broken = copy.deepcopy(results)
    broken["fsdp_loading"]["cases"][1]["envs"]["patched"] = {}
    assert any("cases[1].envs.patched" in p for p in bench.validate(broken))
    broken = copy.deepcopy(results)
    broken["trainer_best_adapter"]["patched"] = {}
    assert bench.validate(broken) == ["trainer_best_adapter.patched: neither results nor skipped"]
    broken = copy.deepcopy(results)
    broken["mode"] = "slow"
    assert bench.validate(broken) == ["mode 'slow'"]
    broken = copy.deepcopy(results)
    broken["fsdp_loading"]["cases"] = []
    assert bench.validate(broken) == ["fsdp_loading.cases is empty"]


def test_table_rendering(results):
    table = bench.render_table(results)
    lines = table.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| model |"))
    assert lines[header + 1].startswith("|---|---:|")
    rows = lines[header + 2 : header + 5]
    assert rows[0].startswith("| 60M | 60M | 2 | 229.0 | 114.5 | 229.7 | 0.7 | >=230x |")
    assert rows[2].startswith("| 250M | 245M | 4 | 935.0 | 233.8 | 936.0 | 2.0 | 468x |")
    assert rows[2].endswith("| 2,808.0 | 6.0 | 468x |")  # sums over ranks 1..3
    assert "missing keys left on meta (#45649): yes" in table and "missing keys left on meta (#45649): no" in table
    assert "loader: not measured in this run" in table  # results written before the loads section
    assert table.count("skipped: no CUDA") == 2
    pipe = next(line for line in lines if line.startswith("| cold `apply` + `build`"))
    assert pipe == "| cold `apply` + `build` | 3 | 100.00 | 90.00-110.00 | 20.00 | 2.50 |"
    assert "| floor: `python -m build --wheel` of the same trees | 3 | 40.00 | 40.00-41.00 | 1.00 | 1.00 |" in lines


def test_table_with_gpu_results_and_a_skipped_case(results):
    for fix, key in (("trainer_best_adapter", "extra_bytes"), ("peft_load_adapter", "reserved_unallocated_bytes")):
        for env, value in (("pristine", 512 * MiB), ("patched", 0)):
            results[fix][env] = {"gpu": "H100", "results": [{"lora_rank": 1024, "adapter_bytes": 256 * MiB, key: value}]}
    results["fsdp_loading"]["cases"][2]["envs"]["pristine"] = {"skipped": "skipped: needs ~30.0 GiB, 10.0 GiB available"}
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
    # transformers/0003 keys the branch on the global rank 0: the same branch, still found
    assert probe.fix2_in_source(patched.replace("is_local_dist_rank_0()", "is_dist_rank_0()")) is True


def test_plots_are_small_pngs(results, tmp_path):
    pytest.importorskip("matplotlib")
    plt = bench.ensure_matplotlib(tmp_path)  # already importable: installs nothing
    written = bench.plot(results, tmp_path, plt)
    assert [p.name for p in written] == ["fsdp-loading-rank1-memory.png", "fsdp-loading-per-rank.png", "fsdp-loading-releases.png"]
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


def test_release_list_is_checked_before_any_work():
    assert releases.parse("5.5.4, 5.23.0,5.5.4", "full", "5.22.2", "1.16.0") == [("5.5.4", "1.16.0"), ("5.23.0", "1.16.0")]
    assert releases.parse(None, "quick", "5.22.2", "1.16.0") == [("5.5.4", "1.16.0"), ("5.22.2", "1.16.0")]  # "pin"
    assert [v for v, _ in releases.parse(None, "full", "5.22.2", "1.16.0")] == ["5.5.4", "5.6.0", "5.22.2", "5.23.0"]
    for bad in ("5.x", "5.22.2+headroom.1", "5.23.0.dev0", "v5.6.0", ",", "5.23.0@", "5.23.0@1.x", "5.23.0@1.16.0@2"):
        with pytest.raises(UsageError):
            releases.parse(bad, "full", "5.22.2", "1.16.0")


def test_a_release_may_name_its_accelerate():
    """X@Y: transformers X beside official accelerate Y; without @, bench-env.txt's accelerate. Each pair is a row."""
    pairs = releases.parse("5.23.0@1.15.0,5.23.0,5.24.0,5.25.0,5.23.0@1.16.0,pin@1.15.0", "quick", "5.24.0", "1.16.0")
    assert pairs == [("5.23.0", "1.15.0"), ("5.23.0", "1.16.0"), ("5.24.0", "1.16.0"), ("5.25.0", "1.16.0"),
                     ("5.24.0", "1.15.0")]
    assert release_envs.env_name("5.23.0", "1.15.0") == "release-5.23.0-acc1.15.0"
    assert release_envs.label("5.23.0", "1.15.0", "1.16.0") == "transformers 5.23.0 + accelerate 1.15.0"
    assert release_envs.label("5.23.0", "1.16.0", "1.16.0") == "transformers 5.23.0"


BENCH_ENV = """# The bench's release environments (a comment that names accelerate==0.1)
accelerate==1.16.0
safetensors==0.8.0
"""


def test_the_accelerate_of_a_release_environment_replaces_bench_envs_line(tmp_path):
    assert release_envs.bench_accelerate(BENCH_ENV) == "1.16.0"
    text = release_envs.with_accelerate(BENCH_ENV, "1.15.0")
    assert release_envs.bench_accelerate(text) == "1.15.0"
    assert text.splitlines()[1:] == [BENCH_ENV.splitlines()[0], "accelerate==1.15.0", "safetensors==0.8.0"]
    with pytest.raises(DataError, match="pins no accelerate"):
        release_envs.bench_accelerate("safetensors==0.8.0\naccelerate>=1.0\n")
    (tmp_path / "requirements").mkdir()
    (tmp_path / release_envs.ENV_REQUIREMENTS).write_text(BENCH_ENV, encoding="utf-8")
    assert release_envs.requirements_for(tmp_path, "1.16.0") == release_envs.ENV_REQUIREMENTS  # its own: the file itself
    path = release_envs.requirements_for(tmp_path, "1.15.0")
    assert path == Path("build/bench/releases/bench-env-accelerate-1.15.0.txt")
    assert (tmp_path / path).read_text(encoding="utf-8") == text
    assert release_envs.default_accelerate(tmp_path) == "1.16.0"


# What pip says when transformers 5.25.0's kernels requirement has no match (index with kernels up to 0.17.2), and
# what `pip index versions kernels` prints there.
PIP_NO_KERNELS = """ERROR: Could not find a version that satisfies the requirement kernels<0.20,>=0.19.1 (from transformers) \
(from versions: 0.1.7, 0.2.0, 0.16.2, 0.17.0, 0.17.1, 0.17.2)
ERROR: No matching distribution found for kernels<0.20,>=0.19.1
"""
PIP_INDEX_KERNELS = """WARNING: pip index is currently an experimental command.
kernels (0.17.2)
Available versions: 0.17.2, 0.17.1, 0.17.0, 0.16.2, 0.2.0, 0.1.7
"""


def test_a_release_whose_dependencies_do_not_resolve_is_named():
    exc = envs.unresolved("release-5.25.0-acc1.16.0")(PIP_NO_KERNELS)
    assert isinstance(exc, DependencyUnresolved) and exc.exit_code == 36
    assert release_envs.missing_requirement(exc) == "kernels<0.20,>=0.19.1"
    assert fetch.newest(fetch.versions_in(PIP_INDEX_KERNELS, "kernels"), final=True) == "0.17.2"
    assert fetch.newest(fetch.versions_in("ERROR: No matching distribution found for kernels\n", "kernels"),
                        final=True) is None
    assert release_envs.not_installable("kernels<0.20,>=0.19.1", "0.17.2") == \
        "not installable: kernels<0.20,>=0.19.1 (newest on the index: 0.17.2)"
    assert release_envs.not_installable("kernels<0.20,>=0.19.1", None).endswith("(newest on the index: unknown)")
    conflict = DependencyUnresolved("x", details="  conflict: transformers 5.25.0 depends on kernels<0.20")
    assert release_envs.missing_requirement(conflict) is None
    assert release_envs.not_installable(None, None, "conflict: a") == "not installable: conflict: a"


def test_newest_on_index_is_the_newest_final_release(monkeypatch):
    """What `pip index versions` without --pre names in its header: pre-releases and dev releases are passed over."""
    monkeypatch.setattr(fetch, "index_versions", lambda name: ["0.18.0rc1", "0.17.3.dev1", "0.17.2", "0.2.0"])
    assert release_envs.newest_on_index("kernels") == "0.17.2"
    monkeypatch.setattr(fetch, "index_versions", lambda name: ["0.18.0rc1"])
    assert release_envs.newest_on_index("kernels") is None

    def fails(name):
        raise CommandFailed("pip index versions failed")

    monkeypatch.setattr(fetch, "index_versions", fails)
    assert release_envs.newest_on_index("kernels") is None
    assert fetch.newest(["0.1.7", "0.18.0rc1", "x"]) == "0.18.0rc1"  # canary's install check: pre-releases count


def test_wheel_and_sha256_from_pips_report():
    report = {"install": [{"metadata": {"name": "transformers", "version": "5.5.4"}, "download_info": {
        "url": "https://files.pythonhosted.org/packages/29/fb/x/transformers-5.5.4-py3-none-any.whl",
        "archive_info": {"hashes": {"sha256": "0bd6" + "0" * 60}}}}]}
    rec = releases.from_report(report, "5.5.4")
    assert rec == {"version": "5.5.4", "wheel": "transformers-5.5.4-py3-none-any.whl", "sha256": "0bd6" + "0" * 60,
                   "url": report["install"][0]["download_info"]["url"]}
    with pytest.raises(ReleaseNotFound):
        releases.from_report(report, "5.6.0")
    del report["install"][0]["download_info"]["archive_info"]
    with pytest.raises(ReleaseNotFound, match="no wheel sha256"):
        releases.from_report(report, "5.5.4")


def test_failure_reason_is_the_jobs_own_error_line():
    log = ("[rank1]: Traceback (most recent call last):\n[rank1]:   File x\n"
           "[rank1]: ImportError: cannot import name 'is_local_dist_rank_0'\nE1129 torch.distributed.elastic ...\n"
           "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n")
    assert jobs.failure(log) == "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:"
    assert jobs.failure(log.rsplit("torch.distributed.elastic.multiprocessing", 1)[0]).startswith("ImportError: cannot")
    assert jobs.failure("") == "no output"
    assert jobs.failure("just a line\n") == "just a line"


def test_release_table_rows_and_verdicts():
    section = releases_section()
    rows = releases_report.rows(section)
    assert rows[0][:4] == ["build", "accelerate", "wheel sha256", "rank-1 rise MiB"]
    assert rows[1] == ["transformers 5.5.4", "1.16.0", "`abababababab`", "0.8", "0%", "400.8", "no", "0", "small, exact"]
    assert rows[2][3:5] == ["229.5", "100%"] and rows[2][-1] == "full copy per rank, exact"
    assert rows[3][:2] == ["transformers 5.23.0 + accelerate 1.15.0", "1.15.0"]
    assert rows[3][6:] == ["yes", "0.25", "small, aliased"]
    assert rows[4][3].startswith("n/a: ImportError: cannot import name") and "torchrun" not in rows[4][3]
    assert rows[4][-1] == "incomplete"
    assert rows[5][:3] == ["patched", "1.16.0+headroom.1", "(dist/ wheel)"] and rows[5][-1] == "small, exact"
    assert releases_report.validate(section) == []
    broken = copy.deepcopy(section)
    broken["rows"][0]["memory"] = {}
    broken["rows"][1].pop("sha256")
    broken["rows"].pop()
    assert releases_report.validate(broken) == ["releases.rows[0].memory: neither a measurement nor n/a",
                                                "releases.rows[1].sha256 missing", "releases: no patched row"]


def test_projection_to_the_upstream_setup():
    proj = {p["label"]: p for p in releases_section()["projection"]}
    # a full copy per rank (5.6.0): 60 GB + 7 x 60 GB = 481 GB on 8 ranks, the report's 480 GB
    assert proj["transformers 5.6.0"]["node_gb_8_ranks"] == pytest.approx(60 + 7 * 60 * 229.5 / 229.0, abs=0.1)
    assert proj["transformers 5.6.0"]["node_gb_16_ranks"] == pytest.approx(60 + 15 * 60 * 229.5 / 229.0, abs=0.1)
    assert proj["patched"]["node_gb_8_ranks"] == pytest.approx(60 * (1 + 7 * 0.7 / 229), abs=0.1)  # 61.3
    assert proj["transformers 5.0.0"]["node_gb_8_ranks"] is None
    rows = releases_report.projection_rows(releases_section())
    assert rows[2][2:] == ["481", "962", "8.0x", "16.0x"]
    assert rows[4] == ["transformers 5.0.0", "n/a", "-", "-", "-", "-"]


def test_node_summary_sums_every_rank():
    data = [{"rank": r, "load_peak_mib": 300.0 + (900 if r else 0), "rss_after_load_mib": 1100.0,
             "rss_before_mib": 250.0, "load_rise_mib": 900.0 if r else 1.0} for r in range(8)]
    s = releases_report.node_summary(data)
    assert s["node_peak_mib"] == 8 * 300 + 7 * 900
    assert s["node_rise_mib"] == 7 * 900 + 1
    assert (s["rank0_rise_mib"], s["max_other_rank_rise_mib"]) == (1.0, 900.0)
    section = releases_section()
    assert releases_report.node_ratio(section) == pytest.approx(8600 / 2100)
    section["node"]["runs"] = dict(reversed(section["node"]["runs"].items()))  # as JSON with sorted keys has them
    assert releases_report.node_ratio(section) == pytest.approx(8600 / 2100)
    assert releases_report.node_rows(section)[1][0] == "transformers 5.6.0"
    del section["node"]["runs"]["patched"]
    assert releases_report.node_ratio(section) is None


def test_table_has_the_releases_the_node_and_the_projection(results):
    table = bench.render_table(results)
    assert "## FSDP loading across transformers releases" in table
    assert "| transformers 5.23.0 + accelerate 1.15.0 | 1.15.0 | `abababababab` | 1.1 | 0% | 401.1 | yes | 0.25 | " \
        "small, aliased |" in table
    assert "| transformers 5.6.0 | 8 | 8,600 | 6,560 | 937 |" in table
    assert "Ratio of the node totals: 4.1x here, against the upstream report's 480/60 = 8x" in table
    assert "of the rises alone: 820x." in table
    assert "| patched | 0.003 | 61 | 63 | 1.0x | 1.0x |" in table
    results["releases"]["node"] = {"skipped": "quick mode: not measured (full mode runs it)"}
    table = bench.render_table(results)
    assert "### One node\n\nskipped: quick mode" in table
    broken = copy.deepcopy(results)
    del broken["releases"]
    assert bench.validate(broken) == ["missing releases"]


def test_bench_modules_stay_small():
    for module in (bench.DATA.parent / "bench").glob("*.py"):
        assert len(module.read_text(encoding="utf-8").splitlines()) < 400, module.name
    assert callable(plots.plot_releases)


def test_memory_jobs_of_the_releases_section_are_not_run_twice():
    section = releases_section()
    section["rows"][1]["env"] = "pristine"  # the pinned release
    section["rows"][3]["env"] = "release-5.0.0"  # n/a: nothing to take
    section["rows"][4]["env"] = "patched"
    done = releases.done_jobs(section)
    assert set(done) == {("60M", 2, "pristine"), ("60M", 2, "patched")}
    assert done[("60M", 2, "pristine")]["summary"]["rank1_load_rise_mib"] == 229.5
    assert done[("60M", 2, "patched")]["measured_in"] == "releases"


def test_a_case_that_would_leave_under_1_gib_free_is_skipped_with_its_figures(monkeypatch, capsys):
    from headroom.bench import machine

    monkeypatch.setattr(machine, "_meminfo", lambda: {"MemAvailable": 10 * 2**30})
    assert machine.too_big(8 * 2**30, "fix 2 1b x 2 ranks (patched)") is None
    reason = machine.too_big(9 * 2**30 + 1, "fix 2 1b x 4 ranks (pristine)")
    assert reason == "skipped: needs ~9.0 GiB, 10.0 GiB available"
    said = capsys.readouterr()
    assert "fix 2 1b x 4 ranks (pristine): skipped: needs ~9.0 GiB" in said.out + said.err
    monkeypatch.setattr(machine, "_meminfo", lambda: {})  # no /proc/meminfo: run it, nothing to judge by
    assert machine.too_big(2**50, "x") is None


def test_torchrun_job_gets_its_run_folder_and_reads_each_ranks_result(tmp_path, monkeypatch):
    """bench.jobs.torchrun, the one runner of fix 2's, the releases' and prepare's jobs: RUN_DIR in the worker's
    arguments becomes the job's run folder, the log is kept there, a rank without a result fails with its error line."""
    from headroom.ground import proc
    from headroom.ground.errors import CommandFailed

    calls = []

    def fake_run(args, *, cwd, env, what, check):
        calls.append((args, env))
        for rank in range(2 if "ok" in args else 1):
            (cwd / f"rank{rank}.json").write_text(json.dumps({"rank": rank}), encoding="utf-8")
        return proc.Result([str(a) for a in args], 0 if "ok" in args else 1, "[rank1]: RuntimeError: gloo timed out\n")

    monkeypatch.setattr(jobs.proc, "run", fake_run)
    ranks = jobs.torchrun(tmp_path, Path("py"), "patched", "w.py", ["run", "ckpt", jobs.RUN_DIR, "ok"], 2, "t",
                          env_vars={})
    run_dir = tmp_path / "build" / "bench" / "runs" / "t-2ranks-patched"
    assert ranks == [{"rank": 0}, {"rank": 1}]
    args, env = calls[0]
    assert args[-5:] == [jobs.DATA / "w.py", "run", "ckpt", run_dir, "ok"]
    assert env["OMP_NUM_THREADS"] == "1" and "ACCELERATE_USE_FSDP" not in env
    assert (run_dir / "torchrun.log").read_text(encoding="utf-8").startswith("[rank1]: RuntimeError")

    with pytest.raises(CommandFailed, match=r"^RuntimeError: gloo timed out \(torchrun pristine, t: no result from "
                                            r"rank 1, exit 1; log: build/bench/runs/t-2ranks-pristine/torchrun.log\)"):
        jobs.torchrun(tmp_path, Path("py"), "pristine", "w.py", ["ckpt", jobs.RUN_DIR], 2, "t")
    assert calls[1][1]["ACCELERATE_USE_FSDP"] == "true"


def not_installable_row() -> dict:
    note = "not installable: kernels<0.20,>=0.19.1 (newest on the index: 0.17.2)"
    return {"label": "transformers 5.25.0", "kind": "release", "version": "5.25.0", "accelerate": "1.16.0",
            "sha256": "cd" * 32, "env": None, "not_installable": note, "memory": {"n/a": note}, "correctness": {"n/a": note}}


def test_a_release_that_is_not_installable_is_a_row():
    section = releases_section()
    section["rows"].insert(-1, not_installable_row())
    section["projection"] = releases_report.projection(section)
    assert releases_report.validate(section) == []
    row = releases_report.rows(section)[-2]
    assert row == ["transformers 5.25.0", "1.16.0", "`cdcdcdcdcdcd`",
                   "not installable: kernels<0.20,>=0.19.1 (newest on the index: 0.17.2)", "-", "-", "-", "-",
                   "not installable"]
    assert releases_report.projection_rows(section)[-2] == ["transformers 5.25.0", "n/a", "-", "-", "-", "-"]


def test_the_releases_part_catches_an_unresolvable_release(tmp_path, monkeypatch):
    """releases.releases: a pair whose environment cannot be made (DependencyUnresolved) is a row, the others run."""
    monkeypatch.setattr(releases, "checkpoint", lambda root, size, py: (tmp_path / size, {"bytes": 229 * MiB, "params": 6e7}))
    monkeypatch.setattr(releases, "pinned", lambda root, distribution="transformers": None)
    monkeypatch.setattr(releases, "default_accelerate", lambda root: "1.16.0")
    monkeypatch.setattr(release_envs, "newest_on_index", lambda name: {"kernels": "0.17.2"}.get(name))
    asked = []

    def environment(root, rec, pin, accelerate_pin):
        asked.append((rec["version"], rec["accelerate"]))
        if rec["version"] == "5.25.0":
            raise envs.unresolved("release-5.25.0-acc1.16.0")(PIP_NO_KERNELS)
        return release_envs.env_name(rec["version"], rec["accelerate"]), Path("py")

    def measure(root, label, py, ckpt, size, tiny):
        acc = "1.15.0" if "1.15.0" in label else "1.16.0"
        row = release_row(label, "release", 1.0, acc == "1.15.0", 0.08 if acc == "1.15.0" else 0.0, acc)
        return {**row, "packages": {"accelerate": acc, "transformers": "5.23.0"}}

    monkeypatch.setattr(releases, "environment", environment)
    monkeypatch.setattr(releases, "measure", measure)
    recs = [{"version": v, "accelerate": a, "wheel": f"transformers-{v}-py3-none-any.whl", "sha256": "ef" * 32,
             "source": "index metadata", "path": Path("w")} for v, a in
            (("5.23.0", "1.15.0"), ("5.23.0", "1.16.0"), ("5.25.0", "1.16.0"))]
    section = releases.releases(tmp_path, {"pristine": Path("p"), "patched": Path("q")}, "quick", recs)
    assert asked == [("5.23.0", "1.15.0"), ("5.23.0", "1.16.0"), ("5.25.0", "1.16.0")]
    labels = [r["label"] for r in section["rows"]]
    assert labels == ["transformers 5.23.0 + accelerate 1.15.0", "transformers 5.23.0", "transformers 5.25.0", "patched"]
    assert section["rows"][2]["not_installable"] == "not installable: kernels<0.20,>=0.19.1 (newest on the index: 0.17.2)"
    assert [r[-1] for r in releases_report.rows(section)[1:]] == [
        "small, aliased", "small, exact", "not installable", "small, exact"]
    assert releases_report.validate(section) == [] and "python" not in section["rows"][0]


def test_the_releases_part_runs_alone(tmp_path, monkeypatch, results, capsys):
    """`headroom bench --part releases`: the releases section and the environments, nothing else, in part-releases/."""
    part = {k: results[k] for k in ("schema", "mode", "date", "seconds", "environment", "releases")}
    monkeypatch.setattr(bench, "_pythons", lambda root: {"pristine": Path("p"), "patched": Path("q")})
    monkeypatch.setattr(bench.releases, "prepare", lambda root, mode, text: [{"version": text}])
    monkeypatch.setattr(bench.releases, "releases", lambda root, pythons, mode, recs: part["releases"])
    monkeypatch.setattr(bench, "environment", lambda pythons, root: part["environment"])
    assert bench.run(tmp_path, mode="quick", releases_text="5.23.0@1.15.0", part="releases") == 0
    out = tmp_path / "build" / "bench" / "part-releases"
    written = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert written["part"] == "releases" and "fsdp_loading" not in written and bench.validate(written) == []
    table = (out / "table.md").read_text(encoding="utf-8")
    assert table.startswith("# headroom bench (quick, releases only)") and "## FSDP loading across transformers releases" in table
    assert "## Pipeline" not in table and table in capsys.readouterr().out
    assert not (tmp_path / "build" / "bench" / "results.json").exists()  # a full run's results are left alone
    del written["releases"]
    assert bench.validate(written) == ["missing releases"]
    with pytest.raises(UsageError, match="--part must be one of releases, prepare"):
        bench.run(tmp_path, mode="quick", part="fsdp_loading")


LOADS_RESULTS = Path(__file__).parent / "fixtures" / "bench_node_loads" / "results.json"


def test_loads_part_renders_the_node_table_the_projection_and_the_targets():
    """transformers/0002's part (a quick run's results, kept as data): per node, official beside patched, the
    measured line of each environment, the Qwen3-30B-A3B projection and each target, met or not."""
    from headroom.bench import node_loads as loads

    results = json.loads(LOADS_RESULTS.read_text(encoding="utf-8"))
    assert bench.validate(results) == []
    table = bench.render_table(results)
    assert "| moe | 1 x 2 | 100.1 | 0 | 196.3 (1.96x) | 99.2 (0.99x) | 135.3% | 1.7% |" in table
    assert "| moe | 2 x 1 | 100.1 | 1 |" in table  # the second node's own row
    assert "another rank commits (peak, % of the model, measured below): dense 0%, dense-cast 101%, moe 135%" in table
    assert "moe 479 GB official, 64 GB patched" in table
    assert "- met: moe, 2 ranks: node total 0.991x the model" in table

    # The targets can fail: the official build's figures do not meet them
    official = copy.deepcopy(results["node_loads"])
    for case in official["cases"]:
        case["envs"]["patched"] = case["envs"]["pristine"]
    assert all(line.startswith("NOT met") for line in loads.targets(official))


def test_loads_summary_adds_up_each_node():
    from headroom.bench import node_loads as loads

    mib = 2**20
    ranks = [{"rank": r, "node": r // 2, "rise_mib": rise, "peak_rise_mib": peak, "load_seconds": 1.0 + r,
              "model_bytes": 100 * mib, "fsdp_enabled": True}
             for r, (rise, peak) in enumerate([(98.0, 130.0), (1.0, 2.0), (97.0, 120.0), (0.5, 1.0)])]
    s = loads.summary(ranks)
    assert [n["total_rise_mib"] for n in s["nodes"]] == [99.0, 97.5]
    assert [n["max_other_peak_mib"] for n in s["nodes"]] == [2.0, 120.0]  # node 1's local rank 0 is another rank
    assert s["nodes"][1]["max_load_seconds"] == 4.0
