"""The pure parts of the releases section: the one-node sums, the projection to the upstream report's setup, the tables.

The upstream report: 8 ranks per node loading a 30B model in bf16, CPU RAM 60 GB -> 480 GB (8x). Its accounting is
one full copy on the node (rank 0's) plus whatever every other rank adds; the projection below applies the measured
rank-1 rise, as a fraction of the model, to that setup.
"""

from __future__ import annotations

from .common import MIB
from .stats import fmt

REPORT = {"params": 30e9, "bytes_per_param": 2, "ranks": 8, "before_gb": 60, "after_gb": 480}
PROJECT_RANKS = (8, 16)
GB = 1e9


def node_summary(ranks: list[dict]) -> dict:
    """From the per-rank results of a load-only job: sums over all ranks (MiB)."""
    return {
        "node_peak_mib": round(sum(r["load_peak_mib"] for r in ranks), 1),
        "node_after_load_mib": round(sum(r["rss_after_load_mib"] for r in ranks), 1),
        "node_before_mib": round(sum(r["rss_before_mib"] for r in ranks), 1),
        "node_rise_mib": round(sum(r["load_rise_mib"] for r in ranks), 1),
        "rank0_rise_mib": round(next(r["load_rise_mib"] for r in ranks if r["rank"] == 0), 1),
        "max_other_rank_rise_mib": round(max((r["load_rise_mib"] for r in ranks if r["rank"] != 0), default=0.0), 1),
    }


def rise_fraction(row: dict, model_bytes: int) -> float | None:
    """Rank 1's rise across from_pretrained as a fraction of the model; None when not measured."""
    summary = row.get("memory", {}).get("summary")
    return None if summary is None else summary["rank1_load_rise_mib"] * MIB / model_bytes


def projection(section: dict) -> list[dict]:
    """Per row: node CPU RAM (GB) for the report's model on 8 and 16 ranks: one copy + (ranks - 1) x measured rise."""
    model_gb = REPORT["params"] * REPORT["bytes_per_param"] / GB
    out = []
    for row in section["rows"]:
        frac = rise_fraction(row, section["model_bytes"])
        entry = {"label": row["label"], "rank1_rise_fraction": None if frac is None else round(frac, 4)}
        for n in PROJECT_RANKS:
            entry[f"node_gb_{n}_ranks"] = None if frac is None else round(model_gb * (1 + (n - 1) * max(frac, 0.0)), 1)
        out.append(entry)
    return out


def validate(section: dict) -> list[str]:
    problems = []
    rows = section.get("rows")
    if not isinstance(rows, list) or not rows:
        return ["releases.rows is empty"]
    for i, row in enumerate(rows):
        for key in ("label", "kind", "memory", "correctness"):
            if key not in row:
                problems.append(f"releases.rows[{i}].{key} missing")
        for part in ("memory", "correctness"):
            entry = row.get(part)
            if isinstance(entry, dict) and not ({"summary", "n/a"} & entry.keys() if part == "memory"
                                                else {"aliased", "n/a"} & entry.keys()):
                problems.append(f"releases.rows[{i}].{part}: neither a measurement nor n/a")
        if row.get("kind") == "release" and not row.get("sha256"):
            problems.append(f"releases.rows[{i}].sha256 missing")
    if not any(r.get("kind") == "patched" for r in rows):
        problems.append("releases: no patched row")
    return problems


def _reason(text: str) -> str:
    return "n/a: " + text.split(" (torchrun ")[0].replace("|", "/")[:120]


def accelerate(row: dict) -> str:
    """The accelerate of a row: what its environment held (the probe), else what was asked for, else "?"."""
    return row.get("packages", {}).get("accelerate") or row.get("accelerate") or "?"


def rows(section: dict) -> list[list[str]]:
    model = section["model_bytes"]
    out = [["build", "accelerate", "wheel sha256", "rank-1 rise MiB", "% of model", "rank-1 peak in prepare MiB",
            "optimizer params aliased", "max abs diff vs 1 process", "verdict"]]
    for row in section["rows"]:
        m, c = row["memory"], row["correctness"]
        frac = rise_fraction(row, model)
        cells = [row["label"], accelerate(row), f"`{row['sha256'][:12]}`" if row.get("sha256") else "(dist/ wheel)"]
        if row.get("not_installable"):  # its environment could not be made: nothing was measured
            out.append(cells + [row["not_installable"].replace("|", "/"), "-", "-", "-", "-", "not installable"])
            continue
        if "summary" in m:
            cells += [fmt(m["summary"]["rank1_load_rise_mib"]), f"{100 * frac:.0f}%",
                      fmt(m["summary"]["rank1_prepare_peak_mib"])]
        else:
            cells += [_reason(m["n/a"]), "-", "-"]
        if "aliased" in c:
            cells += ["yes" if c["aliased"] else "no", f"{c['max_abs_diff']:.2g}"]
        else:
            cells += [_reason(c["n/a"]), "-"]
        cells.append(verdict(frac, c))
        out.append(cells)
    return out


def verdict(frac: float | None, correctness: dict) -> str:
    if frac is None or "aliased" not in correctness:
        return "incomplete"
    memory = "full copy per rank" if frac > 0.5 else "small" if frac < 0.1 else f"{100 * frac:.0f}% per rank"
    right = "exact" if correctness["exact"] and not correctness["aliased"] else \
        "aliased" if correctness["aliased"] else "differs"
    return f"{memory}, {right}"


