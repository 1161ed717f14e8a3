"""Terminal output: organised by step, quiet by default, ``-v``/``V=1`` for everything.

``NO_COLOR`` is honoured; colour is only used on a terminal.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator

_verbose = bool(os.environ.get("V", "") not in ("", "0"))
_left: list[str] = []  # what state an interruption would leave, innermost last
_at_interrupt: str | None = None


def set_verbose(value: bool) -> None:
    global _verbose
    _verbose = value


def verbose() -> bool:
    return _verbose


def _colour(code: str, text: str) -> str:
    if os.environ.get("NO_COLOR") or not sys.stdout.isatty():
        return text
    return f"\033[{code}m{text}\033[0m"


def step(name: str, text: str) -> None:
    print(_colour("1", f"[{name}]") + f" {text}", flush=True)


def info(text: str) -> None:
    print(f"  {text}", flush=True)


def detail(text: str) -> None:
    """Shown only in verbose mode."""
    if _verbose:
        print(f"  {text}", flush=True)


def command(text: str) -> None:
    print(_colour("2", f"  + {text}"), flush=True)


def warn(text: str) -> None:
    print(_colour("33", f"  warning: {text}"), file=sys.stderr, flush=True)


def error(text: str) -> None:
    print(_colour("31", "error: ") + text, file=sys.stderr, flush=True)


class Timer:
    """``with Timer() as t: ...; t.seconds``"""

    def __enter__(self) -> "Timer":
        self.start = time.monotonic()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.monotonic() - self.start


@contextlib.contextmanager
def leaves(text: str) -> Iterator[None]:
    """While inside, an interruption (Ctrl-C) reports ``text`` as the state it leaves."""
    global _at_interrupt
    _left.append(text)
    try:
        yield
    except KeyboardInterrupt:
        if _at_interrupt is None:  # the innermost step says it
            _at_interrupt = text
        raise
    finally:
        _left.pop()


def state_left() -> str:
    """What the interrupted run left (and forget it, for the next run in this process)."""
    global _at_interrupt
    text, _at_interrupt = _at_interrupt, None
    return text or "nothing was half-done; run the same command again"
