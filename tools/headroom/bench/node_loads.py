"""transformers/0002 on CPU: what each rank of a node commits in ``from_pretrained`` under FSDP
``cpu_ram_efficient_loading``, for the loads that convert (a dtype cast, a mixture of experts whose experts are fused on
load) beside the one that does not (a dense checkpoint in its own dtype: views on the memory-mapped file).

torchrun jobs (gloo) of bench_data/load_worker.py in build/envs/pristine and build/envs/patched: one node of ``ranks``
ranks, and (full mode) two nodes started as two torchrun agents on 127.0.0.1 (``--nnodes=2 --node-rank=0|1``).
"""

from __future__ import annotations

from pathlib import Path

from ..ground import ui
from ..ground.errors import CommandFailed
from .common import DATA, ENVS, MIB, model_once
from .jobs import RUN_DIR, torchrun

# The mixture of experts: Qwen3-MoE's architecture (the model of transformers #43749), 8 layers x 32 experts, in bf16.
# Each rank that loads nothing still grows by ~1 MiB (the process's own allocations, whatever the model's size), so
# the full bench measures a model large enough for the per-node target to be about the model: ~400 MiB, quick ~100 MiB.
MOE = {"model_type": "qwen3_moe", "dtype": "bfloat16", "vocab_size": 1024, "intermediate_size": 512,
       "num_hidden_layers": 8, "num_experts": 32, "num_experts_per_tok": 2, "num_attention_heads": 4,
       "num_key_value_heads": 2, "head_dim": 64, "tie_word_embeddings": False}
MOE_SIZES = {"quick": {"hidden_size": 256, "moe_intermediate_size": 256},
             "full": {"hidden_size": 512, "moe_intermediate_size": 512}}
# name: (what it is, checkpoint, dtype of the load)
LOADS = {
    "dense": ("dense Llama 60M, stored fp32, loaded as stored", "60M", "auto"),
    "dense-cast": ("the same, loaded with dtype=torch.bfloat16", "60M", "bfloat16"),
    "moe": ("Qwen3-MoE 8 layers x 32 experts, stored bf16, loaded as stored", "moe", "auto"),
}
# ranks: one node; nodes: (nodes, ranks per node) of the multi-node job, measured for the loads named
PLAN = {"quick": {"ranks": 2, "nodes": (2, 1), "node_loads": ("moe",)},
        "full": {"ranks": 8, "nodes": (2, 4), "node_loads": ("moe", "dense-cast")}}
# Qwen3-30B-A3B: 30.5B parameters in bf16, 8 ranks per node (the setup of #45649 and #43749)
QWEN3_30B_A3B_BYTES = 30.5e9 * 2
NODE_RANKS = 8
# Targets (in the bench, not in timed tests): patched node total <= 1.05x the model, every other rank <= 2% of it
TARGET_NODE_TOTAL = 1.05
TARGET_OTHER_RANK = 0.02


def checkpoint(root: Path, name: str, py: Path, mode: str) -> tuple[Path, dict]:
    """build/bench/models/<name>-<hash>: made once with the pristine env, reused."""
    return model_once(root, name, "60M", "headroom-bench.json", [py, DATA / "make_model.py"],
                      config={**MOE, **MOE_SIZES[mode]} if name == "moe" else None)


def summary(ranks: list[dict]) -> dict:
    """Per node: the sum of the ranks' rises across from_pretrained, rank 0's, the largest other rank's peak, the
    slowest load; all in MiB and as a fraction of the model."""
    model = ranks[0]["model_bytes"] / MIB
    nodes = {}
    for r in ranks:
        nodes.setdefault(r["node"], []).append(r)
    per_node = []
    for node, members in sorted(nodes.items()):
        other_peak = max((r["peak_rise_mib"] for r in members if r["rank"] != 0), default=0.0)
        total = sum(r["rise_mib"] for r in members)
        per_node.append({
            "node": node, "ranks": len(members), "total_rise_mib": total, "total_x_model": total / model,
            "max_other_peak_mib": other_peak, "max_other_peak_x_model": other_peak / model,
            "max_load_seconds": max(r["load_seconds"] for r in members),
            "min_load_seconds": min(r["load_seconds"] for r in members),
        })
    return {"model_mib": model, "fsdp_enabled": all(r["fsdp_enabled"] for r in ranks), "nodes": per_node,
            "rank0_rise_mib": next(r["rise_mib"] for r in ranks if r["rank"] == 0)}


def project(s: dict) -> dict:
    """Qwen3-30B-A3B on a node of 8 ranks, from the measured fractions of the first node: rank 0's rise and the mean
    rise of its other ranks."""
    node0 = s["nodes"][0]
    rank0 = s["rank0_rise_mib"] / s["model_mib"]
    other = (node0["total_rise_mib"] - s["rank0_rise_mib"]) / s["model_mib"] / max(node0["ranks"] - 1, 1)
    return {"node_gb": (rank0 + (NODE_RANKS - 1) * other) * QWEN3_30B_A3B_BYTES / 1e9}


