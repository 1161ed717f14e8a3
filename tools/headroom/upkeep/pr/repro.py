"""ISSUE.md's reproduction: the patch's standalone script (pr_data/<name>/repro/), run on the pristine tree and with
the patch alone in the test environment, its output kept without upstream's noise; and the versions it ran with."""

from __future__ import annotations

import os
import re
import shlex
import shutil
from pathlib import Path

from ...ground import proc, ui
from ...sources.pins import Pin
from ...proof import testrun
from ...proof.testrun import TestEnv
from . import draft as prdraft


_NOISE = re.compile(r"^(?:[WIE]\d{4} |\*{10,}|Setting OMP_NUM_THREADS|.*Please further tune the variable)")


def runs(script: Path, envs: dict[str, TestEnv] | None, work: Path) -> dict[str, str]:
    """The script's output on the pristine tree and with the patch alone (in the test environment)."""
    if envs is None:
        return {}
    work.mkdir(parents=True, exist_ok=True)
    target = work / "repro.py"
    shutil.copyfile(script, target)
    argv = shlex.split(prdraft.run_command(script.read_text(encoding="utf-8")))
    runs = {}
    for label in ("pristine", "alone"):
        env = envs[label]
        cmd = [str(env.python), "-m", "torch.distributed.run"] + argv[1:] if argv[0] == "torchrun" else \
            [str(env.python)] + argv[1:] if argv[0].startswith("python") else argv
        cmd = [str(target) if c == "repro.py" else c for c in cmd]
        if argv[0] == "torchrun" and not any(a.startswith(("--standalone", "--master", "--rdzv")) for a in argv):
            # a free port of its own: torchrun's default (29500) may be another job's on this machine
            cmd.insert(3, "--standalone")
        ui.info(f"running the reproduction on {label} ({env.label})")
        result = proc.run(cmd, cwd=work, check=False, what=f"reproduction ({label})",
                          env={**testrun.OFFLINE_ENV, "PYTHONWARNINGS": "ignore",  # upstream's deprecation noise, with our paths
                               "PYTHONPATH": os.pathsep.join(str(p) for p in env.pythonpath)})
        kept = [line for line in result.output.splitlines() if not _NOISE.match(line)]
        runs[label] = "\n".join(kept[-40:]).strip("\n") + (f"\n(exit status {result.returncode})" if result.returncode else "")
    return runs


def versions(pin: Pin, envs: dict[str, TestEnv] | None) -> str:
    if envs is None:
        return f"{pin.distribution} {pin.version}"
    code = ("import platform, sys, importlib.metadata as m\n"
            f"import {pin.distribution.replace('-', '_')} as u\n"
            f"print('- `{pin.distribution}` version:', u.__version__)\n"
            "for d in ('torch', 'accelerate', 'safetensors', 'transformers', 'peft'):\n"
            f"    if d != {pin.distribution!r}:\n"
            "        try: print(f'- {d} version:', m.version(d))\n"
            "        except m.PackageNotFoundError: pass\n"
            "print('- Platform:', platform.platform())\n"
            "print('- Python version:', sys.version.split()[0])\n")
    env = envs["pristine"]
    result = proc.run([env.python, "-c", code], check=False, quiet=True, what="versions",
                      env={**testrun.OFFLINE_ENV, "PYTHONPATH": os.pathsep.join(str(p) for p in env.pythonpath)})
    return result.output if result.returncode == 0 else f"{pin.distribution} {pin.version}"
