"""Describe this environment for the benchmark: package versions, and whether the fix 2 code is in the loader.

Prints one JSON line.
"""

import importlib.metadata
import inspect
import json
import re
import sys


# The FSDP branch (non-main ranks) of `_move_missing_keys_from_meta_to_device`: keyed on the local rank 0 upstream,
# on the global rank 0 with headroom's transformers/0003
FSDP_BRANCH = re.compile(r"if is_fsdp_enabled\(\) and not is_(?:local_)?dist_rank_0\(\).*?\n(.*?)\breturn\b", re.S)


def fix2_in_source(source: str) -> bool:
    """True when the FSDP branch (non-main ranks) of `_move_missing_keys_from_meta_to_device` only re-creates the
    non-persistent buffers, instead of every buffer and parameter."""
    branch = FSDP_BRANCH.search(source)
    return bool(branch) and "named_non_persistent_buffers" in branch.group(1)


def fsdp_branch(source: str) -> str:
    """What the FSDP branch (non-main ranks) of `_move_missing_keys_from_meta_to_device` creates, in words."""
    branch = FSDP_BRANCH.search(source)
    if not branch:
        return "no FSDP branch"
    body = branch.group(1)
    if "self.named_parameters()" in body:
        kind = "zeros_like" if "zeros_like" in body else "empty_like" if "empty_like" in body else "a copy"
        return f"every parameter and buffer ({kind})"
    if "missing_keys" in body:
        return "missing keys + non-persistent buffers"
    if "named_non_persistent_buffers" in body:
        return "non-persistent buffers only (missing keys stay on meta)"
    return "other"


def _loader_source() -> str:
    from transformers import PreTrainedModel

    return inspect.getsource(PreTrainedModel._move_missing_keys_from_meta_to_device)


def fix2_in_loader() -> bool:
    return fix2_in_source(_loader_source())


def main() -> None:
    info = {"python": sys.version.split()[0], "prefix": sys.prefix, "packages": {}}
    for dist in ("torch", "transformers", "peft", "accelerate", "safetensors"):
        try:
            info["packages"][dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            info["packages"][dist] = None
    try:
        source = _loader_source()
    except (AttributeError, ImportError, OSError, TypeError) as exc:  # an old release without this method
        source = ""
        info["fsdp_branch"] = f"n/a: {type(exc).__name__}"
    info["fix2_in_loader"] = fix2_in_source(source)
    info.setdefault("fsdp_branch", fsdp_branch(source))
    import torch

    info["cuda"] = torch.cuda.is_available()
    print(json.dumps(info))


if __name__ == "__main__":
    main()
