"""The load phase of a training job, per node, the way the upstream report measured it (transformers #45649: "peak cpu
mem jumps from ~60 GB to ~480 GB", Qwen3-30B-A3B on 8 ranks): the node's total anonymous RSS, all its ranks read at
the same instants by one sampler per node, from the start of ``from_pretrained`` through Accelerate's ``prepare`` to
the end of the first optimizer step.

torchrun jobs (gloo) of bench_data/phase_worker.py in build/envs/pristine and build/envs/patched (the whole series,
accelerate/0001 included): one node of ``ranks`` ranks and two nodes as two torchrun agents on 127.0.0.1.

On CPU the shards live in host memory, as they do on GPUs with FSDP's CPU offload, so a node's floor is rank 0's full
copy (node 0 only) plus the node's own shards: 1x + 1x on 1 node x 8; 1x + 0.5x and 0.5x on 2 nodes x 4.
"""

from __future__ import annotations

from pathlib import Path

from ..ground import ui
from ..ground.errors import CommandFailed
from .common import ENVS, MIB
from .jobs import RUN_DIR, torchrun
from .node_loads import LOADS, QWEN3_30B_A3B_BYTES, checkpoint

# loads: the checkpoints (node_loads.LOADS: the ones that convert); layouts: (nodes, ranks per node)
PLAN = {"quick": {"loads": ("moe",), "layouts": ((1, 2),)},
        "full": {"loads": ("moe", "dense-cast"), "layouts": ((1, 8), (2, 4))}}
# What each load is, said whole (node_loads.LOADS describes dense-cast by the dense load beside it)
WHAT = {"moe": LOADS["moe"][0], "dense-cast": "dense Llama 60M, stored fp32, loaded with dtype=torch.bfloat16"}
# Target (in the bench, not in timed tests): the patched peak of node k <= its floor + 10% of the model
TARGET_MARGIN = 0.10
PHASES = ("from_pretrained", "prepare", "step")
LOADING = PHASES[:2]  # what the floor models: rank 0's copy and the shards, before the step's own memory
# The upstream report's figures for a node of 8 ranks, Qwen3-30B-A3B, in GB: before and after transformers #45050
SEED_GB = {"pristine": 480, "patched": 60}


def floor_x(node: int, nodes: int) -> float:
    """Node ``node``'s floor in models: rank 0's full copy (global rank 0 is on node 0) plus its own shards (1/nodes)."""
    return (1.0 if node == 0 else 0.0) + 1.0 / nodes


def floor_released_x(node: int, nodes: int) -> float:
    """The floor if rank 0 let go of each full parameter once its shards had left: the larger term, not the sum."""
    return max(1.0 if node == 0 else 0.0, 1.0 / nodes)


def node_summary(node_memory: dict, model_mib: float, node: int, nodes: int) -> dict:
    """One node's figures from its sampler's result (nodemem.NodeTotals.result): rises above the baseline, in MiB and
    in models, per phase and over the whole phase, beside the sum of the ranks' own peaks and the floors."""
    base = node_memory["baseline_mib"]
    phases = {name: {"peak_rise_mib": p["peak_mib"] - base, "peak_x": (p["peak_mib"] - base) / model_mib}
              for name, p in node_memory["phases"].items() if name in PHASES}
    rise = node_memory["peak_mib"] - base
    loading = max((phases[p]["peak_x"] for p in LOADING if p in phases), default=0.0)
    return {
        "node": node, "baseline_mib": base, "peak_rise_mib": rise, "peak_x": rise / model_mib,
        "peak_phase": node_memory["peak_phase"], "phases": phases, "loading_peak_x": loading,
        "sum_of_rank_peaks_rise_mib": node_memory["sum_of_rank_peaks_mib"] - base,
        "sum_of_rank_peaks_x": (node_memory["sum_of_rank_peaks_mib"] - base) / model_mib,
        "floor_x": floor_x(node, nodes), "floor_released_x": floor_released_x(node, nodes),
        "target_x": floor_x(node, nodes) + TARGET_MARGIN, "samples": node_memory["samples"],
    }


