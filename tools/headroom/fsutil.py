"""Small file helpers: sha256, atomic writes (bytes, text, JSON), and the cache location."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def atomic_write(path: Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file and ``os.replace``: never half-written."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: object) -> None:
    """``data`` as indented JSON with sorted keys and a final newline (stable bytes), via atomic_write."""
    atomic_write(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def cache_dir() -> Path:
    """``$HEADROOM_CACHE``, else ``$XDG_CACHE_HOME/headroom``, else ``~/.cache/headroom``."""
    if os.environ.get("HEADROOM_CACHE"):
        return Path(os.environ["HEADROOM_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "headroom"