def node_rows(section: dict) -> list[list[str]]:
    nd = section["node"]
    out = [["build", "ranks", "node total MiB (sum of peaks)", "sum of rises MiB", "max rise of a rank > 0 MiB"]]
    runs = nd.get("runs", {})
    for label in sorted(runs, key=lambda k: k == "patched"):  # the affected release first, then the patched build
        run = runs[label]
        if "node_peak_mib" in run:
            out.append([label, str(nd["ranks"]), fmt(run["node_peak_mib"], 0), fmt(run["node_rise_mib"], 0),
                        fmt(run["max_other_rank_rise_mib"], 0)])
        else:
            out.append([label, str(nd["ranks"]), run.get("skipped") or _reason(run.get("n/a", "?")), "-", "-"])
    return out


def node_ratio(section: dict, key: str = "node_peak_mib") -> float | None:
    """Affected release / patched build, of the node totals (or of ``key``); None unless both were measured."""
    runs = section["node"].get("runs", {})
    affected = next((k for k in runs if k != "patched"), None)
    if affected is None or key not in runs[affected] or key not in runs.get("patched", {}):
        return None
    return runs[affected][key] / max(runs["patched"][key], 1.0)


def projection_rows(section: dict) -> list[list[str]]:
    out = [["build", "measured rank-1 rise / model"] + [f"{n} ranks: node GB" for n in PROJECT_RANKS]
           + [f"x vs one copy ({n} ranks)" for n in PROJECT_RANKS]]
    model_gb = REPORT["params"] * REPORT["bytes_per_param"] / GB
    for p in section["projection"]:
        if p["rank1_rise_fraction"] is None:
            out.append([p["label"], "n/a"] + ["-"] * (2 * len(PROJECT_RANKS)))
            continue
        out.append([p["label"], f"{p['rank1_rise_fraction']:.3f}"]
                   + [fmt(p[f"node_gb_{n}_ranks"], 0) for n in PROJECT_RANKS]
                   + [f"{p[f'node_gb_{n}_ranks'] / model_gb:.1f}x" for n in PROJECT_RANKS])
    return out


def lines(section: dict, md) -> list[str]:
    """The markdown of the releases section; ``md`` turns rows into a table."""
    out = ["## FSDP loading across transformers releases (same model files, same run)", ""]
    out.append(f"{section['params'] / 1e6:,.0f}M-parameter float32 Llama ({section['model_bytes'] / MIB:,.1f} MiB), "
               f"{section['ranks']} CPU ranks, FSDP2 `cpu_ram_efficient_loading`. *rank-1 rise*: RssAnon across "
               "`from_pretrained`; *peak in prepare*: highest RssAnon through Accelerate's `prepare` (absolute). "
               f"Correctness: a checkpoint without the token-classification head (`score.weight`, `score.bias` missing) "
               f"through `prepare` and {section['correctness_steps']} SGD steps on one batch; *aliased*: a sharded "
               "parameter appears twice in the optimizer, or one is missing from it; *max abs diff*: largest "
               "difference of any parameter from the same steps in a single process (exact: <= "
               f"{section['exact_tolerance']:g}). *accelerate*: the official accelerate release in that environment "
               "(requirements/bench-env.txt's unless the release list names one, e.g. `5.23.0@1.15.0`; the patched "
               "build's own for *patched*); *not installable*: the environment could not be made, with the "
               "requirement pip found no match for and the newest version of it on the index. Wheel sha256 from "
               "the index's metadata, verified on download (full hashes in results.json).")
    out += [""] + md(rows(section)) + [""]
    nd = section["node"]
    out += [f"### One node: {nd['ranks']} ranks" if "ranks" in nd else "### One node", ""]
    if "skipped" in nd:
        out += [f"skipped: {nd['skipped']}", ""]
    else:
        out.append(f"{nd['params'] / 1e6:,.0f}M-parameter model ({nd['model_bytes'] / MIB:,.1f} MiB), all ranks on "
                   "this machine, `from_pretrained` only. Node total: the sum over ranks of each rank's peak RssAnon "
                   "during `from_pretrained` (each process also holds ~250 MiB of torch and transformers).")
        out += [""] + md(node_rows(section)) + [""]
        ratio = node_ratio(section)
        if ratio is not None:
            out += [f"Ratio of the node totals: {ratio:.1f}x here, against the upstream report's "
                    f"{REPORT['after_gb']}/{REPORT['before_gb']} = {REPORT['after_gb'] / REPORT['before_gb']:.0f}x "
                    "(30B bf16, 8 ranks), where the model dwarfs the per-process baseline; of the rises alone: "
                    f"{node_ratio(section, 'node_rise_mib'):,.0f}x.", ""]
    out += ["### Projected to the upstream report's setup (30B parameters, bf16: 60 GB)", "",
            "Node CPU RAM = one full copy (rank 0's, as in the report) + (ranks - 1) x the measured rank-1 rise "
            "as a fraction of the model. Per-process baselines and Accelerate's broadcast buffers are left out.", ""]
    out += md(projection_rows(section)) + [""]
    return out
