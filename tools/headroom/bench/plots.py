"""The PNG plots of a results dict (matplotlib, Agg, written atomically)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from ..ground import proc, ui
from ..ground.fsutil import atomic_write
from .common import ENVS, REQUIREMENTS, SWEEP_RANKS
from .stats import mib


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
    sweep = [c for c in results["fsdp_loading"]["cases"] if c["ranks"] == results["fsdp_loading"].get("sweep_ranks", SWEEP_RANKS)]
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
        ax.set_title(f"FSDP loading: rank 1 CPU memory, {sweep[0]['ranks']} ranks, FSDP2 cpu_ram_efficient_loading")
        written.append(_finish(plt, fig, ax, out / "fsdp-loading-rank1-memory.png"))
    by_size: dict[str, list[dict]] = {}
    for c in results["fsdp_loading"]["cases"]:
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
        ax.set_title(f"FSDP loading: cost per rank, {scaling[0]['size']} model ({model:,.0f} MiB)")
        written.append(_finish(plt, fig, ax, out / "fsdp-loading-per-rank.png"))
    if results.get("releases", {}).get("rows"):
        written.append(plot_releases(results["releases"], out, plt))
    return written


def plot_releases(section: dict, out: Path, plt) -> Path:
    """Rank 1's rise across from_pretrained by release (bars, % of the model), the correctness verdict on each bar."""
    rows = section["rows"]
    model = mib(section["model_bytes"])
    fig, ax = plt.subplots(figsize=(7, 4.4))
    xs = list(range(len(rows)))
    for x, row in zip(xs, rows):
        summary = row["memory"].get("summary")
        c = row["correctness"]
        colour = "#27ae60" if row["kind"] == "patched" else "#c0392b" if summary and \
            summary["rank1_load_rise_mib"] > 0.5 * model else "#e67e22" if c.get("aliased") else "#7f8c8d"
        if summary is None:
            ax.text(x, 2, "not\ninstallable" if row.get("not_installable") else "n/a", ha="center", va="bottom",
                    fontsize=8)
            continue
        pct = 100 * summary["rank1_load_rise_mib"] / model
        ax.bar(x, pct, color=colour, width=0.6)
        note = "n/a" if "aliased" not in c else "aliased" if c["aliased"] else "exact" if c["exact"] else "differs"
        ax.text(x, pct + 2, f"{summary['rank1_load_rise_mib']:,.0f} MiB\n{note}", ha="center", va="bottom", fontsize=8)
    ax.axhline(100, color="black", linewidth=1, alpha=0.3, label="one full copy of the model")
    ax.set_xticks(xs)
    ax.set_xticklabels([r["label"].replace("transformers ", "").replace(" + accelerate ", "\nacc ") for r in rows],
                       fontsize=8)
    ax.set_ylim(0, 130)
    ax.set_ylabel("rank 1 RssAnon rise in from_pretrained (% of model)")
    ax.set_xlabel("transformers release (optimizer check under each bar's figure)")
    ax.set_title(f"FSDP loading by release: {model:,.0f} MiB model, {section['ranks']} ranks, FSDP2 cpu_ram_efficient_loading",
                 fontsize=10)
    return _finish(plt, fig, ax, out / "fsdp-loading-releases.png")
