"""Locks: one run at a time writes a ``vendor/<name>``, ``dist/``, ``build/envs/`` or a cache entry.

Each resource has a lock file (``vendor/.locks/*.lock``, kept by ``make clean``; the
cache's under ``<cache>/locks/``) held with ``fcntl.flock``. The holder writes its pid,
command and start time into the file, so a second run can say whom it waits for; with
``--no-wait`` (``NO_WAIT=1``) it fails at once with :class:`~headroom.ground.errors.Locked`.
The kernel drops a lock when its process dies, so a killed run never blocks the next
one; the record it leaves behind is how the next run knows, and says, that it takes
over from a run that did not finish.

A command takes all its locks at its start, in one fixed order (vendor names sorted,
then dist, then envs); cache entries are taken last and alone, so two runs can never
wait on each other.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import ui
from .errors import Locked

LOCKS_DIR = Path("vendor") / ".locks"
POLL_SECONDS = 0.2
REPORT_EVERY_SECONDS = 60.0

# What each command writes (or reads and must not see change under it). A command not
# listed takes every lock of the checkout.
COMMAND_LOCKS: dict[str, tuple[str, ...]] = {
    "fetch": (),  # only cache entries (taken inside fetch)
    "apply": ("vendor",),
    "export": ("vendor",),
    "build": ("vendor", "dist"),
    "index": ("dist",),
    "clean": ("dist", "envs"),
    "test": ("vendor", "dist", "envs"),
    "bench": ("envs",),
    "rebase": ("vendor", "envs"),  # the landed check makes build/envs/landed-<name>-<version>
    "rebase-continue": ("vendor",),
    "rebase-abort": ("vendor",),
    "pr": ("vendor",),
    "canary": (),  # vendor/<name> while it is cloned, build/envs/ while an environment is made (taken inside)
    "publish": ("dist",),  # reads dist/ and build/state: a build must not swap a wheel under it
    "serve": (),
    "inspect": (),  # reads a wheel or an installed distribution
    "docs": (),  # writes docs/reference/ only
    "verify": (),  # rebuilds in a temporary project of its own  # long-running and read-only: it must not hold dist/ against the next build
}
ALL = ("vendor", "dist", "envs")

_no_wait = False
_command = "headroom " + " ".join(sys.argv[1:])
_held: dict[Path, int] = {}  # path -> depth: a lock already held by this process is not taken again


def configure(*, no_wait: bool | None = None, command: str | None = None) -> None:
    global _no_wait, _command
    if no_wait is not None:
        _no_wait = no_wait
    if command is not None:
        _command = command


@dataclass(frozen=True)
class Holder:
    pid: int
    command: str
    since: str
    host: str

    def describe(self) -> str:
        where = f", on {self.host}" if self.host and self.host != socket.gethostname() else ""
        return f"pid {self.pid} ({self.command}, since {self.since}{where})"


def _read_holder(fd: int) -> Holder | None:
    """The record in a lock file; None when empty or unreadable (never trusted further)."""
    try:
        data = os.pread(fd, 4096, 0)
        record = json.loads(data.decode("utf-8")) if data.strip() else None
        if not isinstance(record, dict):
            return None
        return Holder(int(record["pid"]), str(record["command"]), str(record["since"]), str(record.get("host", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_holder(fd: int) -> None:
    record = {"pid": os.getpid(), "command": _command, "host": socket.gethostname(),
              "since": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    data = (json.dumps(record, sort_keys=True) + "\n").encode()
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


@contextlib.contextmanager
def hold(path: Path, what: str) -> Iterator[None]:
    """Hold the lock file ``path`` (``what`` names the resource in messages)."""
    path = Path(path)
    if _held.get(path):
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        _acquire(fd, what)
        stale = _read_holder(fd)
        if stale is not None and stale.pid != os.getpid():
            state = "no longer running" if not _alive(stale.pid) else "no longer holding it"
            ui.warn(f"taking over the lock on {what} from {stale.describe()}, which is {state}: "
                    "that run did not finish, so its step is done again")
        _write_holder(fd)
        _held[path] = 1
        try:
            yield
        finally:
            del _held[path]
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # released cleanly: nothing to take over
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, what: str) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    holder = _read_holder(fd)
    who = holder.describe() if holder else "another headroom run"
    if _no_wait:
        raise Locked(
            f"{what} is in use by {who}; --no-wait (NO_WAIT=1) was given, so nothing was done. "
            "Run again when it has finished, or without --no-wait to wait for it.",
        )
    ui.info(f"waiting for {what}: in use by {who} (Ctrl-C to stop; --no-wait/NO_WAIT=1 fails at once instead)")
    with ui.leaves(f"nothing was changed (it was still waiting for {what})"):
        _wait(fd, what, holder)


def _wait(fd: int, what: str, holder: Holder | None) -> None:
    start = last_report = time.monotonic()
    while True:
        time.sleep(POLL_SECONDS)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            ui.info(f"{what}: free after {time.monotonic() - start:.0f}s, continuing")
            return
        except BlockingIOError:
            pass
        now_holder = _read_holder(fd)
        if now_holder and holder and now_holder.pid != holder.pid:
            holder = now_holder
            ui.info(f"waiting for {what}: now in use by {holder.describe()}")
        elif time.monotonic() - last_report >= REPORT_EVERY_SECONDS:
            last_report = time.monotonic()
            ui.info(f"... still waiting for {what} ({time.monotonic() - start:.0f}s)")


def resource_path(root: Path, resource: str) -> tuple[Path, str]:
    """(lock file, what) of ``vendor:<name>``, ``dist`` or ``envs``."""
    if resource.startswith("vendor:"):
        name = resource.split(":", 1)[1]
        return root / LOCKS_DIR / f"vendor-{name.replace('/', '--')}.lock", f"vendor/{name}"  # newest/transformers
    if resource == "dist":
        return root / LOCKS_DIR / "dist.lock", "dist/"
    if resource == "envs":
        return root / LOCKS_DIR / "envs.lock", "build/envs/"
    raise ValueError(resource)


def resources_for(command: str, names: Sequence[str]) -> list[str]:
    """The lock resources of ``command`` in the one order every command takes them."""
    kinds = COMMAND_LOCKS.get(command, ALL)
    out = [f"vendor:{n}" for n in sorted(set(names))] if "vendor" in kinds else []
    return out + [k for k in ("dist", "envs") if k in kinds]


def needs_pins(command: str) -> bool:
    return "vendor" in COMMAND_LOCKS.get(command, ALL)


@contextlib.contextmanager
def for_command(root: Path, command: str, names: Sequence[str]) -> Iterator[None]:
    """Hold every lock ``command`` needs, taken in the fixed order."""
    with contextlib.ExitStack() as stack:
        for resource in resources_for(command, names):
            path, what = resource_path(root, resource)
            stack.enter_context(hold(path, what))
        yield


def cache_entry(cache: Path, sha256: str, filename: str) -> contextlib.AbstractContextManager[None]:
    """The lock of one download-cache entry (taken alone, never while waiting on another)."""
    return hold(cache / "locks" / f"{sha256}.lock", f"the download cache entry {filename}")
