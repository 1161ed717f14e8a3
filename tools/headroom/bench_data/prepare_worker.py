"""Accelerate prepare benchmark worker (patches/accelerate/0001): runs inside build/envs/<env>.

Two commands:

* ``prepare_worker.py make OUT_DIR CONFIG_JSON``: write a random Llama-style float32 checkpoint as
  ``OUT_DIR/model.pt`` (a plain state dict, loaded memory-mapped) and ``OUT_DIR/meta.json``; prints one JSON line.
* ``prepare_worker.py run CHECKPOINT_DIR OUT_DIR``: one process of a ``torch.distributed.run`` job on CPU (gloo).
  Every rank builds the model on ``meta`` and assigns the memory-mapped checkpoint's tensors (no RAM of their own,
  like an efficient loader), then goes through Accelerate's FSDP2 ``prepare`` with ``cpu_ram_efficient_loading``.
  Each rank writes ``OUT_DIR/rank<N>.json``: anonymous RSS (``RssAnon``) before, sampled peak during and after
  ``prepare``, the kernel's exact peak RSS (``VmHWM``, reset right before ``prepare``) and the wall time.

Only Accelerate's ``prepare`` is measured: transformers' ``from_pretrained`` is not used, so the figures compare the
official accelerate (pristine environment) with the headroom build (patched environment) and nothing else.
"""

import json
import os
import sys
import time

from rankmem import PeakSampler, finish, reset_peak_rss, rss_anon_mib, status_mib, trim


def _config(config_kwargs: dict):
    from transformers import LlamaConfig

    return LlamaConfig(**config_kwargs)


def _load(checkpoint_dir: str, config_kwargs: dict):
    """The model on meta, its parameters assigned from the memory-mapped checkpoint; the rotary buffer on CPU."""
    import torch
    from transformers import LlamaForCausalLM

    config = _config(config_kwargs)
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    state = torch.load(os.path.join(checkpoint_dir, "model.pt"), mmap=True, weights_only=True)
    model.load_state_dict(state, assign=True, strict=True)
    # The non-persistent buffer (RoPE inv_freq) is not in the checkpoint: compute it on CPU
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    return model


def make(out_dir: str, config_json: str) -> None:
    import torch
    from transformers import LlamaForCausalLM

    config_kwargs = json.loads(config_json)
    torch.manual_seed(0)
    model = LlamaForCausalLM(_config(config_kwargs))
    state = {k: v for k, v in model.state_dict().items()}
    info = {"params": sum(p.numel() for p in model.parameters()),
            "bytes": sum(t.numel() * t.element_size() for t in state.values()),
            "largest_param_bytes": max(t.numel() * t.element_size() for t in state.values()),
            "dtype": str(model.dtype), "config": config_kwargs}
    tmp = out_dir + ".tmp"
    os.makedirs(tmp, exist_ok=True)
    torch.save(state, os.path.join(tmp, "model.pt"))
    with open(os.path.join(tmp, "meta.json"), "w", encoding="utf-8") as f:
        json.dump(info, f)
    os.replace(tmp, out_dir)
    print(json.dumps(info))


def run(checkpoint_dir: str, out_dir: str) -> None:
    import torch
    import torch.distributed as dist
    from accelerate import Accelerator, FullyShardedDataParallelPlugin
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    with open(os.path.join(checkpoint_dir, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, cpu_ram_efficient_loading=True)
    # `cpu=True` gives a gloo process group (MULTI_CPU). Accelerate only turns FSDP on for accelerator backends, so we
    # set the plugin and the distributed type ourselves (on PartialState too: AcceleratorState re-syncs from it).
    accelerator = Accelerator(cpu=True, fsdp_plugin=plugin)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
    rank, world = accelerator.process_index, accelerator.num_processes

    # Warm-up: a tiny model of the same architecture, so lazy imports and one-time caches are not measured
    tiny = {**meta["config"], "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 2}
    warm_dir = os.path.join(out_dir, "warmup")
    if rank == 0:
        make(warm_dir, json.dumps(tiny))
    dist.barrier()
    warm = _load(warm_dir, tiny)
    accelerator.prepare(warm, torch.optim.SGD(warm.parameters(), lr=0.0))
    del warm
    accelerator._models.clear()
    accelerator._optimizers.clear()

    model = _load(checkpoint_dir, meta["config"])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    trim()
    dist.barrier()
    before = status_mib("RssAnon")
    rss_before = status_mib("VmRSS")
    exact = reset_peak_rss()
    start = time.monotonic()
    with PeakSampler() as sampler:
        model, optimizer = accelerator.prepare(model, optimizer)
    seconds = time.monotonic() - start
    hwm = status_mib("VmHWM")
    after = rss_anon_mib()
    local = sum(p.to_local().numel() * p.element_size() if hasattr(p, "to_local") else p.numel() * p.element_size()
                for p in model.parameters())
    result = {
        "rank": rank, "world_size": world, "torch_threads": torch.get_num_threads(),
        "rss_anon_before_mib": before, "rss_anon_peak_mib": sampler.peak, "rss_anon_after_mib": after,
        "samples": sampler.samples, "rss_before_mib": rss_before,
        "rss_peak_mib": hwm if exact else None,  # exact (VmHWM); None when /proc/self/clear_refs is not writable
        "prepare_seconds": seconds, "local_shard_bytes": local,
    }
    dist.barrier()
    finish(result, out_dir, rank)


if __name__ == "__main__":
    commands = {"make": make, "run": run}
    if len(sys.argv) != 4 or sys.argv[1] not in commands:
        sys.exit(__doc__)
    commands[sys.argv[1]](*sys.argv[2:4])
