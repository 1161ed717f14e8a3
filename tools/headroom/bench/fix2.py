"""Fix 2 on CPU: torchrun (gloo) jobs of bench_data/fsdp_worker.py with FSDP ``cpu_ram_efficient_loading``."""

from __future__ import annotations

from pathlib import Path

from ..ground import ui
from ..ground.errors import CommandFailed
from .common import DATA, ENVS, MIB, PLAN, SIZES, SWEEP_RANKS, model_once
from .jobs import RUN_DIR, torchrun
from .machine import too_big
from .stats import case_ratio, env_summary


def estimated_bytes(env: str, model_bytes: int, ranks: int) -> int:
    """RAM a fix 2 job needs at its peak (rank 0 ~0.8x the model, other ranks ~2.2x pristine / ~1.2x patched)."""
    per_rank = 2.2 if env == "pristine" else 1.2
    return int((0.8 + (ranks - 1) * per_rank) * model_bytes + ranks * 450 * MIB)


def checkpoint(root: Path, size: str, py: Path) -> tuple[Path, dict]:
    """build/bench/models/<size>-<hash>: made once with the pristine env, reused."""
    return model_once(root, size, size, "headroom-bench.json", [py, DATA / "make_model.py"])


def run_fsdp(root: Path, py: Path, env: str, ckpt: Path, ranks: int, tag: str) -> dict:
    with ui.Timer() as t:
        ranks_data = torchrun(root, py, env, "fsdp_worker.py", [ckpt, RUN_DIR], ranks, tag)
    summ = env_summary(ranks_data)
    if not summ["fsdp_enabled"]:
        raise CommandFailed(f"torchrun ({env}, {tag}): transformers did not see FSDP enabled; the measurement is void")
    return {"ranks": ranks_data, "summary": summ, "seconds": round(t.seconds, 1)}


def fix2(root: Path, pythons: dict[str, Path], mode: str, done: dict | None = None) -> dict:
    """The size sweep and the per-rank scaling. ``done``: {(size, ranks, env): entry} already measured in this run
    (the releases section runs the same job for the pinned release and the patched build): taken, not re-run."""
    done = done or {}
    plan = PLAN[mode]
    cases: list[tuple[str, int]] = [(s, SWEEP_RANKS) for s in plan["sizes"]]
    if plan["scaling_size"]:
        cases += [(plan["scaling_size"], n) for n in plan["scaling_ranks"]]
    out = []
    for size, ranks in cases:
        ui.step("bench", f"FSDP loading: {size} model, {ranks} ranks")
        ckpt, meta = checkpoint(root, size, pythons["pristine"])
        case = {"size": size, "params": meta["params"], "model_bytes": meta["bytes"],
                "shard_bytes": meta["bytes"] // ranks, "ranks": ranks, "dtype": meta["dtype"],
                "config": SIZES[size], "envs": {}}
        for env in ENVS:
            if (size, ranks, env) in done:
                case["envs"][env] = done[(size, ranks, env)]
                ui.info(f"{env}: measured in this run's releases section (same model, ranks and environment)")
                continue
            reason = too_big(estimated_bytes(env, meta["bytes"], ranks), f"FSDP loading {size} x {ranks} ranks ({env})")
            if reason:
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
