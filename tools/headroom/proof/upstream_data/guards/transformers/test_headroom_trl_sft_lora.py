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
headroom regression guard (tools/headroom/proof/upstream_data/guards/): a real client, TRL's `SFTTrainer`, fine-tunes a
LoRA adapter (TRL makes the PEFT model from `peft_config`) with `load_best_model_at_end=True`, evaluating and saving
every 2 steps, and must end with the best checkpoint's adapter in the model, tensor for tensor and in its dtype.
transformers/0001 changes how that reload stages the adapter (on CPU); test_headroom_load_best_adapter.py checks the
same through `Trainer`, this one through the trainer users run. It needs peft: a line without peft leaves it out (the
top-level `from peft import` says so to `make test`). TRL is pinned in requirements/test-env.txt.

TRL loads the base model in bfloat16, so that the adapter's dtype means something: PEFT keeps LoRA weights in
float32 beside a bfloat16 base (`autocast_adapter_dtype`), and a reload that cast them to the base's dtype would lose
that. The metric is scripted per step (as in test_headroom_load_best_adapter.py), so that the best checkpoint is never
the last one; the guard asserts that it is not, and that training changed the adapter after it.
"""

import os
import tempfile
import unittest

import torch
from peft import LoraConfig, get_peft_model_state_dict
from safetensors.torch import load_file
from test_headroom_trl_sft_fsdp import save_checkpoint, text_dataset, tiny_tokenizer


EVAL_STEPS = 2
SCORE_PER_STEP = {2: 0.5, 4: 1.0, 6: 0.0}  # the best checkpoint is checkpoint-4; training goes on to 6
BEST_STEP, LAST_STEP = 4, 6


class TrlSFTLoraBestAdapterTest(unittest.TestCase):
    def test_the_best_adapter_is_the_one_left_in_the_model(self):
        from trl import SFTConfig, SFTTrainer

        trainer = None

        def compute_metrics(eval_pred):
            return {"score": SCORE_PER_STEP[trainer.state.global_step]}

        with tempfile.TemporaryDirectory() as tmp_dir:
            checkpoint_dir = os.path.join(tmp_dir, "base")
            save_checkpoint(checkpoint_dir)
            output_dir = os.path.join(tmp_dir, "output")
            args = SFTConfig(
                output_dir=output_dir, max_steps=LAST_STEP, per_device_train_batch_size=2,
                per_device_eval_batch_size=2, learning_rate=1e-2, eval_strategy="steps", eval_steps=EVAL_STEPS,
                save_strategy="steps", save_steps=EVAL_STEPS, save_only_model=True, load_best_model_at_end=True,
                metric_for_best_model="score", greater_is_better=True, report_to="none", disable_tqdm=True,
                use_cpu=True, bf16=False, seed=0, model_init_kwargs={"dtype": torch.bfloat16},
            )
            trainer = SFTTrainer(
                model=checkpoint_dir, args=args, train_dataset=text_dataset(2 * LAST_STEP, seed=1),
                eval_dataset=text_dataset(2, seed=2), processing_class=tiny_tokenizer(),
                peft_config=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]), compute_metrics=compute_metrics,
            )
            trainer.train()
            best = os.path.join(output_dir, f"checkpoint-{BEST_STEP}")
            last = os.path.join(output_dir, f"checkpoint-{LAST_STEP}")
            self.assertEqual(trainer.state.best_model_checkpoint, best)
            self.assertNotEqual(trainer.state.best_model_checkpoint, last)
            best_weights = load_file(os.path.join(best, "adapter_model.safetensors"))
            last_weights = load_file(os.path.join(last, "adapter_model.safetensors"))
        live = get_peft_model_state_dict(trainer.model)
        self.assertEqual(sorted(live), sorted(best_weights))
        # meaningful only if training changed the adapter after the best step
        self.assertTrue(any(not torch.equal(best_weights[k], last_weights[k]) for k in best_weights))
        self.assertEqual(trainer.model.get_base_model().model.embed_tokens.weight.dtype, torch.bfloat16)
        for key, value in best_weights.items():
            self.assertEqual(value.dtype, torch.float32, key)  # PEFT's LoRA weights beside a bfloat16 base
            self.assertEqual(live[key].dtype, value.dtype, key)
            self.assertTrue(torch.equal(live[key].cpu(), value), key)
