"""FSDP2 + cpu_ram_efficient_loading: during `prepare`, every rank but 0 receives each whole parameter from rank 0
(a broadcast) before it keeps its shard, so its peak memory is about the whole model instead of its shard.

Run: torchrun --nproc-per-node=2 repro.py

Expected: rank 1's resident memory rises in `prepare` by about its shard (half the model on 2 ranks), and every rank
ends up with exactly its shard of the checkpoint.
"""

import ctypes
import gc
import os
import tempfile

import torch
import torch.distributed as dist
from torch import nn

from accelerate import Accelerator, FullyShardedDataParallelPlugin
from accelerate.state import PartialState
from accelerate.utils import DistributedType


class Model(nn.Module):
    # 256 MiB in float32, in two 128 MiB matrices
    def __init__(self, vocab_size=16384, hidden_size=2048):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden_size)
        self.head = nn.Linear(hidden_size, vocab_size, bias=False)

    def forward(self, input_ids):
        return self.head(self.embed(input_ids))


def mib(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith(f"{field}:"))


# FSDP2 with cpu_ram_efficient_loading on CPU (gloo). Accelerate only picks FSDP on accelerators, so set it here.
plugin = FullyShardedDataParallelPlugin(fsdp_version=2, cpu_ram_efficient_loading=True)
accelerator = Accelerator(cpu=True, fsdp_plugin=plugin)
accelerator.state.fsdp_plugin = plugin
accelerator.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
rank = accelerator.process_index

checkpoint = os.path.join(tempfile.gettempdir(), "repro-fsdp2-checkpoint.pt")
if rank == 0:
    torch.manual_seed(0)
    torch.save(Model().state_dict(), checkpoint)
dist.barrier()

# Warm-up on a tiny model: one-time imports and caches do not count below. FSDP2 takes the optimizer with the model.
warmup = Model(vocab_size=64, hidden_size=16)
accelerator.prepare(warmup, torch.optim.SGD(warmup.parameters(), lr=0.1))

# Like `cpu_ram_efficient_loading` loaders: the weights are views on the memory-mapped checkpoint, no RAM of their own
with torch.device("meta"):
    model = Model()
model.load_state_dict(torch.load(checkpoint, mmap=True, weights_only=True), assign=True)

gc.collect()
ctypes.CDLL("libc.so.6").malloc_trim(0)
dist.barrier()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets the peak resident set size (VmHWM) to the current one
before = mib("VmRSS")
model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
rise = mib("VmHWM") - before

expected = torch.load(checkpoint, mmap=True, weights_only=True)
shard = sum(p.to_local().numel() * p.element_size() for p in model.parameters()) / 2**20
exact = all(torch.equal(p.full_tensor(), expected[name]) for name, p in model.named_parameters())

lines = [f"rank {rank}: its shard {shard:.1f} MiB; peak memory rise in prepare {rise:.1f} MiB; parameters exact: {exact}"]
gathered = [None] * accelerator.num_processes
dist.all_gather_object(gathered, lines)
if rank == 0:
    print("\n".join(line for rank_lines in gathered for line in rank_lines))
dist.barrier()
dist.destroy_process_group()
