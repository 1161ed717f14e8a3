"""The local tiny hub: the models list and the Hugging Face cache layout.

No model is generated here (the tool venv has no torch): ``install`` is fed a folder of files
as the worker would save them, and the layout is checked the way huggingface_hub reads it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from headroom.ground import errors
from headroom.proof import tinyhub

SPEC = {"id": "hf-internal-testing/tiny-random-gpt2", "config": "GPT2Config", "model": "GPT2LMHeadModel",
        "tokenizer": True, "kwargs": {"vocab_size": 512, "n_embd": 16, "n_layer": 2, "n_head": 4}}


def _saved(tmp_path: Path) -> Path:
    files = tmp_path / "saved"
    files.mkdir()
    (files / "config.json").write_text(json.dumps({"model_type": "gpt2"}), encoding="utf-8")
    (files / "model.safetensors").write_bytes(b"\0" * 64)
    (files / "tokenizer.json").write_text("{}", encoding="utf-8")
    return files


def test_models_list_is_valid():
    specs = tinyhub.load_specs()
    ids = [s["id"] for s in specs]
    assert ids and len(ids) == len(set(ids))
    for spec in specs:
        assert spec["config"].endswith("Config")
        # adapter repos are real checkpoints of trained adapters: never faked
        assert not spec["id"].endswith("-lora")


def test_load_specs_rejects_a_bad_entry(tmp_path):
    bad = tmp_path / "models.toml"
    bad.write_text('[[model]]\nid = "no-org"\nconfig = "GPT2Config"\nmodel = "GPT2Model"\n', encoding="utf-8")
    with pytest.raises(errors.DataError, match="<org>/<name>"):
        tinyhub.load_specs(bad)


def test_install_lays_out_a_hub_cache(tmp_path):
    hf_home = tmp_path / "hf"
    snap = tinyhub.install(hf_home, SPEC, _saved(tmp_path))
    repo = hf_home / "hub" / "models--hf-internal-testing--tiny-random-gpt2"
    commit = (repo / "refs" / "main").read_text(encoding="utf-8")
    assert len(commit) == 40 and all(c in "0123456789abcdef" for c in commit)
    assert snap == repo / "snapshots" / commit and snap.is_dir()
    assert tinyhub.snapshot_dir(hf_home, SPEC["id"]) == snap
    for name in ("config.json", "model.safetensors", "tokenizer.json"):
        f = snap / name
        assert f.is_symlink() and not os.path.isabs(os.readlink(f))
        blob = f.resolve()
        assert blob.parent == (repo / "blobs").resolve() and blob.exists()
    assert json.loads((snap / "config.json").read_text(encoding="utf-8")) == {"model_type": "gpt2"}
    assert tinyhub.is_current(hf_home, SPEC)


def test_a_changed_spec_is_not_current(tmp_path):
    hf_home = tmp_path / "hf"
    tinyhub.install(hf_home, SPEC, _saved(tmp_path))
    changed = {**SPEC, "kwargs": {**SPEC["kwargs"], "n_layer": 3}}
    assert tinyhub.spec_hash(changed) != tinyhub.spec_hash(SPEC)
    assert not tinyhub.is_current(hf_home, changed)
    assert not tinyhub.is_current(tmp_path / "elsewhere", SPEC)


def test_build_cache_keeps_current_repos_without_running_the_worker(tmp_path, monkeypatch):
    hf_home = tmp_path / "hf"
    tinyhub.install(hf_home, SPEC, _saved(tmp_path))

    def no_run(*args, **kwargs):
        raise AssertionError("the worker ran for a current repo")

    monkeypatch.setattr(tinyhub.proc, "run", no_run)
    result = tinyhub.build_cache(hf_home, Path("/nonexistent/python"), specs=[SPEC])
    assert result["generated"] == [] and result["kept"] == [SPEC["id"]]
