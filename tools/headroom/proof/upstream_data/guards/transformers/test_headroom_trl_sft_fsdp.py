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
headroom regression guard (tools/headroom/proof/upstream_data/guards/): a real client, TRL's `SFTTrainer`, fine-tunes
under FSDP2 with `cpu_ram_efficient_loading` on 2 CPU ranks (torchrun, gloo, one thread each) and must end with exactly
the weights one process gets, while rank 1 loads nothing in `from_pretrained` (rank 0 sends every weight in `prepare`).
Runs on every line (it needs no peft); TRL is pinned in requirements/test-env.txt.

TRL takes the model as a path and loads it itself (`trl.trainer.utils.create_model_from_path`, inside
`SFTTrainer.__init__`), as users run it: the memory of rank 1 is sampled around that call (`PeakSampler` of the
two-node guard: the peak of RssAnon, and what stays after it). The checkpoint is float32 and loaded in float32, like
test_headroom_fsdp_cpu_ram_efficient_loading.py's: what a rank loads is then views on the memory-mapped file, and a
rank that copied the model would show a rise of ~100%. A load that converts (a bfloat16 checkpoint loaded in float32)
commits the model on rank 1 with official transformers 5.23.0: that is transformers/0002's proof (red on the official
release), not a guard, which must pass on both environments.

Accelerate only switches to FSDP on top of accelerator backends (CUDA, XPU, ...): on CPU it sets up gloo (`MULTI_CPU`)
and leaves the FSDP plugin aside, so Trainer would train without FSDP. `CpuFsdpSFTTrainer` sets the distributed type
after `create_accelerator_and_postprocess`, as the other FSDP guards do after `Accelerator(cpu=True)`: from there on
Trainer and Accelerate take their real FSDP2 path (`fully_shard`, `fsdp2_load_full_state_dict` from rank 0).

The tokenizer (a word-level one, built here) and the dataset are made in this file: nothing comes from the hub.
`tiny_tokenizer` and `text_dataset` are shared with test_headroom_trl_sft_lora.py.
"""

import json
import os
import sys

from transformers import is_torch_available
from transformers.testing_utils import TestCasePlus, execute_subprocess_async, require_accelerate, require_torch


if is_torch_available():
    import torch
    from test_headroom_fsdp_cpu_ram_efficient_loading import leave_fsdp2_worker, one_thread, write_rank_result
    from test_headroom_fsdp_two_nodes import PeakSampler, rss_anon_kib, settle

    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast


WORDS = (
    "the quick brown fox jumps over a lazy dog while small models learn short sentences from tiny data sets made for "
    "offline tests only"
).split()
SPECIALS = ["<pad>", "</s>", "<unk>"]
SEQUENCE_WORDS = 7  # every sample: 7 words, then the end-of-sequence token TRL appends
TRAINING_STEPS = 3
# AdamW makes every step about `lr` per weight whatever the gradient's scale, so the rounding noise of near-zero
# gradients (FSDP sums the ranks' halves, one process the whole batch) moves a weight by up to a fraction of `lr`: at
# 1e-3 that reached 7.3e-06 here, at 1e-4 it stays well below the 1e-05 asserted. A weight that FSDP got wrong (a shard
# not sent, another rank's copy used) is off by the scale of the weights themselves (~1e-02).
LEARNING_RATE = 1e-4
GLOBAL_BATCH = 4  # 2 per rank on 2 ranks, 4 in one process: every step sees the whole training set


def tiny_tokenizer():
    """A word-level tokenizer over WORDS: deterministic, offline, one token per word."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {token: i for i, token in enumerate([*SPECIALS, *WORDS])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def text_dataset(n, seed):
    """`n` samples of SEQUENCE_WORDS words in a `text` column (TRL's language-modeling format): equal lengths, so that
    no batch is padded and every rank holds as many tokens as any other."""
    from datasets import Dataset

    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, len(WORDS), (n, SEQUENCE_WORDS), generator=generator).tolist()
    return Dataset.from_dict({"text": [" ".join(WORDS[i] for i in row) for row in rows]})


