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
headroom regression guard (tools/headroom/proof/upstream_data/guards/): transformers' own PEFT integration works with
the peft installed beside it. headroom ships transformers and peft together, and peft is an optional dependency of
transformers: pip does not check the version transformers needs at run time (`MIN_PEFT_VERSION`). transformers 5.24.0
raised it to 0.22.0 while the newest peft was 0.21.2, and every method below raised `ValueError: The version of PEFT
you are using is not compatible`; this guard makes such a release an upstream regression in `make test` and `make
canary`.
"""

import os
import tempfile
import unittest

import torch
from peft import LoraConfig
from safetensors.torch import load_file

from transformers import LlamaConfig, LlamaForCausalLM


def tiny_llama():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config)


class PeftIntegrationTest(unittest.TestCase):
    def test_adapter_life_cycle_on_a_transformers_model(self):
        model = tiny_llama()
        model.add_adapter(LoraConfig(r=4, target_modules=["q_proj"]), adapter_name="first")
        model.add_adapter(LoraConfig(r=4, target_modules=["v_proj"]), adapter_name="second")
        model.set_adapter("second")
        self.assertEqual(model.active_adapters(), ["second"])
        state_dict = model.get_adapter_state_dict("second")
        self.assertTrue(state_dict and all("v_proj" in key for key in state_dict), sorted(state_dict))
        model.disable_adapters()
        model.enable_adapters()
        model.delete_adapter("first")
        self.assertEqual(model.active_adapters(), ["second"])

    def test_saved_adapter_loads_into_a_transformers_model(self):
        model = tiny_llama()
        model.add_adapter(LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
        with tempfile.TemporaryDirectory() as tmp_dir:
            model.save_pretrained(tmp_dir)
            # the file names keys as peft saves them (`base_model.model.` in front), the model without that prefix
            saved = {
                key.removeprefix("base_model.model."): value
                for key, value in load_file(os.path.join(tmp_dir, "adapter_model.safetensors")).items()
            }
            other = tiny_llama()
            other.load_adapter(tmp_dir, adapter_name="loaded")
            loaded = other.get_adapter_state_dict("loaded")
        self.assertEqual(sorted(saved), sorted(loaded))
        for key, value in saved.items():
            self.assertTrue(torch.equal(loaded[key], value), key)
