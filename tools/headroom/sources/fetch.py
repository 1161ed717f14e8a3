"""fetch: the pinned sdist and official wheel, through pip, verified, cached by content.

pip is used with ``--require-hashes`` so it honours the machine's index settings and
refuses a wrong file before it unpacks or builds anything; the cached copy is then
hashed again before every use. The cache is content-addressed
(``<cache>/sha256/<hash>/<file name>``): a second run downloads nothing. The versions the index offers come
from pip as well (``pip index versions``): :func:`index_versions`, and :func:`newest` of them.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from packaging.version import InvalidVersion, Version

from ..ground import lock, proc, ui
from ..ground.errors import CommandFailed, DiskFull, HashMismatch, PinsError
from ..ground.fsutil import cache_dir, disk_full, sha256_file
from .pins import Pin

_GOT = re.compile(r"Got\s+([0-9a-f]{64})")
_AVAILABLE = re.compile(r"^Available versions:\s*(.*)$", re.M)


def _cached(sha256: str, filename: str) -> Path:
    return cache_dir() / "sha256" / sha256 / filename


def fetch(pin: Pin, kind: str) -> Path:
    """Return the verified local path of ``pin``'s ``kind`` ("sdist" or "wheel")."""
    filename = pin.sdist if kind == "sdist" else pin.wheel
    expected = pin.sdist_sha256 if kind == "sdist" else pin.wheel_sha256
    target = _cached(expected, filename)
    left = "the download cache is unchanged (a partial download is discarded)"
    with lock.cache_entry(cache_dir(), expected, filename), ui.leaves(left):
        if target.exists():
            actual = sha256_file(target)
            if actual == expected:
                ui.detail(f"{filename}: cached ({target})")
                return target
            target.unlink()
            ui.warn(f"cached {target} had sha256 {actual}, not {expected} (truncated or damaged): "
                    "deleted, downloading again")
        with disk_full(f"downloading {filename} into the cache", cache_dir(), lambda: 0, left):
            _download(pin, kind, filename, expected, target)
    return target


def _download(pin: Pin, kind: str, filename: str, expected: str, target: Path) -> None:
    tmp_root = cache_dir() / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
        tmpdir = Path(tmp)
        req = tmpdir / "requirements.txt"
        req.write_text(f"{pin.requirement} --hash=sha256:{expected}\n", encoding="utf-8")
        out = tmpdir / "out"
        binary = ["--no-binary", ":all:"] if kind == "sdist" else ["--only-binary", ":all:"]
        ui.info(f"downloading {filename} ...")
        result = proc.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--require-hashes", *binary,
             "--disable-pip-version-check", "-r", req, "-d", out],
            what=f"pip download {pin.requirement} ({kind})",
            check=False,
        )
        if result.returncode != 0:
            if "DO NOT MATCH THE HASHES" in result.output:
                got = _GOT.search(result.output)
                raise HashMismatch(
                    f"refusing {filename}: its sha256 does not match vendor/pins.toml [{pin.name}].{kind}_sha256; "
                    "nothing was saved or extracted.",
                    details=f"expected {expected}\nactual   {got.group(1) if got else '(pip did not say)'}\n"
                    "If the pin is wrong, correct it in vendor/pins.toml; otherwise the index serves a different file.",
                )
            sys.stderr.write(result.output[-20000:])
            if proc.disk_full_in(result.output):
                raise DiskFull(f"pip download {pin.requirement} ({kind}) ran out of disk space")
            raise CommandFailed(
                f"could not download {pin.requirement} ({kind}) with pip; its output is above. "
                "Check the machine's pip index settings (pip config list).",
            )
        files = sorted(p.name for p in out.iterdir()) if out.exists() else []
        if files != [filename]:
            raise PinsError(
                f"pip downloaded {files or 'nothing'} for {pin.requirement}, not {filename} as vendor/pins.toml "
                f"[{pin.name}].{kind} says. Correct the file name in the pin.",
            )
        got_file = out / filename
        actual = sha256_file(got_file)
        if actual != expected:  # pip checked already; this is the second lock
            got_file.unlink()
            raise HashMismatch(
                f"refusing {filename}: sha256 mismatch with vendor/pins.toml [{pin.name}].{kind}_sha256 (file deleted).",
                details=f"expected {expected}\nactual   {actual}",
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(got_file), target.with_name(target.name + ".part"))
        target.with_name(target.name + ".part").replace(target)
        ui.info(f"{filename}: sha256 {actual} verified, cached")


