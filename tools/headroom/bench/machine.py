"""The machine probe: CPU, RAM, GPU, free memory, and each environment's packages (bench_data/probe.py)."""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path

from ..ground import proc, ui
from ..ground.errors import CommandFailed
from .common import DATA, OFFLINE_ENV


def _meminfo() -> dict[str, int]:
    out = {}
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            for line in f:
                key, _, rest = line.partition(":")
                out[key] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    mem = _meminfo()
    return {
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_model": _cpu_model(),
        "ram_gib": round(mem.get("MemTotal", 0) / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def gpu_info() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    result = proc.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], check=False,
                      quiet=True, what="nvidia-smi")
    text = result.output.strip()
    if result.returncode != 0 or not text:
        return None
    return "; ".join(f"{name.strip()} (driver {driver.strip()})" for name, _, driver in
                     (line.partition(",") for line in text.splitlines()))


def last_json(output: str) -> dict:
    for line in reversed(output.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise CommandFailed("a benchmark worker printed no JSON result", details=output[-4000:])


def probe_env(py: Path) -> dict:
    result = proc.run([py, DATA / "probe.py"], env=OFFLINE_ENV, quiet=True, what=f"probe {py}")
    return last_json(result.output)


def available_bytes() -> int:
    return _meminfo().get("MemAvailable", 0)


def too_big(need: int, what: str) -> str | None:
    """Why a case that needs about ``need`` bytes is skipped (it would leave under 1 GiB free), said as a warning
    naming ``what``; None when it fits (or free memory is unknown)."""
    avail = available_bytes()
    if avail and need + 2**30 > avail:
        reason = f"skipped: needs ~{need / 2**30:.1f} GiB, {avail / 2**30:.1f} GiB available"
        ui.warn(f"{what}: {reason}")
        return reason
    return None
