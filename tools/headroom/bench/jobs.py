"""jobs: one bench job on N CPU ranks (torchrun, gloo), its log kept, each rank's JSON result read back.

Every torchrun job of the bench (fix 2, the releases, accelerate's ``prepare``) goes through :func:`torchrun`;
the workers it starts live in ``bench_data/`` and write ``<run folder>/rank<N>.json`` (``rankmem.finish``).
"""

from __future__ import annotations

import json
import re
import shutil
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


def torchrun(root: Path, py: Path, env: str, script: str, args: list, ranks: int, tag: str, *,
             env_vars: dict[str, str] = FSDP_ENV) -> list[dict]:
    """Run ``bench_data/<script> *args`` on ``ranks`` CPU processes, :data:`RUN_DIR` in ``args`` standing for the
    job's run folder; the per-rank JSON results, in rank order. ``env_vars`` go on top of the offline environment
    (by default, what ``accelerate launch --use_fsdp --fsdp_cpu_ram_efficient_loading true`` sets).

    The job's output is kept in build/bench/runs/<tag>-<ranks>ranks-<env>/torchrun.log; a rank without a result
    raises CommandFailed whose message is the job's own error line."""
    out = root / OUT_DIR / "runs" / f"{tag}-{ranks}ranks-{env.replace(' ', '-')}"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    result = proc.run(
        [py, "-m", "torch.distributed.run", "--standalone", "--nnodes=1", f"--nproc-per-node={ranks}",
         DATA / script, *(out if a == RUN_DIR else a for a in args)],
        env={**OFFLINE_ENV, **env_vars}, cwd=out, what=f"torchrun {ranks} ranks ({env}, {tag})", check=False,
    )
    atomic_write(out / "torchrun.log", result.output)
    shutil.rmtree(out / "warmup", ignore_errors=True)
    missing = [r for r in range(ranks) if not (out / f"rank{r}.json").exists()]
    if missing:
        if ui.verbose():
            sys.stderr.write(result.output[-8000:])
        raise CommandFailed(f"{failure(result.output)} (torchrun {env}, {tag}: no result from rank {missing[0]}, "
                            f"exit {result.returncode}; log: {out.relative_to(root)}/torchrun.log)")
    return [json.loads((out / f"rank{r}.json").read_text(encoding="utf-8")) for r in range(ranks)]
