"""Provenance on the synthetic upstream: the SBOM inside the wheel, `inspect` and `verify`."""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import FIXTURES, Project, toy_pin

from headroom.ground import errors
from headroom.sources import pins as pins_mod, series as series_mod
from headroom.wheels import sbom
from headroom.ground.fsutil import sha256_file

MEMBER_SUFFIX = ".dist-info/sboms/headroom.cdx.json"


@pytest.fixture
def built(project: Project) -> Project:
    assert project.run("apply") == 0
    assert project.run("build") == 0
    return project


def the_wheel(project: Project) -> Path:
    (wheel,) = (project.root / "dist").glob("*.whl")
    return wheel


def sbom_of(wheel: Path) -> tuple[str, bytes, list[str]]:
    with zipfile.ZipFile(wheel) as zf:
        (member,) = [n for n in zf.namelist() if n.endswith(MEMBER_SUFFIX)]
        record = zf.read(member.split("/")[0] + "/RECORD").decode().splitlines()
        return member, zf.read(member), record


def series_files(project: Project) -> list[Path]:
    return [project.patches / n for n in (project.patches / "series").read_text().split()]


def test_sbom_is_in_the_wheel_valid_and_names_release_and_patches(built: Project):
    wheel = the_wheel(built)
    member, data, record = sbom_of(wheel)
    assert member == f"{wheel.name.split('-py3')[0]}.dist-info/sboms/headroom.cdx.json"
    # PEP 770: listed in RECORD with its hash and size, like every other file.
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    assert f"{member},sha256={digest},{len(data)}" in record
    assert record[-1].startswith(member.split("/")[0] + "/RECORD,")
    with zipfile.ZipFile(wheel) as zf:  # every RECORD line still right after the rewrite
        for line in record[:-1]:
            name, hashed, size = line.rsplit(",", 2)
            content = zf.read(name)
            expected = base64.urlsafe_b64encode(hashlib.sha256(content).digest()).rstrip(b"=").decode()
            assert (hashed, int(size)) == (f"sha256={expected}", len(content)), name
        assert len(zf.namelist()) == len(record)
    # The library's own schema validator (the json-validation extra).
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(data.decode()) is None
    doc = json.loads(data)
    comp = doc["metadata"]["component"]
    local = wheel.name.split("-")[1]
    assert (comp["name"], comp["version"]) == ("toypkg", local)
    assert comp["purl"] == f"pkg:pypi/toypkg@{local.replace('+', '%2B')}"
    (ancestor,) = comp["pedigree"]["ancestors"]
    assert ancestor["purl"] == "pkg:pypi/toypkg@1.0.0?file_name=toypkg-1.0.0.tar.gz"
    assert ancestor["hashes"] == [{"alg": "SHA-256", "content": built.pin.sdist_sha256}]
    assert {"type": "vcs", "url": "https://example.invalid/toypkg", "comment": "tag v1.0.0"} in ancestor["externalReferences"]
    # Its patch hashes are the files in patches/, in the series' order, and the files themselves are embedded.
    prov = sbom.parse(data.decode(), where=member)
    files = series_files(built)
    assert [(p.file, p.sha256) for p in prov.patches] == [(f.name, sha256_file(f)) for f in files]
    assert [p.content for p in prov.patches] == [f.read_bytes() for f in files]
    assert prov.patches[0].subject == "memory: stage loads on the CPU"
    assert prov.patches[0].links == (("Fixes", "https://example.invalid/toypkg/issues/1"),)
    assert prov.patches[1].links == ()
    # Nothing that varies from one build to the next.
    assert doc["metadata"]["timestamp"] == "2023-11-14T22:13:20+00:00"
    assert doc["serialNumber"].startswith("urn:uuid:")


