"""transformers/0002 benchmark worker: one rank of a torchrun job (gloo) with FSDP ``cpu_ram_efficient_loading``
that only loads: ``from_pretrained`` of a checkpoint, with the peak of its anonymous RSS sampled, then stops.

Run inside build/envs/<env> with ``ACCELERATE_USE_FSDP=true FSDP_CPU_RAM_EFFICIENT_LOADING=true``. A warm-up load of
a one-layer model of the same class comes first, so that imports and first-time caches are not counted.

Usage: load_worker.py CHECKPOINT_DIR OUT_DIR DTYPE   (DTYPE: auto, bfloat16, float32)
"""

import os
import sys
import time

from rankmem import PeakSampler, finish, rss_anon_mib, warm_up


def main(checkpoint_dir: str, out_dir: str, dtype_name: str) -> None:
    import torch
    import torch.distributed as dist

    from transformers import AutoModelForCausalLM
    from transformers.integrations import is_fsdp_enabled

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    dtype = dtype_name if dtype_name == "auto" else getattr(torch, dtype_name)
    warm_up(checkpoint_dir, out_dir, dtype)

    before = rss_anon_mib()
    start = time.monotonic()
    with PeakSampler() as peak:
        model = AutoModelForCausalLM.from_pretrained(checkpoint_dir, dtype=dtype)
    seconds = time.monotonic() - start
    after = rss_anon_mib()
    params = list(model.parameters())
    result = {
        "rank": rank,
        "local_rank": int(os.environ.get("LOCAL_RANK", "-1")),
        "node": int(os.environ.get("GROUP_RANK", "0")),
        "fsdp_enabled": bool(is_fsdp_enabled()),
        "load_seconds": seconds,
        "before_mib": before,
        "rise_mib": after - before,
        "peak_rise_mib": peak.peak - before,
        "model_bytes": sum(p.numel() * p.element_size() for p in params),
        "meta_params": sum(p.is_meta for p in params),
        "dtype": str(params[0].dtype),
    }
    del model, params
    dist.barrier()
    finish(result, out_dir, rank)


if __name__ == "__main__":
    main(*sys.argv[1:4])
