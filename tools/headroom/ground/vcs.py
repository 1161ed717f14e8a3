"""GitPython behind one small module: deterministic environment, errors turned into ours.

Nobody else imports ``git``. Every call prints ``+ git ...`` unless it is plumbing
(``quiet=True``), and a ``GitCommandError`` becomes :class:`CommandFailed` carrying
git's own stderr.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import git  # GitPython

from . import ui
from .errors import CommandFailed, DiskFull, NotApplied
from .proc import disk_full_in, fault_point

IDENTITY_NAME = "headroom"
IDENTITY_EMAIL = "headroom@example.invalid"

# Same inputs -> same commit SHAs on every machine: no user or system git config,
# fixed identity, UTC, C locale, no prompts, no signing.
GIT_ENV = {
    "LANG": "C",
    "LC_ALL": "C",
    "TZ": "UTC",
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_CONFIG_GLOBAL": os.devnull,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": IDENTITY_NAME,
    "GIT_AUTHOR_EMAIL": IDENTITY_EMAIL,
    "GIT_COMMITTER_NAME": IDENTITY_NAME,
    "GIT_COMMITTER_EMAIL": IDENTITY_EMAIL,
    "GIT_EDITOR": "true",
    "GIT_PAGER": "cat",
}

REPO_CONFIG = {
    "core.autocrlf": "false",
    "core.filemode": "true",
    "core.safecrlf": "false",
    "commit.gpgsign": "false",
    "tag.gpgsign": "false",
    "gc.auto": "0",
    "am.threeway": "false",
    "am.keepcr": "false",
}


def date_env(epoch: int) -> dict[str, str]:
    stamp = f"@{epoch} +0000"
    return {"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp}


class Repo:
    """A git repository driven through GitPython with :data:`GIT_ENV`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._repo = git.Repo(self.path)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError) as exc:
            raise NotApplied(f"{self.path} is not a git repository ({type(exc).__name__}): it was not made by "
                             "`make apply`, or was removed. Run `make apply`.") from None
        self._repo.git.update_environment(**GIT_ENV)

    @classmethod
    def init(cls, path: Path, branch: str = "headroom") -> "Repo":
        path.mkdir(parents=True, exist_ok=True)
        try:
            git.Repo.init(path, initial_branch=branch, env=GIT_ENV)
        except git.GitCommandError as exc:
            error = DiskFull if disk_full_in(_text(exc.stderr)) else CommandFailed
            raise error(f"git init {path} failed", details=str(exc.stderr)) from None
        finally:
            fault_point()
        repo = cls(path)
        for key, value in REPO_CONFIG.items():
            repo("config", key, value)
        return repo

    @property
    def git_dir(self) -> Path:
        return Path(self._repo.git_dir)

    def __call__(self, *args: str, quiet: bool = True, env: dict[str, str] | None = None, stdin_path: Path | None = None, strip: bool = True) -> str:
        argv = ["git", *[str(a) for a in args]]
        if not quiet or ui.verbose():
            ui.command(f"(cd {self.path} && {shlex.join(argv)})")
        kwargs: dict = {"env": env} if env else {}
        try:
            if stdin_path is not None:
                with open(stdin_path, "rb") as f:
                    out = self._repo.git.execute(argv, istream=f, strip_newline_in_stdout=strip, **kwargs)
            else:
                out = self._repo.git.execute(argv, strip_newline_in_stdout=strip, **kwargs)
        except git.GitCommandError as exc:
            text = f"{_text(exc.stdout)}{_text(exc.stderr)}"
            error = DiskFull if disk_full_in(text) else CommandFailed
            raise error(
                f"git {args[0]} failed in {self.path} (exit {exc.status})" + (": out of disk space." if error is DiskFull else "."),
                details=f"command: {shlex.join(argv)}\n{text}".rstrip(),
            ) from None
        finally:
            fault_point()
        return out if isinstance(out, str) else out.decode("utf-8", "replace")

    def try_(self, *args: str, **kwargs) -> tuple[bool, str]:
        """Run a git command that may fail; return (ok, output or error text)."""
        try:
            return True, self(*args, **kwargs)
        except CommandFailed as exc:
            return False, exc.details

    def head(self) -> str | None:
        ok, out = self.try_("rev-parse", "--verify", "-q", "HEAD")
        return out.strip() if ok and out.strip() else None

    def is_dirty(self) -> list[str]:
        out = self("status", "--porcelain", "--untracked-files=all", strip=False)
        return [line for line in out.splitlines() if line.strip()]

    def am_in_progress(self) -> bool:
        return (self.git_dir / "rebase-apply").exists() or (self.git_dir / "rebase-merge").exists()


def _text(value: object) -> str:
    if not value:
        return ""
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    for prefix in ("\n  stdout: '", "\n  stderr: '", "  stdout: '", "  stderr: '"):
        if text.startswith(prefix):
            text = text[len(prefix) :].rstrip("'")
    return text.strip() + "\n"
