"""The results: their schema, the markdown table (build/bench/table.md) and the lines printed at the end."""

from __future__ import annotations

from . import load_phase, node_loads, prepare, releases_report
from .common import ENVS, MODES, RATIO_FLOOR_MIB, SCHEMA, md_table
from .stats import case_ratio, fmt, format_ratio, mib, ratio


REQUIRED = {
    "schema": int, "mode": str, "date": str, "seconds": (int, float), "environment": dict,
    "fsdp_loading": dict, "releases": dict, "trainer_best_adapter": dict, "peft_load_adapter": dict, "pipeline": dict,
}
CASE_KEYS = ("size", "params", "model_bytes", "shard_bytes", "ranks", "envs")
# What `headroom bench --part` runs alone, and the section of results.json that then holds it (and nothing else)
PART_SECTIONS = {"releases": "releases", "prepare": "accelerate_prepare", "node_loads": "node_loads",
                 "load_phase": "load_phase"}
PARTS = tuple(PART_SECTIONS)
PART_REQUIRED = {"schema": int, "mode": str, "date": str, "seconds": (int, float), "environment": dict, "part": str}


def _shape(results: dict, required: dict) -> list[str]:
    """Keys missing from ``results``, or of another type than ``required`` says."""
    return [f"missing {key}" if key not in results else f"{key} is {type(results[key]).__name__}"
            for key, kind in required.items() if key not in results or not isinstance(results[key], kind)]


def _schema_and_mode(results: dict) -> list[str]:
    return ([f"schema {results['schema']} != {SCHEMA}"] if results["schema"] != SCHEMA else []) + \
        ([f"mode {results['mode']!r}"] if results["mode"] not in MODES else [])


def validate(results: dict) -> list[str]:
    """Problems with the shape of a results.json (empty list: fine)."""
    if "part" in results:
        return validate_part(results)
    problems = _shape(results, REQUIRED)
    if problems:
        return problems
    problems = _schema_and_mode(results)
    for env in ENVS:
        if env not in results["environment"].get("envs", {}):
            problems.append(f"environment.envs.{env} missing")
    cases = results["fsdp_loading"].get("cases")
    if not isinstance(cases, list) or not cases:
        problems.append("fsdp_loading.cases is empty")
        cases = []
    for i, case in enumerate(cases):
        for key in CASE_KEYS:
            if key not in case:
                problems.append(f"fsdp_loading.cases[{i}].{key} missing")
        for env in ENVS:
            entry = case.get("envs", {}).get(env)
            if not isinstance(entry, dict) or not ("summary" in entry or "skipped" in entry):
                problems.append(f"fsdp_loading.cases[{i}].envs.{env}: neither a summary nor skipped")
    problems += releases_report.validate(results["releases"])
    for fix in ("trainer_best_adapter", "peft_load_adapter"):
        for env in ENVS:
            entry = results[fix].get(env)
            if not isinstance(entry, dict) or not ("results" in entry or "skipped" in entry):
                problems.append(f"{fix}.{env}: neither results nor skipped")
    for name, step in results["pipeline"].get("steps", {}).items():
        for key in ("runs", "median", "min", "max", "spread"):
            if key not in step:
                problems.append(f"pipeline.steps.{name}.{key} missing")
    return problems


def validate_part(results: dict) -> list[str]:
    """Problems with the results of one part run alone (``--part releases|prepare``)."""
    part = results["part"]
    if part not in PARTS:
        return [f"part {part!r}"]
    problems = _shape(results, {**PART_REQUIRED, PART_SECTIONS[part]: dict})
    if problems:
        return problems
    problems = _schema_and_mode(results)
    if part == "releases":
        problems += releases_report.validate(results["releases"])
    elif not isinstance(results[PART_SECTIONS[part]].get("cases"), list):
        problems.append(f"{PART_SECTIONS[part]}.cases is not a list")
    return problems


