"""Fix 2 correctness worker: one process of a ``torch.distributed.run`` job on CPU (gloo).

Loads a Llama checkpoint *without* a token-classification head into
``AutoModelForTokenClassification`` (so two parameters are missing: ``score.weight`` and
``score.bias``) with FSDP ``cpu_ram_efficient_loading``, goes through Accelerate's FSDP2
``prepare`` with an SGD optimizer, and trains a few steps on one fixed batch (the same on
every rank, so the averaged gradient is the single-process one). Rank 0 keeps a copy of
the model it loaded (the weights every rank receives from rank 0 when the model is
sharded) and trains it the same way in one process: the reference.

Each rank writes ``<out_dir>/rank<N>.json``: whether its optimizer's parameters are the
model's (``aliased``: one sharded parameter appears twice, or a parameter is not in the
optimizer), and on rank 0 the largest absolute difference between the FSDP model and the
single-process reference after the steps.

Usage: fsdp_correctness.py CHECKPOINT_DIR OUT_DIR STEPS
"""

import copy
import sys

from rankmem import finish

NUM_LABELS = 4
LR = 0.1


def batch(torch, vocab: int):
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(0, vocab, (2, 12), generator=g)
    labels = torch.randint(0, NUM_LABELS, (2, 12), generator=g)
    return ids, labels


def step(model, optimizer, ids, labels, backward) -> float:
    loss = model(input_ids=ids, labels=labels).loss
    backward(loss)
    optimizer.step()
    optimizer.zero_grad()
    return float(loss.detach())


def main(checkpoint_dir: str, out_dir: str, steps: str) -> None:
    import torch
    import torch.distributed as dist
    from accelerate import Accelerator, FullyShardedDataParallelPlugin
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    from transformers import AutoModelForTokenClassification

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, cpu_ram_efficient_loading=True)
    # See fsdp_worker.py: Accelerate only turns FSDP on for accelerator backends, so we set it on CPU ourselves.
    accelerator = Accelerator(cpu=True, fsdp_plugin=plugin)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
    rank = accelerator.process_index
    result = {"rank": rank, "world_size": accelerator.num_processes}
    torch.manual_seed(0)
    model = AutoModelForTokenClassification.from_pretrained(checkpoint_dir, num_labels=NUM_LABELS, dtype="auto")
    model.eval()  # no dropout: the reference must see the same function
    result["meta_after_load"] = sorted(n for n, p in model.named_parameters() if p.device.type == "meta")
    result["missing_head_on_meta"] = [n for n in ("score.weight", "score.bias") if n in result["meta_after_load"]]
    reference = copy.deepcopy(model) if rank == 0 else None
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    model, optimizer = accelerator.prepare(model, optimizer)
    params = [p for group in optimizer.param_groups for p in group["params"]]
    model_params = dict((id(p), n) for n, p in model.named_parameters())
    result["optimizer_params"] = len(params)
    result["optimizer_unique_params"] = len({id(p) for p in params})
    result["model_params"] = len(model_params)
    result["not_in_optimizer"] = sorted(n for i, n in model_params.items() if i not in {id(p) for p in params})
    result["aliased"] = result["optimizer_unique_params"] < len(params) or bool(result["not_in_optimizer"])
    ids, labels = batch(torch, model.config.vocab_size)
    result["losses"] = [step(model, optimizer, ids, labels, accelerator.backward) for _ in range(int(steps))]
    full = {}
    for n, p in model.named_parameters():  # every rank takes part in the gathers
        full[n] = p.full_tensor() if hasattr(p, "full_tensor") else p.detach()
    if rank == 0:
        ref_opt = torch.optim.SGD(reference.parameters(), lr=LR)
        result["reference_losses"] = [step(reference, ref_opt, ids, labels, lambda loss: loss.backward())
                                      for _ in range(int(steps))]
        ref = dict(reference.named_parameters())
        diffs = {n.removeprefix("_orig_mod."): float((t.float() - ref[n.removeprefix("_orig_mod.")].detach().float())
                                                     .abs().max()) for n, t in full.items()}
        worst = max(diffs, key=diffs.get)
        result["max_abs_diff"] = diffs[worst]
        result["max_abs_diff_param"] = worst
        result["head_max_abs_diff"] = max(diffs.get("score.weight", 0.0), diffs.get("score.bias", 0.0))
    dist.barrier()
    finish(result, out_dir, rank)


if __name__ == "__main__":
    main(*sys.argv[1:4])
