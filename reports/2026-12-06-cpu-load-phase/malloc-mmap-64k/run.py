"""One experiment: the patched dense-cast 1 x 8 and moe 1 x 8 jobs with glibc's mmap threshold fixed at 64 KiB
(MALLOC_MMAP_THRESHOLD_=65536: every tensor of 64 KiB or more is its own mapping, returned to the kernel when freed)."""
import json, sys
from pathlib import Path
from headroom.bench import load_phase, jobs
from headroom.bench.common import FSDP_ENV
root = Path('/work/wt-loadphase')
py = root / 'build/envs/patched/bin/python'
out = {}
for name in sys.argv[1:]:
    what, ckpt_name, dtype = load_phase.LOADS[name]
    ckpt, _ = load_phase.checkpoint(root, ckpt_name, root / 'build/envs/pristine/bin/python', "full")
    ranks = jobs.torchrun(root, py, "patched", "phase_worker.py", [ckpt, jobs.RUN_DIR, dtype], 8, f"phase-{name}-mmap64k",
                          env_vars={**FSDP_ENV, "MALLOC_MMAP_THRESHOLD_": "65536"})
    s = load_phase.summary(ranks, 1)
    n = s["nodes"][0]
    out[name] = s
    print(name, {k: round(v["peak_x"], 2) for k, v in n["phases"].items()}, "exact", s["exact"], flush=True)
json.dump(out, open('/tmp/lp-mmap.json', 'w'), indent=1)
