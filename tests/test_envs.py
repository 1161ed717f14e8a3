"""envs.py: which wheel of each pinned upstream goes into which test environment, and the test requirements check."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path

import pytest
from conftest import make_wheel, toy_env_links
from packaging.requirements import Requirement

from headroom.sources import pins as pins_mod
from headroom.wheels import build as build_mod
from headroom.proof import envs
from headroom.ground.errors import DependencyUnresolved, NotApplied, ProofFailed, RequirementsConflict
from headroom.ground.fsutil import sha256_file

PINS = """\
[accelerate]
distribution = "accelerate"
version = "1.15.0"
sdist = "accelerate-1.15.0.tar.gz"
sdist_sha256 = "{h}"
wheel = "accelerate-1.15.0-py3-none-any.whl"
wheel_sha256 = "{h}"
repository = "https://example.invalid/accelerate"
tag = "v1.15.0"

[peft]
distribution = "peft"
version = "0.21.2"
sdist = "peft-0.21.2.tar.gz"
sdist_sha256 = "{h}"
wheel = "peft-0.21.2-py3-none-any.whl"
wheel_sha256 = "{h}"
repository = "https://example.invalid/peft"
tag = "v0.21.2"
""".format(h="0" * 64)


@pytest.fixture
def pins() -> list[pins_mod.Pin]:
    return pins_mod.parse(PINS, Path("pins.toml"))


def built(root: Path, pin: pins_mod.Pin) -> Path:
    wheel = root / build_mod.DIST_DIR / f"{pin.distribution}-{pin.version}+headroom.0123abcd-py3-none-any.whl"
    wheel.parent.mkdir(parents=True, exist_ok=True)
    wheel.write_bytes(b"wheel")
    state = root / build_mod.STATE_DIR / f"{pin.name}.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    state.write_text(json.dumps({"head": "0" * 40, "wheel": wheel.name, "sha256": sha256_file(wheel)}), encoding="utf-8")
    return wheel


@pytest.mark.parametrize("line", ["accelerate==1.15.0", "Accelerate>=1.0", "peft", "accelerate[torch]==1.15.0  # note"])
def test_test_requirements_may_not_name_a_pinned_upstream(pins, line):
    text = f"# comment\nsafetensors==0.8.0\n{line}\npytest==9.2.0\n"
    with pytest.raises(RequirementsConflict, match=r"test-env.txt:3: .* pinned in vendor/pins.toml \[(accelerate|peft)\]"):
        envs.check_requirements(text, pins)


def test_test_requirements_without_pinned_upstreams_pass(pins):
    envs.check_requirements("# accelerate is pinned elsewhere\nsafetensors==0.8.0\n-r other.txt\n\npytest==9.2.0\n", pins)
    envs.check_requirements((Path(__file__).parents[1] / envs.REQUIREMENTS).read_text(encoding="utf-8"),
                            pins_mod.load(Path(__file__).parents[1]))


def test_patched_gets_every_headroom_build_in_pins_order(tmp_path, pins):
    wheels = [built(tmp_path, p) for p in pins]
    assert envs.wheels_for(tmp_path, pins, "patched") == wheels
    specs = envs._specs(tmp_path, "patched", wheels)
    assert specs[:2] == ["--extra-index-url", (tmp_path / "dist" / "simple").as_uri()]
    assert specs[2:] == ["accelerate==1.15.0+headroom.0123abcd", "peft==0.21.2+headroom.0123abcd"]


def test_patched_needs_the_builds_of_the_upstreams_under_test(tmp_path, pins):
    built(tmp_path, pins[1])
    with pytest.raises(NotApplied, match="no headroom wheel of accelerate"):
        envs.wheels_for(tmp_path, pins, "patched")


def test_patched_falls_back_to_the_official_wheel_of_an_upstream_not_under_test(tmp_path, pins, monkeypatch):
    official = tmp_path / "cache" / "accelerate-1.15.0-py3-none-any.whl"
    monkeypatch.setattr(envs.fetch, "fetch", lambda pin, kind: official)
    peft = built(tmp_path, pins[1])
    assert envs.wheels_for(tmp_path, pins, "patched", selected=[pins[1]]) == [official, peft]
    assert envs._specs(tmp_path, "patched", [official, peft])[2:] == [official, "peft==0.21.2+headroom.0123abcd"]


def test_pristine_gets_the_official_wheels(tmp_path, pins, monkeypatch):
    monkeypatch.setattr(envs.fetch, "fetch", lambda pin, kind: Path(f"/cache/{pin.wheel}"))
    for p in pins:
        built(tmp_path, p)  # never used for pristine
    assert [w.name for w in envs.wheels_for(tmp_path, pins, "pristine")] == [p.wheel for p in pins]
    assert envs._specs(tmp_path, "pristine", [Path("/cache/x.whl")]) == [Path("/cache/x.whl")]


def tool_pin(distribution: str, version: str) -> pins_mod.Pin:
    return pins_mod.Pin(name=distribution, distribution=distribution, version=version, sdist="x.tar.gz",
                        sdist_sha256="0" * 64, wheel="x.whl", wheel_sha256="0" * 64, repository="-", tag="-")


def test_check_origin_probes_every_pin_in_the_environment(tmp_path):
    # The tool's own environment stands in for a test environment: packaging is installed there, not +headroom
    import sys

    import packaging

    py = Path(sys.executable)
    pin = tool_pin("packaging", packaging.__version__)
    if Path(sys.prefix).resolve() not in Path(packaging.__file__).resolve().parents:
        pytest.skip("packaging is not installed in the tool environment itself")
    info = envs.check_origin(py, "pristine", tmp_path, [pin])
    assert info["dists"]["packaging"]["version"] == packaging.__version__
    with pytest.raises(ProofFailed, match="packaging .* is the wrong build for this environment"):
        envs.check_origin(py, "patched", tmp_path, [pin])
    envs.check_origin(py, "patched", tmp_path, [pin], selected=[])  # not under test: the official build is fine
    with pytest.raises(ProofFailed, match="vendor/pins.toml pins 0.0.1"):
        envs.check_origin(py, "pristine", tmp_path, [tool_pin("packaging", "0.0.1")])


# ------------------------------------------------------------------ a swapped environment equals a fresh one


def freeze(py: Path) -> str:
    return subprocess.run([py, "-m", "pip", "freeze", "--disable-pip-version-check"], capture_output=True, text=True,
                          check=True).stdout


@pytest.fixture
def toy_envs(tmp_path, monkeypatch) -> tuple[Path, dict[str, Path]]:
    """A project whose environments hold toypkg and a stand-in torch; releases 1.0.0 (needs olddep), 1.3.0 (adds
    newdep, drops olddep) and 1.4.0 (needs missingdep, which the index does not have)."""
    links = toy_env_links(tmp_path / "links")
    make_wheel(links, name="olddep", version="1.0")
    make_wheel(links, name="newdep", version="1.0")
    wheels = {"1.0.0": make_wheel(links, version="1.0.0", requires=("olddep",)),
              "1.3.0": make_wheel(links, version="1.3.0", requires=("newdep>=1.0",)),
              "1.4.0": make_wheel(links, version="1.4.0", requires=("missingdep>=2",))}
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    root = tmp_path / "proj"
    (root / envs.REQUIREMENTS).parent.mkdir(parents=True)
    (root / envs.REQUIREMENTS).write_text("# the toy environments need nothing more\n", encoding="utf-8")
    return root, wheels


def test_a_swapped_environment_equals_a_fresh_one(toy_envs):
    """A release that adds a dependency: the swap installs it, drops what only the old release needed, and `pip check`
    passes; the environment's `pip freeze` is the one of an environment made fresh with the new release. A release
    whose dependency has no match fails with DependencyUnresolved (exit 36), naming it."""
    root, wheels = toy_envs
    old = freeze(envs.ensure(root, "pristine", [wheels["1.0.0"]]))
    assert "olddep==1.0" in old and "torch==2.13.0" in old
    py = envs.ensure(root, "pristine", [wheels["1.3.0"]])
    swapped = freeze(py)
    assert "newdep==1.0" in swapped and "olddep" not in swapped and "toypkg-1.3.0" in swapped
    assert subprocess.run([py, "-m", "pip", "check"], capture_output=True).returncode == 0
    assert freeze(envs.ensure(root, "fresh", [wheels["1.3.0"]])) == swapped
    assert envs.ensure(root, "pristine", [wheels["1.3.0"]]) == py  # stamped: up to date
    # A release whose new dependency has no match on the index: named, and the environment is not trusted.
    with pytest.raises(DependencyUnresolved) as exc:
        envs.ensure(root, "pristine", [wheels["1.4.0"]])
    assert exc.value.exit_code == 36
    assert exc.value.message.startswith("Make every requirement of the wheels installable")
    assert "no distribution on the package index matches missingdep>=2" in exc.value.message
    assert "no match: missingdep>=2" in exc.value.details
    assert not (root / envs.ENVS_DIR / "pristine" / envs.STAMP).exists()  # never trusted: made again next time


def test_the_closure_follows_markers_and_extras(tmp_path):
    """needed(): what the roots need, transitively; a requirement behind an extra only when that extra is asked."""
    links = tmp_path / "links"
    for name, requires in {"a": ("b[x]", "c; python_version < '3'"), "b": ("d; extra == 'x'", "e; extra == 'y'"),
                           "c": (), "d": (), "e": (), "f": ()}.items():
        with zipfile.ZipFile(make_wheel(links, name=name, requires=requires)) as zf:
            zf.extractall(tmp_path / "lib" / "python3.x" / "site-packages")
    assert envs.needed(tmp_path, [Requirement("a")]) == {"a", "b", "d"} | envs.BASE
