"""Fix 3 benchmark (GPU): CUDA allocator cache left behind by `PeftModel.load_adapter` onto the GPU.

For each LoRA rank: an adapter is saved, then loaded as a second adapter into a PeftModel whose base model
is on the GPU; after `load_adapter`, `memory_reserved() - memory_allocated()` is the reserved-but-unallocated
memory (the temporary copy's blocks kept by the caching allocator). Prints one JSON line; without CUDA it
prints "skipped: no CUDA" and a JSON line saying so.

Usage: gpu_load_adapter.py WORK_DIR RANKS_JSON
"""

import json
import os
import sys


def main(work_dir: str, ranks_json: str) -> None:
    import torch

    if not torch.cuda.is_available():
        print("skipped: no CUDA")
        print(json.dumps({"skipped": "no CUDA"}))
        return
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM, set_seed

    config = LlamaConfig(vocab_size=1024, hidden_size=2048, intermediate_size=4096, num_hidden_layers=2,
                         num_attention_heads=16, num_key_value_heads=16, max_position_embeddings=64)
    results = []
    for rank in json.loads(ranks_json):
        set_seed(0)
        lora = LoraConfig(r=rank, lora_alpha=2 * rank, lora_dropout=0.0, target_modules="all-linear")
        path = os.path.join(work_dir, f"adapter-r{rank}")
        peft_model = get_peft_model(LlamaForCausalLM(config), lora)
        adapter_bytes = sum(p.numel() * p.element_size() for p in peft_model.parameters() if p.requires_grad)
        peft_model.save_pretrained(path)
        del peft_model

        base = LlamaForCausalLM(config).to("cuda")
        model = PeftModel.from_pretrained(base, path, adapter_name="first")
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        allocated_before = torch.cuda.memory_allocated()
        model.load_adapter(path, adapter_name="second")
        torch.cuda.synchronize()
        allocated, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
        results.append({
            "lora_rank": rank,
            "adapter_bytes": adapter_bytes,
            "allocated_rise_bytes": allocated - allocated_before,
            "peak_extra_bytes": torch.cuda.max_memory_allocated() - allocated_before,
            "reserved_unallocated_bytes": reserved - allocated,
        })
        del model, base
        torch.cuda.empty_cache()
    print(json.dumps({"gpu": torch.cuda.get_device_name(0), "results": results}))


if __name__ == "__main__":
    main(*sys.argv[1:3])
