"""Accelerate prepare benchmark worker (patches/accelerate/0001): runs inside build/envs/<env>.

Two commands:

* ``prepare_worker.py make OUT_DIR CONFIG_JSON``: write a random Llama-style float32 checkpoint as
  ``OUT_DIR/model.pt`` (a plain state dict, loaded memory-mapped) and ``OUT_DIR/meta.json``; prints one JSON line.
* ``prepare_worker.py run MODE CHECKPOINT_DIR OUT_DIR``: one process of a ``torch.distributed.run`` job on CPU
  (gloo). The checkpoint is memory-mapped (its pages are the page cache's, not the process's) and rank 0's weights
  end up sharded over all ranks, by one of three paths (``MODE``):

  - ``accelerate``: every rank assigns the checkpoint to a model built on ``meta`` (no RAM of its own, like an
    efficient loader), then ``accelerator.prepare(model, optimizer)`` with FSDP2 and ``cpu_ram_efficient_loading``
    (rank 0's weights reach the others in ``fsdp2_load_full_state_dict``): the official accelerate in
    build/envs/pristine, the headroom build in build/envs/patched. The timed step is ``prepare``.
  - ``torch``: the path torch offers itself. The model is built on ``meta`` and sharded with ``fully_shard`` in the
    units accelerate's ``fsdp2_prepare_model`` makes with this bench's plugin (no auto-wrap policy: the input
    embedding, then ``[final norm, lm_head]``, then the root; every parameter ``Shard(0)`` over all ranks), then
    ``set_model_state_dict(model, full_sd if rank 0 else {}, StateDictOptions(full_state_dict=True,
    broadcast_from_rank0=True))``. The timed step is ``set_model_state_dict``.
  - ``floor``: the least any path can do. The same sharded meta model gives the shapes; rank 0 holds the full state
    dict; per parameter one ``dist.scatter`` of its ``torch.chunk`` shards along dim 0 (padded to equal size) into a
    buffer of the shard's size on every rank, kept until the end. Nothing else. The timed step is the scatters.

  Each rank writes ``OUT_DIR/rank<N>.json``: anonymous RSS (``RssAnon``) before, sampled peak during and after the
  timed step, the kernel's exact peak RSS (``VmHWM``, reset right before), the wall time, the bytes of its shard,
  the FSDP units and placements (the layout, the same in every mode), and whether every parameter's local shard
  equals the checkpoint's rows after the step (``exact``).

transformers' ``from_pretrained`` is not used: only the path that shards rank 0's weights differs between modes.
"""

import json
import math
import os
import sys
import time

from rankmem import PeakSampler, finish, reset_peak_rss, rss_anon_mib, status_mib, trim

MODES = ("accelerate", "torch", "floor")


def _config(config_kwargs: dict):
    from transformers import LlamaConfig

    return LlamaConfig(**config_kwargs)


def _state(checkpoint_dir: str) -> dict:
    import torch

    return torch.load(os.path.join(checkpoint_dir, "model.pt"), mmap=True, weights_only=True)


def _meta_model(config_kwargs: dict):
    import torch
    from transformers import LlamaForCausalLM

    with torch.device("meta"):
        return LlamaForCausalLM(_config(config_kwargs))


def _cpu_rotary(model, config_kwargs: dict) -> None:
    # The non-persistent buffer (RoPE inv_freq) is not in the checkpoint: compute it on CPU
    model.model.rotary_emb = type(model.model.rotary_emb)(config=_config(config_kwargs))


def _load(checkpoint_dir: str, config_kwargs: dict):
    """The model on meta, its parameters assigned from the memory-mapped checkpoint; the rotary buffer on CPU."""
    model = _meta_model(config_kwargs)
    model.load_state_dict(_state(checkpoint_dir), assign=True, strict=True)
    _cpu_rotary(model, config_kwargs)
    return model


