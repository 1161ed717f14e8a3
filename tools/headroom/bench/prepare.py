"""bench, Accelerate's FSDP2 ``prepare`` (patches/accelerate/0001) against official accelerate, torch's own path and
the floor.

``python -m torch.distributed.run`` (gloo, CPU) with bench_data/prepare_worker.py. In each case (model size, ranks)
rank 0's weights (a memory-mapped random Llama checkpoint) end up sharded over all ranks by four paths, one torchrun
job each (:data:`PATHS`):

* *official*: ``accelerator.prepare(model, optimizer)`` (FSDP2, ``cpu_ram_efficient_loading``) with the official
  accelerate, in build/envs/pristine;
* *patched*: the same with the headroom build, in build/envs/patched;
* *torch*: ``set_model_state_dict(..., StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))`` on the
  model sharded on ``meta`` in accelerate's units, in build/envs/pristine (torch only: accelerate is not called);
* *floor*: one ``dist.scatter`` per parameter of its dim-0 shards into a buffer of the shard's size, nothing else
  (each parameter crosses the wire once, each rank holds only its shard), in build/envs/pristine.

Measured on rank 1: the peak anonymous RSS during the step (sampled every 2 ms), the kernel's exact peak RSS
(``VmHWM``, reset right before), the RSS left after it (its shard plus the process), and the step's wall time (the
slowest rank), also as a multiple of the floor's; every rank checks that its shards equal the checkpoint. Goal of
the patch (:func:`goal`): within 1.5x of the floor's time, rank 1's peak within 5% of what it keeps, and ahead of
official accelerate and of torch's path on time and peak.

Called by ``headroom bench`` (bench.py); the pure parts (summary, multiples, goal, table) are unit-tested in
tests/test_bench_prepare.py. Results: ``accelerate_prepare`` in build/bench/results.json, and
build/bench/prepare.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..ground import ui
from ..ground.fsutil import atomic_write
from .common import DATA, MIB, OUT_DIR, SIZES, md_table, model_once
from .jobs import RUN_DIR, torchrun
from .machine import too_big

WORKER = DATA / "prepare_worker.py"
# path -> (environment it runs in, the worker's mode); in this order in every case and table
PATHS = {"official": ("pristine", "accelerate"), "patched": ("patched", "accelerate"),
         "torch": ("pristine", "torch"), "floor": ("pristine", "floor")}
RIVALS = ("official", "torch")  # what the patched path must be ahead of, on time and on peak
GOAL_PEAK_OVER_FINAL = 1.05  # rank 1's peak in prepare within 5% of what it keeps
GOAL_FLOOR_MULTIPLE = 1.5  # the patched prepare within 1.5x of the floor's time
PLAN = {"quick": {"sizes": ["60M"], "ranks": [2]}, "full": {"sizes": ["250M", "1B"], "ranks": [2, 4]}}


# --------------------------------------------------------------------------------------------------------------------
# Pure parts


def env_summary(ranks: list[dict]) -> dict:
    """Rank 1's figures (MiB), the step's wall time (the slowest rank), exactness (every rank) of one torchrun job."""
    by_rank = {r["rank"]: r for r in ranks}
    if 1 not in by_rank:
        raise ValueError("no rank 1 in the results")
    one = by_rank[1]
    final = one["rss_anon_after_mib"]
    peak = one["rss_anon_peak_mib"]
    exact = one.get("rss_peak_mib")
    shard = [r.get("shard_seconds") for r in ranks]
    return {
        "rank1_before_mib": round(one["rss_anon_before_mib"], 1),
        "rank1_peak_mib": round(peak, 1),
        "rank1_final_mib": round(final, 1),
        "rank1_peak_over_final": round(peak / final, 3),
        # the exact peak (VmHWM) above the RSS before prepare, next to the shard rank 1 keeps
        "rank1_exact_peak_rise_mib": None if exact is None else round(exact - one["rss_before_mib"], 1),
        "rank1_shard_mib": round(one["local_shard_bytes"] / MIB, 1),
        "prepare_seconds": round(max(r["prepare_seconds"] for r in ranks), 2),
        # fully_shard on meta, outside the timed step (torch, floor); None where prepare does it
        "shard_seconds": None if None in shard else round(max(shard), 2),
        # None: a worker from before the check
        "exact": None if any("exact" not in r for r in ranks) else all(r["exact"] for r in ranks),
        "layout": {k: one[k] for k in ("fsdp_units", "placements") if k in one},
    }


def case_paths(case: dict) -> dict[str, dict]:
    """A case's entry per path; a case of an older results.json (``envs``: pristine and patched accelerate only) reads
    as official and patched."""
    if "paths" in case:
        return case["paths"]
    envs = case.get("envs", {})
    return {path: envs[env] for path, env in (("official", "pristine"), ("patched", "patched")) if env in envs}


def summaries(case: dict) -> dict[str, dict | None]:
    """Each path's summary, None where it was skipped or not run."""
    paths = case_paths(case)
    return {p: paths.get(p, {}).get("summary") for p in PATHS}


