"""The one subprocess helper. Every git/pip/build/pytest call goes through ``run``.

It prints ``+ cmd``, captures the output (streamed live with ``-v``), prints a
heartbeat while a long command runs, and on failure replays the captured output and
raises :class:`CommandFailed` (:class:`DiskFull` when the command ran out of space).
Interrupted (Ctrl-C), it stops the command before it returns, so nothing keeps writing
after headroom has exited.

``fault_point`` is called after every subprocess (git calls in ``vcs`` too). It counts
them, and for the fault-injection tests ``HEADROOM_FAULT=<n>:<SIGNAL>`` (e.g. ``7:KILL``,
``7:INT``, ``7:STOP``) sends that signal to this process right after the n-th one.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from . import ui
from .errors import CommandFailed, DiskFull, HeadroomError
from .fsutil import ENOSPC_TEXT

HEARTBEAT_SECONDS = 20.0
FAULT_ENV = "HEADROOM_FAULT"
_count = 0


def fault_point() -> None:
    """Count a finished subprocess; under ``HEADROOM_FAULT=<n>:<SIGNAL>`` signal ourselves after the n-th."""
    global _count
    _count += 1
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    n, _, name = spec.partition(":")
    if n.strip().isdigit() and int(n) == _count:
        os.kill(os.getpid(), getattr(signal, "SIG" + name.strip().upper().removeprefix("SIG")))


def subprocess_count() -> int:
    return _count


def disk_full_in(output: str) -> bool:
    return any(text in output for text in ENOSPC_TEXT)


@dataclass(frozen=True)
class Result:
    args: list[str]
    returncode: int
    output: str


def _display(args: Sequence[str], cwd: Path | None) -> str:
    text = shlex.join(str(a) for a in args)
    return f"(cd {cwd} && {text})" if cwd else text


def run(
    args: Sequence[str | os.PathLike[str]],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    quiet: bool = False,
    what: str = "",
    stdin: str | None = None,
    diagnose: Callable[[str], HeadroomError | None] | None = None,
) -> Result:
    """Run ``args``; return its combined stdout/stderr.

    ``env`` entries are added to the current environment. ``quiet`` hides the ``+ cmd``
    line (for internal git plumbing). ``what`` names the command in the error message.
    ``diagnose`` reads the output of a failed command and returns the project's own error
    for a failure it recognises (raised instead of :class:`CommandFailed`), or None.
    """
    argv = [str(a) for a in args]
    full_env = dict(os.environ)
    full_env.pop(FAULT_ENV, None)  # the fault is injected into this process, never into its children
    if env:
        full_env.update(env)
    if not quiet or ui.verbose():
        ui.command(_display(argv, cwd))
    stream = ui.verbose() and not quiet
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=full_env,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    )
    chunks: list[str] = []

    def _reader() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            chunks.append(line)
            if stream:
                sys.stdout.write("    " + line)
                sys.stdout.flush()

    reader = threading.Thread(target=_reader, daemon=True)
    reader.start()
    if stdin is not None:
        assert proc.stdin is not None
        proc.stdin.write(stdin)
        proc.stdin.close()
    start = time.monotonic()
    try:
        while True:
            try:
                proc.wait(timeout=HEARTBEAT_SECONDS)
                break
            except subprocess.TimeoutExpired:
                if not quiet and not stream:
                    ui.info(f"... still running ({time.monotonic() - start:.0f}s): {what or ' '.join(argv[:4])}")
    except BaseException:
        _stop(proc)
        raise
    reader.join()
    output = "".join(chunks)
    result = Result(argv, proc.returncode, output)
    fault_point()
    if check and proc.returncode != 0:
        if not stream:
            tail = output[-20000:]
            sys.stderr.write(tail if tail.endswith("\n") or not tail else tail + "\n")
        if disk_full_in(output):
            raise DiskFull(f"{what or argv[0]} ran out of disk space; its output is above.",
                           details=f"command: {_display(argv, cwd)}")
        known = diagnose(output) if diagnose else None
        if known is not None:
            raise known
        raise CommandFailed(
            f"{what or argv[0]} failed (exit {proc.returncode}); its output is above.",
            details=f"command: {_display(argv, cwd)}",
        )
    return result


def _stop(proc: subprocess.Popen) -> None:
    """Stop a command we no longer wait for (Ctrl-C): SIGTERM, then SIGKILL after 5 s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
