"""bench: what the memory fixes save, measured in the two test environments, and what the pipeline costs.

* Fix 2 (CPU, real multi-process): ``python -m torch.distributed.run`` (gloo) in
  build/envs/pristine and build/envs/patched with FSDP ``cpu_ram_efficient_loading``;
  random Llama checkpoints of several sizes; rank 1's anonymous RSS (``RssAnon``) rise
  across ``from_pretrained`` and its peak through Accelerate's FSDP2 ``prepare``; in
  ``full`` mode also 2 and 4 ranks at one size (the cost per rank).
* Fix 1 and fix 3 (GPU): accelerator memory of ``Trainer._load_best_model`` and of
  ``PeftModel.load_adapter``; "skipped: no CUDA" on a machine without one.
* The pipeline: cold ``apply`` + ``build`` on a copy of the repository with an empty
  cache, a no-op re-run, ``build --force``, next to a plain ``python -m build --wheel``
  of the same trees (the floor).

The worker scripts under bench_data/ run inside the environments. Results go to
build/bench/ (results.json, table.md, PNG plots). The pure parts (statistics, ratios,
table, schema) are at the top and unit-tested in tests/test_bench.py.
"""

from __future__ import annotations

import datetime
import hashlib
import importlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from . import bench_prepare, envs, proc, ui
from .errors import BuildError, CommandFailed, NotApplied, UsageError
from .fsutil import atomic_write, atomic_write_json

SCHEMA = 1
MODES = ("quick", "full")
ENVS = ("pristine", "patched")
OUT_DIR = Path("build") / "bench"
MODELS_DIR = OUT_DIR / "models"
DATA = Path(__file__).parent / "bench_data"
REQUIREMENTS = Path("requirements") / "bench.txt"
MIB = 2**20
# The patched rise is often well under 1 MiB: ratios are taken against at least this much, and then shown as ">=".
RATIO_FLOOR_MIB = 1.0

_LLAMA = {"num_key_value_heads": None, "tie_word_embeddings": False, "max_position_embeddings": 2048}
# Random Llama-style models (float32). Parameters: ~60M, ~245M, ~953M.
SIZES = {
    "60M": {"vocab_size": 32000, "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8,
            "num_attention_heads": 8},
    "250M": {"vocab_size": 32000, "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 14,
             "num_attention_heads": 16},
    "1B": {"vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 16,
           "num_attention_heads": 16},
}
PLAN = {
    # (size, ranks) cases of fix 2; the first ranks value is the size sweep, the others the per-rank scaling.
    "quick": {"sizes": ["60M"], "scaling_size": None, "scaling_ranks": [], "pipeline_runs": 1},
    "full": {"sizes": ["60M", "250M", "1B"], "scaling_size": "250M", "scaling_ranks": [4], "pipeline_runs": 3},
}
GPU_LORA_RANKS = {"quick": [64], "full": [16, 256, 1024]}
SWEEP_RANKS = 2
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_ENDPOINT": "http://127.0.0.1:9",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONPATH": "",
    "PYTHONNOUSERSITE": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    "OMP_NUM_THREADS": "1",
}
FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true"}


# --------------------------------------------------------------------------------------------------------------------
# Pure parts: statistics, ratios, the results schema, the table.


def summary(values: list[float]) -> dict:
    """Median and spread of repeated timings: {"runs", "median", "min", "max", "spread"} (spread = max - min)."""
    if not values:
        raise ValueError("no values")
    return {"runs": [round(v, 3) for v in values], "median": round(statistics.median(values), 3),
            "min": round(min(values), 3), "max": round(max(values), 3), "spread": round(max(values) - min(values), 3)}


def ratio(numerator: float, denominator: float, floor: float = RATIO_FLOOR_MIB) -> tuple[float, bool]:
    """``numerator / max(denominator, floor)``; the flag says the floor was used (the ratio is then a lower bound)."""
    if floor <= 0:
        raise ValueError("floor must be positive")
    clamped = denominator < floor
    return numerator / max(denominator, floor), clamped


def format_ratio(value: float, clamped: bool) -> str:
    text = f"{value:.0f}x" if value >= 100 else f"{value:.1f}x"
    return (">=" + text) if clamped else text


def mib(value_bytes: float) -> float:
    return value_bytes / MIB


