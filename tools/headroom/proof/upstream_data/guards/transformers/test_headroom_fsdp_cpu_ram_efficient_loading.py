# Copyright 2026 The HuggingFace Team. All rights reserved.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
headroom regression guard (tools/headroom/proof/upstream_data/guards/): the tests of the retired patch
transformers/0002 ("Give missing keys CPU placeholders on non-rank-0 FSDP ranks"). Official transformers 5.23.0 and
5.24.0 with official accelerate 1.16.0 pass all three, so the patch was retired; they now run on both test environments in
`make test` and on every new release in `make canary`, so that a regression in either upstream is caught.

Tests for `from_pretrained` on the non-main ranks of an FSDP job using `cpu_ram_efficient_loading`
(`ACCELERATE_USE_FSDP=true` and `FSDP_CPU_RAM_EFFICIENT_LOADING=true`).

The distributed parts run this very file with `torchrun` on 2 CPU processes (gloo backend), see `__main__` below.
"""

import contextlib
import ctypes
import gc
import json
import os
import sys

from transformers import is_torch_available
from transformers.testing_utils import (
    TestCasePlus,
    execute_subprocess_async,
    require_accelerate,
    require_torch,
)


if is_torch_available():
    import torch
    from torch import nn

    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        BertModel,
        LlamaConfig,
        LlamaForCausalLM,
        PreTrainedConfig,
        PreTrainedModel,
    )

    class PersistentBufferConfig(PreTrainedConfig):
        model_type = "persistent-buffer-test"

        def __init__(self, hidden_size=16, **kwargs):
            self.hidden_size = hidden_size
            super().__init__(**kwargs)

    class PersistentBufferModel(PreTrainedModel):
        config_class = PersistentBufferConfig

        def __init__(self, config):
            super().__init__(config)
            self.proj = nn.Linear(config.hidden_size, config.hidden_size)
            # Saved in the checkpoint and loaded like a parameter, but not a parameter
            self.register_buffer("scale", torch.ones(config.hidden_size), persistent=True)
            self.post_init()

        def forward(self, hidden_states):
            return self.proj(hidden_states) * self.scale


# Keys left out of the checkpoint to exercise the path of the missing keys (they are initialized on rank 0 and broadcast)
MISSING_KEYS = ["model.norm.weight", "lm_head.weight"]
LEARNING_RATE = 0.1
TRAINING_STEPS = 3
TRAINING_LEARNING_RATE = 1e-3


def get_llama_config(**kwargs):
    # ~1.3 MB in float32 by default
    config = {"vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
    config.update(kwargs)
    return LlamaConfig(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False, **config)


def get_input_ids():
    return torch.arange(32).view(2, 16) * 31 % 1024


def get_bert_config():
    return BertConfig(
        vocab_size=128,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=2,
    )


def get_classification_batch():
    return {"input_ids": torch.arange(32).view(4, 8) * 7 % 128, "labels": torch.tensor([0, 1, 1, 0])}


def train_classifier(model, optimizer, backward, steps):
    """The same AdamW steps on the same batch, in the single process reference and on every FSDP rank."""
    batch = get_classification_batch()
    losses = []
    for _ in range(steps):
        loss = model(**batch).loss
        backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())
    return losses


@contextlib.contextmanager
def one_thread():
    """Runs the single process reference on one thread, like each rank (see `launch`), so that both sum in the same
    order and must agree exactly on any machine. With more threads, AdamW turns the rounding noise of near-zero
    gradients into differences that depend on the CPU."""
    num_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(num_threads)


def rss_anon_mib():
    """Anonymous resident memory of this process, i.e. without the file-backed pages of a memory-mapped checkpoint."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("RssAnon not found in /proc/self/status")


def fsdp_state():
    from transformers.distributed.utils import is_local_dist_rank_0
    from transformers.integrations import is_fsdp_enabled

    return {"fsdp_enabled": is_fsdp_enabled(), "local_rank_0": is_local_dist_rank_0()}


def write_rank_result(output_dir, name, rank, result):
    with open(os.path.join(output_dir, f"{name}_rank{rank}.json"), "w", encoding="utf-8") as f:
        json.dump(result, f)