def floor_multiples(case: dict) -> dict[str, float | None]:
    """Each path's time as a multiple of the floor's; None where a side is missing."""
    sums = summaries(case)
    floor = sums["floor"]
    return {p: None if not s or not floor else round(s["prepare_seconds"] / floor["prepare_seconds"], 2)
            for p, s in sums.items()}


def same_layout(case: dict) -> bool | None:
    """Whether every measured path sharded the model in the same FSDP units and placements; None if unknown."""
    layouts = [s["layout"] for s in summaries(case).values() if s and s.get("layout")]
    return None if len(layouts) < 2 else all(lay == layouts[0] for lay in layouts)


def goal(case: dict) -> dict:
    """The patch's goal in one case, check by check: each ``{"met": bool | None, "text": ...}`` (None: not measured),
    the text saying MET or by how much it misses; ``met`` overall."""
    sums = summaries(case)
    q = sums["patched"]
    checks: dict[str, dict] = {}
    if not q:
        return {"checks": {}, "met": None, "text": "patched not measured"}
    floor = floor_multiples(case)["patched"]
    if floor is None:
        checks["floor"] = {"met": None, "text": "no floor"}
    elif floor <= GOAL_FLOOR_MULTIPLE:
        checks["floor"] = {"met": True, "text": f"MET ({floor:.2f}x)"}
    else:
        checks["floor"] = {"met": False, "text": f"misses by {floor - GOAL_FLOOR_MULTIPLE:.2f}x ({floor:.2f}x of the "
                                                 f"floor, goal {GOAL_FLOOR_MULTIPLE}x)"}
    ratio = q["rank1_peak_over_final"]
    if ratio <= GOAL_PEAK_OVER_FINAL:
        checks["peak"] = {"met": True, "text": f"MET ({ratio:.3f})"}
    else:
        over = q["rank1_peak_mib"] - q["rank1_final_mib"]
        largest = (f", largest parameter {case['largest_param_bytes'] / MIB:,.1f} MiB"
                   if "largest_param_bytes" in case else "")
        checks["peak"] = {"met": False, "text": f"misses by {(ratio - GOAL_PEAK_OVER_FINAL) * 100:.1f} points "
                                                f"({ratio:.3f}, goal {GOAL_PEAK_OVER_FINAL}; {over:,.1f} MiB over "
                                                f"final{largest})"}
    for rival in RIVALS:
        r = sums[rival]
        if not r:
            checks[rival] = {"met": None, "text": f"{rival} not measured"}
            continue
        misses = []
        if q["prepare_seconds"] >= r["prepare_seconds"]:
            misses.append(f"time {q['prepare_seconds'] - r['prepare_seconds']:+.2f} s "
                          f"({q['prepare_seconds'] / r['prepare_seconds']:.2f}x {rival}'s)")
        if q["rank1_peak_mib"] >= r["rank1_peak_mib"]:
            misses.append(f"peak {q['rank1_peak_mib'] - r['rank1_peak_mib']:+,.1f} MiB "
                          f"({q['rank1_peak_mib'] / r['rank1_peak_mib']:.3f}x {rival}'s)")
        if misses:
            checks[rival] = {"met": False, "text": "misses: " + ", ".join(misses)}
        else:
            checks[rival] = {"met": True, "text": f"MET ({r['prepare_seconds'] / q['prepare_seconds']:.2f}x faster, "
                                                  f"peak {r['rank1_peak_mib'] - q['rank1_peak_mib']:,.1f} MiB lower)"}
    if q.get("exact") is False:
        checks["exact"] = {"met": False, "text": "patched's shards differ from the checkpoint"}
    states = [c["met"] for c in checks.values()]
    met = False if False in states else (None if None in states else True)
    missed = [k for k, c in checks.items() if c["met"] is False]
    text = {True: "MET", None: "incomplete"}.get(met, "NOT met: " + ", ".join(missed))
    return {"checks": checks, "met": met, "text": text}