def _f(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def env_summary(ranks: list[dict]) -> dict:
    """From the per-rank worker results of one torchrun job: rank 1's figures and the sums over ranks >= 1."""
    by_rank = {r["rank"]: r for r in ranks}
    if 1 not in by_rank:
        raise ValueError("no rank 1 in the results")
    one = by_rank[1]
    others = [r for r in ranks if r["rank"] != 0]
    return {
        "rank1_load_rise_mib": round(one["load_rise_mib"], 2),
        "rank1_prepare_peak_mib": round(one["prepare_peak_mib"], 2),
        "rank1_prepare_peak_rise_mib": round(one["prepare_peak_rise_mib"], 2),
        "rank1_after_prepare_mib": round(one["after_prepare_mib"], 2),
        "rank1_before_mib": round(one["rss_before_mib"], 2),
        "nonzero_ranks_load_rise_mib": round(sum(r["load_rise_mib"] for r in others), 2),
        "nonzero_ranks_prepare_peak_rise_mib": round(sum(r["prepare_peak_rise_mib"] for r in others), 2),
        "rank0_load_rise_mib": round(by_rank[0]["load_rise_mib"], 2) if 0 in by_rank else None,
        "fsdp_enabled": all(r.get("fsdp_enabled") for r in ranks),
    }


def case_ratio(case: dict) -> dict | None:
    """Fix 2 ratios of one case (pristine / patched), rank 1 and summed over ranks >= 1; None if a side is missing."""
    res = case.get("envs", {})
    if not all(isinstance(res.get(e), dict) and "summary" in res[e] for e in ENVS):
        return None
    p, q = res["pristine"]["summary"], res["patched"]["summary"]
    r1, c1 = ratio(p["rank1_load_rise_mib"], q["rank1_load_rise_mib"])
    rs, cs = ratio(p["nonzero_ranks_load_rise_mib"], q["nonzero_ranks_load_rise_mib"])
    rp, cp = ratio(p["rank1_prepare_peak_mib"], q["rank1_prepare_peak_mib"])
    return {"rank1_load_rise": round(r1, 2), "rank1_load_rise_lower_bound": c1,
            "nonzero_ranks_load_rise": round(rs, 2), "nonzero_ranks_load_rise_lower_bound": cs,
            "rank1_prepare_peak": round(rp, 2), "rank1_prepare_peak_lower_bound": cp}


REQUIRED = {
    "schema": int, "mode": str, "date": str, "seconds": (int, float), "environment": dict,
    "fix2": dict, "fix1": dict, "fix3": dict, "pipeline": dict,
}
CASE_KEYS = ("size", "params", "model_bytes", "shard_bytes", "ranks", "envs")


def validate(results: dict) -> list[str]:
    """Problems with the shape of a results.json (empty list: fine)."""
    problems = []
    for key, kind in REQUIRED.items():
        if key not in results:
            problems.append(f"missing {key}")
        elif not isinstance(results[key], kind):
            problems.append(f"{key} is {type(results[key]).__name__}")
    if problems:
        return problems
    if results["schema"] != SCHEMA:
        problems.append(f"schema {results['schema']} != {SCHEMA}")
    if results["mode"] not in MODES:
        problems.append(f"mode {results['mode']!r}")
    for env in ENVS:
        if env not in results["environment"].get("envs", {}):
            problems.append(f"environment.envs.{env} missing")
    cases = results["fix2"].get("cases")
    if not isinstance(cases, list) or not cases:
        problems.append("fix2.cases is empty")
        cases = []
    for i, case in enumerate(cases):
        for key in CASE_KEYS:
            if key not in case:
                problems.append(f"fix2.cases[{i}].{key} missing")
        for env in ENVS:
            entry = case.get("envs", {}).get(env)
            if not isinstance(entry, dict) or not ("summary" in entry or "skipped" in entry):
                problems.append(f"fix2.cases[{i}].envs.{env}: neither a summary nor skipped")
    for fix in ("fix1", "fix3"):
        for env in ENVS:
            entry = results[fix].get(env)
            if not isinstance(entry, dict) or not ("results" in entry or "skipped" in entry):
                problems.append(f"{fix}.{env}: neither results nor skipped")
    for name, step in results["pipeline"].get("steps", {}).items():
        for key in ("runs", "median", "min", "max", "spread"):
            if key not in step:
                problems.append(f"pipeline.steps.{name}.{key} missing")
    return problems


def _md(rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(rows[0]))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return out


def fix2_rows(results: dict) -> list[list[str]]:
    rows = [["model", "params", "ranks", "model MiB", "shard MiB",
             "rank-1 load rise: pristine", "patched", "ratio",
             "rank-1 peak in prepare: pristine", "patched",
             "ranks>=1 load rise (sum): pristine", "patched", "ratio"]]
    for case in results["fix2"]["cases"]:
        row = [case["size"], f"{case['params'] / 1e6:,.0f}M", str(case["ranks"]), _f(mib(case["model_bytes"])),
               _f(mib(case["shard_bytes"]))]
        envs_ = case["envs"]
        sums = {e: envs_[e].get("summary") for e in ENVS}
        r = case_ratio(case)

        def cell(env: str, key: str) -> str:
            s = sums[env]
            return _f(s[key]) if s else envs_[env].get("skipped", "skipped")

        row += [cell("pristine", "rank1_load_rise_mib"), cell("patched", "rank1_load_rise_mib"),
                format_ratio(r["rank1_load_rise"], r["rank1_load_rise_lower_bound"]) if r else "-",
                cell("pristine", "rank1_prepare_peak_mib"), cell("patched", "rank1_prepare_peak_mib"),
                cell("pristine", "nonzero_ranks_load_rise_mib"), cell("patched", "nonzero_ranks_load_rise_mib"),
                format_ratio(r["nonzero_ranks_load_rise"], r["nonzero_ranks_load_rise_lower_bound"]) if r else "-"]
        rows.append(row)
    return rows


def gpu_lines(results: dict) -> list[str]:
    out = []
    titles = {"fix1": "Fix 1 (GPU): `Trainer._load_best_model`, extra accelerator bytes while reloading the best LoRA adapter",
              "fix3": "Fix 3 (GPU): `PeftModel.load_adapter`, reserved-but-unallocated bytes left behind"}
    for fix, title in titles.items():
        out.append(f"**{title}**")
        out.append("")
        section = results[fix]
        skipped = {section[e]["skipped"] for e in ENVS if "skipped" in section.get(e, {})}
        if skipped:
            out.append("skipped: " + "; ".join(sorted(skipped)))
            out.append("")
            continue
        key = "extra_bytes" if fix == "fix1" else "reserved_unallocated_bytes"
        label = "extra MiB during reload" if fix == "fix1" else "reserved - allocated MiB"
        rows = [["LoRA rank", "adapter MiB", f"{label}: pristine", "patched", "ratio"]]
        pristine = {r["lora_rank"]: r for r in section["pristine"]["results"]}
        for entry in section["patched"]["results"]:
            p = pristine.get(entry["lora_rank"])
            if p is None:
                continue
            value, clamped = ratio(mib(p[key]), mib(entry[key]))
            rows.append([str(entry["lora_rank"]), _f(mib(entry["adapter_bytes"])), _f(mib(p[key])),
                         _f(mib(entry[key])), format_ratio(value, clamped)])
        out += _md(rows)
        out.append("")
    return out


PIPELINE_STEPS = {
    "cold_apply": "cold `apply` (download, extract, patches)",
    "cold_build": "cold `build`",
    "cold_total": "cold `apply` + `build`",
    "noop_apply": "no-op `apply`",
    "noop_build": "no-op `build`",
    "noop_total": "no-op `apply` + `build`",
    "force_build": "`build --force`",
    "floor": "floor: `python -m build --wheel` of the same trees",
}


def pipeline_rows(results: dict) -> list[list[str]]:
    steps = results["pipeline"].get("steps", {})
    floor = steps.get("floor", {}).get("median")
    rows = [["step", "runs", "median s", "min-max s", "spread s", "x floor"]]
    for name, label in PIPELINE_STEPS.items():
        if name not in steps:
            continue
        s = steps[name]
        rows.append([label, str(len(s["runs"])), _f(s["median"], 2), f"{s['min']:.2f}-{s['max']:.2f}",
                     _f(s["spread"], 2), f"{s['median'] / floor:.2f}" if floor else "-"])
    return rows


def render_table(results: dict) -> str:
    """The markdown report of a results dict (build/bench/table.md)."""
    env = results["environment"]
    machine = env.get("machine", {})
    lines = [f"# headroom bench ({results['mode']}), {results['date']}", ""]
    lines.append(f"Machine: {machine.get('cpu_model', '?')}, {machine.get('nproc', '?')} CPUs, "
                 f"{machine.get('ram_gib', '?')} GiB RAM; GPU: {env.get('gpu') or 'none'}.")
    for name in ENVS:
        e = env["envs"][name]
        pk = e.get("packages", {})
        lines.append(f"- {name}: transformers {pk.get('transformers')}, peft {pk.get('peft')}, torch {pk.get('torch')}, "
                     f"accelerate {pk.get('accelerate')}; fix 2 in the loader: {'yes' if e.get('fix2_in_loader') else 'no'}")
    lines += ["", "## Fix 2: FSDP `cpu_ram_efficient_loading` on CPU (torchrun, gloo, Accelerate FSDP2)", ""]
    lines.append("RssAnon of rank 1 in MiB (anonymous memory: the memory-mapped checkpoint's pages are not counted). "
                 "*load rise*: across `from_pretrained`; *peak in prepare*: highest RssAnon sampled through "
                 "`accelerator.prepare` (absolute; the RssAnon before loading is in the note below). "
                 f"Ratios are pristine / patched, with patched taken as at least {RATIO_FLOOR_MIB:.0f} MiB (then shown as >=).")
    lines.append("")
    lines += _md(fix2_rows(results))
    before = sorted({round(c["envs"][e]["summary"]["rank1_before_mib"]) for c in results["fix2"]["cases"]
                     for e in ENVS if "summary" in c["envs"][e]})
    if before:
        lines += ["", f"Note: rank 1's RssAnon before `from_pretrained` (torch, transformers, accelerate imported; gloo "
                      f"up): {before[0]}-{before[-1]} MiB."]
    if "accelerate_prepare" in results:
        lines += ["", *bench_prepare.table_lines(results["accelerate_prepare"])]
    lines += ["", "## GPU", ""]
    lines += gpu_lines(results)
    lines += ["## Pipeline (wall time)", ""]
    pipe = results["pipeline"]
    if pipe.get("note"):
        lines += [pipe["note"], ""]
    if pipe.get("steps"):
        lines += _md(pipeline_rows(results))
    lines += ["", f"Total bench time: {results['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def terminal_ratios(results: dict) -> list[str]:
    out = []
    for case in results["fix2"]["cases"]:
        r = case_ratio(case)
        if r is None:
            out.append(f"fix 2, {case['size']}, {case['ranks']} ranks: incomplete (see the table)")
            continue
        p = case["envs"]["pristine"]["summary"]
        q = case["envs"]["patched"]["summary"]
        out.append(f"fix 2, {case['size']} ({mib(case['model_bytes']):,.0f} MiB), {case['ranks']} ranks: rank-1 RssAnon "
                   f"rise {p['rank1_load_rise_mib']:,.1f} -> {q['rank1_load_rise_mib']:,.1f} MiB "
                   f"({format_ratio(r['rank1_load_rise'], r['rank1_load_rise_lower_bound'])}); ranks>=1 "
                   f"{p['nonzero_ranks_load_rise_mib']:,.1f} -> {q['nonzero_ranks_load_rise_mib']:,.1f} MiB "
                   f"({format_ratio(r['nonzero_ranks_load_rise'], r['nonzero_ranks_load_rise_lower_bound'])})")
    return out


# --------------------------------------------------------------------------------------------------------------------
# Machine description


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                key, _, rest = line.partition(":")
                out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    mem = _meminfo()
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gib": round(mem.get("MemTotal", 0) / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def gpu_info() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    result = proc.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], check=False,
                      quiet=True, what="nvidia-smi")
    text = result.output.strip()
    if result.returncode != 0 or not text:
        return None
    return "; ".join(f"{name.strip()} (driver {driver.strip()})" for name, _, driver in
                     (line.partition(",") for line in text.splitlines()))


def _last_json(output: str) -> dict:
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise CommandFailed("a benchmark worker printed no JSON result", details=output[-4000:])


def probe_env(py: Path) -> dict:
    result = proc.run([py, DATA / "probe.py"], env=OFFLINE_ENV, quiet=True, what=f"probe {py}")
    return _last_json(result.output)


# --------------------------------------------------------------------------------------------------------------------
# Fix 2


def _available_bytes() -> int:
    return _meminfo().get("MemAvailable", 0)


def estimated_bytes(env: str, model_bytes: int, ranks: int) -> int:
    """RAM a fix 2 job needs at its peak (rank 0 ~0.8x the model, other ranks ~2.2x pristine / ~1.2x patched)."""
    per_rank = 2.2 if env == "pristine" else 1.2
    return int((0.8 + (ranks - 1) * per_rank) * model_bytes + ranks * 450 * MIB)


def checkpoint(root: Path, size: str, py: Path) -> tuple[Path, dict]:
    """build/bench/models/<size>-<hash>: made once with the pristine env, reused."""
    config = {**{k: v for k, v in _LLAMA.items() if v is not None}, **SIZES[size]}
    config["num_key_value_heads"] = config["num_attention_heads"]
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    where = root / MODELS_DIR / f"{size}-{key}"
    meta = where / "headroom-bench.json"
    if not meta.exists():
        ui.info(f"writing a random {size} Llama checkpoint to {where.relative_to(root)}")
        if where.exists():
            shutil.rmtree(where)
        tmp = where.with_name(where.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        where.parent.mkdir(parents=True, exist_ok=True)
        proc.run([py, DATA / "make_model.py", where, json.dumps(config)], env=OFFLINE_ENV,
                 what=f"make the {size} checkpoint")
    return where, json.loads(meta.read_text(encoding="utf-8"))


def run_fsdp(root: Path, py: Path, env: str, ckpt: Path, ranks: int, tag: str) -> dict:
    out = root / OUT_DIR / "runs" / f"{tag}-{ranks}ranks-{env}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    with ui.Timer() as t:
        result = proc.run(
            [py, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc-per-node={ranks}",
             DATA / "fsdp_worker.py", ckpt, out],
            env={**OFFLINE_ENV, **FSDP_ENV}, cwd=out, what=f"torchrun {ranks} ranks ({env}, {tag})", check=False,
        )
    (out / "torchrun.log").write_text(result.output, encoding="utf-8")
    ranks_data = []
    for r in range(ranks):
        path = out / f"rank{r}.json"
        if not path.exists():
            sys.stderr.write(result.output[-8000:])
            raise CommandFailed(f"torchrun ({env}, {tag}, {ranks} ranks) wrote no result for rank {r} "
                                f"(exit {result.returncode}); its output is above and in {out.relative_to(root)}/torchrun.log")
        ranks_data.append(json.loads(path.read_text(encoding="utf-8")))
    shutil.rmtree(out / "warmup", ignore_errors=True)
    summ = env_summary(ranks_data)
    if not summ["fsdp_enabled"]:
        raise CommandFailed(f"torchrun ({env}, {tag}): transformers did not see FSDP enabled; the measurement is void")
    return {"ranks": ranks_data, "summary": summ, "seconds": round(t.seconds, 1)}


def fix2(root: Path, pythons: dict[str, Path], mode: str) -> dict:
    plan = PLAN[mode]
    cases: list[tuple[str, int]] = [(s, SWEEP_RANKS) for s in plan["sizes"]]
    if plan["scaling_size"]:
        cases += [(plan["scaling_size"], n) for n in plan["scaling_ranks"]]
    out = []
    for size, ranks in cases:
        ui.step("bench", f"fix 2: {size} model, {ranks} ranks")
        ckpt, meta = checkpoint(root, size, pythons["pristine"])
        case = {"size": size, "params": meta["params"], "model_bytes": meta["bytes"],
                "shard_bytes": meta["bytes"] // ranks, "ranks": ranks, "dtype": meta["dtype"],
                "config": SIZES[size], "envs": {}}
        for env in ENVS:
            need, avail = estimated_bytes(env, meta["bytes"], ranks), _available_bytes()
            if avail and need + 2**30 > avail:
                reason = f"skipped: needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available"
                ui.warn(f"fix 2 {size} x {ranks} ranks ({env}): {reason}")
                case["envs"][env] = {"skipped": reason}
                continue
            entry = run_fsdp(root, pythons[env], env, ckpt, ranks, size)
            s = entry["summary"]
            ui.info(f"{env}: rank 1 RssAnon rise {s['rank1_load_rise_mib']:,.1f} MiB across from_pretrained, peak "
                    f"{s['rank1_prepare_peak_mib']:,.1f} MiB in prepare ({entry['seconds']:.0f}s)")
            case["envs"][env] = entry
        case["ratio"] = case_ratio(case)
        out.append(case)
    return {"cases": out, "sweep_ranks": SWEEP_RANKS}


# --------------------------------------------------------------------------------------------------------------------
# Fix 1 and fix 3 (GPU)


def gpu_fixes(root: Path, pythons: dict[str, Path], mode: str) -> tuple[dict, dict]:
    sections: dict[str, dict] = {"fix1": {}, "fix3": {}}
    scripts = {"fix1": "gpu_load_best.py", "fix3": "gpu_load_adapter.py"}
    for fix, script in scripts.items():
        ui.step("bench", f"{fix} (GPU): {script}")
        for env in ENVS:
            with tempfile.TemporaryDirectory(prefix=f"headroom-bench-{fix}-") as tmp:
                result = proc.run([pythons[env], DATA / script, tmp, json.dumps(GPU_LORA_RANKS[mode])],
                                  env=OFFLINE_ENV, what=f"{script} ({env})")
            data = _last_json(result.output)
            sections[fix][env] = data
            ui.info(f"{env}: skipped: {data['skipped']}" if "skipped" in data else
                    f"{env}: measured {len(data.get('results', []))} adapter size(s) on {data.get('gpu')}")
    return sections["fix1"], sections["fix3"]


# --------------------------------------------------------------------------------------------------------------------
# The pipeline


def copy_repo(root: Path, dest: Path, *, with_work: bool) -> None:
    """Copy the tracked and untracked-but-not-ignored files of ``root`` (what a fresh clone plus local edits has).

    ``with_work`` also copies the vendor/ checkouts, dist/ and build/state/ (for a no-op re-run)."""
    listing = proc.run(["git", "-C", root, "ls-files", "-co", "--exclude-standard"], quiet=True, what="git ls-files")
    for rel in listing.output.splitlines():
        src = root / rel
        if not rel or not src.is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    if with_work:
        from . import pins as pins_mod

        for pin in pins_mod.load(root):
            if (root / "vendor" / pin.name).exists():
                shutil.copytree(root / "vendor" / pin.name, dest / "vendor" / pin.name, symlinks=True)
                # refresh the copied index's stat data, so the timed no-op does not pay for it
                proc.run(["git", "-C", dest / "vendor" / pin.name, "status", "--porcelain"], quiet=True,
                         what="git status")
        for sub in ("dist", "build/state"):
            if (root / sub).exists():
                shutil.copytree(root / sub, dest / sub, symlinks=True)


def _headroom(copy: Path, *args: str, cache: Path | None = None) -> float:
    env = {"HEADROOM_CACHE": str(cache)} if cache else None
    with ui.Timer() as t:
        proc.run([sys.executable, "-m", "headroom", "--root", copy, *args], env=env,
                 what=f"headroom {' '.join(args)} (bench copy)")
    return t.seconds


def floor_build(copy: Path, work: Path) -> float:
    """``python -m build --wheel`` of a ``git archive`` of each vendor/<name> HEAD; returns the summed build time."""
    from . import archive, pins as pins_mod

    total = 0.0
    for pin in pins_mod.load(copy):
        tarball = work / f"{pin.name}.tar"
        src = work / f"{pin.name}-src"
        proc.run(["git", "-C", copy / "vendor" / pin.name, "archive", "--format=tar", "-o", tarball, "HEAD"],
                 quiet=True, what="git archive")
        archive.extract(tarball, src, strip_top=False)
        with ui.Timer() as t:
            proc.run([sys.executable, "-m", "build", "--wheel", "--outdir", work / "out", src],
                     what=f"python -m build ({pin.name}, floor)")
        total += t.seconds
        shutil.rmtree(src)
        tarball.unlink()
    return total


def pipeline(root: Path, mode: str) -> dict:
    runs = PLAN[mode]["pipeline_runs"]
    times: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        times.setdefault(name, []).append(value)

    for i in range(runs):
        with tempfile.TemporaryDirectory(prefix="headroom-bench-pipeline-") as tmp:
            tmpdir = Path(tmp)
            copy = tmpdir / "repo"
            if mode == "quick":
                ui.step("bench", "pipeline: no-op apply + build on a copy of the repository (with its checkouts)")
                copy_repo(root, copy, with_work=True)
                try:
                    _headroom(copy, "apply")  # makes it a no-op if the checkouts were stale
                    _headroom(copy, "build")
                except CommandFailed as exc:
                    # e.g. unsaved work in vendor/: the memory figures still count, the pipeline timing is left out
                    ui.warn(f"pipeline timing skipped: {exc.message}")
                    return {"steps": {}, "note": f"skipped: `apply` + `build` failed on the copy ({exc.message})"}
                add("noop_apply", _headroom(copy, "apply"))
                add("noop_build", _headroom(copy, "build"))
                add("noop_total", times["noop_apply"][-1] + times["noop_build"][-1])
                continue
            ui.step("bench", f"pipeline run {i + 1}/{runs}: cold apply + build on a copy, empty HEADROOM_CACHE")
            copy_repo(root, copy, with_work=False)
            cache = tmpdir / "cache"
            cache.mkdir()
            add("cold_apply", _headroom(copy, "apply", cache=cache))
            add("cold_build", _headroom(copy, "build", cache=cache))
            add("cold_total", times["cold_apply"][-1] + times["cold_build"][-1])
            add("noop_apply", _headroom(copy, "apply", cache=cache))
            add("noop_build", _headroom(copy, "build", cache=cache))
            add("noop_total", times["noop_apply"][-1] + times["noop_build"][-1])
            add("force_build", _headroom(copy, "build", "--force", cache=cache))
            work = tmpdir / "floor"
            work.mkdir()
            add("floor", floor_build(copy, work))
        ui.info("; ".join(f"{k} {v[-1]:.1f}s" for k, v in times.items()))
    steps = {name: summary(values) for name, values in times.items()}
    note = ("quick mode: only the no-op `apply` + `build` (1 run) on a copy holding the current checkouts; "
            "`headroom bench --mode full` times the cold pipeline and the floor.") if mode == "quick" else (
        f"{runs} runs, each on a fresh copy of the repository (tracked + untracked files) with an empty HEADROOM_CACHE "
        "(the cold run downloads the pinned sdists). The floor builds the same `git archive` trees with a plain "
        "`python -m build --wheel`.")
    return {"steps": steps, "note": note}


# --------------------------------------------------------------------------------------------------------------------
# Plots


def ensure_matplotlib(root: Path):
    try:
        import matplotlib
    except ImportError:
        ui.info(f"installing {REQUIREMENTS} into the tool environment ({sys.prefix})")
        proc.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", root / REQUIREMENTS],
                 what="pip install matplotlib")
        importlib.invalidate_caches()
        import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _finish(plt, fig, ax, path: Path) -> Path:
    """Grid, legend, layout; save and close the figure; return its path."""
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)
    plt.close(fig)
    return path