def test_trailers_are_read_from_the_patch_and_land_in_a_valid_sbom(tmp_path):
    patch = FIXTURES / "sbom" / "trailers.patch"
    facts = sbom.patch_facts(patch, 1)
    assert facts.subject == ("memory: release the temporary state dict as soon as its values are copied "
                             "into the live parameters")
    assert facts.links == (("Fixes", "https://example.invalid/toypkg/issues/1"),
                           ("Upstream-PR", "https://github.com/example/toypkg/pull/7 (open, proposes the same fix)"),
                           ("Upstream-PR", "none yet"))
    assert facts.sha256 == sha256_file(patch)
    # Free text after a URL (or no URL at all) must not break the schema: the URL alone is the reference.
    pin = pins_mod.Pin(name="toypkg", distribution="toypkg", version="1.0.0", sdist="toypkg-1.0.0.tar.gz",
                       sdist_sha256="a" * 64, wheel="toypkg-1.0.0-py3-none-any.whl", wheel_sha256="b" * 64,
                       repository="https://example.invalid/toypkg", tag="v1.0.0")
    text = sbom.document(pin, series_mod.Series("toypkg", patch.parent, (patch,)), epoch=1700000000)
    sbom.validate(text, where="trailers")
    (rec,) = sbom.parse(text, where="trailers").patches
    assert rec.links == facts.links
    resolves = json.loads(text)["metadata"]["component"]["pedigree"]["patches"][0]["resolves"]
    refs = sorted(ref for r in resolves for ref in r.get("references", []))
    assert refs == ["https://example.invalid/toypkg/issues/1", "https://github.com/example/toypkg/pull/7"]
    assert "example/toypkg#7" in {r["id"] for r in resolves}


def test_reproducible_with_the_sbom_across_builds_and_projects(built: Project, tmp_path):
    wheel = the_wheel(built)
    first = sha256_file(wheel)
    assert built.run("build", "--force") == 0  # an other byte under the same name would be refused
    assert sha256_file(wheel) == first
    other = Project(tmp_path / "elsewhere", built.index, built.pin)
    other.write_pins()
    other.use_series("clean")
    assert other.run("apply") == 0 and other.run("build") == 0
    assert sha256_file(the_wheel(other)) == first
    assert sbom_of(the_wheel(other))[1] == sbom_of(wheel)[1]


def test_build_refuses_a_series_changed_since_apply(built: Project, capsys):
    p = series_files(built)[0]
    p.write_bytes(p.read_bytes() + b"\n")
    assert built.run("build", "--force") == errors.NotApplied.exit_code
    assert "changed since vendor/toypkg was applied" in capsys.readouterr().err


def test_inspect_a_wheel(built: Project, capsys):
    wheel = the_wheel(built)
    capsys.readouterr()
    assert built.run("inspect", str(wheel)) == 0
    out = capsys.readouterr().out
    files = series_files(built)
    assert "upstream: toypkg 1.0.0  pkg:pypi/toypkg@1.0.0?file_name=toypkg-1.0.0.tar.gz" in out
    assert f"sdist   toypkg-1.0.0.tar.gz  sha256 {built.pin.sdist_sha256}" in out
    assert "source  https://example.invalid/toypkg  tag v1.0.0" in out
    assert f"sha256 {sha256_file(files[0])}" in out
    assert "Fixes: https://example.invalid/toypkg/issues/1" in out
    assert f"this checkout: matches patches/toypkg/{files[0].name}" in out
    assert f"this checkout: matches patches/toypkg/{files[1].name}" in out
    assert "same release and same series" in out
    # The checkout moves on: inspect says which patch no longer matches.
    files[0].write_bytes(files[0].read_bytes().replace(b"by default.", b"by default!"))
    assert built.run("inspect", str(wheel)) == 0
    out = capsys.readouterr().out
    assert f"this checkout: DIFFERS from patches/toypkg/{files[0].name}" in out
    assert f"this checkout: matches patches/toypkg/{files[1].name}" in out
    assert "NOT the release and series" in out


def test_inspect_an_installed_distribution(built: Project, tmp_path, capsys):
    env = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    py = env / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    "--disable-pip-version-check", str(the_wheel(built))], check=True)
    capsys.readouterr()
    assert built.run("inspect", "toypkg", "--python", str(py)) == 0
    out = capsys.readouterr().out
    local = the_wheel(built).name.split("-")[1]
    assert f"toypkg {local} installed in {py}" in out
    assert "sboms/headroom.cdx.json" in out and "same release and same series" in out
    assert built.run("inspect", "not-installed-here", "--python", str(py)) == errors.SbomMissing.exit_code
    assert "is not installed" in capsys.readouterr().err


def test_inspect_an_official_wheel_says_it_has_no_sbom(project: Project, capsys):
    official = project.index / "toypkg-1.0.0-py3-none-any.whl"
    assert project.run("inspect", str(official)) == errors.SbomMissing.exit_code
    assert "carries no headroom SBOM" in capsys.readouterr().err


def test_verify_passes_on_a_fresh_build(built: Project, capsys):
    wheel = the_wheel(built)
    before = sha256_file(wheel)
    assert built.run("verify", str(wheel)) == 0
    assert f"the rebuild matches, sha256 {before}" in capsys.readouterr().out
    assert sha256_file(wheel) == before