def _fmt(value, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def table_rows(section: dict) -> list[list[str]]:
    """One row per case and path."""
    rows = [["model", "ranks", "path", "env", "shard MiB", "rank-1 peak MiB", "final MiB", "peak / final",
             "exact peak rise MiB", "prepare s", "x floor", "fully_shard s", "exact"]]
    for case in section["cases"]:
        multiples = floor_multiples(case)
        for path in PATHS:
            entry = case_paths(case).get(path, {"skipped": "not run"})
            s = entry.get("summary")
            head = [case["size"], str(case["ranks"]), path, PATHS[path][0]]
            if not s:
                rows.append(head + [entry.get("skipped", "skipped")] + ["-"] * 8)
                continue
            exact = {True: "yes", False: "NO", None: "-"}[s.get("exact")]
            rows.append(head + [f"{s['rank1_shard_mib']:,.1f}", f"{s['rank1_peak_mib']:,.1f}",
                                f"{s['rank1_final_mib']:,.1f}", f"{s['rank1_peak_over_final']:.3f}",
                                _fmt(s["rank1_exact_peak_rise_mib"], "{:,.1f}"), f"{s['prepare_seconds']:.2f}",
                                _fmt(multiples[path], "{:.2f}x"),
                                "in prepare" if PATHS[path][1] == "accelerate"
                                else _fmt(s.get("shard_seconds"), "{:.2f}"),
                                exact])
    return rows


def goal_rows(section: dict) -> list[list[str]]:
    """One row per case: each check of :func:`goal` and the verdict."""
    rows = [["model", "ranks", f"patched time <= {GOAL_FLOOR_MULTIPLE}x floor",
             f"patched peak / final <= {GOAL_PEAK_OVER_FINAL}", "ahead of official (time, peak)",
             "ahead of torch (time, peak)", "goal"]]
    for case in section["cases"]:
        g = goal(case)
        cell = [g["checks"].get(k, {"text": "-"})["text"] for k in ("floor", "peak", *RIVALS)]
        rows.append([case["size"], str(case["ranks"]), *cell, g["text"]])
    return rows


def table_lines(section: dict) -> list[str]:
    """The markdown section of build/bench/table.md (and build/bench/prepare.md)."""
    lines = ["## Accelerate FSDP2 `prepare` (patches/accelerate/0001): official, patched, torch's path, the floor", "",
             "Rank 0's weights (a memory-mapped float32 checkpoint) sharded over all ranks (gloo, CPU) by four paths, "
             "one torchrun job each: *official*: `accelerator.prepare(model, optimizer)` (FSDP2, "
             "`cpu_ram_efficient_loading`) with the official accelerate (env pristine); *patched*: the same with the "
             "headroom build (env patched); *torch*: `set_model_state_dict(model, full_sd, "
             "StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))` on the model sharded on `meta` in "
             "accelerate's FSDP units (env pristine, torch only); *floor*: one `dist.scatter` per parameter of its "
             "dim-0 shards into a buffer of the shard's size, nothing else (env pristine). Rank 1 in MiB. *peak*: "
             "highest RssAnon sampled through the step (`prepare`, `set_model_state_dict`, the scatters); *final*: "
             "RssAnon after it (the shard plus the process); *exact peak rise*: the kernel's peak RSS (VmHWM, reset "
             "right before the step) above the RSS before it; *prepare s*: the step's wall time, slowest rank; "
             "*x floor*: that time over the floor's; *fully_shard s*: sharding the model on `meta`, before and "
             "outside the timed step of torch and the floor (inside `prepare` for accelerate); *exact*: every "
             "rank's shards equal the checkpoint. One run per path on the machine of the run: times under a few "
             "seconds vary from run to run by as much as they differ.", ""]
    lines += md_table(table_rows(section), 4)
    lines += ["", f"Goal of the patch: within {GOAL_FLOOR_MULTIPLE}x of the floor's time, rank 1's peak within "
              f"{GOAL_PEAK_OVER_FINAL:.2f}x of its final, ahead of official and of torch on time and on peak "
              "(a miss says by how much: time in seconds and as a multiple of the rival's, peak in MiB).", ""]
    lines += md_table(goal_rows(section), 2)
    layouts = {same_layout(c) for c in section["cases"]}
    if layouts == {True}:
        lines += ["", "Every path sharded the model in the same FSDP units and placements (recorded by each worker)."]
    elif False in layouts:
        lines += ["", "**The paths' FSDP layouts differ** (see `layout` in each summary of results.json)."]
    lines.append("")
    return lines


def terminal_lines(section: dict) -> list[str]:
    out = []
    for case in section["cases"]:
        sums, multiples = summaries(case), floor_multiples(case)
        parts = [f"{p} {s['prepare_seconds']:.1f}s" + (f" ({multiples[p]:.2f}x floor)" if multiples[p] and p != "floor"
                                                        else "") + f", peak/final {s['rank1_peak_over_final']:.3f}"
                 for p, s in sums.items() if s]
        out.append(f"accelerate prepare, {case['size']}, {case['ranks']} ranks: " + "; ".join(parts)
                   + f"; goal: {goal(case)['text']}")
    return out


# --------------------------------------------------------------------------------------------------------------------
# Measurement


def estimated_bytes(path: str, meta: dict, ranks: int) -> int:
    """RAM a job needs at its peak: per rank the process (~600 MiB) and its shard, plus the largest full parameter on
    the ranks other than 0 where a path broadcasts whole parameters (official, torch); the checkpoint's pages (page
    cache, read by rank 0) once."""
    extra = meta["largest_param_bytes"] * (ranks - 1) if path in RIVALS else 0
    return int(meta["bytes"] * 2 + extra + ranks * 600 * MIB)


def checkpoint(root: Path, size: str, py: Path) -> tuple[Path, dict]:
    """build/bench/models/prepare-<size>-<hash>: model.pt + meta.json, made once (with the pristine env), reused."""
    return model_once(root, f"prepare-{size}", size, "meta.json", [py, WORKER, "make"], note=" (once)")


def run_job(root: Path, py: Path, path: str, ckpt: Path, ranks: int, size: str) -> dict:
    env, mode = PATHS[path]
    with ui.Timer() as t:
        # The worker sets up Accelerate's FSDP2 plugin itself: no FSDP variables
        ranks_data = torchrun(root, py, path, WORKER.name, ["run", mode, ckpt, RUN_DIR], ranks, f"prepare-{size}",
                              env_vars={})
    return {"env": env, "mode": mode, "ranks": ranks_data, "summary": env_summary(ranks_data),
            "seconds": round(t.seconds, 1)}


def run(root: Path, pythons: dict[str, Path], mode: str) -> dict:
    plan = PLAN[mode]
    cases = []
    for size in plan["sizes"]:
        for ranks in plan["ranks"]:
            ui.step("bench", f"accelerate prepare: {size} model, {ranks} ranks ({', '.join(PATHS)})")
            ckpt, meta = checkpoint(root, size, pythons["pristine"])
            case = {"size": size, "params": meta["params"], "model_bytes": meta["bytes"], "ranks": ranks,
                    "largest_param_bytes": meta["largest_param_bytes"], "config": SIZES[size], "paths": {}}
            for path, (env, _) in PATHS.items():
                reason = too_big(estimated_bytes(path, meta, ranks),
                                 f"accelerate prepare {size} x {ranks} ranks ({path})")
                if reason:
                    case["paths"][path] = {"env": env, "skipped": reason}
                    continue
                entry = run_job(root, pythons[env], path, ckpt, ranks, size)
                s = entry["summary"]
                ui.info(f"{path} ({env}): rank 1 peak {s['rank1_peak_mib']:,.1f} MiB, final "
                        f"{s['rank1_final_mib']:,.1f} MiB ({s['rank1_peak_over_final']:.3f}); "
                        f"{s['prepare_seconds']:.2f}s")
                if s["exact"] is False:
                    ui.warn(f"accelerate prepare {size} x {ranks} ranks ({path}): shards differ from the checkpoint: "
                            f"{entry['ranks'][1].get('mismatches')}")
                case["paths"][path] = entry
            case["floor_multiples"] = floor_multiples(case)
            case["goal"] = goal(case)
            case["same_layout"] = same_layout(case)
            if case["same_layout"] is False:
                ui.warn(f"accelerate prepare {size} x {ranks} ranks: the paths sharded the model differently")
            cases.append(case)
    section = {"cases": cases, "paths": {p: {"env": e, "mode": m} for p, (e, m) in PATHS.items()},
               "goal_peak_over_final": GOAL_PEAK_OVER_FINAL, "goal_floor_multiple": GOAL_FLOOR_MULTIPLE}
    atomic_write(root / OUT_DIR / "prepare.md", "\n".join(table_lines(section)))
    for line in terminal_lines(section):
        ui.info(line)
    return section
