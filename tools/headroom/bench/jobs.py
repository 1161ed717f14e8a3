"""jobs: one bench job on N CPU ranks (torchrun, gloo), its log kept, each rank's JSON result read back.

Every torchrun job of the bench (fix 2, the releases, accelerate's ``prepare``) goes through :func:`torchrun`;
the workers it starts live in ``bench_data/`` and write ``<run folder>/rank<N>.json`` (``rankmem.finish``).
"""

from __future__ import annotations

import concurrent.futures
import json
import re
import shutil
import socket
import sys
from pathlib import Path

from ..ground import proc, ui
from ..ground.errors import CommandFailed
from ..ground.fsutil import atomic_write
from .common import DATA, FSDP_ENV, OFFLINE_ENV, OUT_DIR

RUN_DIR = "<run dir>"  # in a job's arguments: where the job's run folder goes


def failure(log: str) -> str:
    """Why a job failed, from its output: the last exception line of a traceback, else the last line."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        text = re.sub(r"^\[rank\d+\]:\s*", "", line)
        if re.match(r"^[A-Za-z_.]*(Error|Exception)\b", text):
            return text[:300]
    return lines[-1][:300] if lines else "no output"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(root: Path, py: Path, env: str, script: str, args: list, ranks: int, tag: str, *,
             env_vars: dict[str, str] = FSDP_ENV, nodes: int = 1) -> list[dict]:
    """Run ``bench_data/<script> *args`` on ``ranks`` CPU processes (on each of ``nodes`` torchrun agents on
    127.0.0.1, one rendezvous, ``--node-rank`` each), :data:`RUN_DIR` in ``args`` standing for the job's run folder;
    the per-rank JSON results, in global rank order. ``env_vars`` go on top of the offline environment (by default,
    what ``accelerate launch --use_fsdp --fsdp_cpu_ram_efficient_loading true`` sets).

    The job's output is kept in build/bench/runs/<tag>-[<nodes>x]<ranks>ranks-<env>/torchrun.log; a rank without a
    result raises CommandFailed whose message is the job's own error line."""
    layout = f"{nodes}x{ranks}" if nodes > 1 else f"{ranks}"
    out = root / OUT_DIR / "runs" / f"{tag}-{layout}ranks-{env.replace(' ', '-')}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    worker = [DATA / script, *(out if a == RUN_DIR else a for a in args)]
    if nodes == 1:
        launch = [["--standalone", "--nnodes=1"]]
    else:
        port = free_port()
        launch = [[f"--nnodes={nodes}", f"--node-rank={n}", "--master-addr=127.0.0.1", f"--master-port={port}"]
                  for n in range(nodes)]

    def agent(i: int) -> proc.Result:
        where = f" node {i} of {nodes}" if nodes > 1 else ""
        return proc.run([py, "-m", "torch.distributed.run", *launch[i], f"--nproc-per-node={ranks}", *worker],
                        env={**OFFLINE_ENV, **env_vars}, cwd=out, check=False,
                        what=f"torchrun {ranks} ranks{where} ({env}, {tag})")

    with concurrent.futures.ThreadPoolExecutor(nodes) as pool:  # the agents of one job run side by side
        results = list(pool.map(agent, range(nodes)))
    output = "\n".join(r.output if nodes == 1 else f"## node {i}\n{r.output}" for i, r in enumerate(results))
    atomic_write(out / "torchrun.log", output)
    shutil.rmtree(out / "warmup", ignore_errors=True)
    missing = [r for r in range(nodes * ranks) if not (out / f"rank{r}.json").exists()]
    if missing:
        if ui.verbose():
            sys.stderr.write(output[-8000:])
        raise CommandFailed(f"{failure(output)} (torchrun {env}, {tag}: no result from rank {missing[0]}, "
                            f"exit {max(r.returncode for r in results)}; log: {out.relative_to(root)}/torchrun.log)")
    return [json.loads((out / f"rank{r}.json").read_text(encoding="utf-8")) for r in range(nodes * ranks)]
