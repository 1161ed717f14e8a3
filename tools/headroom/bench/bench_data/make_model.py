"""Write a random Llama-style checkpoint (safetensors, float32) for the fix 2 benchmark; no hub access.

Usage: make_model.py OUT_DIR CONFIG_JSON   (CONFIG_JSON: LlamaConfig keyword arguments)
Prints one JSON line: {"params": ..., "bytes": ...}.
"""

import json
import os
import sys


def main(out_dir: str, config_json: str) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**json.loads(config_json))
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
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
