"""headroom's model tester for transformers' shared ``TrainingTesterMixin`` (tests/test_training_mixin.py).

The transformers sdist ships the shared test mixins under tests/ but no per-model tests, so the
mixin's ``test_training_overfit`` needs a model tester: this one builds a tiny random Llama (no hub,
no tokenizer). The mixin itself is run unchanged from the copied upstream tests/.
"""

import unittest

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tests.test_training_mixin import TrainingTesterMixin


class TinyLlamaModelTester:
    causal_lm_class = LlamaForCausalLM
    base_model_class = None
    sequence_classification_class = None
    is_training = True
    batch_size = 2
    seq_length = 16

    def get_config(self) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=64,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=128,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        )

    def prepare_config_and_inputs_for_common(self):
        config = self.get_config()
        generator = torch.Generator().manual_seed(0)
        input_ids = torch.randint(3, config.vocab_size, (self.batch_size, self.seq_length), generator=generator)
        return config, {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


class TinyLlamaTrainingTest(TrainingTesterMixin, unittest.TestCase):
    all_model_classes = (LlamaForCausalLM,)

    @property
    def model_tester(self) -> TinyLlamaModelTester:
        return TinyLlamaModelTester()
