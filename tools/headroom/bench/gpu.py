"""Fix 1 and fix 3 on a GPU: bench_data/gpu_load_best.py and gpu_load_adapter.py; "skipped: no CUDA" without one."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..ground import proc, ui
from .common import DATA, ENVS, GPU_LORA_RANKS, OFFLINE_ENV
from .machine import last_json


def gpu_fixes(root: Path, pythons: dict[str, Path], mode: str) -> tuple[dict, dict]:
    sections: dict[str, dict] = {"trainer_best_adapter": {}, "peft_load_adapter": {}}
    scripts = {"trainer_best_adapter": "gpu_load_best.py", "peft_load_adapter": "gpu_load_adapter.py"}
    for fix, script in scripts.items():
        ui.step("bench", f"{fix} (GPU): {script}")
        for env in ENVS:
            with tempfile.TemporaryDirectory(prefix=f"headroom-bench-{fix}-") as tmp:
                result = proc.run([pythons[env], DATA / script, tmp, json.dumps(GPU_LORA_RANKS[mode])],
                                  env=OFFLINE_ENV, what=f"{script} ({env})")
            data = last_json(result.output)
            sections[fix][env] = data
            ui.info(f"{env}: skipped: {data['skipped']}" if "skipped" in data else
                    f"{env}: measured {len(data.get('results', []))} adapter size(s) on {data.get('gpu')}")
    return sections["trainer_best_adapter"], sections["peft_load_adapter"]
