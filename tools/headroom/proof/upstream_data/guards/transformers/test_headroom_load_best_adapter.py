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
headroom regression guard (tools/headroom/proof/upstream_data/guards/): `Trainer(load_best_model_at_end=True)` with a
PEFT model ends with the best checkpoint's adapter in the live model, element for element. transformers/0001 changes
how that reload stages the adapter (on CPU); this guard checks the result that any release, patched or not, must keep.
"""

import os
import tempfile
import unittest

import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
from safetensors.torch import load_file

from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments, set_seed


SCORE_PER_STEP = {1: 0.5, 2: 1.0, 3: 0.0}  # the best step is 2; training goes on to 3
BEST_STEP, LAST_STEP = 2, 3


def dataset(n, vocab_size):
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab_size, (n, 8), generator=generator)
    return [{"input_ids": row, "labels": row.clone()} for row in ids]


class LoadBestAdapterTest(unittest.TestCase):
    def test_the_best_adapter_is_the_one_left_in_the_model(self):
        set_seed(0)
        config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                             num_attention_heads=2, num_key_value_heads=2, use_cache=False)
        model = get_peft_model(LlamaForCausalLM(config), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
        trainer = None

        def compute_metrics(eval_pred):
            return {"score": SCORE_PER_STEP[trainer.state.global_step]}

        with tempfile.TemporaryDirectory() as output_dir:
            args = TrainingArguments(
                output_dir=output_dir, max_steps=LAST_STEP, per_device_train_batch_size=2,
                per_device_eval_batch_size=2, learning_rate=1e-2, eval_strategy="steps", eval_steps=1,
                save_strategy="steps", save_steps=1, save_only_model=True, load_best_model_at_end=True,
                metric_for_best_model="score", greater_is_better=True, report_to="none", disable_tqdm=True,
                use_cpu=True,
            )
            trainer = Trainer(model=model, args=args, train_dataset=dataset(2 * LAST_STEP, 64),
                              eval_dataset=dataset(2, 64), compute_metrics=compute_metrics)
            trainer.train()
            best = os.path.join(output_dir, f"checkpoint-{BEST_STEP}")
            self.assertEqual(trainer.state.best_model_checkpoint, best)
            best_weights = load_file(os.path.join(best, "adapter_model.safetensors"))
            last_weights = load_file(os.path.join(output_dir, f"checkpoint-{LAST_STEP}", "adapter_model.safetensors"))
        live = get_peft_model_state_dict(trainer.model)
        self.assertEqual(sorted(live), sorted(best_weights))
        # meaningful only if training changed the adapter after the best step
        self.assertTrue(any(not torch.equal(best_weights[k], last_weights[k]) for k in best_weights))
        for key, value in best_weights.items():
            self.assertEqual(live[key].dtype, value.dtype, key)
            self.assertTrue(torch.equal(live[key].cpu(), value), key)
