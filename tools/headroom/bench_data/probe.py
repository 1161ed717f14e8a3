"""Describe this environment for the benchmark: package versions, and whether the fix 2 code is in the loader.

Prints one JSON line.
"""

import importlib.metadata
import inspect
import json
import re
import sys


def fix2_in_source(source: str) -> bool:
    """True when the FSDP branch (non-main ranks) of `_move_missing_keys_from_meta_to_device` only re-creates the
    non-persistent buffers, instead of every buffer and parameter."""
    branch = re.search(r"if is_fsdp_enabled\(\) and not is_local_dist_rank_0\(\).*?\n(.*?)\breturn\b", source, re.S)
    return bool(branch) and "named_non_persistent_buffers" in branch.group(1)


def fix2_in_loader() -> bool:
    from transformers import PreTrainedModel

    return fix2_in_source(inspect.getsource(PreTrainedModel._move_missing_keys_from_meta_to_device))


def main() -> None:
    info = {"python": sys.version.split()[0], "prefix": sys.prefix, "packages": {}}
    for dist in ("torch", "transformers", "peft", "accelerate", "safetensors"):
        try:
            info["packages"][dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info["packages"][dist] = None
    info["fix2_in_loader"] = fix2_in_loader()
    import torch

    info["cuda"] = torch.cuda.is_available()
    print(json.dumps(info))


if __name__ == "__main__":
    main()
