"""Small file helpers: sha256, atomic writes (bytes, text, JSON), the cache location, state files
read without trusting them, and disk-full errors that say how much space a step needs."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
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


def read_json_state(path: Path, *, required: dict[str, type] | None = None) -> dict:
    """A state file the tool wrote, or ``{}`` ("not done") when it is missing, unreadable,
    not JSON, not an object, or lacks a ``required`` key of the right type. Never trusted
    further than that: a broken state file only makes a step run again."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        _ignored(path, f"{type(exc).__name__}: {exc}")
        return {}
    if not isinstance(data, dict):
        _ignored(path, f"a JSON {type(data).__name__}, not an object")
        return {}
    for key, kind in (required or {}).items():
        if not isinstance(data.get(key), kind):
            _ignored(path, f"{key!r} is missing or not a {kind.__name__}")
            return {}
    return data


def _ignored(path: Path, why: str) -> None:
    from . import ui

    ui.warn(f"ignoring the state file {path} ({why}): treated as not done, the step runs again")


ENOSPC_TEXT = ("No space left on device", "Disk quota exceeded")


def is_disk_full(exc: BaseException) -> bool:
    from .errors import DiskFull

    if isinstance(exc, DiskFull):
        return True
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def mib(n: float) -> str:
    return f"{n / (1 << 20):,.0f} MiB" if n >= (1 << 20) else f"{n / (1 << 20):.1f} MiB"


def tree_bytes(path: Path, *, skip: tuple[str, ...] = (".git",)) -> int:
    """Total size of the files under ``path`` (``skip`` folder names left out)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for f in filenames:
            try:
                total += os.lstat(os.path.join(dirpath, f)).st_size
            except OSError:
                pass
    return total


@contextlib.contextmanager
def disk_full(step: str, where: Path, needed: Callable[[], int], left: str) -> Iterator[None]:
    """Turn a write that fails with ENOSPC (ours or a subprocess's) into :class:`DiskFull`
    naming the step, how much space it needs (``needed()``, computed only then), how much
    ``where`` has free, and what state is ``left``."""
    from .errors import DiskFull

    try:
        yield
    except BaseException as exc:
        if not is_disk_full(exc):
            raise
        try:
            need = needed()
        except Exception:  # an estimate only; the failure itself is what matters
            need = 0
        probe = where
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        free = shutil.disk_usage(probe).free
        amount = (f"about {mib(need)} free on the file system of {probe} ({mib(free)} free now)" if need > 0
                  else f"more than the {mib(free)} free now on the file system of {probe}")
        raise DiskFull(
            f"disk full while {step}: it needs {amount}. {left} Free some space and run the same command again.",
            details=str(exc) if not isinstance(exc, DiskFull) else exc.details,
        ) from None
