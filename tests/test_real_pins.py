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
from headroom.sources import checkout, lines as lines_mod
from headroom.wheels import index
from headroom.ground.fsutil import sha256_file

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.integration


def test_real_pins_apply_export_and_build_reproducibly(tmp_path, capsys):
    root = tmp_path / "proj"
    (root / "vendor").mkdir(parents=True)
    for config in (REPO / "vendor").glob("*.toml"):  # pins.toml, lines.toml and each <line>.pins.toml
        shutil.copyfile(config, root / "vendor" / config.name)
    shutil.copytree(REPO / "patches", root / "patches")
    run = lambda *argv: cli.main(["--root", str(root), *argv])  # noqa: E731
    lines = lines_mod.load(root)
    pins = [p for line in lines for p in line.pins]
    assert run("apply") == 0
    for pin in pins:
        log = (checkout.vendor_dir(root, pin) / ".git" / "headroom-state.json").read_text()
        assert '"state": "done"' in log
    assert run("export", "--check") == 0
    assert run("build") == 0
    wheels = sorted((root / "dist").glob("*.whl"))
    # one wheel per pin of each line, its version naming the line: two lines' accelerate 1.16.0 never share a name
    assert sorted(w.name.split("+")[0] for w in wheels) == sorted(f"{p.distribution}-{p.version}" for p in pins)
    assert all(any(f"{p.distribution}-{p.version}+headroom.{p.line}." in w.name for w in wheels) for p in pins if p.line)
    first = {w.name: sha256_file(w) for w in wheels}
    assert run("build", "--force") == 0  # a different byte under the same name would fail here
    assert {w.name: sha256_file(w) for w in sorted((root / "dist").glob("*.whl"))} == first
    for pin in pins:
        assert (root / "dist" / "simple" / index.normalize(pin.distribution) / "index.html").exists()
    # Provenance: every wheel carries an SBOM that names this checkout's release and series,
    # and the smaller one (peft, ~40 s) rebuilds to the same sha256 from it.
    capsys.readouterr()
    for w in wheels:
        assert run("inspect", str(w)) == 0
        out = capsys.readouterr().out
        assert "same release and same series" in out
        assert "(release line " in out or not lines[0].name  # the SBOM names the line
    (peft,) = [w for w in wheels if w.name.startswith("peft-")]
    assert run("verify", str(peft)) == 0
    assert "the rebuild matches" in capsys.readouterr().out
