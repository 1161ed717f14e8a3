"""Write a random checkpoint (safetensors) for the benchmark; no hub access.

Usage: make_model.py OUT_DIR CONFIG_JSON   (CONFIG_JSON: LlamaConfig keyword arguments; with "model_type":
"qwen3_moe", Qwen3MoeConfig's; with "dtype", stored in that dtype instead of float32)
Prints one JSON line: {"params": ..., "bytes": ...}.
"""

import json
import os
import sys


def main(out_dir: str, config_json: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

    kwargs = json.loads(config_json)
    dtype = getattr(torch, kwargs.pop("dtype", "float32"))
    moe = kwargs.pop("model_type", "llama") == "qwen3_moe"
    config = Qwen3MoeConfig(**kwargs) if moe else LlamaConfig(**kwargs)
    torch.manual_seed(0)
    model = (Qwen3MoeForCausalLM if moe else LlamaForCausalLM)(config).to(dtype)
    params = sum(p.numel() for p in model.parameters())
    nbytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    tmp = out_dir + ".tmp"
    model.save_pretrained(tmp, safe_serialization=True)
    info = {"params": params, "bytes": nbytes, "dtype": str(model.dtype)}
    with open(os.path.join(tmp, "headroom-bench.json"), "w", encoding="utf-8") as f:
        json.dump(info, f)
    os.replace(tmp, out_dir)
    print(json.dumps(info))


if __name__ == "__main__":
    main(*sys.argv[1:3])
