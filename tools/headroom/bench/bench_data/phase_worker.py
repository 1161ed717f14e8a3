"""The load phase of a training job, per node: one rank of a torchrun job (gloo, CPU) with FSDP2
``cpu_ram_efficient_loading`` that does what a training script does before its first step is done:
``from_pretrained``, Accelerate's ``prepare`` of the model (decoder layers wrapped, as Trainer does) with an SGD
optimizer, one forward and backward on 16 tokens, and ``optimizer.step()``.

The node's local rank 0 samples the anonymous RSS of all the node's ranks at the same instants (nodemem.NodeSampler)
from the start of ``from_pretrained`` to the end of the step; barriers separate the phases. The step's learning rate
is 0, so afterwards every parameter must still equal the checkpoint: rank 0 loads it again and compares each gathered
parameter (*exact*), after the sampler has stopped.

Run inside build/envs/<env> with ``ACCELERATE_USE_FSDP=true FSDP_CPU_RAM_EFFICIENT_LOADING=true``.

Usage: phase_worker.py CHECKPOINT_DIR OUT_DIR DTYPE   (DTYPE: auto, bfloat16, float32)
"""

import os
import sys
import time

from nodemem import NodeSampler
from rankmem import finish, trim, warm_up


def main(checkpoint_dir: str, out_dir: str, dtype_name: str) -> None:
    import torch
    import torch.distributed as dist
    from accelerate import Accelerator, FullyShardedDataParallelPlugin
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    from transformers import AutoModelForCausalLM
    from transformers.integrations import is_fsdp_enabled

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, cpu_ram_efficient_loading=True,
                                            auto_wrap_policy="transformer_based_wrap")
    # As in fsdp_worker.py: a gloo group (`cpu=True`) on which we turn FSDP on ourselves, so that `prepare` takes the
    # real FSDP2 path on CPU
    accelerator = Accelerator(cpu=True, fsdp_plugin=plugin)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
    rank, world = dist.get_rank(), dist.get_world_size()
    node = int(os.environ.get("GROUP_RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    everyone = [None] * world
    dist.all_gather_object(everyone, (node, os.getpid()))
    pids = {r: pid for r, (n, pid) in enumerate(everyone) if n == node}
    dtype = dtype_name if dtype_name == "auto" else getattr(torch, dtype_name)

    warm_up(checkpoint_dir, out_dir, dtype)
    trim()

    sampler = NodeSampler(pids).start() if local_rank == 0 else None
    seconds = {}

    def phase(name: str) -> None:
        dist.barrier()
        if sampler:
            sampler.set_phase(name)
        dist.barrier()

    phase("from_pretrained")
    start = time.monotonic()
    model = AutoModelForCausalLM.from_pretrained(checkpoint_dir, dtype=dtype)
    seconds["from_pretrained"] = time.monotonic() - start
    params = list(model.parameters())
    model_bytes = sum(p.numel() * p.element_size() for p in params)
    names = [name for name, _ in model.named_parameters()]
    vocab = model.config.vocab_size
    del params
    phase("prepare")
    start = time.monotonic()
    # FSDP2 wants the optimizer prepared with its model (its parameters are swapped for the sharded ones)
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.0))
    seconds["prepare"] = time.monotonic() - start
    phase("step")
    start = time.monotonic()
    ids = torch.randint(0, vocab, (1, 16), generator=torch.Generator().manual_seed(0))
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    seconds["step"] = time.monotonic() - start
    dist.barrier()
    node_memory = sampler.stop() if sampler else None
    shard_bytes = sum((p.to_local() if hasattr(p, "to_local") else p).numel() * p.element_size()
                      for p in model.parameters())
    exact = check_exact(model, names, checkpoint_dir, dtype, rank)
    result = {"rank": rank, "local_rank": local_rank, "node": node, "world_size": world,
              "fsdp_enabled": bool(is_fsdp_enabled()), "model_bytes": model_bytes, "shard_bytes": shard_bytes,
              "seconds": seconds, "exact": exact, "node_memory": node_memory}
    finish(result, out_dir, rank)


def check_exact(model, names: list, checkpoint_dir: str, dtype, rank: int):
    """On rank 0: do the parameters, gathered one at a time, equal a fresh load of the checkpoint? (None elsewhere)"""
    import torch
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(checkpoint_dir, dtype=dtype).state_dict() if rank == 0 else None
    live = dict(model.named_parameters())
    different = []
    for name in names:
        p = live[name]
        full = p.full_tensor() if hasattr(p, "full_tensor") else p.detach()
        if rank == 0 and not torch.equal(full.cpu(), reference[name]):
            different.append(name)
        del full
    return None if rank != 0 else {"parameters": len(names), "different": different[:5],
                                   "exact": not different}


if __name__ == "__main__":
    main(*sys.argv[1:4])