def _save(fig, path: Path) -> None:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    atomic_write(path, buf.getvalue())


def plot(results: dict, out: Path, plt) -> list[Path]:
    written = []
    colours = {"pristine": "#c0392b", "patched": "#27ae60"}
    sweep = [c for c in results["fix2"]["cases"] if c["ranks"] == results["fix2"].get("sweep_ranks", SWEEP_RANKS)]
    if sweep:
        fig, ax = plt.subplots(figsize=(7, 4.4))
        top = max(mib(c["model_bytes"]) for c in sweep) * 1.05
        ax.plot([0, top], [0, top], "-", color="black", linewidth=6, alpha=0.15, label="model bytes")
        ax.plot([0, top], [0, top / sweep[0]["ranks"]], ":", color="grey", label="shard bytes (model / ranks)")
        for env in ENVS:
            pts = [(mib(c["model_bytes"]), c["envs"][env]["summary"]) for c in sweep if "summary" in c["envs"][env]]
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1]["rank1_load_rise_mib"] for p in pts], "o-", color=colours[env],
                    label=f"{env}: rise across from_pretrained")
            ax.plot([p[0] for p in pts], [p[1]["rank1_prepare_peak_rise_mib"] for p in pts], "s--", color=colours[env],
                    label=f"{env}: peak in prepare (above pre-load)")
        ax.set_xlim(0, top)
        ax.set_ylim(bottom=min(0, ax.get_ylim()[0]))
        ax.set_xlabel("model size (MiB, float32)")
        ax.set_ylabel("rank 1 RssAnon (MiB)")
        ax.set_title(f"Fix 2: rank 1 CPU memory, {sweep[0]['ranks']} ranks, FSDP2 cpu_ram_efficient_loading")
        written.append(_finish(plt, fig, ax, out / "fix2-rank1-memory.png"))
    by_size: dict[str, list[dict]] = {}
    for c in results["fix2"]["cases"]:
        by_size.setdefault(c["size"], []).append(c)
    scaling = max(by_size.values(), key=len) if by_size else []
    if len(scaling) > 1:
        scaling = sorted(scaling, key=lambda c: c["ranks"])
        fig, ax = plt.subplots(figsize=(7, 4.4))
        ranks = [c["ranks"] for c in scaling]
        model = mib(scaling[0]["model_bytes"])
        ax.plot(ranks, [(n - 1) * model for n in ranks], "-", color="black", linewidth=6, alpha=0.15,
                label="(ranks - 1) x model bytes")
        for env in ENVS:
            pts = [(c["ranks"], c["envs"][env]["summary"]) for c in scaling if "summary" in c["envs"][env]]
            if not pts:
                continue
            ax.plot([p[0] for p in pts], [p[1]["nonzero_ranks_load_rise_mib"] for p in pts], "o-", color=colours[env],
                    label=f"{env}: sum over ranks >= 1, rise across from_pretrained")
            ax.plot([p[0] for p in pts], [p[1]["nonzero_ranks_prepare_peak_rise_mib"] for p in pts], "s--",
                    color=colours[env], label=f"{env}: sum over ranks >= 1, peak in prepare")
        ax.set_xticks(ranks)
        ax.set_xlabel("ranks (processes on one node)")
        ax.set_ylabel("RssAnon (MiB)")
        ax.set_title(f"Fix 2: cost per rank, {scaling[0]['size']} model ({model:,.0f} MiB)")
        written.append(_finish(plt, fig, ax, out / "fix2-per-rank.png"))
    return written


