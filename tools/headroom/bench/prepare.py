"""bench, Accelerate's FSDP2 ``prepare`` (patches/accelerate/0001): pristine vs patched accelerate.

``python -m torch.distributed.run`` (gloo, CPU) with bench_data/prepare_worker.py in build/envs/pristine (the
official accelerate) and build/envs/patched (the headroom build). Every rank assigns a memory-mapped random Llama
checkpoint to a model built on ``meta`` (no RAM of its own), then goes through ``accelerator.prepare(model,
optimizer)`` with FSDP2 and ``cpu_ram_efficient_loading``: rank 0's weights are loaded into the sharded model by
``fsdp2_load_full_state_dict``. Measured on rank 1: the peak anonymous RSS during ``prepare`` (sampled every 2 ms),
the kernel's exact peak RSS (``VmHWM``, reset right before), the RSS left after ``prepare`` (its shard plus the
process) and ``prepare``'s wall time (the slowest rank). Goal of the patch: the peak within 5% of what is left
after, and no slower.

Called by ``headroom bench`` (bench.py); the pure parts (summary, ratios, table) are unit-tested in
tests/test_bench_prepare.py. Results: ``accelerate_prepare`` in build/bench/results.json, and
build/bench/prepare.md.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from .. import proc, ui
from ..fsutil import atomic_write
from .common import ENVS, MIB, MODELS_DIR, OFFLINE_ENV, OUT_DIR, SIZES
from .jobs import RUN_DIR, torchrun
from .machine import too_big

WORKER = Path(__file__).parent.parent / "bench_data" / "prepare_worker.py"
GOAL_PEAK_OVER_FINAL = 1.05  # the patch's goal: rank 1's peak in prepare within 5% of what it keeps
_LLAMA = {"tie_word_embeddings": False, "max_position_embeddings": 2048}
PLAN = {"quick": {"sizes": ["60M"], "ranks": [2]}, "full": {"sizes": ["250M", "1B"], "ranks": [2, 4]}}
ENV = OFFLINE_ENV  # the bench's offline environment (one thread per rank)


# --------------------------------------------------------------------------------------------------------------------
# Pure parts


def env_summary(ranks: list[dict]) -> dict:
    """Rank 1's figures (MiB) and prepare's wall time (the slowest rank) of one torchrun job."""
    by_rank = {r["rank"]: r for r in ranks}
    if 1 not in by_rank:
        raise ValueError("no rank 1 in the results")
    one = by_rank[1]
    final = one["rss_anon_after_mib"]
    peak = one["rss_anon_peak_mib"]
    exact = one.get("rss_peak_mib")
    return {
        "rank1_before_mib": round(one["rss_anon_before_mib"], 1),
        "rank1_peak_mib": round(peak, 1),
        "rank1_final_mib": round(final, 1),
        "rank1_peak_over_final": round(peak / final, 3),
        # the exact peak (VmHWM) above the RSS before prepare, next to the shard rank 1 keeps
        "rank1_exact_peak_rise_mib": None if exact is None else round(exact - one["rss_before_mib"], 1),
        "rank1_shard_mib": round(one["local_shard_bytes"] / MIB, 1),
        "prepare_seconds": round(max(r["prepare_seconds"] for r in ranks), 2),
    }


def case_ratio(case: dict) -> dict | None:
    """pristine / patched for rank 1's peak and for prepare's time; None if a side is missing."""
    res = case.get("envs", {})
    if not all("summary" in res.get(e, {}) for e in ENVS):
        return None
    p, q = res["pristine"]["summary"], res["patched"]["summary"]
    return {"rank1_peak": round(p["rank1_peak_mib"] / q["rank1_peak_mib"], 3),
            "prepare_seconds": round(p["prepare_seconds"] / q["prepare_seconds"], 3)}


def goal_met(summary: dict) -> bool:
    return summary["rank1_peak_over_final"] <= GOAL_PEAK_OVER_FINAL


def table_rows(section: dict) -> list[list[str]]:
    rows = [["model", "ranks", "shard MiB", "rank-1 peak in prepare: pristine", "patched", "ratio",
             "final: pristine", "patched", "peak / final: pristine", "patched",
             "exact peak rise: pristine", "patched", "prepare s: pristine", "patched", "speed-up"]]
    for case in section["cases"]:
        envs = case["envs"]
        sums = {e: envs[e].get("summary") for e in ENVS}
        r = case_ratio(case)

        def cell(env: str, key: str, fmt: str = "{:,.1f}") -> str:
            s = sums[env]
            if not s:
                return envs[env].get("skipped", "skipped")
            return "-" if s[key] is None else fmt.format(s[key])

        shard = next((s["rank1_shard_mib"] for s in sums.values() if s), None)
        rows.append([case["size"], str(case["ranks"]), "-" if shard is None else f"{shard:,.1f}",
                     cell("pristine", "rank1_peak_mib"), cell("patched", "rank1_peak_mib"),
                     f"{r['rank1_peak']:.2f}x" if r else "-",
                     cell("pristine", "rank1_final_mib"), cell("patched", "rank1_final_mib"),
                     cell("pristine", "rank1_peak_over_final", "{:.3f}"), cell("patched", "rank1_peak_over_final", "{:.3f}"),
                     cell("pristine", "rank1_exact_peak_rise_mib"), cell("patched", "rank1_exact_peak_rise_mib"),
                     cell("pristine", "prepare_seconds", "{:.1f}"), cell("patched", "prepare_seconds", "{:.1f}"),
                     f"{r['prepare_seconds']:.2f}x" if r else "-"])
    return rows


def table_lines(section: dict) -> list[str]:
    """The markdown section of build/bench/table.md (and build/bench/prepare.md)."""
    rows = table_rows(section)
    lines = ["## Accelerate FSDP2 `prepare` (patches/accelerate/0001): pristine vs patched accelerate", "",
             "Rank 1 in MiB. *peak in prepare*: highest RssAnon sampled through `accelerator.prepare(model, optimizer)` "
             "(FSDP2, `cpu_ram_efficient_loading`, the model's weights memory-mapped on every rank); *final*: RssAnon "
             "after it (the shard plus the process); *exact peak rise*: the kernel's peak RSS (VmHWM, reset right "
             "before `prepare`) above the RSS before it; *prepare s*: wall time of the slowest rank. Ratios: pristine / "
             f"patched. Goal: peak / final <= {GOAL_PEAK_OVER_FINAL:.2f} on patched, and no slower.", ""]
    lines.append("| " + " | ".join(rows[0]) + " |")
    lines.append("|" + "|".join("---:" if i else "---" for i in range(len(rows[0]))) + "|")
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    lines.append("")
    return lines


def terminal_lines(section: dict) -> list[str]:
    out = []
    for case in section["cases"]:
        if case_ratio(case) is None:
            out.append(f"accelerate prepare, {case['size']}, {case['ranks']} ranks: incomplete (see the table)")
            continue
        p, q = case["envs"]["pristine"]["summary"], case["envs"]["patched"]["summary"]
        out.append(f"accelerate prepare, {case['size']}, {case['ranks']} ranks: rank-1 peak {p['rank1_peak_mib']:,.0f} -> "
                   f"{q['rank1_peak_mib']:,.0f} MiB (peak/final {p['rank1_peak_over_final']:.3f} -> "
                   f"{q['rank1_peak_over_final']:.3f}, goal {'met' if goal_met(q) else 'NOT met'}); prepare "
                   f"{p['prepare_seconds']:.1f} -> {q['prepare_seconds']:.1f} s")
    return out


# --------------------------------------------------------------------------------------------------------------------
# Measurement


def estimated_bytes(env: str, meta: dict, ranks: int) -> int:
    """RAM a job needs at its peak: per rank the process (~600 MiB) and its shard, plus the largest full parameter on
    the ranks other than 0 on pristine; the checkpoint's pages (page cache, read by rank 0) once."""
    extra = meta["largest_param_bytes"] * (ranks - 1) if env == "pristine" else 0
    return int(meta["bytes"] * 2 + extra + ranks * 600 * MIB)


