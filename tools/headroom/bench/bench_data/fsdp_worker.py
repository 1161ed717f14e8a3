"""Fix 2 benchmark worker: one process of a ``torch.distributed.run`` job on CPU (gloo).

Run inside build/envs/<env> with ``ACCELERATE_USE_FSDP=true`` and
``FSDP_CPU_RAM_EFFICIENT_LOADING=true`` (what ``accelerate launch --use_fsdp
--fsdp_cpu_ram_efficient_loading true`` sets). Each rank measures its anonymous RSS
(``RssAnon``: a memory-mapped checkpoint's file pages are not counted) across
``from_pretrained`` and through Accelerate's FSDP2 ``prepare``, and writes
``<out_dir>/rank<N>.json``.

With a third argument ``load``, each rank stops after ``from_pretrained`` (the one-node
figure: all ranks of a node, no ``prepare``).

Usage: fsdp_worker.py CHECKPOINT_DIR OUT_DIR [load]
"""

import os
import sys
import time

from rankmem import PeakSampler, finish, rss_anon_mib


def main(checkpoint_dir: str, out_dir: str, stop: str = "") -> None:
    import torch
    import torch.distributed as dist
    from accelerate import Accelerator, FullyShardedDataParallelPlugin
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    from transformers import AutoModelForCausalLM
    from transformers.integrations import is_fsdp_enabled

    try:  # where it lives since 5.6; 5.5 and older have it in modeling_utils
        from transformers.distributed.utils import is_local_dist_rank_0
    except ImportError:
        from transformers.modeling_utils import is_local_dist_rank_0

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, cpu_ram_efficient_loading=True)
    # `cpu=True` gives a gloo process group (MULTI_CPU). Accelerate only turns FSDP on for accelerator backends
    # (CUDA, XPU, ...), so we set the plugin and the distributed type ourselves - on PartialState too, because
    # AcceleratorState copies PartialState's fields back into itself. `prepare` then takes the real FSDP2 path on
    # CPU: `fully_shard` + `fsdp2_load_full_state_dict` broadcasting rank 0's weights.
    accelerator = Accelerator(cpu=True, fsdp_plugin=plugin)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
    rank, world = accelerator.process_index, accelerator.num_processes
    result = {
        "rank": rank,
        "world_size": world,
        "local_rank": int(os.environ.get("LOCAL_RANK", "-1")),
        "fsdp_enabled": bool(is_fsdp_enabled()),
        "local_rank_0": bool(is_local_dist_rank_0()),
        "torch_threads": torch.get_num_threads(),
    }
    # Warm-up: load a tiny checkpoint of the same architecture first, so that lazy imports and one-time caches of
    # `from_pretrained` are not counted as the rise of the measured load.
    warmup_dir = os.path.join(out_dir, "warmup")
    if rank == 0:
        from transformers import LlamaConfig, LlamaForCausalLM

        tiny = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                           num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False)
        LlamaForCausalLM(tiny).save_pretrained(warmup_dir)
    dist.barrier()
    warm = AutoModelForCausalLM.from_pretrained(warmup_dir, dtype="auto")
    del warm
    dist.barrier()

    # 1. from_pretrained, in the checkpoint's own dtype: loaded weights are views on the memory-mapped file
    before = rss_anon_mib()
    start = time.monotonic()
    with PeakSampler() as load_peak:
        model = AutoModelForCausalLM.from_pretrained(checkpoint_dir, dtype="auto")
    result["load_seconds"] = time.monotonic() - start
    after = rss_anon_mib()
    model_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    result.update(
        rss_before_mib=before,
        rss_after_load_mib=after,
        load_rise_mib=after - before,
        load_peak_mib=load_peak.peak,
        model_bytes=model_bytes,
        dtype=str(next(model.parameters()).dtype),
    )
    dist.barrier()
    if stop == "load":
        del model
        finish(result, out_dir, rank)
        return

    # 2. Accelerate FSDP2 prepare (model + optimizer, as a training script does)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    start = time.monotonic()
    with PeakSampler() as prepare_peak:
        model, optimizer = accelerator.prepare(model, optimizer)
    result["prepare_seconds"] = time.monotonic() - start
    result["prepare_samples"] = prepare_peak.samples
    result["prepare_peak_mib"] = prepare_peak.peak
    result["prepare_peak_rise_mib"] = prepare_peak.peak - before
    result["after_prepare_mib"] = rss_anon_mib()
    local = sum(p.to_local().numel() * p.element_size() if hasattr(p, "to_local") else p.numel() * p.element_size()
                for p in model.parameters())
    result["local_shard_bytes"] = local
    dist.barrier()
    finish(result, out_dir, rank)


if __name__ == "__main__":
    main(*sys.argv[1:4])
