"""Integration: the real pins and series (every table of vendor/pins.toml) from the package index.

Marked ``integration``: it downloads the pinned sdists (cached after the first run) and
builds every wheel twice, then inspects each and verifies peft from its SBOM. ``make unit`` leaves it
out; ``make check`` runs it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from headroom import cli
from headroom.sources import pins as pins_mod
from headroom.wheels import index
from headroom.ground.fsutil import sha256_file

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def test_real_pins_apply_export_and_build_reproducibly(tmp_path, capsys):
    root = tmp_path / "proj"
    (root / "vendor").mkdir(parents=True)
    shutil.copyfile(REPO / "vendor" / "pins.toml", root / "vendor" / "pins.toml")
    shutil.copytree(REPO / "patches", root / "patches")
    run = lambda *argv: cli.main(["--root", str(root), *argv])  # noqa: E731
    pins = pins_mod.load(root)
    assert run("apply") == 0
    for name in (p.name for p in pins):
        log = (root / "vendor" / name / ".git" / "headroom-state.json").read_text()
        assert '"state": "done"' in log
    assert run("export", "--check") == 0
    assert run("build") == 0
    wheels = sorted((root / "dist").glob("*.whl"))
    assert [w.name.split("-")[0] for w in wheels] == sorted(p.distribution for p in pins)
    assert all("+headroom." in w.name for w in wheels)
    first = {w.name: sha256_file(w) for w in wheels}
    assert run("build", "--force") == 0  # a different byte under the same name would fail here
    assert {w.name: sha256_file(w) for w in sorted((root / "dist").glob("*.whl"))} == first
    for pin in pins:
        assert (root / "dist" / "simple" / index.normalize(pin.distribution) / "index.html").exists()
    # Provenance: both wheels carry an SBOM that names this checkout's release and series,
    # and the smaller one (peft, ~40 s) rebuilds to the same sha256 from it.
    capsys.readouterr()
    for w in wheels:
        assert run("inspect", str(w)) == 0
        assert "same release and same series" in capsys.readouterr().out
    (peft,) = [w for w in wheels if w.name.startswith("peft-")]
    assert run("verify", str(peft)) == 0
    assert "the rebuild matches" in capsys.readouterr().out