def _sharded_meta(config_kwargs: dict):
    """The model on meta, sharded as accelerate's ``fsdp2_prepare_model`` shards it with this bench's plugin
    (``FullyShardedDataParallelPlugin(fsdp_version=2, cpu_ram_efficient_loading=True)``: no auto-wrap policy, so
    no unit per decoder layer): the input embedding, then ``[final norm, lm_head]`` with
    ``reshard_after_forward=False``, then the root, all on the default mesh (every rank). The rotary buffer stays on
    meta until after the load, as in accelerate."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, OffloadPolicy, fully_shard

    model = _meta_model(config_kwargs)
    kwargs = {"reshard_after_forward": True, "offload_policy": OffloadPolicy(), "mp_policy": MixedPrecisionPolicy(),
              "mesh": None}
    fully_shard(model.get_input_embeddings(), **kwargs)
    fully_shard([model.model.norm, model.get_output_embeddings()], **{**kwargs, "reshard_after_forward": False})
    fully_shard(model, **{k: v for k, v in kwargs.items() if k != "reshard_after_forward"})
    return model


def _rows(n: int, world: int, rank: int) -> tuple[int, int, int]:
    """``torch.chunk(n rows, world)``'s chunk size and this rank's [start, stop) (empty past the last chunk)."""
    size = math.ceil(n / world) if n else 0
    start = min(rank * size, n)
    return size, start, min(start + size, n)


def _scatter(model, full_sd: dict | None) -> list:
    """The floor: per parameter, one scatter from rank 0 of its dim-0 chunks, padded to the chunk size."""
    import torch
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    held = []
    for name, param in model.named_parameters():
        size, start, stop = _rows(param.shape[0], world, rank)
        row = math.prod(param.shape[1:])
        buf = torch.empty(size * row, dtype=param.dtype)
        pieces = None
        if rank == 0:
            full = full_sd[name].reshape(param.shape[0], -1)
            pieces = []
            for r in range(world):
                _, a, b = _rows(param.shape[0], world, r)
                piece = full[a:b].reshape(-1)
                if piece.numel() < buf.numel():
                    padded = torch.zeros_like(buf)
                    padded[:piece.numel()] = piece
                    piece = padded
                pieces.append(piece)
        dist.scatter(buf, pieces, src=0)
        held.append((name, buf[:(stop - start) * row].view(stop - start, *param.shape[1:])))
    return held


def _locals(model) -> list:
    """(name, this rank's local tensor) of every parameter."""
    return [(n, p.to_local() if hasattr(p, "to_local") else p) for n, p in model.named_parameters()]


def _layout(model) -> dict:
    from torch.distributed.fsdp import FSDPModule

    return {"fsdp_units": sorted(n or "<root>" for n, m in model.named_modules() if isinstance(m, FSDPModule)),
            "placements": sorted({str(getattr(p, "placements", "not sharded")) for p in model.parameters()})}


def _check(local: list, checkpoint_dir: str, rank: int, world: int) -> list[str]:
    """The parameters whose local shard differs from the checkpoint's rows of this rank (FSDP2: dim-0 chunks)."""
    import torch

    state = _state(checkpoint_dir)
    bad = []
    for name, tensor in local:
        full = state[name]
        _, a, b = _rows(full.shape[0], world, rank)
        if tensor.device.type == "meta" or not torch.equal(tensor, full[a:b]):
            bad.append(name)
    return bad


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


def _accelerate():
    """An Accelerator with FSDP2 and cpu_ram_efficient_loading on a gloo process group; a path loading a model."""
    import torch
    from accelerate import Accelerator, FullyShardedDataParallelPlugin
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    plugin = FullyShardedDataParallelPlugin(fsdp_version=2, cpu_ram_efficient_loading=True)
    # `cpu=True` gives a gloo process group (MULTI_CPU). Accelerate only turns FSDP on for accelerator backends, so we
    # set the plugin and the distributed type ourselves (on PartialState too: AcceleratorState re-syncs from it).
    accelerator = Accelerator(cpu=True, fsdp_plugin=plugin)
    accelerator.state.fsdp_plugin = plugin
    accelerator.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP

    def path(checkpoint_dir: str, config_kwargs: dict):
        model = _load(checkpoint_dir, config_kwargs)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
        box = {}

        def step():
            box["model"], box["optimizer"] = accelerator.prepare(model, optimizer)

        def done():
            accelerator._models.clear()
            accelerator._optimizers.clear()
            return box["model"], _locals(box["model"])

        return step, done, None  # fully_shard happens inside prepare

    return path


def _torch_path(checkpoint_dir: str, config_kwargs: dict):
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    start = time.monotonic()
    model = _sharded_meta(config_kwargs)
    shard_seconds = time.monotonic() - start
    full_sd = _state(checkpoint_dir) if dist.get_rank() == 0 else {}

    def step():
        set_model_state_dict(model, full_sd, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))

    def done():
        _cpu_rotary(model, config_kwargs)
        return model, _locals(model)

    return step, done, shard_seconds


