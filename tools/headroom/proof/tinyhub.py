"""A local tiny hub: random-weight stand-ins for the tiny test models upstream's tests download.

Many of peft's hub-bound tests only need *a* small model of a given architecture under a given
model id (``hf-internal-testing/tiny-random-*`` and the like). ``build_cache`` generates one per
entry of ``upstream_data/tinyhub_models.toml`` inside a test environment (its torch and
transformers: a worker script run with proc.run), and lays the saved files out as a Hugging Face
cache under ``<hf_home>/hub/models--<org>--<name>/`` (``blobs/``, ``snapshots/<commit>/``,
``refs/main``), so that ``from_pretrained(id)`` finds them with HF_HUB_OFFLINE=1.

The commit of each repo is derived from the entry's spec hash; a repo whose ``tinyhub.json``
records the same hash is left as it is. Real adapter repos (peft-internal-testing/*-lora) and
tests that compare against numbers of the real weights cannot be faked and are not attempted.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import tomllib
from pathlib import Path

from ..ground import proc, ui
from ..ground.errors import DataError

MODELS = Path(__file__).resolve().parent / "upstream_data" / "tinyhub_models.toml"
MARKER = "tinyhub.json"

# Runs in the test environment's python: argv[1] is a JSON file listing specs, argv[2] the output
# folder; each spec's files are saved to <out>/<index>/.
WORKER = r'''
import json, sys
from pathlib import Path
import torch
import transformers

def tokenizer_for(vocab_size):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    specials = ["<unk>", "<s>", "</s>", "<pad>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    words = ("the quick brown fox jumps over the lazy dog hello world this is a test of a tiny "
             "tokenizer made for offline tests with random weights and small sizes only")
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([words] * 4, trainer=trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>")

specs, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2])
for i, spec in enumerate(specs):
    where = out / str(i)
    kwargs = dict(spec.get("kwargs", {}))
    tok = None
    if spec.get("tokenizer"):
        tok = tokenizer_for(kwargs.get("vocab_size", 512))
        kwargs.setdefault("bos_token_id", tok.bos_token_id)
        kwargs.setdefault("eos_token_id", tok.eos_token_id)
        kwargs.setdefault("pad_token_id", tok.pad_token_id)
    config = getattr(transformers, spec["config"])(**kwargs)
    torch.manual_seed(0)
    model = getattr(transformers, spec["model"])(config)
    model.save_pretrained(where)
    if tok is not None:
        tok.save_pretrained(where)
    print(f"tinyhub: {spec['id']}: {sum(p.numel() for p in model.parameters())} parameters", flush=True)
'''


def load_specs(path: Path = MODELS) -> list[dict]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    specs = data.get("model", [])
    for spec in specs:
        for key in ("id", "config", "model"):
            if not isinstance(spec.get(key), str) or not spec[key]:
                raise DataError(f"{path}: every [[model]] needs a string {key!r}: {spec}")
        if spec["id"].count("/") != 1:
            raise DataError(f"{path}: model id must be <org>/<name>: {spec['id']!r}")
    return specs


def spec_hash(spec: dict) -> str:
    """Stable hash of a spec and the worker that realises it (a new worker regenerates the cache)."""
    blob = json.dumps(spec, sort_keys=True) + WORKER
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def repo_dir(hf_home: Path, model_id: str) -> Path:
    org, name = model_id.split("/")
    return hf_home / "hub" / f"models--{org}--{name}"


def is_current(hf_home: Path, spec: dict) -> bool:
    marker = repo_dir(hf_home, spec["id"]) / MARKER
    try:
        recorded = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if recorded.get("spec_hash") != spec_hash(spec):
        return False
    snapshot = snapshot_dir(hf_home, spec["id"])
    return snapshot is not None and (snapshot / "config.json").exists()


def snapshot_dir(hf_home: Path, model_id: str) -> Path | None:
    """The snapshot refs/main points at (None when refs/main or the snapshot is missing)."""
    repo = repo_dir(hf_home, model_id)
    try:
        commit = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    snap = repo / "snapshots" / commit
    return snap if len(commit) == 40 and snap.is_dir() else None


def install(hf_home: Path, spec: dict, files: Path) -> Path:
    """Lay the files of ``files`` out as the cache repo of ``spec['id']``; returns the snapshot."""
    repo = repo_dir(hf_home, spec["id"])
    if repo.exists():
        shutil.rmtree(repo)
    commit = hashlib.sha1(spec_hash(spec).encode("ascii")).hexdigest()  # 40 hex, like a git commit
    blobs, snap = repo / "blobs", repo / "snapshots" / commit
    blobs.mkdir(parents=True)
    snap.mkdir(parents=True)
    for f in sorted(p for p in files.rglob("*") if p.is_file()):
        rel = f.relative_to(files)
        digest = hashlib.sha256(f.read_bytes()).hexdigest()
        blob = blobs / digest
        if not blob.exists():
            shutil.copyfile(f, blob)
        target = snap / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, target.parent), target)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    (repo / MARKER).write_text(json.dumps({"id": spec["id"], "spec_hash": spec_hash(spec), "commit": commit},
                                          indent=1) + "\n", encoding="utf-8")
    return snap


def build_cache(hf_home: Path, python: Path, specs: list[dict] | None = None) -> dict:
    """Generate (or keep) every tiny model under ``hf_home``; returns {"generated", "kept", "seconds"}."""
    specs = load_specs() if specs is None else specs
    todo = [s for s in specs if not is_current(hf_home, s)]
    kept = [s["id"] for s in specs if s not in todo]
    with ui.Timer() as t:
        if todo:
            with tempfile.TemporaryDirectory(prefix="tinyhub-") as tmp:
                script = Path(tmp) / "tinyhub_worker.py"
                script.write_text(WORKER, encoding="utf-8")
                out = Path(tmp) / "out"
                out.mkdir()
                listed = Path(tmp) / "specs.json"
                listed.write_text(json.dumps(todo), encoding="utf-8")
                ui.info(f"tinyhub: generating {len(todo)} tiny random model(s) under {hf_home}")
                proc.run([python, script, listed, out], env={"HF_HUB_OFFLINE": "1"},
                         what="tinyhub: generating tiny random models")
                for i, spec in enumerate(todo):
                    install(hf_home, spec, out / str(i))
    return {"generated": [s["id"] for s in todo], "kept": kept, "seconds": round(t.seconds, 1)}
