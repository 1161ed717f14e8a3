"""What every part of the bench shares: where things go, the model sizes, the plan of each mode, the offline env,
the markdown tables."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from ..ground import proc, ui
from ..proof import testrun

SCHEMA = 2  # 2: the releases section
MODES = ("quick", "full")
ENVS = ("pristine", "patched")
OUT_DIR = Path("build") / "bench"
MODELS_DIR = OUT_DIR / "models"
DATA = Path(__file__).parent / "bench_data"
REQUIREMENTS = Path("requirements") / "bench.txt"
MIB = 2**20
# The patched rise is often well under 1 MiB: ratios are taken against at least this much, and then shown as ">=".
RATIO_FLOOR_MIB = 1.0

LLAMA = {"num_key_value_heads": None, "tie_word_embeddings": False, "max_position_embeddings": 2048}
# Random Llama-style models (float32). Parameters: ~60M, ~245M, ~953M; "tiny" is for the correctness runs.
SIZES = {
    "tiny": {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4},
    "60M": {"vocab_size": 32000, "hidden_size": 512, "intermediate_size": 1536, "num_hidden_layers": 8,
            "num_attention_heads": 8},
    "250M": {"vocab_size": 32000, "hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 14,
             "num_attention_heads": 16},
    "1B": {"vocab_size": 32000, "hidden_size": 2048, "intermediate_size": 5632, "num_hidden_layers": 16,
           "num_attention_heads": 16},
}
PLAN = {
    # (size, ranks) cases of fix 2; the first ranks value is the size sweep, the others the per-rank scaling.
    # releases: the official transformers releases measured beside the patched build when TRANSFORMERS (--transformers) is not given
    # ("pin" is the pinned release, measured in build/envs/pristine); release_size: their model; node_ranks /
    # node_size: the one-node figure (all ranks on this machine), 0 ranks: left out.
    "quick": {"sizes": ["60M"], "scaling_size": None, "scaling_ranks": [], "pipeline_runs": 1,
              "releases": ["5.5.4", "pin"], "release_size": "60M", "node_ranks": 0, "node_size": None},
    "full": {"sizes": ["60M", "250M", "1B"], "scaling_size": "250M", "scaling_ranks": [4], "pipeline_runs": 3,
             "releases": ["5.5.4", "5.6.0", "5.22.2", "5.23.0"], "release_size": "250M", "node_ranks": 8,
             "node_size": "250M"},
}
GPU_LORA_RANKS = {"quick": [64], "full": [16, 256, 1024]}
SWEEP_RANKS = 2
# The offline environment of every test run (testrun), quiet progress bars, one thread per rank.
OFFLINE_ENV = {**testrun.OFFLINE_ENV, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "OMP_NUM_THREADS": "1"}
FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_CPU_RAM_EFFICIENT_LOADING": "true"}


def md_table(rows: list[list[str]], text_columns: int = 1) -> list[str]:
    """Rows (the header first) as a markdown table: the first ``text_columns`` columns left-aligned, the rest right."""
    lines = ["| " + " | ".join(rows[0]) + " |",
             "|" + "|".join("---" if i < text_columns else "---:" for i in range(len(rows[0]))) + "|"]
    return lines + ["| " + " | ".join(r) + " |" for r in rows[1:]]


def llama_config(size: str) -> dict:
    """The random Llama of ``size``: LLAMA's set keys and SIZES[size], as many key/value heads as attention heads."""
    config = {**{k: v for k, v in LLAMA.items() if v is not None}, **SIZES[size]}
    config["num_key_value_heads"] = config["num_attention_heads"]
    return config


def model_once(root: Path, name: str, size: str, marker: str, make: list, note: str = "",
               config: dict | None = None) -> tuple[Path, dict]:
    """build/bench/models/<name>-<hash of the config>: the random Llama of ``size`` (or the model ``config`` says)
    written once by ``make`` (an argv; the folder and the config as JSON are appended), reused while ``marker`` (a
    JSON file it writes) is there; returns the folder and the marker's content."""
    what = f"{size} Llama" if config is None else config.get("model_type", "llama")
    config = llama_config(size) if config is None else config
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    where = root / MODELS_DIR / f"{name}-{key}"
    if not (where / marker).exists():
        ui.info(f"writing a random {what} checkpoint to {where.relative_to(root)}{note}")
        for stale in (where, where.with_name(where.name + ".tmp")):
            if stale.exists():
                shutil.rmtree(stale)
        where.parent.mkdir(parents=True, exist_ok=True)
        proc.run([*make, where, json.dumps(config)], env=OFFLINE_ENV, what=f"make the {size} checkpoint")
    return where, json.loads((where / marker).read_text(encoding="utf-8"))