def leave_fsdp2_worker():
    """The end of a worker that used FSDP2, once it has written its result (also for the other FSDP guards beside this
    file). It leaves without the interpreter's teardown: FSDP2 keeps the process group referenced (its module states
    and hooks live on), so `destroy_process_group` cannot free the gloo backend, whose threads would then be torn down
    with the interpreter while the other ranks exit; on a busy machine that aborted rank 1 (`terminate called without
    an active exception`). Every rank is past the barrier and has written its result."""
    import torch.distributed as dist

    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def get_fsdp2_accelerator():
    from accelerate import Accelerator, FullyShardedDataParallelPlugin
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType

    fsdp_plugin = FullyShardedDataParallelPlugin(fsdp_version=2, cpu_ram_efficient_loading=True)
    # `cpu=True` makes Accelerate set up a gloo process group (`MULTI_CPU`). Accelerate only switches to FSDP on top of
    # accelerator backends (CUDA, XPU, ...), so we set the distributed type ourselves, on `PartialState` as well like
    # `AcceleratorState.__init__` does (it re-syncs from it). `prepare` then takes the real FSDP2 path on CPU:
    # `fully_shard` + `fsdp2_load_full_state_dict` broadcasting rank 0's weights.
    accelerator = Accelerator(cpu=True, fsdp_plugin=fsdp_plugin)
    accelerator.state.fsdp_plugin = fsdp_plugin
    accelerator.state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
    return accelerator