def summary(ranks: list[dict], nodes: int) -> dict:
    """The job's figures: each node's (from its local rank 0's sampler), the model, exactness, the slowest phases."""
    model = ranks[0]["model_bytes"] / MIB
    per_node = [node_summary(r["node_memory"], model, r["node"], nodes)
                for r in sorted(ranks, key=lambda r: r["node"]) if r.get("node_memory")]
    if len(per_node) != nodes:
        raise ValueError(f"{len(per_node)} node sampler(s) for {nodes} node(s)")
    exact = ranks[0]["exact"]
    return {"model_mib": model, "nodes": per_node, "fsdp_enabled": all(r["fsdp_enabled"] for r in ranks),
            "exact": bool(exact and exact["exact"]), "different": (exact or {}).get("different", []),
            "seconds": {p: max(r["seconds"][p] for r in ranks) for p in PHASES}}


def load_phase(root: Path, pythons: dict[str, Path], mode: str) -> dict:
    plan = PLAN[mode]
    out: dict = {"margin": TARGET_MARGIN, "cases": []}
    for name in plan["loads"]:
        what, ckpt_name, dtype = LOADS[name]
        ckpt, _ = checkpoint(root, ckpt_name, pythons["pristine"], mode)
        for nodes, per_node in plan["layouts"]:
            case = {"load": name, "what": WHAT.get(name, what), "nodes": nodes, "ranks_per_node": per_node, "envs": {}}
            for env in ENVS:
                ui.step("bench", f"load phase: {name}, {nodes} node(s) x {per_node} ranks, {env}")
                ranks = torchrun(root, pythons[env], env, "phase_worker.py", [ckpt, RUN_DIR, dtype], per_node,
                                 f"phase-{name}", nodes=nodes)
                s = summary(ranks, nodes)
                if not s["fsdp_enabled"]:
                    raise CommandFailed(f"load_phase {name} ({env}): transformers did not see FSDP enabled; void")
                for r in ranks:  # the series stay in the run folder's rank files; results.json keeps the figures
                    if r.get("node_memory"):
                        r["node_memory"] = {k: v for k, v in r["node_memory"].items() if k != "series"}
                case["envs"][env] = {"ranks": ranks, "summary": s}
                for n in s["nodes"]:
                    ui.info(f"{env}: node {n['node']}: peak {n['peak_rise_mib']:,.1f} MiB = {n['peak_x']:.2f}x the "
                            f"model ({s['model_mib']:,.1f} MiB) in {n['peak_phase']}; floor {n['floor_x']:.2f}x; "
                            f"sum of rank peaks {n['sum_of_rank_peaks_x']:.2f}x; exact: {'yes' if s['exact'] else 'NO'}")
            out["cases"].append(case)
    return out


def targets(section: dict) -> list[str]:
    """Per case and node, two lines: the patched peak of the whole phase, then its peak to the end of ``prepare`` (what
    the floor models), each against the floor + the margin (met / NOT met), and how far official is above that line;
    a patched build that is not exact meets neither."""
    lines = []
    for case in section["cases"]:
        p, q = (case["envs"][e]["summary"] for e in ENVS)
        for a, b in zip(p["nodes"], q["nodes"]):
            for what, key, where in (("whole phase", "peak_x", f"; at its highest in {b['peak_phase']}"),
                                     ("to the end of prepare", "loading_peak_x", "")):
                ok = b[key] <= b["target_x"] and q["exact"]
                lines.append(
                    f"{'met' if ok else 'NOT met'}: {case['load']}, {case['nodes']} x {case['ranks_per_node']}, node "
                    f"{b['node']}, {what}: patched peak {b[key]:.2f}x the model (target <= floor {b['floor_x']:.2f}x "
                    f"+ {section['margin']:.2f}x = {b['target_x']:.2f}x{where}){'' if q['exact'] else ', NOT exact'}; "
                    f"official {a[key]:.2f}x, {a[key] - a['target_x']:+.2f}x from that line")
    return lines