def download_unpinned(pin: Pin, version: str, *,
                      recorded: str = "recorded in vendor/pins.toml when the rebase finishes") -> Pin:
    """``pin`` moved to ``version``: pip-downloads its sdist and wheel without hashes (trust on first use: they
    are printed, and cached by content), and returns the new pin with their names and sha256."""
    files: dict[str, tuple[str, str]] = {}
    tmp_root = cache_dir() / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    for kind in ("sdist", "wheel"):
        with tempfile.TemporaryDirectory(dir=tmp_root) as tmp:
            out = Path(tmp) / "out"
            binary = ["--no-binary", ":all:"] if kind == "sdist" else ["--only-binary", ":all:"]
            result = proc.run([sys.executable, "-m", "pip", "download", "--no-deps", *binary, "--disable-pip-version-check",
                               f"{pin.distribution}=={version}", "-d", out],
                              what=f"pip download {pin.distribution}=={version} ({kind})", check=False)
            got = sorted(out.iterdir()) if out.exists() else []
            if result.returncode != 0 or len(got) != 1:
                sys.stderr.write(result.output[-10000:])
                raise CommandFailed(f"could not download {pin.distribution}=={version} ({kind}) with pip; its output is "
                                    "above. Check the version exists on the index (pip index versions "
                                    f"{pin.distribution}) and the machine's pip settings.")
            f = got[0]
            if kind == "sdist" and not f.name.endswith((".tar.gz", ".zip")) or kind == "wheel" and not f.name.endswith(".whl"):
                raise CommandFailed(f"pip returned {f.name} for the {kind} of {pin.distribution}=={version}; not a {kind}. "
                                    "Check the machine's pip index settings (pip config list).")
            digest = sha256_file(f)
            target = cache_dir() / "sha256" / digest / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(f), target)
            files[kind] = (f.name, digest)
            ui.info(f"{f.name}: sha256 {digest} (trust on first use: {recorded})")
    tag = pin.tag.replace(pin.version, version) if pin.version in pin.tag else f"v{version}"
    new = dataclasses.replace(pin, version=version, sdist=files["sdist"][0], sdist_sha256=files["sdist"][1],
                              wheel=files["wheel"][0], wheel_sha256=files["wheel"][1], tag=tag)
    for kind in ("sdist", "wheel"):
        fetch(new, kind)  # the second lock: the cached copy has the hash we print
    return new


def index_versions(distribution: str) -> list[str]:
    """Every version the configured index offers for ``distribution`` (pre-releases included)."""
    result = proc.run([sys.executable, "-m", "pip", "index", "versions", "--pre", "--disable-pip-version-check",
                       distribution], what=f"pip index versions {distribution}", check=False, quiet=True)
    return versions_in(result.output, distribution, result.returncode)


def versions_in(output: str, distribution: str, returncode: int = 0) -> list[str]:
    """The versions of ``pip index versions``'s output ("Available versions: 0.17.2, 0.17.1"); [] when pip found
    no distribution of that name; :class:`CommandFailed` when pip failed otherwise."""
    m = _AVAILABLE.search(output)
    if returncode != 0 or not m:
        if "No matching distribution found" in output:
            return []
        raise CommandFailed(f"could not list the releases of {distribution} on the package index "
                            "(pip index versions); check the machine's pip settings (pip config list).",
                            details=output[-4000:])
    return [v.strip() for v in m.group(1).split(",") if v.strip()]


def newest(versions: Iterable[str], *, final: bool = False) -> str | None:
    """The newest of ``versions`` (texts that are no version are skipped); with ``final``, the newest final
    release (no pre-release or dev release), what ``pip index versions`` without ``--pre`` names. None when none."""
    parsed = []
    for text in versions:
        try:
            v = Version(text.strip())
        except InvalidVersion:
            continue
        if not final or not (v.is_prerelease or v.is_devrelease):
            parsed.append(v)
    return str(max(parsed)) if parsed else None