def run_memory_worker(checkpoint_dir, output_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    before = rss_anon_mib()
    # Same dtype as the checkpoint: the loaded weights are views on the memory-mapped file
    model = LlamaForCausalLM.from_pretrained(checkpoint_dir, dtype=torch.float32)
    after = rss_anon_mib()
    model_mib = sum(t.numel() * t.element_size() for t in model.state_dict().values()) / 2**20
    write_rank_result(output_dir, "memory", rank, {"rise_mib": after - before, "model_mib": model_mib, **fsdp_state()})
    dist.barrier()
    dist.destroy_process_group()


def run_fsdp2_worker(checkpoint_dir, partial_checkpoint_dir, buffer_checkpoint_dir, output_dir):
    import torch.distributed as dist
    from safetensors.torch import load_file

    accelerator = get_fsdp2_accelerator()
    rank = accelerator.process_index
    world_size = accelerator.num_processes
    result = {"world_size": world_size, **fsdp_state()}

    # 0. Persistent buffers are loaded from the checkpoint by every rank and must keep these values. Checked right after
    # `from_pretrained`, without `prepare`: Accelerate's FSDP2 loading only handles (sharded) parameters, not buffers
    model = PersistentBufferModel.from_pretrained(buffer_checkpoint_dir)
    result["buffer_scale"] = model.scale.tolist()
    # The parameter: loaded by rank 0; another rank may leave it on meta (rank 0 sends it at `prepare`) or load it
    result["buffer_proj_weight"] = None if model.proj.weight.is_meta else model.proj.weight.tolist()

    def gather(tensor):
        tensors = [torch.empty_like(tensor) for _ in range(world_size)]
        dist.all_gather(tensors, tensor.contiguous())
        return tensors

    def check_prepared_model(model, optimizer, checkpoint, prefix):
        # Accelerate swaps the optimizer's params for the sharded ones: they must be exactly the model's params
        optimizer_param_ids = [id(param) for param in optimizer.param_groups[0]["params"]]
        result[f"{prefix}optimizer_params_are_model_params"] = optimizer_param_ids == list(map(id, model.parameters()))
        full_params = {name: param.full_tensor() for name, param in model.named_parameters()}
        result[f"{prefix}params_not_equal_to_checkpoint"] = [
            name for name in checkpoint if not torch.equal(full_params[name], checkpoint[name])
        ]
        checksums = torch.stack([param.double().sum() for param in full_params.values()])
        result[f"{prefix}checksums_agree_across_ranks"] = all(torch.equal(c, checksums) for c in gather(checksums))
        return full_params

    # 1. Full checkpoint
    checkpoint = load_file(os.path.join(checkpoint_dir, "model.safetensors"))
    reference = torch.load(os.path.join(output_dir, "reference.pt"))
    model = LlamaForCausalLM.from_pretrained(checkpoint_dir, dtype=torch.float32)
    inv_freq = model.model.rotary_emb.inv_freq.clone()
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    model, optimizer = accelerator.prepare(model, optimizer)

    check_prepared_model(model, optimizer, checkpoint, prefix="")
    for name, value in (("from_pretrained", inv_freq), ("prepare", model.model.rotary_emb.inv_freq)):
        result[f"inv_freq_after_{name}_equal_to_rank0"] = torch.equal(value, gather(value)[0])
        result[f"inv_freq_after_{name}_is_nonzero"] = bool((value != 0).all())

    input_ids = get_input_ids()
    with torch.no_grad():
        logits = model(input_ids=input_ids).logits
    result["logits_max_abs_diff"] = (logits - reference["logits"]).abs().max().item()

    loss = model(input_ids=input_ids, labels=input_ids).loss
    accelerator.backward(loss)
    optimizer.step()
    optimizer.zero_grad()
    full_params = {name: param.full_tensor() for name, param in model.named_parameters()}
    result["loss"] = loss.item()
    result["non_finite_params_after_step"] = [n for n, p in full_params.items() if not torch.isfinite(p).all()]
    result["params_after_step_max_abs_diff"] = max(
        (full_params[name] - value).abs().max().item() for name, value in reference["params_after_step"].items()
    )

    # 2. Checkpoint with missing keys: rank 0 initializes them, the other ranks must get them through the broadcast
    partial_checkpoint = load_file(os.path.join(partial_checkpoint_dir, "model.safetensors"))
    model = LlamaForCausalLM.from_pretrained(partial_checkpoint_dir, dtype=torch.float32)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    model, optimizer = accelerator.prepare(model, optimizer)
    full_params = check_prepared_model(model, optimizer, partial_checkpoint, prefix="partial_")
    result["partial_missing_keys_are_nonzero"] = all(bool(full_params[k].abs().sum() > 0) for k in MISSING_KEYS)

    write_rank_result(output_dir, "fsdp2", rank, result)
    leave_fsdp2_worker()


def run_training_worker(checkpoint_dir, output_dir):
    accelerator = get_fsdp2_accelerator()
    rank = accelerator.process_index
    result = {"world_size": accelerator.num_processes, **fsdp_state()}

    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(checkpoint_dir)
    result["meta_params_after_from_pretrained"] = [name for name, param in model.named_parameters() if param.is_meta]
    optimizer = torch.optim.AdamW(model.parameters(), lr=TRAINING_LEARNING_RATE)
    model, optimizer = accelerator.prepare(model, optimizer)

    # Accelerate swaps the optimizer's params for the sharded ones: each must be one of the model's params, once
    names = {id(param): name for name, param in model.named_parameters()}
    optimizer_names = [
        names.get(id(param), "<not a model parameter>") for param in optimizer.param_groups[0]["params"]
    ]
    result["optimizer_duplicates"] = sorted({name for name in optimizer_names if optimizer_names.count(name) > 1})
    result["optimizer_missing"] = sorted(set(names.values()) - set(optimizer_names))
    result["optimizer_not_model_params"] = optimizer_names.count("<not a model parameter>")

    reference = torch.load(os.path.join(output_dir, "reference.pt"))

    def max_abs_diff(params):
        return {
            name: (param.full_tensor() - params[name]).abs().max().item() for name, param in model.named_parameters()
        }

    result["initial_max_abs_diff"] = max_abs_diff(reference["initial"])
    result["losses"] = train_classifier(model, optimizer, accelerator.backward, 1)
    result["one_step_max_abs_diff"] = max_abs_diff(reference["one_step"])
    result["losses"] += train_classifier(model, optimizer, accelerator.backward, TRAINING_STEPS - 1)
    result["trained_max_abs_diff"] = max_abs_diff(reference["trained"])

    write_rank_result(output_dir, "training", rank, result)
    leave_fsdp2_worker()


@require_torch
class FSDPCpuRamEfficientLoadingTest(TestCasePlus):
    def launch(self, *args):
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes=1",
            "--nproc-per-node=2",
            # a free port of its own: a canary or another make test on the machine may run its jobs at the same time
            "--standalone",
            self.test_file_path_str,
            *args,
        ]
        env = self.get_env()
        # What `accelerate launch --use_fsdp --fsdp_cpu_ram_efficient_loading true` sets
        env["ACCELERATE_USE_FSDP"] = "true"
        env["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "true"
        # One thread per rank, like the reference computed under `one_thread()`
        env["OMP_NUM_THREADS"] = "1"
        execute_subprocess_async(cmd, env=env)

    def read_rank_results(self, output_dir, name):
        results = []
        for rank in range(2):
            with open(os.path.join(output_dir, f"{name}_rank{rank}.json"), encoding="utf-8") as f:
                results.append(json.load(f))
        self.assertTrue(results[1]["fsdp_enabled"])
        self.assertTrue(results[0]["local_rank_0"])
        self.assertFalse(results[1]["local_rank_0"])
        return results

    def test_non_main_rank_does_not_materialize_the_model(self):
        """Rank 1 must not allocate a copy of the model: rank 0 broadcasts the weights when the model is sharded."""
        if not os.path.exists("/proc/self/status"):
            self.skipTest("needs /proc/self/status")
        tmp_dir = self.get_auto_remove_tmp_dir()
        checkpoint_dir = os.path.join(tmp_dir, "checkpoint")
        # ~250 MB in float32
        config = get_llama_config(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=10)
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(checkpoint_dir)

        self.launch("memory", checkpoint_dir, tmp_dir)

        result = self.read_rank_results(tmp_dir, "memory")[1]
        rise, model_mib = result["rise_mib"], result["model_mib"]
        pct = 100 * rise / model_mib
        print(
            f"fsdp-cpu-ram-efficient-loading: rank1 RssAnon rise {rise:.1f} MiB = {pct:.1f}% of model {model_mib:.1f} MiB"
        )
        # Before the fix, every non-main rank allocated a full copy of the model (a rise of ~100%)
        self.assertLess(pct, 10)

    @require_accelerate
    def test_fsdp2_prepare_matches_checkpoint(self):
        """Full path with Accelerate's FSDP2: `from_pretrained` then `prepare` must give the same model on all ranks."""
        tmp_dir = self.get_auto_remove_tmp_dir()
        checkpoint_dir = os.path.join(tmp_dir, "checkpoint")
        partial_checkpoint_dir = os.path.join(tmp_dir, "partial_checkpoint")
        buffer_checkpoint_dir = os.path.join(tmp_dir, "buffer_checkpoint")
        torch.manual_seed(0)
        buffer_model = PersistentBufferModel(PersistentBufferConfig())
        buffer_model.scale.copy_(torch.arange(buffer_model.config.hidden_size) + 2.0)
        buffer_model.save_pretrained(buffer_checkpoint_dir)
        model = LlamaForCausalLM(get_llama_config())
        model.save_pretrained(checkpoint_dir)
        state_dict = {k: v for k, v in model.state_dict().items() if k not in MISSING_KEYS}
        model.save_pretrained(partial_checkpoint_dir, state_dict=state_dict)

        # Reference: plain single-process model, one SGD step on the same batch as the (identical) ranks
        model = LlamaForCausalLM.from_pretrained(checkpoint_dir, dtype=torch.float32)
        input_ids = get_input_ids()
        with one_thread():
            with torch.no_grad():
                logits = model(input_ids=input_ids).logits
            optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
            model(input_ids=input_ids, labels=input_ids).loss.backward()
            optimizer.step()
        params_after_step = {name: param.detach().clone() for name, param in model.named_parameters()}
        torch.save({"logits": logits, "params_after_step": params_after_step}, os.path.join(tmp_dir, "reference.pt"))

        self.launch("fsdp2", checkpoint_dir, partial_checkpoint_dir, buffer_checkpoint_dir, tmp_dir)

        for rank, result in enumerate(self.read_rank_results(tmp_dir, "fsdp2")):
            print(
                f"rank{rank}: logits max abs diff {result['logits_max_abs_diff']:.2e}, params after step max abs diff "
                f"{result['params_after_step_max_abs_diff']:.2e} (vs non-FSDP model)"
            )
            msg = f"rank {rank}"
            self.assertEqual(result["world_size"], 2)
            # Full checkpoint
            self.assertTrue(result["optimizer_params_are_model_params"], msg)
            self.assertEqual(result["params_not_equal_to_checkpoint"], [], msg)
            self.assertTrue(result["checksums_agree_across_ranks"], msg)
            for name in ("from_pretrained", "prepare"):
                self.assertTrue(result[f"inv_freq_after_{name}_equal_to_rank0"], msg)
                self.assertTrue(result[f"inv_freq_after_{name}_is_nonzero"], msg)
            self.assertLess(result["logits_max_abs_diff"], 1e-5, msg)
            self.assertEqual(result["non_finite_params_after_step"], [], msg)
            self.assertLess(result["params_after_step_max_abs_diff"], 1e-5, msg)
            # Checkpoint with missing keys
            self.assertTrue(result["partial_optimizer_params_are_model_params"], msg)
            self.assertEqual(result["partial_params_not_equal_to_checkpoint"], [], msg)
            self.assertTrue(result["partial_checksums_agree_across_ranks"], msg)
            self.assertTrue(result["partial_missing_keys_are_nonzero"], msg)
            # Persistent buffer, right after `from_pretrained`
            self.assertEqual(result["buffer_scale"], buffer_model.scale.tolist(), msg)
            if rank == 0 or result["buffer_proj_weight"] is not None:
                self.assertEqual(result["buffer_proj_weight"], buffer_model.proj.weight.tolist(), msg)

    @require_accelerate
    def test_fsdp2_training_with_a_new_head_matches_single_process(self):
        """Fine-tune a classifier from a base model checkpoint (the head's weight and bias are missing keys) with FSDP2 on
        2 ranks: the optimizer of every rank must hold each of its model's params exactly once, and training must give
        the same weights as a single process."""
        tmp_dir = self.get_auto_remove_tmp_dir()
        checkpoint_dir = os.path.join(tmp_dir, "base_checkpoint")
        torch.manual_seed(0)
        BertModel(get_bert_config()).save_pretrained(checkpoint_dir)

        # Reference: a single process, same seed (the missing head is initialized the same way as on rank 0), same steps
        torch.manual_seed(0)
        model = BertForSequenceClassification.from_pretrained(checkpoint_dir)
        initial = {name: param.detach().clone() for name, param in model.named_parameters()}
        optimizer = torch.optim.AdamW(model.parameters(), lr=TRAINING_LEARNING_RATE)
        with one_thread():
            train_classifier(model, optimizer, lambda loss: loss.backward(), 1)
            one_step = {name: param.detach().clone() for name, param in model.named_parameters()}
            train_classifier(model, optimizer, lambda loss: loss.backward(), TRAINING_STEPS - 1)
        trained = {name: param.detach().clone() for name, param in model.named_parameters()}
        torch.save(
            {"initial": initial, "one_step": one_step, "trained": trained}, os.path.join(tmp_dir, "reference.pt")
        )

        self.launch("training", checkpoint_dir, tmp_dir)

        results = self.read_rank_results(tmp_dir, "training")
        for rank, result in enumerate(results):
            one_step, trained = result["one_step_max_abs_diff"], result["trained_max_abs_diff"]
            print(
                f"rank{rank}: params on meta after from_pretrained: {result['meta_params_after_from_pretrained']}; "
                f"optimizer holds twice {result['optimizer_duplicates']}, never {result['optimizer_missing']}; "
                f"max abs diff vs single process: after prepare {max(result['initial_max_abs_diff'].values()):.2e}, "
                f"after 1 step classifier.weight {one_step['classifier.weight']:.2e} classifier.bias "
                f"{one_step['classifier.bias']:.2e}, after {TRAINING_STEPS} steps "
                f"{sum(diff > 1e-5 for diff in trained.values())}/{len(trained)} params differ (max {max(trained.values()):.2e})"
            )
        # The optimizer of every rank first: a param held twice and one never held are the cause of the rest
        for rank, result in enumerate(results):
            msg = f"rank {rank}"
            self.assertEqual(result["world_size"], 2)
            self.assertEqual(result["optimizer_duplicates"], [], msg)
            self.assertEqual(result["optimizer_missing"], [], msg)
            self.assertEqual(result["optimizer_not_model_params"], 0, msg)
        for rank, result in enumerate(results):
            msg = f"rank {rank}"
            for name, diff in result["initial_max_abs_diff"].items():
                self.assertLess(diff, 1e-6, f"{msg}: {name} after prepare")
            for name, diff in result["trained_max_abs_diff"].items():
                self.assertLess(diff, 1e-5, f"{msg}: {name} after {TRAINING_STEPS} steps")


if __name__ == "__main__":
    # Entry point of the processes launched by `FSDPCpuRamEfficientLoadingTest.launch`
    workers = {"memory": run_memory_worker, "fsdp2": run_fsdp2_worker, "training": run_training_worker}
    workers[sys.argv[1]](*sys.argv[2:])