def fix2_rows(results: dict) -> list[list[str]]:
    rows = [["model", "params", "ranks", "model MiB", "shard MiB",
             "rank-1 load rise: pristine", "patched", "ratio",
             "rank-1 peak in prepare: pristine", "patched",
             "ranks>=1 load rise (sum): pristine", "patched", "ratio"]]
    for case in results["fsdp_loading"]["cases"]:
        row = [case["size"], f"{case['params'] / 1e6:,.0f}M", str(case["ranks"]), fmt(mib(case["model_bytes"])),
               fmt(mib(case["shard_bytes"]))]
        envs_ = case["envs"]
        sums = {e: envs_[e].get("summary") for e in ENVS}
        r = case_ratio(case)

        def cell(env: str, key: str) -> str:
            s = sums[env]
            return fmt(s[key]) if s else envs_[env].get("skipped", "skipped")

        row += [cell("pristine", "rank1_load_rise_mib"), cell("patched", "rank1_load_rise_mib"),
                format_ratio(r["rank1_load_rise"], r["rank1_load_rise_lower_bound"]) if r else "-",
                cell("pristine", "rank1_prepare_peak_mib"), cell("patched", "rank1_prepare_peak_mib"),
                cell("pristine", "nonzero_ranks_load_rise_mib"), cell("patched", "nonzero_ranks_load_rise_mib"),
                format_ratio(r["nonzero_ranks_load_rise"], r["nonzero_ranks_load_rise_lower_bound"]) if r else "-"]
        rows.append(row)
    return rows


def gpu_lines(results: dict) -> list[str]:
    out = []
    titles = {"trainer_best_adapter": "transformers/0001 (GPU): `Trainer._load_best_model`, extra accelerator bytes while reloading the best LoRA adapter",
              "peft_load_adapter": "peft/0001 (GPU): `PeftModel.load_adapter`, reserved-but-unallocated bytes left behind"}
    for fix, title in titles.items():
        out.append(f"**{title}**")
        out.append("")
        section = results[fix]
        skipped = {section[e]["skipped"] for e in ENVS if "skipped" in section.get(e, {})}
        if skipped:
            out.append("skipped: " + "; ".join(sorted(skipped)))
            out.append("")
            continue
        key = "extra_bytes" if fix == "trainer_best_adapter" else "reserved_unallocated_bytes"
        label = "extra MiB during reload" if fix == "trainer_best_adapter" else "reserved - allocated MiB"
        rows = [["LoRA rank", "adapter MiB", f"{label}: pristine", "patched", "ratio"]]
        pristine = {r["lora_rank"]: r for r in section["pristine"]["results"]}
        for entry in section["patched"]["results"]:
            p = pristine.get(entry["lora_rank"])
            if p is None:
                continue
            value, clamped = ratio(mib(p[key]), mib(entry[key]))
            rows.append([str(entry["lora_rank"]), fmt(mib(entry["adapter_bytes"])), fmt(mib(p[key])),
                         fmt(mib(entry[key])), format_ratio(value, clamped)])
        out += md_table(rows)
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
        rows.append([label, str(len(s["runs"])), fmt(s["median"], 2), f"{s['min']:.2f}-{s['max']:.2f}",
                     fmt(s["spread"], 2), f"{s['median'] / floor:.2f}" if floor else "-"])
    return rows


def header(results: dict) -> list[str]:
    """The title, the machine and the two test environments."""
    env = results["environment"]
    machine = env.get("machine", {})
    part = f", {results['part']} only" if results.get("part") else ""
    lines = [f"# headroom bench ({results['mode']}{part}), {results['date']}", ""]
    lines.append(f"Machine: {machine.get('cpu_model', '?')}, {machine.get('nproc', '?')} CPUs, "
                 f"{machine.get('ram_gib', '?')} GiB RAM; GPU: {env.get('gpu') or 'none'}.")
    for name in ENVS:
        e = env["envs"][name]
        pk = e.get("packages", {})
        lines.append(f"- {name}: transformers {pk.get('transformers')}, peft {pk.get('peft')}, torch {pk.get('torch')}, "
                     f"accelerate {pk.get('accelerate')}; missing keys left on meta (#45649): "
                     f"{'yes' if e.get('fix2_in_loader') else 'no'}; {node_loads.measured_line(results.get('node_loads'), name)}")
    return lines


def render_table(results: dict) -> str:
    """The markdown report of a results dict (build/bench/table.md), or of one part run alone."""
    lines = header(results)
    if results.get("part") == "releases":
        lines += [""] + releases_report.lines(results["releases"], md_table)
        return "\n".join([*lines, f"Total bench time: {results['seconds']:.0f} s.", ""])
    if results.get("part") == "node_loads":
        lines += ["", *node_loads.table_lines(results["node_loads"], md_table)]
        return "\n".join([*lines, f"Total bench time: {results['seconds']:.0f} s.", ""])
    if results.get("part") == "load_phase":
        lines += ["", *load_phase.table_lines(results["load_phase"], md_table)]
        return "\n".join([*lines, f"Total bench time: {results['seconds']:.0f} s.", ""])
    if results.get("part") == "prepare":
        lines += ["", *prepare.table_lines(results["accelerate_prepare"])]
        return "\n".join([*lines, "", f"Total bench time: {results['seconds']:.0f} s.", ""])
    lines += ["", "## FSDP loading (transformers): `cpu_ram_efficient_loading` on CPU (torchrun, gloo, Accelerate FSDP2)", ""]
    lines.append("RssAnon of rank 1 in MiB (anonymous memory: the memory-mapped checkpoint's pages are not counted). "
                 "*load rise*: across `from_pretrained`; *peak in prepare*: highest RssAnon sampled through "
                 "`accelerator.prepare` (absolute; the RssAnon before loading is in the note below). "
                 f"Ratios are pristine / patched, with patched taken as at least {RATIO_FLOOR_MIB:.0f} MiB (then shown as >=).")
    lines.append("")
    lines += md_table(fix2_rows(results))
    before = sorted({round(c["envs"][e]["summary"]["rank1_before_mib"]) for c in results["fsdp_loading"]["cases"]
                     for e in ENVS if "summary" in c["envs"][e]})
    if before:
        lines += ["", f"Note: rank 1's RssAnon before `from_pretrained` (torch, transformers, accelerate imported; gloo "
                      f"up): {before[0]}-{before[-1]} MiB."]
    if results.get("node_loads"):  # absent from results written before transformers/0002
        lines += ["", *node_loads.table_lines(results["node_loads"], md_table)]
    if results.get("load_phase"):  # absent from results written before the load phase was measured
        lines += ["", *load_phase.table_lines(results["load_phase"], md_table)]
    if results.get("releases"):  # absent from a run stopped before it, and from schema 1 results
        lines += [""] + releases_report.lines(results["releases"], md_table)
    if "accelerate_prepare" in results:
        lines += [*prepare.table_lines(results["accelerate_prepare"]), ""]
    lines += ["## GPU", ""]
    lines += gpu_lines(results)
    lines += ["## Pipeline (wall time)", ""]
    pipe = results["pipeline"]
    if pipe.get("note"):
        lines += [pipe["note"], ""]
    if pipe.get("steps"):
        lines += md_table(pipeline_rows(results))
    lines += ["", f"Total bench time: {results['seconds']:.0f} s.", ""]
    return "\n".join(lines)


def terminal_ratios(results: dict) -> list[str]:
    out = []
    for case in results["fsdp_loading"]["cases"]:
        r = case_ratio(case)
        if r is None:
            out.append(f"FSDP loading, {case['size']}, {case['ranks']} ranks: incomplete (see the table)")
            continue
        p = case["envs"]["pristine"]["summary"]
        q = case["envs"]["patched"]["summary"]
        out.append(f"FSDP loading, {case['size']} ({mib(case['model_bytes']):,.0f} MiB), {case['ranks']} ranks: rank-1 RssAnon "
                   f"rise {p['rank1_load_rise_mib']:,.1f} -> {q['rank1_load_rise_mib']:,.1f} MiB "
                   f"({format_ratio(r['rank1_load_rise'], r['rank1_load_rise_lower_bound'])}); ranks>=1 "
                   f"{p['nonzero_ranks_load_rise_mib']:,.1f} -> {q['nonzero_ranks_load_rise_mib']:,.1f} MiB "
                   f"({format_ratio(r['nonzero_ranks_load_rise'], r['nonzero_ranks_load_rise_lower_bound'])})")
    return out