def _rewrite(wheel: Path, dest: Path, change) -> None:
    """Copy ``wheel`` member by member (same names, dates, modes), ``change(name, data)`` deciding each member."""
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(dest, "w") as out:
        for info in src.infolist():
            copy = zipfile.ZipInfo(info.filename, info.date_time)
            copy.external_attr, copy.compress_type = info.external_attr, info.compress_type
            out.writestr(copy, change(info.filename, src.read(info.filename)))


def test_verify_fails_on_one_changed_byte_inside_a_member(built: Project, tmp_path, capsys):
    wheel = the_wheel(built)
    tampered = tmp_path / wheel.name
    _rewrite(wheel, tampered, lambda name, data: data.replace(b'"cpu"', b'"cpU"', 1) if name == "toypkg/memory.py" else data)
    assert sha256_file(tampered) != sha256_file(wheel)
    capsys.readouterr()
    assert built.run("verify", str(tampered)) == errors.VerifyMismatch.exit_code
    err = capsys.readouterr()
    assert "does NOT match its rebuild" in err.err
    assert "first difference: toypkg/memory.py: content differs" in err.out


def test_verify_fails_on_a_flipped_byte_in_the_compressed_data(built: Project, tmp_path, capsys):
    wheel = the_wheel(built)
    with zipfile.ZipFile(wheel) as zf:
        info = zf.getinfo("toypkg/memory.py")
    raw = bytearray(wheel.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)  # the member's data
    raw[start + info.compress_size // 2] ^= 0x01
    tampered = tmp_path / wheel.name
    tampered.write_bytes(bytes(raw))
    capsys.readouterr()
    assert built.run("verify", str(tampered)) == errors.VerifyMismatch.exit_code
    assert "first difference: toypkg/memory.py: unreadable" in capsys.readouterr().out


def test_verify_refuses_when_the_checkout_is_not_what_the_sbom_names(built: Project, capsys):
    wheel = the_wheel(built)
    files = series_files(built)
    files[1].write_bytes(files[1].read_bytes().replace(b"state.clear()", b"state.clear()  # changed"))
    capsys.readouterr()
    assert built.run("verify", str(wheel)) == errors.ProvenanceMismatch.exit_code
    captured = capsys.readouterr()
    assert "nothing was rebuilt" in captured.err
    assert f"{files[1].name}: DIFFERS from patches/toypkg/{files[1].name}" in captured.out  # the details


def test_verify_refuses_other_pins_and_inspect_without_a_checkout(built: Project, tmp_path, capsys):
    wheel = the_wheel(built)
    built.write_pins(toy_pin(built.index, tag="v1.0.0-other"))
    capsys.readouterr()
    assert built.run("verify", str(wheel)) == errors.ProvenanceMismatch.exit_code
    assert "vendor/pins.toml tag: SBOM v1.0.0, vendor/pins.toml v1.0.0-other" in capsys.readouterr().out
    elsewhere = tmp_path / "not-a-checkout"
    elsewhere.mkdir()
    from headroom import cli

    assert cli.main(["--root", str(elsewhere), "inspect", str(wheel)]) == 0
    out = capsys.readouterr().out
    assert "no headroom checkout to compare with" in out and "nothing compared" in out
    assert cli.main(["--root", str(elsewhere), "verify", str(wheel)]) == errors.ProvenanceMismatch.exit_code


def test_a_wheel_built_before_sboms_is_not_taken_for_up_to_date(built: Project, tmp_path, capsys):
    wheel = the_wheel(built)
    old = tmp_path / wheel.name  # the same wheel as built before this feature: no SBOM
    with zipfile.ZipFile(wheel) as src, zipfile.ZipFile(old, "w") as out:
        for info in src.infolist():
            if not info.filename.endswith(MEMBER_SUFFIX):
                out.writestr(info, src.read(info.filename))
    old.replace(wheel)
    state = built.root / "build/state/toypkg.json"
    recorded = json.loads(state.read_text())
    state.write_text(json.dumps({**recorded, "sha256": sha256_file(wheel)}))
    capsys.readouterr()
    # Same name, other bytes: refused (it may have been published), and the fix is named.
    assert built.run("build") == errors.IndexConflict.exit_code
    assert "make clean" in capsys.readouterr().err
    assert built.run("clean") == 0 and built.run("build") == 0
    assert sbom.has_sbom(the_wheel(built))