def checkpoint(root: Path, size: str, py: Path) -> tuple[Path, dict]:
    """build/bench/models/prepare-<size>-<hash>: model.pt + meta.json, made once (with the pristine env), reused."""
    config = {**_LLAMA, **SIZES[size]}
    config["num_key_value_heads"] = config["num_attention_heads"]
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    where = root / MODELS_DIR / f"prepare-{size}-{key}"
    if not (where / "meta.json").exists():
        ui.info(f"writing a random {size} Llama checkpoint to {where.relative_to(root)} (once)")
        for stale in (where, where.with_name(where.name + ".tmp")):
            if stale.exists():
                shutil.rmtree(stale)
        where.parent.mkdir(parents=True, exist_ok=True)
        proc.run([py, WORKER, "make", where, json.dumps(config)], env=ENV, what=f"make the {size} checkpoint")
    return where, json.loads((where / "meta.json").read_text(encoding="utf-8"))


def run_job(root: Path, py: Path, env: str, ckpt: Path, ranks: int, size: str) -> dict:
    with ui.Timer() as t:
        # The worker sets up Accelerate's FSDP2 plugin itself: no FSDP variables
        ranks_data = torchrun(root, py, env, WORKER.name, ["run", ckpt, RUN_DIR], ranks, f"prepare-{size}",
                              env_vars={})
    return {"ranks": ranks_data, "summary": env_summary(ranks_data), "seconds": round(t.seconds, 1)}


def run(root: Path, pythons: dict[str, Path], mode: str) -> dict:
    plan = PLAN[mode]
    cases = []
    for size in plan["sizes"]:
        for ranks in plan["ranks"]:
            ui.step("bench", f"accelerate prepare: {size} model, {ranks} ranks")
            ckpt, meta = checkpoint(root, size, pythons["pristine"])
            case = {"size": size, "params": meta["params"], "model_bytes": meta["bytes"], "ranks": ranks,
                    "largest_param_bytes": meta["largest_param_bytes"], "config": SIZES[size], "envs": {}}
            for env in ENVS:
                reason = too_big(estimated_bytes(env, meta, ranks), f"accelerate prepare {size} x {ranks} ranks ({env})")
                if reason:
                    case["envs"][env] = {"skipped": reason}
                    continue
                entry = run_job(root, pythons[env], env, ckpt, ranks, size)
                s = entry["summary"]
                ui.info(f"{env}: rank 1 peak {s['rank1_peak_mib']:,.1f} MiB in prepare, final {s['rank1_final_mib']:,.1f} "
                        f"MiB ({s['rank1_peak_over_final']:.3f}); prepare {s['prepare_seconds']:.1f}s")
                case["envs"][env] = entry
            case["ratio"] = case_ratio(case)
            cases.append(case)
    section = {"cases": cases, "goal_peak_over_final": GOAL_PEAK_OVER_FINAL}
    atomic_write(root / OUT_DIR / "prepare.md", "\n".join(table_lines(section)))
    for line in terminal_lines(section):
        ui.info(line)
    return section
