"""pr's push commands: what a person would type to propose the patch (fetch the tag, apply, push to their fork,
`gh pr create` or `gh pr comment`). Printed and written to checks.json; never run."""

from __future__ import annotations

import re
from pathlib import Path

from ...ground.vcs import Repo
from ...sources.pins import Pin


def _norm_url(url: str) -> str:
    """https://host/owner/repo(.git), git@host:owner/repo.git, ssh://git@host/owner/repo -> host/owner/repo."""
    u = url.strip().rstrip("/").removesuffix(".git")
    u = re.sub(r"^[a-z+]+://", "", u)
    u = re.sub(r"^[^@/]+@", "", u)
    if ":" in u.split("/", 1)[0]:
        u = u.replace(":", "/", 1)
    return u.lower()


def commands(repo: Repo, pin: Pin, branch: str, out_dir: Path, root: Path, subject: str,
                  open_pr: dict | None = None, issue: bool = False) -> list[str]:
    """The commands that would propose the patch. Without a fork remote they name ``<your-fork-remote>`` and
    ``<you>`` (add the remote, and make pr prints them exact); empty without an upstream git tag."""
    remotes = {}
    for line in repo("remote", "-v").splitlines():
        parts = line.split()
        if len(parts) >= 2:
            remotes.setdefault(parts[0], parts[1])
    if not pin.tag:
        return []
    base = _norm_url(pin.repository)
    norm = {n: _norm_url(u) for n, u in remotes.items()}
    upstream = next((n for n, u in norm.items() if u == base), None)
    fork = next((n for n in remotes if n != upstream), None)
    owner_repo = "/".join(base.split("/")[-2:])
    repo_url = pin.repository.rstrip("/").removesuffix(".git")
    vendor = f"vendor/{pin.name}"
    # one patch, or a stacked one after the patches it stands on (0001-..., 0002-...: the order they apply)
    patch_files = sorted(out_dir.glob("*.patch"))
    patch_rels = [f.relative_to(root) for f in patch_files] or [out_dir / "*.patch"]
    cmds = []
    if upstream:
        cmds.append(f"git -C {vendor} fetch {upstream} tag {pin.tag} --no-tags")
    else:
        cmds.append(f"git -C {vendor} fetch {repo_url}.git tag {pin.tag} --no-tags")
    cmds.append(f"git -C {vendor} switch -c {branch}-on-{pin.tag} {pin.tag}   # the upstream git tag, not the sdist import")
    cmds.append(f"git -C {vendor} am --3way {' '.join(str(Path('../..') / r) for r in patch_rels)}")
    target = fork or "<your-fork-remote>"
    cmds.append(f"git -C {vendor} push {target} {branch}-on-{pin.tag}:{branch}")
    fork_owner = norm[fork].split("/")[-2] if fork and norm[fork].count("/") >= 2 else "<you>"
    title = subject.replace('"', '\\"')
    rel = out_dir.relative_to(root)
    if issue:
        cmds.insert(0, f'gh issue create --repo {owner_repo} --title "{title}" --body-file {rel}/ISSUE.md   # first; link it in the PR')
    if open_pr:
        return [c for c in cmds if c.startswith("gh issue")] + [
            f"gh pr comment {open_pr['number']} --repo {owner_repo} --body-file {rel}/COMMENT.md"]
    cmds.append(f'gh pr create --repo {owner_repo} --base main --head {fork_owner}:{branch} '
                f'--title "{title}" --body-file {rel}/PR.md')
    return cmds
