"""`PeftModel.load_adapter` keeps the whole temporary adapter state dict alive after copying it into the model, until
it returns; on an accelerator, the caching allocator then keeps its blocks reserved.

Run: python repro.py

Expected: the temporary tensors are released once copied in (none alive when `load_adapter` finishes its work), and
on an accelerator no memory stays reserved but unallocated after the load.
"""

import gc
import tempfile
import weakref

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import peft
from peft import LoraConfig, PeftModel, get_peft_model


config = LlamaConfig(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
torch.manual_seed(0)
adapter_dir = tempfile.mkdtemp()
lora = LoraConfig(r=8, target_modules=["q_proj", "v_proj"])
get_peft_model(LlamaForCausalLM(config), lora).save_pretrained(adapter_dir)

torch.manual_seed(0)
model = PeftModel.from_pretrained(LlamaForCausalLM(config), adapter_dir)
device = "cuda" if torch.cuda.is_available() else "cpu"
model.to(device)

# Watch the temporary state dict that load_adapter copies into the model, and look at it when load_adapter puts the
# model in eval mode (its last step)
temporary = []
original_set = peft.peft_model.set_peft_model_state_dict


def watching_set(model_, state_dict, *args, **kwargs):
    temporary.extend(weakref.ref(t) for t in state_dict.values() if isinstance(t, torch.Tensor))
    return original_set(model_, state_dict, *args, **kwargs)


alive_at_end = []
original_eval = PeftModel.eval


def watching_eval(self):
    gc.collect()
    alive_at_end.append(sum(ref() is not None for ref in temporary))
    return original_eval(self)


peft.peft_model.set_peft_model_state_dict = watching_set
PeftModel.eval = watching_eval
model.load_adapter(adapter_dir, adapter_name="second", torch_device=device)

print(f"peft {peft.__version__}, torch {torch.__version__}, device {device}")
print(f"temporary adapter tensors still alive at the end of load_adapter: {alive_at_end[-1]} of {len(temporary)}")
if device == "cuda":
    torch.cuda.synchronize()
    idle = (torch.cuda.memory_reserved() - torch.cuda.memory_allocated()) / 2**20
    print(f"reserved but unallocated after load_adapter: {idle:.1f} MiB")