# --------------------------------------------------------------------------------------------------------------------
# Entry point


def replot(root: Path) -> list[Path]:
    """Re-draw the plots and the table of build/bench/results.json (no measurement)."""
    out = root / OUT_DIR
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    problems = validate(results)
    if problems:
        raise BuildError("build/bench/results.json is incomplete: " + "; ".join(problems))
    atomic_write(out / "table.md", render_table(results))
    return plot(results, out, ensure_matplotlib(root))


def environment(pythons: dict[str, Path], root: Path) -> dict:
    head = proc.run(["git", "-C", root, "rev-parse", "HEAD"], quiet=True, check=False, what="git rev-parse")
    return {
        "machine": machine_info(),
        "gpu": gpu_info(),
        "envs": {env: probe_env(py) for env, py in pythons.items()},
        "headroom_commit": head.output.strip() if head.returncode == 0 else None,
    }


def run(root: Path, mode: str = "full") -> int:
    if mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    start = time.monotonic()
    out = root / OUT_DIR
    pythons = {}
    for env in ENVS:
        py = envs.python(root, env)
        if not py.exists():
            raise NotApplied(f"build/envs/{env} does not exist. Run `make test` first (it creates both environments).")
        pythons[env] = py
    plt = ensure_matplotlib(root)
    ui.step("bench", f"{mode}: environments")
    env_info = environment(pythons, root)
    for env, info in env_info["envs"].items():
        ui.info(f"{env}: transformers {info['packages']['transformers']}, peft {info['packages']['peft']}; "
                f"fix 2 in the loader: {'yes' if info['fix2_in_loader'] else 'no'}")
    if not env_info["envs"]["patched"]["fix2_in_loader"]:
        ui.warn("the patched environment's transformers does not carry fix 2: its figures will match pristine")
    if env_info["envs"]["pristine"]["fix2_in_loader"]:
        ui.warn("the pristine environment's transformers already carries fix 2")
    results: dict = {"schema": SCHEMA, "mode": mode,
                     "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
                     "environment": env_info}
    partial = out / "results.partial.json"  # what was measured so far, should a later part fail
    results["fix2"] = fix2(root, pythons, mode)
    atomic_write_json(partial, results)
    results["accelerate_prepare"] = bench_prepare.run(root, pythons, mode)  # patches/accelerate/0001
    atomic_write_json(partial, results)
    results["fix1"], results["fix3"] = gpu_fixes(root, pythons, mode)
    atomic_write_json(partial, results)
    results["pipeline"] = pipeline(root, mode)
    after = {env: probe_env(py)["packages"] for env, py in pythons.items()}
    changed = [env for env in ENVS if after[env] != env_info["envs"][env]["packages"]]
    if changed:
        ui.warn(f"build/envs/{', '.join(changed)} changed during the bench: {after}")
        results["environment"]["changed_during_run"] = after
    results["seconds"] = round(time.monotonic() - start, 1)
    problems = validate(results)
    if problems:
        raise BuildError("bench results are incomplete: " + "; ".join(problems))
    atomic_write_json(out / "results.json", results)
    partial.unlink(missing_ok=True)
    table = render_table(results)
    atomic_write(out / "table.md", table)
    pngs = plot(results, out, plt)
    for stale in set(out.glob("fix2-*.png")) - set(pngs):  # e.g. the per-rank plot of an earlier full run
        stale.unlink()
    ui.step("bench", "results")
    print(table, flush=True)
    for line in terminal_ratios(results):
        ui.info(line)
    ui.info(f"written: {', '.join(str(p.relative_to(root)) for p in [out / 'results.json', out / 'table.md', *pngs])}")
    ui.info(f"bench {mode}: {results['seconds']:.0f}s")
    return 0
