"""Draws load-phase-moe-1x8.png from the rank files in this folder: cd reports/2026-12-06-cpu-load-phase && python plot.py load-phase-moe-1x8.png"""
import json, sys
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
out = sys.argv[1]
runs = [("official 1.16.0 / 5.23.0", "runs/phase-moe-8ranks-pristine"),
        ("patched, 0001 before the release", "before-release/phase-moe-8ranks-patched"),
        ("patched (the whole series)", "runs/phase-moe-8ranks-patched")]
fig, axes = plt.subplots(1, 3, figsize=(15, 4.5), sharey=True)
for ax, (label, d) in zip(axes, runs):
    r = json.load(open(f"{d}/rank0.json"))
    nm = r["node_memory"]; base = nm["baseline_mib"]; model = r["model_bytes"] / 2**20
    t0 = nm["series"][0][0]
    xs = [t - t0 for t, _ in nm["series"]]; ys = [(v - base) / model for _, v in nm["series"]]
    ax.plot(xs, ys, lw=1)
    for name, p in nm["phases"].items():
        if name != "before":
            ax.axvline(p["peak_t"] - t0, color="grey", lw=0.5, ls=":")
    ax.axhline(2.0, color="red", lw=0.8, ls="--", label="floor 2.0x (rank 0's copy + the shards)")
    ax.axhline(1.0, color="green", lw=0.8, ls="--", label="1.0x (the larger term)")
    ax.set_title(label, fontsize=10); ax.set_xlabel("seconds (load, prepare, step; dotted: each phase's peak)")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("node 0 RssAnon above its start, x the model (392 MiB)")
axes[0].legend(fontsize=8)
fig.suptitle("Qwen3-MoE on 1 node x 8 CPU ranks: the node's total, one sampler, 2026-12-06", fontsize=11)
fig.tight_layout(); fig.savefig(out, dpi=100)