def _x(n: dict, key: str = "peak_x") -> str:
    return f"{n[key] * n['peak_rise_mib'] / n['peak_x']:,.1f} ({n[key]:.2f}x)" if n["peak_x"] else f"{n[key]:.2f}x"


def projection(section: dict) -> list[list[str]]:
    """Qwen3-30B-A3B on a node of 8 ranks (the seed's setup): node 0's measured peak of the 1-node case to the end of
    ``prepare``, in models, x 61 GB, beside the seed's 480 -> 60 GB; one row per load. The step is left out: at these
    sizes its memory is mostly each process's own (autograd, gloo, the allocator), which does not grow with the model."""
    rows = [["load", "layout measured", "seed: official GB", "projected official GB", "seed: patched GB",
             "projected patched GB", "floor GB", "floor GB if rank 0 let go"]]
    gb = QWEN3_30B_A3B_BYTES / 1e9
    for case in section["cases"]:
        if case["nodes"] != 1:
            continue
        a, b = (case["envs"][e]["summary"]["nodes"][0] for e in ENVS)
        rows.append([case["load"], f"1 x {case['ranks_per_node']}", str(SEED_GB["pristine"]),
                     f"{a['loading_peak_x'] * gb:,.0f}", str(SEED_GB["patched"]),
                     f"{b['loading_peak_x'] * gb:,.0f}", f"{b['floor_x'] * gb:,.0f}",
                     f"{b['floor_released_x'] * gb:,.0f}"])
    return rows


def table_lines(section: dict, md_table) -> list[str]:
    rows = [["load", "nodes x ranks", "model MiB", "node", "floor", "to the end of prepare: official", "patched",
             "whole phase: official", "patched", "patched at its highest in", "sum of rank peaks: official",
             "patched", "exact: official", "patched", "s (load / prepare / step), patched"]]
    for case in section["cases"]:
        p, q = (case["envs"][e]["summary"] for e in ENVS)
        for a, b in zip(p["nodes"], q["nodes"]):
            rows.append([case["load"], f"{case['nodes']} x {case['ranks_per_node']}", f"{p['model_mib']:,.1f}",
                         str(b["node"]), f"{b['floor_x']:.2f}x", _x(a, "loading_peak_x"), _x(b, "loading_peak_x"),
                         _x(a), _x(b), b["peak_phase"] or "-",
                         f"{a['sum_of_rank_peaks_x']:.2f}x", f"{b['sum_of_rank_peaks_x']:.2f}x",
                         "yes" if p["exact"] else "NO", "yes" if q["exact"] else "NO",
                         " / ".join(f"{q['seconds'][ph]:.1f}" for ph in PHASES)])
    lines = ["## The load phase, per node: `from_pretrained`, `prepare`, the first optimizer step", "",
             "RssAnon in MiB: the node's total (all its ranks read at the same instants, one sampler per node) above "
             "its total before `from_pretrained`, at its highest, and in models (x): *to the end of prepare* from the "
             "start of `from_pretrained` through Accelerate's `prepare`; *whole phase* on to the end of the first "
             "optimizer step (SGD, 16 tokens, the layers all-gathered and their gradients in host memory too). "
             "*floor*: rank 0's full copy (node 0) plus the node's own shards; *sum of rank peaks*: what adding each "
             "rank's own peak would have said.", ""]
    lines += md_table(rows, text_columns=2)
    lines += ["", "Loads: " + "; ".join(f"*{name}*: {WHAT.get(name, LOADS[name][0])}" for name in dict.fromkeys(
        c["load"] for c in section["cases"])) + "."]
    if any(c["nodes"] == 1 for c in section["cases"]):
        lines += ["", f"Projected to Qwen3-30B-A3B ({QWEN3_30B_A3B_BYTES / 1e9:.0f} GB in bf16) on a node of 8 ranks "
                      "from node 0's measured peak to the end of `prepare` in models (the processes' own memory left out; "
                      "the step is not projected: at these sizes its memory is mostly each process's own, which does "
                      "not grow with the model), beside the upstream report's figures:", ""]
        lines += md_table(projection(section), text_columns=2)
    lines += ["", *(f"- {line}" for line in targets(section)), ""]
    return lines
