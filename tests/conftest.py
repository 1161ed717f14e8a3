"""Shared fixtures: a synthetic upstream (toypkg) served from a local find-links folder.

Fixture data lives under tests/fixtures/: the toypkg source tree and patch series as
files. Tests turn them into an sdist, a pins file and a project in ``tmp_path``; pip
is pointed at a local folder (``PIP_NO_INDEX``/``PIP_FIND_LINKS``) so nothing leaves the
machine.
"""

from __future__ import annotations

import gzip
import io
import os
import shutil
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from headroom import cli
from headroom.sources import pins as pins_mod
from headroom.ground.fsutil import sha256_file

# Fixtures are data (synthetic upstreams, their tests and guards), never collected as this project's tests.
collect_ignore = ["fixtures"]

FIXTURES = Path(__file__).parent / "fixtures"
TOY = FIXTURES / "toypkg"
SERIES = FIXTURES / "series"
EPOCH = 1700000000


def make_sdist(dest: Path, *, version: str = "1.0.0", tree: Path = TOY, extra: list[tarfile.TarInfo] | None = None,
               name: str = "toypkg") -> Path:
    """A deterministic ``<name>-<version>.tar.gz`` of ``tree`` with PKG-INFO, like an sdist."""
    top = f"{name}-{version}"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        # Every version shares toypkg's in-tree build backend (tests/fixtures/toypkg/_backend).
        files = {p.relative_to(TOY).as_posix(): p for p in (TOY / "_backend").rglob("*.py")}
        files.update({p.relative_to(tree).as_posix(): p for p in tree.rglob("*") if p.is_file() and "__pycache__" not in p.parts})
        entries = [(f"{top}/{rel}", p.read_bytes()) for rel, p in files.items()]
        entries.append((f"{top}/PKG-INFO", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode()))
        for name, data in sorted(entries):
            if version != "1.0.0":
                data = data.replace(b"1.0.0", version.encode())
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), EPOCH, 0o644
            tar.addfile(info, io.BytesIO(data))
        for info in extra or []:
            tar.addfile(info, io.BytesIO(b"x" * info.size) if info.isfile() else None)
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{top}.tar.gz"
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buf.getvalue())
    return out


def make_wheel(dest: Path, *, version: str = "1.0.0", name: str = "toypkg", requires: tuple[str, ...] = ()) -> Path:
    """A minimal official-looking wheel (the pristine build's stand-in); ``requires``: its Requires-Dist lines."""
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(out, "w") as zf:
        zf.writestr(f"{name}/__init__.py", f'__version__ = "{version}"\n')
        info = f"{name}-{version}.dist-info"
        metadata = "".join(f"Requires-Dist: {r}\n" for r in requires)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n{metadata}")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return out


def toy_env_links(dest: Path) -> Path:
    """A find-links folder for test environments without real torch: a tiny ``torch==2.13.0`` stand-in."""
    make_wheel(dest, name="torch", version="2.13.0")
    return dest


def toy_pin(index: Path, version: str = "1.0.0", name: str = "toypkg", **overrides: str) -> pins_mod.Pin:
    sdist = index / f"{name}-{version}.tar.gz"
    wheel = index / f"{name}-{version}-py3-none-any.whl"
    fields = dict(
        name=name, distribution=name, version=version, sdist=sdist.name, sdist_sha256=sha256_file(sdist),
        wheel=wheel.name, wheel_sha256=sha256_file(wheel), repository=f"https://example.invalid/{name}",
        tag=f"v{version}",
    )
    fields.update(overrides)
    return pins_mod.Pin(**fields)


@dataclass
class Project:
    root: Path
    index: Path
    pin: pins_mod.Pin

    @property
    def vendor(self) -> Path:
        return self.root / "vendor" / "toypkg"

    @property
    def patches(self) -> Path:
        return self.root / "patches" / "toypkg"

    def run(self, *argv: str) -> int:
        return cli.main(["--root", str(self.root), *argv])

    def write_pins(self, pin: pins_mod.Pin | None = None) -> None:
        self.pin = pin or self.pin
        (self.root / "vendor").mkdir(parents=True, exist_ok=True)
        (self.root / "vendor" / "pins.toml").write_text(pins_mod.render([self.pin]), encoding="utf-8")

    def use_series(self, name: str | None) -> None:
        if self.patches.exists():
            shutil.rmtree(self.patches)
        if name:
            shutil.copytree(SERIES / name, self.patches)


@pytest.fixture(scope="session")
def toy_index(tmp_path_factory) -> Path:
    index = tmp_path_factory.mktemp("index")
    make_sdist(index)
    make_wheel(index)
    return index


@pytest.fixture(scope="session")
def shared_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def offline_pip(monkeypatch, toy_index, shared_cache):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(toy_index))
    monkeypatch.setenv("HEADROOM_CACHE", str(shared_cache))
    monkeypatch.delenv("V", raising=False)
    return toy_index


@pytest.fixture
def project(tmp_path, offline_pip) -> Project:
    """A headroom project on toypkg 1.0.0 with the 'clean' series."""
    proj = Project(tmp_path / "proj", offline_pip, toy_pin(offline_pip))
    proj.write_pins()
    proj.use_series("clean")
    return proj


def git(cwd: Path, *args: str) -> str:
    import subprocess

    env = dict(os.environ, GIT_AUTHOR_NAME="user", GIT_AUTHOR_EMAIL="u@example.invalid",
               GIT_COMMITTER_NAME="user", GIT_COMMITTER_EMAIL="u@example.invalid", GIT_CONFIG_GLOBAL=os.devnull)
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout
