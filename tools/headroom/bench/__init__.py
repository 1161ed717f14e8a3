"""The bench (make bench): takes the proof's environments and official releases' wheels; gives what the memory fixes
save and what the pipeline costs, measured: build/bench/ (results.json, table.md, PNG plots).

* Fix 2 (CPU, real multi-process, ``fix2``): ``python -m torch.distributed.run`` (gloo) in
  build/envs/pristine and build/envs/patched with FSDP ``cpu_ram_efficient_loading``;
  random Llama checkpoints of several sizes; rank 1's anonymous RSS (``RssAnon``) rise
  across ``from_pretrained`` and its peak through Accelerate's FSDP2 ``prepare``; in
  ``full`` mode also 2 and 4 ranks at one size (the cost per rank).
* Fix 2 across official transformers releases (``releases``): each release's wheel fetched
  by sha256 into its own build/envs/release-<version>-acc<accelerate> (the accelerate of
  bench-env.txt, or the one the release list names: 5.23.0@1.15.0; a pair whose dependencies
  do not resolve is a row "not installable"), measured beside the patched build on
  the same model files: the memory figures above, and correctness (optimizer params aliased,
  largest difference from a single-process run) on a checkpoint missing two parameters; the
  one-node figure (8 ranks) and its projection to the upstream report's setup.
* What each rank of a node commits in ``from_pretrained`` (``node_loads``, patches/transformers/0002): a dense
  checkpoint in its own dtype, the same with a dtype cast, and a Qwen3-MoE (experts fused on load); one node of 2
  (quick) or 8 (full) ranks, and two nodes as two torchrun agents on 127.0.0.1; official beside patched, the
  per-node targets and a projection to Qwen3-30B-A3B.
* The load phase per node (``load_phase``, the whole series): each node's total anonymous RSS, one sampler per node,
  from ``from_pretrained`` through ``prepare`` to the end of the first optimizer step, against its floor (rank 0's
  full copy plus the node's shards); 1 node x 8 and 2 nodes x 4 in full mode.
* Accelerate's FSDP2 ``prepare`` (``prepare``, patches/accelerate/0001): rank 0's weights sharded over the ranks
  by official accelerate, the headroom build, torch's ``set_model_state_dict(broadcast_from_rank0=True)`` and the
  floor (one scatter per parameter); rank 1's peak against its final, each path's time as a multiple of the floor's.
* Fix 1 and fix 3 (GPU, ``gpu``): accelerator memory of ``Trainer._load_best_model`` and of
  ``PeftModel.load_adapter``; "skipped: no CUDA" on a machine without one.
* The pipeline (``pipeline``): cold ``apply`` + ``build`` on a copy of the repository with an
  empty cache, a no-op re-run, ``build --force``, next to a plain ``python -m build --wheel``.

The worker scripts under bench_data/ run inside the environments. Results go to
build/bench/ (results.json, table.md, PNG plots); ``--part releases`` runs the releases part
alone and writes build/bench/part-releases/ (results.json, table.md). The pure parts (``stats``, ``report``,
``releases_report``) are unit-tested in tests/test_bench.py; ``machine`` probes the machine.
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

from ..ground import proc, ui
from ..ground.errors import BuildError, NotApplied, UsageError
from ..ground.fsutil import atomic_write, atomic_write_json
from ..proof import envs
from ..sources.lines import Line
from .common import (DATA, ENVS, MODES, OUT_DIR, PLAN, SCHEMA, SIZES, SWEEP_RANKS)  # noqa: F401 (re-exported)
from . import fix2, load_phase, node_loads, pipeline, prepare, releases
from .fix2 import estimated_bytes  # noqa: F401
from .gpu import gpu_fixes
from .machine import gpu_info, machine_info, probe_env
from .plots import ensure_matplotlib, plot
from .report import PARTS, render_table, terminal_ratios, validate  # noqa: F401
from .stats import case_ratio, env_summary, format_ratio, ratio, summary  # noqa: F401


def replot(root: Path) -> list[Path]:
    """Re-draw the plots and the table of build/bench/results.json (no measurement)."""
    out = root / OUT_DIR
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    _check(results, "build/bench/results.json is incomplete")
    _write_table(results, out)
    return plot(results, out, ensure_matplotlib(root))


def _head(mode: str, part: str | None = None) -> dict:
    """The first keys of a results dict, in their order: schema, mode, the part run alone (if one), the date (UTC)."""
    head: dict = {"schema": SCHEMA, "mode": mode}
    if part is not None:
        head["part"] = part
    head["date"] = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return head


def _check(results: dict, incomplete: str) -> None:
    """BuildError("<incomplete>: <problems>") unless ``results`` has the shape :func:`validate` asks for."""
    problems = validate(results)
    if problems:
        raise BuildError(f"{incomplete}: " + "; ".join(problems))


def _write_table(results: dict, out: Path) -> str:
    """The markdown table of ``results``, written to ``out``/table.md."""
    table = render_table(results)
    atomic_write(out / "table.md", table)
    return table


def environment(pythons: dict[str, Path], root: Path) -> dict:
    head = proc.run(["git", "-C", root, "rev-parse", "HEAD"], quiet=True, check=False, what="git rev-parse")
    return {
        "machine": machine_info(),
        "gpu": gpu_info(),
        "envs": {env: probe_env(py) for env, py in pythons.items()},
        "headroom_commit": head.output.strip() if head.returncode == 0 else None,
    }


def _pythons(root: Path, envs_dir: Path = envs.ENVS_DIR) -> dict[str, Path]:
    pythons = {}
    for env in ENVS:
        py = envs.python(root, env, envs_dir)
        if not py.exists():
            raise NotApplied(f"{envs_dir}/{env} does not exist. Run `make test` first (it creates both environments).")
        pythons[env] = py
    return pythons


def run_part(root: Path, part: str, mode: str, releases_text: str | None, line: Line | None = None) -> int:
    """One part of the bench alone (``--part releases|prepare|node_loads|load_phase``): its section and the
    environments, in build/bench/part-<part>/; on a release line that is not the home line (``--line newest``), that
    line's environments (official beside headroom build), in build/bench/part-<part>-<line>/."""
    start = time.monotonic()
    away = line is not None and bool(line.folder)
    pythons = _pythons(root, line.build / "envs") if away else _pythons(root)
    results: dict = {**_head(mode, part), "environment": environment(pythons, root)}
    if line is not None and line.name:
        results["line"] = {"name": line.name, "releases": line.releases()}
    if part == "releases":
        ui.step("bench", f"{mode}, {part} only: transformers releases (sha256 from the index, wheels verified)")
        results["releases"] = releases.releases(root, pythons, mode, releases.prepare(root, mode, releases_text))
    elif part == "node_loads":
        ui.step("bench", f"{mode}, {part} only: what each rank commits in from_pretrained (transformers/0002)")
        results["node_loads"] = node_loads.node_loads(root, pythons, mode)
    elif part == "load_phase":
        ui.step("bench", f"{mode}, {part} only: each node's memory from from_pretrained to the first optimizer step")
        results["load_phase"] = load_phase.load_phase(root, pythons, mode)
    else:
        ui.step("bench", f"{mode}, {part} only: Accelerate's FSDP2 prepare")
        results["accelerate_prepare"] = prepare.run(root, pythons, mode)  # patches/accelerate/0001
    results["seconds"] = round(time.monotonic() - start, 1)
    _check(results, f"bench {part} results are incomplete")
    out = root / OUT_DIR / (f"part-{part}-{line.name}" if away else f"part-{part}")
    atomic_write_json(out / "results.json", results)
    table = _write_table(results, out)
    if line is not None and line.name:  # the report names the line it measured
        table = f"Release line: {line.name} ({line.releases()})\n\n{table}"
        atomic_write(out / "table.md", table)
    ui.step("bench", "results")
    print(table, flush=True)
    ui.info(f"written: {(out / 'results.json').relative_to(root)}, {(out / 'table.md').relative_to(root)}")
    ui.info(f"bench {mode}, {part} only: {results['seconds']:.0f}s")
    return 0


def run(root: Path, mode: str = "full", releases_text: str | None = None, part: str | None = None,
        line: Line | None = None) -> int:
    if mode not in MODES:
        raise UsageError(f"--mode must be one of {', '.join(MODES)}, not {mode!r}")
    if part is not None:
        if part not in PARTS:
            raise UsageError(f"--part must be one of {', '.join(PARTS)}, not {part!r}")
        return run_part(root, part, mode, releases_text, line)
    if line is not None and line.folder:
        raise UsageError(f"the whole bench runs on the home line; on the {line.name} line, run one part: "
                         f"`make bench PART=node_loads LINE={line.name}`")
    start = time.monotonic()
    out = root / OUT_DIR
    pythons = _pythons(root)
    plt = ensure_matplotlib(root)
    ui.step("bench", f"{mode}: transformers releases (sha256 from the index, wheels verified)")
    recs = releases.prepare(root, mode, releases_text)
    ui.step("bench", f"{mode}: environments")
    env_info = environment(pythons, root)
    for env, info in env_info["envs"].items():
        ui.info(f"{env}: transformers {info['packages']['transformers']}, peft {info['packages']['peft']}; "
                f"missing keys left on meta (#45649, read in the source): {'yes' if info['fix2_in_loader'] else 'no'}; "
                "what another rank commits for each load: measured below (transformers/0002)")
    results: dict = {**_head(mode), "environment": env_info}
    partial = out / "results.partial.json"  # what was measured so far, should a later part fail
    results["releases"] = releases.releases(root, pythons, mode, recs)
    atomic_write_json(partial, results)
    results["fsdp_loading"] = fix2.fix2(root, pythons, mode, releases.done_jobs(results["releases"]))
    atomic_write_json(partial, results)
    results["node_loads"] = node_loads.node_loads(root, pythons, mode)  # patches/transformers/0002
    atomic_write_json(partial, results)
    results["load_phase"] = load_phase.load_phase(root, pythons, mode)  # the series, node by node
    atomic_write_json(partial, results)
    results["accelerate_prepare"] = prepare.run(root, pythons, mode)  # patches/accelerate/0001
    atomic_write_json(partial, results)
    results["trainer_best_adapter"], results["peft_load_adapter"] = gpu_fixes(root, pythons, mode)
    atomic_write_json(partial, results)
    results["pipeline"] = pipeline.pipeline(root, mode)
    after = {env: probe_env(py)["packages"] for env, py in pythons.items()}
    changed = [env for env in ENVS if after[env] != env_info["envs"][env]["packages"]]
    if changed:
        ui.warn(f"build/envs/{', '.join(changed)} changed during the bench: {after}")
        results["environment"]["changed_during_run"] = after
    results["seconds"] = round(time.monotonic() - start, 1)
    _check(results, "bench results are incomplete")
    atomic_write_json(out / "results.json", results)
    partial.unlink(missing_ok=True)
    table = _write_table(results, out)
    pngs = plot(results, out, plt)
    for stale in set(out.glob("fsdp-loading-*.png")) - set(pngs):  # e.g. the per-rank plot of an earlier full run
        stale.unlink()
    ui.step("bench", "results")
    print(table, flush=True)
    for line in terminal_ratios(results) + node_loads.targets(results["node_loads"]) + \
            load_phase.targets(results["load_phase"]):
        ui.info(line)
    ui.info(f"written: {', '.join(str(p.relative_to(root)) for p in [out / 'results.json', out / 'table.md', *pngs])}")
    ui.info(f"bench {mode}: {results['seconds']:.0f}s")
    return 0