def node_loads(root: Path, pythons: dict[str, Path], mode: str) -> dict:
    plan = PLAN[mode]
    out: dict = {"ranks": plan["ranks"], "cases": []}
    for name, (what, ckpt_name, dtype) in LOADS.items():
        ckpt, _ = checkpoint(root, ckpt_name, pythons["pristine"], mode)
        layouts = [(1, plan["ranks"])] + ([plan["nodes"]] if plan["nodes"] and name in plan["node_loads"] else [])
        for nodes, per_node in layouts:
            case = {"load": name, "what": what, "nodes": nodes, "ranks_per_node": per_node, "envs": {}}
            for env in ENVS:
                ui.step("bench", f"transformers/0002: {name}, {nodes} node(s) x {per_node} ranks, {env}")
                ranks = torchrun(root, pythons[env], env, "load_worker.py", [ckpt, RUN_DIR, dtype], per_node,
                                 f"loads-{name}", nodes=nodes)
                s = summary(ranks)
                if not s["fsdp_enabled"]:
                    raise CommandFailed(f"node_loads {name} ({env}): transformers did not see FSDP enabled; void")
                s["projection"] = project(s) if nodes == 1 else None
                case["envs"][env] = {"ranks": ranks, "summary": s}
                for n in s["nodes"]:
                    ui.info(f"{env}: node {n['node']}: {n['total_rise_mib']:,.1f} MiB = {n['total_x_model']:.2f}x "
                            f"the model ({s['model_mib']:,.1f} MiB); largest other rank peak "
                            f"{100 * n['max_other_peak_x_model']:.1f}%; from_pretrained "
                            f"{n['min_load_seconds']:.1f}-{n['max_load_seconds']:.1f} s")
            out["cases"].append(case)
    return out


def targets(section: dict) -> list[str]:
    """The bench's goals for the patched build at one node (``full`` mode: 8 ranks); a line each, met or not."""
    lines = []
    for case in section["cases"]:
        if case["nodes"] != 1 or case["load"] == "dense":
            continue
        n = case["envs"]["patched"]["summary"]["nodes"][0]
        ok = n["total_x_model"] <= TARGET_NODE_TOTAL and n["max_other_peak_x_model"] <= TARGET_OTHER_RANK
        lines.append(f"{'met' if ok else 'NOT met'}: {case['load']}, {n['ranks']} ranks: node total "
                     f"{n['total_x_model']:.3f}x the model (target <= {TARGET_NODE_TOTAL}x), largest other rank "
                     f"{100 * n['max_other_peak_x_model']:.2f}% (target <= {100 * TARGET_OTHER_RANK:.0f}%)")
    return lines


def table_lines(section: dict, md_table) -> list[str]:
    rows = [["load", "nodes x ranks", "model MiB", "node", "node total: official", "patched",
             "largest other rank peak: official", "patched", "from_pretrained s (slowest rank): official", "patched"]]
    for case in section["cases"]:
        p, q = (case["envs"][e]["summary"] for e in ENVS)
        for a, b in zip(p["nodes"], q["nodes"]):
            rows.append([case["load"], f"{case['nodes']} x {case['ranks_per_node']}", f"{p['model_mib']:,.1f}",
                         str(a["node"]),
                         f"{a['total_rise_mib']:,.1f} ({a['total_x_model']:.2f}x)",
                         f"{b['total_rise_mib']:,.1f} ({b['total_x_model']:.2f}x)",
                         f"{100 * a['max_other_peak_x_model']:.1f}%", f"{100 * b['max_other_peak_x_model']:.1f}%",
                         f"{a['max_load_seconds']:.1f}", f"{b['max_load_seconds']:.1f}"])
    lines = ["## transformers/0002: FSDP `cpu_ram_efficient_loading`, what each node commits in `from_pretrained`", "",
             "RssAnon in MiB (anonymous memory: a memory-mapped checkpoint's pages are not counted). *node total*: "
             "the sum of the node's ranks' rises across `from_pretrained`; *largest other rank peak*: the highest "
             "RssAnon rise sampled during `from_pretrained` on any rank but global rank 0, in % of the model.", ""]
    lines += md_table(rows, text_columns=2)
    lines += ["", "Loads: " + "; ".join(f"*{k}*: {v[0]}" for k, v in LOADS.items()) + "."]
    proj = [(c["load"], c["envs"]["pristine"]["summary"]["projection"], c["envs"]["patched"]["summary"]["projection"])
            for c in section["cases"] if c["nodes"] == 1]
    lines += ["", f"Projected to Qwen3-30B-A3B ({QWEN3_30B_A3B_BYTES / 1e9:.0f} GB in bf16) on a node of {NODE_RANKS} "
                  "ranks, from rank 0's and the other ranks' measured fractions of the model: "
              + "; ".join(f"{name} {p['node_gb']:,.0f} GB official, {q['node_gb']:,.0f} GB patched" for name, p, q in proj)
              + "."]
    lines += ["", *(f"- {line}" for line in targets(section)), ""]
    return lines


def measured_line(section: dict | None, env: str) -> str:
    """What the environment line says of the loader: the largest other rank's peak, per load, as measured."""
    if not section:
        return "loader: not measured in this run"
    parts = [f"{c['load']} {100 * c['envs'][env]['summary']['nodes'][0]['max_other_peak_x_model']:.0f}%"
             for c in section["cases"] if c["nodes"] == 1]
    return "another rank commits (peak, % of the model, measured below): " + ", ".join(parts)