def save_checkpoint(checkpoint_dir, **kwargs):
    """A tiny Llama and its tokenizer, saved where TRL loads them from (a local path, as a user's model id)."""
    tokenizer = tiny_tokenizer()
    config = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2}
    config.update(kwargs)
    config = LlamaConfig(
        vocab_size=len(tokenizer), num_key_value_heads=2, tie_word_embeddings=False, use_cache=False,
        pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None, **config,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(checkpoint_dir)
    tokenizer.save_pretrained(checkpoint_dir)


def memory_checkpoint_config():
    # ~100 MB in float32: 8 layers of hidden size 512
    return {"hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8, "num_attention_heads": 8}


def sft_config(output_dir, fsdp, per_device_train_batch_size):
    from trl import SFTConfig

    kwargs = {}
    if fsdp:
        # A TRL recipe's `fsdp: true` with `fsdp_config: {version: 2, reshard_after_forward: true,
        # cpu_ram_efficient_loading: true}`
        kwargs = {"fsdp": True, "fsdp_config": {"version": 2, "reshard_after_forward": True,
                                                "cpu_ram_efficient_loading": True}}
    return SFTConfig(
        output_dir=output_dir, max_steps=TRAINING_STEPS, per_device_train_batch_size=per_device_train_batch_size,
        learning_rate=LEARNING_RATE, lr_scheduler_type="constant", save_strategy="no", report_to="none",
        disable_tqdm=True, use_cpu=True, bf16=False, dataloader_drop_last=True, seed=0, logging_steps=1,
        model_init_kwargs={"dtype": torch.float32}, **kwargs,
    )


def full_params(model):
    return {
        name: (param.full_tensor() if hasattr(param, "full_tensor") else param).detach().clone()
        for name, param in model.named_parameters()
    }


def run_sft_worker(checkpoint_dir, warmup_dir, output_dir):
    import torch.distributed as dist
    import trl.trainer.sft_trainer as sft_trainer_module
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin
    from trl import SFTTrainer

    from transformers.integrations import is_fsdp_enabled

    class CpuFsdpSFTTrainer(SFTTrainer):
        def create_accelerator_and_postprocess(self):
            super().create_accelerator_and_postprocess()
            state = self.accelerator.state
            state.fsdp_plugin = FullyShardedDataParallelPlugin(**self.args.fsdp_plugin_args)
            state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
            self.is_fsdp_enabled = True

    args = sft_config(output_dir, fsdp=True, per_device_train_batch_size=GLOBAL_BATCH // 2)  # sets up gloo
    rank = args.process_index
    # Warm-up: the imports and first-time allocations of a Llama load are not measured
    sft_trainer_module.create_model_from_path(warmup_dir, dtype=torch.float32)
    loading = {}
    create_model_from_path = sft_trainer_module.create_model_from_path

    def measured_create_model_from_path(*args, **kwargs):
        settle()
        dist.barrier()
        with PeakSampler() as sampler:
            model = create_model_from_path(*args, **kwargs)
        settle()
        params = list(model.parameters())
        loading.update(
            peak_rise_mib=sampler.peak_rise_mib,
            kept_mib=(rss_anon_kib() - sampler.before) / 1024,
            model_mib=sum(p.numel() * p.element_size() for p in params) / 2**20,
            meta_params=sum(p.is_meta for p in params),
            num_params=len(params),
        )
        return model

    sft_trainer_module.create_model_from_path = measured_create_model_from_path
    trainer = CpuFsdpSFTTrainer(
        model=checkpoint_dir, args=args, train_dataset=text_dataset(GLOBAL_BATCH, seed=1),
        processing_class=tiny_tokenizer(),
    )
    trainer.train()
    trained = full_params(trainer.model)
    reference = torch.load(os.path.join(output_dir, "reference.pt"))
    result = {
        "world_size": args.world_size,
        "fsdp_enabled": is_fsdp_enabled(),
        "distributed_type": str(trainer.accelerator.distributed_type),
        "is_fsdp2": trainer.accelerator.is_fsdp2,
        "sharded": sorted({type(p).__name__ for p in trainer.model.parameters()}),
        "loading": loading,
        "losses": [log["loss"] for log in trainer.state.log_history if "loss" in log],
        "reference_losses": reference["losses"],
        "not_compared": sorted(set(reference["trained"]) ^ set(trained)),
        "trained_max_abs_diff": {
            name: (trained[name] - value).abs().max().item()
            for name, value in reference["trained"].items()
            if name in trained
        },
        "changed_by_training": sum(
            not torch.equal(reference["initial"][name], value) for name, value in reference["trained"].items()
        ),
    }
    write_rank_result(output_dir, "sft", rank, result)
    leave_fsdp2_worker()


@require_torch
@require_accelerate
class TrlSFTFsdpTest(TestCasePlus):
    def test_sft_fsdp2_cpu_ram_efficient_loading_matches_single_process(self):
        """TRL's `SFTTrainer` under FSDP2 with `cpu_ram_efficient_loading` on 2 ranks: rank 1's `from_pretrained`
        allocates no copy of the model, and 3 AdamW steps give the weights of the same fine-tune in one process."""
        if not os.path.exists("/proc/self/status"):
            self.skipTest("needs /proc/self/status")
        from trl import SFTTrainer

        tmp_dir = self.get_auto_remove_tmp_dir()
        checkpoint_dir = os.path.join(tmp_dir, "checkpoint")
        warmup_dir = os.path.join(tmp_dir, "warmup")
        save_checkpoint(checkpoint_dir, **memory_checkpoint_config())
        save_checkpoint(warmup_dir)

        # Reference: one process, one thread (like each rank), the same 3 steps over the same 4 samples
        with one_thread():
            trainer = SFTTrainer(
                model=checkpoint_dir, args=sft_config(os.path.join(tmp_dir, "single"), fsdp=False,
                                                      per_device_train_batch_size=GLOBAL_BATCH),
                train_dataset=text_dataset(GLOBAL_BATCH, seed=1), processing_class=tiny_tokenizer(),
            )
            initial = full_params(trainer.model)
            trainer.train()
        losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
        torch.save({"initial": initial, "trained": full_params(trainer.model), "losses": losses},
                   os.path.join(tmp_dir, "reference.pt"))
        del trainer

        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2", "--standalone",
               self.test_file_path_str, "sft", checkpoint_dir, warmup_dir, tmp_dir]
        env = self.get_env()
        # What `accelerate launch --use_fsdp --fsdp_cpu_ram_efficient_loading true` sets: transformers reads them in
        # `from_pretrained`, before TRL's Trainer makes its Accelerator
        env["ACCELERATE_USE_FSDP"] = "true"
        env["FSDP_CPU_RAM_EFFICIENT_LOADING"] = "true"
        env["OMP_NUM_THREADS"] = "1"
        execute_subprocess_async(cmd, env=env)

        results = []
        for rank in range(2):
            with open(os.path.join(tmp_dir, f"sft_rank{rank}.json"), encoding="utf-8") as f:
                results.append(json.load(f))
        for rank, result in enumerate(results):
            loading, diffs = result["loading"], result["trained_max_abs_diff"]
            worst = sorted(diffs, key=diffs.get, reverse=True)[:3]
            print(
                f"trl-sft-fsdp2: rank{rank} from_pretrained RssAnon peak rise {loading['peak_rise_mib']:.1f} MiB, kept "
                f"{loading['kept_mib']:.1f} MiB of a {loading['model_mib']:.1f} MiB model ({loading['meta_params']}/"
                f"{loading['num_params']} params on meta); after {TRAINING_STEPS} steps max abs diff vs one process "
                f"{max(diffs.values()):.2e} ({', '.join(f'{n} {diffs[n]:.2e}' for n in worst)}); losses {result['losses']} (one process: {result['reference_losses']})"
            )
        for rank, result in enumerate(results):
            msg = f"rank {rank}"
            self.assertEqual(result["world_size"], 2, msg)
            self.assertTrue(result["fsdp_enabled"], msg)
            self.assertTrue(result["is_fsdp2"], msg)
            self.assertEqual(result["sharded"], ["DTensor"], msg)
            self.assertEqual(result["not_compared"], [], msg)
            # meaningful only if the steps moved the weights
            self.assertGreater(result["changed_by_training"], 0, msg)
            self.assertEqual(len(result["losses"]), TRAINING_STEPS, msg)
            for loss, reference_loss in zip(result["losses"], result["reference_losses"]):
                self.assertAlmostEqual(loss, reference_loss, delta=1e-5 * abs(reference_loss), msg=msg)
            for name, diff in result["trained_max_abs_diff"].items():
                self.assertLess(diff, 1e-5, f"{msg}: {name} after {TRAINING_STEPS} steps")
        loading = results[1]["loading"]
        # Rank 0 sends every weight in `prepare`: rank 1 must not hold a copy of the model after loading, nor on the
        # way (a full copy is a rise of ~100%)
        self.assertLess(loading["kept_mib"], 0.1 * loading["model_mib"])
        self.assertLess(loading["peak_rise_mib"], 0.1 * loading["model_mib"])


if __name__ == "__main__":
    # Entry point of the processes launched by `TrlSFTFsdpTest`
    workers = {"sft": run_sft_worker}
    workers[sys.argv[1]](*sys.argv[2:])