def _floor_path(checkpoint_dir: str, config_kwargs: dict):
    import torch.distributed as dist

    start = time.monotonic()
    model = _sharded_meta(config_kwargs)
    shard_seconds = time.monotonic() - start
    full_sd = _state(checkpoint_dir) if dist.get_rank() == 0 else None
    box = {}

    def step():
        box["held"] = _scatter(model, full_sd)

    return step, lambda: (model, box["held"]), shard_seconds


def run(mode: str, checkpoint_dir: str, out_dir: str) -> None:
    import torch
    import torch.distributed as dist

    if mode not in MODES:
        sys.exit(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    with open(os.path.join(checkpoint_dir, "meta.json"), encoding="utf-8") as f:
        meta = json.load(f)
    if mode == "accelerate":
        path = _accelerate()
    else:
        dist.init_process_group("gloo")
        path = _torch_path if mode == "torch" else _floor_path
    rank, world = dist.get_rank(), dist.get_world_size()

    # Warm-up: the same path on a tiny model of the same architecture, so lazy imports and one-time caches are not
    # measured
    tiny = {**meta["config"], "vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
            "num_attention_heads": 2, "num_key_value_heads": 2}
    warm_dir = os.path.join(out_dir, "warmup")
    if rank == 0:
        make(warm_dir, json.dumps(tiny))
    dist.barrier()
    step, done, _ = path(warm_dir, tiny)
    step()
    done()
    del step, done

    step, done, shard_seconds = path(checkpoint_dir, meta["config"])
    trim()
    dist.barrier()
    before = status_mib("RssAnon")
    rss_before = status_mib("VmRSS")
    exact = reset_peak_rss()
    start = time.monotonic()
    with PeakSampler() as sampler:
        step()
    seconds = time.monotonic() - start
    hwm = status_mib("VmHWM")
    after = rss_anon_mib()
    model, local = done()
    bad = _check(local, checkpoint_dir, rank, world)
    result = {
        "rank": rank, "world_size": world, "mode": mode, "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "rss_anon_before_mib": before, "rss_anon_peak_mib": sampler.peak, "rss_anon_after_mib": after,
        "samples": sampler.samples, "rss_before_mib": rss_before,
        "rss_peak_mib": hwm if exact else None,  # exact (VmHWM); None when /proc/self/clear_refs is not writable
        "prepare_seconds": seconds,  # the timed step: prepare, set_model_state_dict or the scatters
        "shard_seconds": shard_seconds,  # fully_shard on meta before the timed step (torch, floor; in prepare else)
        "local_shard_bytes": sum(t.numel() * t.element_size() for _, t in local),
        "exact": not bad, "mismatches": bad[:5], **_layout(model),
    }
    dist.barrier()
    finish(result, out_dir, rank)


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "make":
        make(*sys.argv[2:4])
    elif len(sys.argv) == 5 and sys.argv[1] == "run":
        run(*sys.argv[2:5])
    else:
        sys.exit(__doc__)
