"""Where an upstream's own test suite comes from: the sdist (default) or upstream's git tag.

``tests = "sdist"`` (or no ``tests`` key) in vendor/pins.toml: ``vendor/<name>/tests``, as
extracted from the sdist by ``make apply``. ``tests = "git"``: the ``tests/`` of ``tag`` in
``repository``, which holds more than the sdist ships (transformers' tests/trainer,
tests/peft_integration, tests/fsdp). It is fetched shallowly (``git fetch --depth 1``) into
``build/testsource/<name>-<tag>/`` and reused while it is still at that tag of that repository.
``repository`` may be a URL, a local path or a ``file://`` URL.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from ..ground import ui, vcs
from ..ground.errors import CommandFailed, NotApplied
from ..sources import checkout
from ..sources.pins import Pin

TESTSOURCE_DIR = Path("build") / "testsource"


class TestSourceError(CommandFailed):
    """Upstream's repository cannot be reached, or it has no such tag (exit code of CommandFailed)."""

    __test__ = False  # not a pytest class


def clone_dir(root: Path, pin: Pin) -> Path:
    safe_tag = re.sub(r"[^A-Za-z0-9._-]", "_", pin.tag)
    return root / TESTSOURCE_DIR / f"{pin.name}-{safe_tag}"


def tests_tree(root: Path, pin: Pin) -> Path:
    """The folder holding upstream's tests for ``pin`` (fetched first when they come from git)."""
    if pin.tests == "sdist":
        return checkout.vendor_dir(root, pin) / "tests"
    dest = clone_dir(root, pin)
    if not _is_current(dest, pin):
        _fetch(dest, pin)
    tests = dest / "tests"
    if not tests.is_dir():
        raise TestSourceError(
            f"set tests = \"sdist\" in vendor/pins.toml [{pin.name}]: tag {pin.tag} of {pin.repository} "
            f"has no tests/ folder."
        )
    return tests


def _fix(pin: Pin) -> str:
    return f"set tests = \"sdist\" in vendor/pins.toml [{pin.name}] or check network access"


def _tag_commit(repo: vcs.Repo, tag: str) -> str | None:
    ok, out = repo.try_("rev-parse", "--verify", "-q", f"refs/tags/{tag}^{{commit}}")
    return out.strip() if ok and out.strip() else None


def _is_current(dest: Path, pin: Pin) -> bool:
    """``dest`` is a finished fetch of ``pin.tag`` from ``pin.repository``, checked out."""
    if not (dest / ".git").is_dir():
        return False
    try:
        repo = vcs.Repo(dest)
    except (CommandFailed, NotApplied):
        return False
    ok, url = repo.try_("config", "--get", "remote.origin.url")
    if not ok or url.strip() != pin.repository:
        return False
    head = repo.head()
    return head is not None and head == _tag_commit(repo, pin.tag)


def _fetch(dest: Path, pin: Pin) -> None:
    """Fetch ``pin.tag`` into ``dest`` (through ``<dest>.part``, so a failed fetch is never reused)."""
    part = dest.with_name(dest.name + ".part")
    for stale in (part, dest):
        if stale.exists():
            shutil.rmtree(stale)
    ui.info(f"{pin.name}: fetching the tests of {pin.tag} from {pin.repository}")
    try:
        repo = vcs.Repo.init(part)
        repo("remote", "add", "origin", pin.repository)
        ok, out = repo.try_("ls-remote", "--tags", "origin", f"refs/tags/{pin.tag}")
        if not ok:
            raise TestSourceError(f"{_fix(pin)}: cannot reach {pin.repository}.", details=out.strip())
        if not out.strip():
            raise TestSourceError(
                f"set tests = \"sdist\" in vendor/pins.toml [{pin.name}] or fix its tag: "
                f"{pin.repository} has no tag {pin.tag!r}."
            )
        ok, out = repo.try_("fetch", "--depth", "1", "--no-tags", "origin",
                            f"+refs/tags/{pin.tag}:refs/tags/{pin.tag}", quiet=False)
        if not ok:
            raise TestSourceError(f"{_fix(pin)}: fetching tag {pin.tag} from {pin.repository} failed.",
                                  details=out.strip())
        repo("checkout", "-q", "--detach", f"refs/tags/{pin.tag}^{{commit}}")
    except BaseException:
        shutil.rmtree(part, ignore_errors=True)
        raise
    part.rename(dest)
