"""stack: a patch applied in a worktree of ``make pr`` (recommitted as the person), and the earlier patches of the
series it is stacked on (its ``Depends-on:`` trailers: a stacked pull request, proposed after them and tested against
them)."""

from __future__ import annotations

import re
from pathlib import Path

from ...ground.errors import PatchConflict, UsageError
from ...ground.fsutil import atomic_write_json
from ...ground.vcs import Repo
from ...sources import checkout, series as series_mod
from ...sources.pins import Pin
from . import draft as prdraft


# A patch proposed on top of another of the series (a stacked pull request): ``Depends-on: <patch file or number>``
DEPENDS_ON = re.compile(r"^Depends-on\s*:\s*(\S+)", re.IGNORECASE)


def depends_on(text: str) -> list[str]:
    """What a commit message's ``Depends-on:`` trailers name, in their order."""
    return [m.group(1) for line in text.splitlines() if (m := DEPENDS_ON.match(line.strip()))]


def identity_env(identity: tuple[str, str]) -> dict[str, str]:
    name, email = identity
    return {"GIT_AUTHOR_NAME": name, "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name, "GIT_COMMITTER_EMAIL": email}


def stacked_on(root: Path, pin: Pin, patch: Path) -> list[Path]:
    """The earlier patches of the series that ``patch``'s ``Depends-on:`` trailers name (a stacked pull request)."""
    tokens = depends_on(patch.read_text(encoding="utf-8"))
    if not tokens:
        return []
    series = [p.name for p in series_mod.load(root, pin.name, pin.line).patches]
    earlier = series[:series.index(patch.name)]
    names = series_mod.match(tokens, series, pin.name, flag=f"{patch.name}: Depends-on")
    wrong = [n for n in names if n not in earlier]
    if wrong:
        raise UsageError(f"{patch.relative_to(root)}: Depends-on names {', '.join(wrong)}, which does not come before "
                         f"it in patches/{pin.name}/series. Name an earlier patch, or drop the trailer.")
    return [patch.parent / n for n in names]


def apply(root: Path, wt: Repo, patch: Path, tag: str, checks: dict, out_dir: Path, tmpdir: Path,
          identity: tuple[str, str] | None, deps: list[Path] = ()) -> dict:
    """``git am`` one patch in a worktree; with ``identity``, recommitted as the person, without our trailers. Its
    parsed message. A patch that does not apply is a PatchConflict (checks.json says why)."""
    ok, err = wt.try_("am", "--no-3way", "--keep-non-patch", str(patch))
    if not ok:
        failing = checkout.failing_files(wt, patch)
        wt.try_("am", "--abort")
        checks["applies_alone"] = {"status": "failed", "files": failing, "git": checkout.hunk_lines(err)}
        atomic_write_json(out_dir / "checks.json", checks)
        on = f"{tag} + {', '.join(d.name for d in deps)}" if deps else tag
        raise PatchConflict(
            f"{patch.relative_to(root)} does not apply alone on {on}: it depends on an earlier patch of the "
            "series. Make it self-contained (move the shared change into it), propose the earlier patch first, or "
            "name it in a `Depends-on: <patch file>` trailer (a stacked pull request), then `make pr` again.",
            details="files that fail: " + (", ".join(failing) or "(see git)") + "\n" + checkout.hunk_lines(err),
        )
    raw_message = wt("log", "-1", "--format=%B")
    if identity is not None:  # the branch proposed upstream: the person's identity, without our bookkeeping trailers
        msg_file = tmpdir / "message.txt"
        kept = [line for line in prdraft.strip_trailers(raw_message).splitlines() if not DEPENDS_ON.match(line.strip())]
        msg_file.write_text("\n".join(kept).rstrip("\n") + "\n", encoding="utf-8")
        wt("commit", "-q", "--amend", "--no-verify", "--reset-author", "-F", str(msg_file), env=identity_env(identity))
    return prdraft.parse_message(raw_message)
