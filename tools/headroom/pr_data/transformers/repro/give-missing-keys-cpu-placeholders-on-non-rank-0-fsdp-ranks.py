"""FSDP2 + cpu_ram_efficient_loading: fine-tuning from a checkpoint that lacks two or more parameters (e.g. a new
classification head with a bias) silently trains the wrong parameters on every rank but 0.

Run: torchrun --nproc-per-node=2 repro.py

Expected: on every rank, the optimizer holds each parameter of the model exactly once, and after training every
parameter equals what a single process computes on the same batch.
"""

import os
import tempfile


# What `accelerate launch --use_fsdp --fsdp_cpu_ram_efficient_loading true` sets
os.environ["ACCELERATE_USE_FSDP"] = "true"
os.environ["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "true"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"

import torch
import torch.distributed as dist
from accelerate import Accelerator, FullyShardedDataParallelPlugin
from accelerate.state import PartialState
from accelerate.utils import DistributedType

from transformers import BertConfig, BertForSequenceClassification, BertModel
from transformers.utils import logging


logging.set_verbosity_error()  # the load reports say "classifier.weight, classifier.bias: MISSING", as expected
logging.disable_progress_bar()


STEPS = 2
CONFIG = BertConfig(
    vocab_size=128,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    hidden_dropout_prob=0.0,
    attention_probs_dropout_prob=0.0,
    num_labels=2,
)
BATCH = {"input_ids": torch.arange(32).view(4, 8) * 7 % 128, "labels": torch.tensor([0, 1, 1, 0])}


def train(model, optimizer, backward):
    for _ in range(STEPS):
        backward(model(**BATCH).loss)
        optimizer.step()
        optimizer.zero_grad()


# A base model checkpoint: the classifier's weight and bias are not in it
checkpoint = os.path.join(tempfile.gettempdir(), f"repro-bert-base-{os.environ.get('LOCAL_RANK', '0')}")
torch.manual_seed(0)
BertModel(CONFIG).save_pretrained(checkpoint)

# Reference: a single process (no process group yet, so a plain `from_pretrained`), same seed, same steps
torch.manual_seed(0)
model = BertForSequenceClassification.from_pretrained(checkpoint)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
train(model, optimizer, lambda loss: loss.backward())
reference = {name: param.detach().clone() for name, param in model.named_parameters()}

# FSDP2 with cpu_ram_efficient_loading on CPU (gloo). Accelerate only picks FSDP on accelerators, so set it here.
plugin = FullyShardedDataParallelPlugin(fsdp_version=2, cpu_ram_efficient_loading=True)
accelerator = Accelerator(cpu=True, fsdp_plugin=plugin)
accelerator.state.fsdp_plugin = plugin
accelerator.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
rank = accelerator.process_index

torch.manual_seed(0)
model = BertForSequenceClassification.from_pretrained(checkpoint)
on_meta = [name for name, param in model.named_parameters() if param.is_meta]
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
model, optimizer = accelerator.prepare(model, optimizer)

names = {id(param): name for name, param in model.named_parameters()}
held = [names.get(id(param), "?") for param in optimizer.param_groups[0]["params"]]
duplicates = sorted({name for name in held if held.count(name) > 1})
missing = sorted(set(names.values()) - set(held))
train(model, optimizer, accelerator.backward)
diffs = {name: (param.full_tensor() - reference[name]).abs().max().item() for name, param in model.named_parameters()}
wrong = [name for name, diff in diffs.items() if diff > 1e-5]

lines = [
    f"rank {rank}: parameters on meta after from_pretrained: {on_meta}",
    f"rank {rank}: optimizer holds twice: {duplicates}; never: {missing}",
    f"rank {rank}: after {STEPS} AdamW steps, {len(wrong)} of {len(diffs)} parameters differ from a single process "
    f"(max abs diff {max(diffs.values()):.1e})",
]
gathered = [None] * accelerator.num_processes
dist.all_gather_object(gathered, lines)
if rank == 0:
    print("\n".join(line for rank_lines in gathered for line in rank_lines))
dist.barrier()
dist.destroy_process_group()
