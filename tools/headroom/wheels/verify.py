"""verify: rebuild a wheel from the pins and series its SBOM names; same sha256 or say where not.

The SBOM names the upstream sdist (file and sha256) and every patch (file, sha256, order).
This checkout's ``vendor/pins.toml`` and ``patches/<name>/`` must be exactly those (else
:class:`ProvenanceMismatch`, listing what differs); the wheel is then rebuilt in a
temporary project (its own checkout, its own dist/: nothing of yours is touched) with the
same steps as ``make apply build``, and the two sha256 compared. On a mismatch the first
member that differs is named (:class:`VerifyMismatch`).
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
import zlib
from pathlib import Path

from ..ground import ui
from ..ground.errors import ProvenanceMismatch, VerifyMismatch
from ..ground.fsutil import atomic_write, sha256_bytes, sha256_file
from ..sources import checkout, pins as pins_mod
from . import build as build_mod, inspect as inspect_mod, sbom


def _read(zf: zipfile.ZipFile, name: str) -> bytes | str:
    """A member's bytes, or why they cannot be read (a changed byte breaks the CRC or the stream)."""
    try:
        return zf.read(name)
    except (zipfile.BadZipFile, zlib.error, OSError) as exc:
        return f"unreadable ({exc})"


def first_difference(wheel: Path, rebuilt: Path) -> str:
    """The first member of ``wheel`` (in its order) that differs from ``rebuilt``, in words."""
    try:
        with zipfile.ZipFile(wheel) as za, zipfile.ZipFile(rebuilt) as zb:
            names_a, names_b = za.namelist(), zb.namelist()
            for name in names_a:
                if name not in names_b:
                    return f"{name}: only in {wheel.name}, not in the rebuild"
                a, b = _read(za, name), zb.read(name)
                if isinstance(a, str):
                    return f"{name}: {a}"
                if a != b:
                    return (f"{name}: content differs (sha256 {sha256_bytes(a)[:16]}... in the wheel, "
                            f"{sha256_bytes(b)[:16]}... rebuilt)")
            missing = [n for n in names_b if n not in names_a]
            if missing:
                return f"{missing[0]}: missing from {wheel.name}"
            if names_a != names_b:
                return "every member is the same, in another order"
            for ia, ib in zip(za.infolist(), zb.infolist(), strict=True):
                for attr in ("date_time", "external_attr", "compress_type"):
                    if getattr(ia, attr) != getattr(ib, attr):
                        return f"{ia.filename}: same content, other {attr} ({getattr(ia, attr)} vs {getattr(ib, attr)})"
    except zipfile.BadZipFile as exc:
        return f"{wheel.name} is not a readable zip ({exc})"
    return "every member and its zip metadata are the same; the zip container itself differs"


def verify(root: Path, wheel: Path) -> None:
    """Rebuild ``wheel`` from its SBOM's pins and series; raise unless the sha256 is the same."""
    member, text = sbom.read_wheel(wheel)
    ui.step("verify", str(wheel))
    sbom.validate(text, where=member)
    prov = sbom.parse(text, where=member)
    cmp = inspect_mod.compare(root, prov)
    if not cmp.same:
        problems = [cmp.note] if cmp.note else []
        problems += [f"vendor/pins.toml {line}" for line in cmp.release]
        if cmp.patches:
            problems += [f"{r.file}: {s}" for r, s in zip(prov.patches, cmp.patches, strict=True)
                         if not s.startswith("matches ")]
        problems += [f"patches/{cmp.pin.name}/{line}" for line in cmp.extra if cmp.pin is not None]
        if not problems:
            problems = ["the series lists the same patches in another order"]
        raise ProvenanceMismatch(
            f"{wheel.name} was built from a release or series that is not this checkout's; nothing was rebuilt. "
            "Check out the headroom commit the wheel was built from (`headroom inspect` shows what its SBOM names).",
            details="\n".join(f"  - {p}" for p in problems),
        )
    pin = cmp.pin
    assert pin is not None
    expected = sha256_file(wheel)
    with tempfile.TemporaryDirectory(prefix="headroom-verify-") as tmp:
        work = Path(tmp)
        ui.info(f"rebuilding {prov.name} {prov.upstream_version} + {len(prov.patches)} patch(es) in a temporary "
                f"project ({work}); your vendor/ and dist/ are not touched")
        atomic_write(work / pins_mod.PINS_FILE, pins_mod.render([pin]))
        if (root / "patches" / pin.name).exists():
            shutil.copytree(root / "patches" / pin.name, work / "patches" / pin.name)
        checkout.apply(work, pin)
        built = build_mod.build(work, pin, force=True)
        if built.wheel.name != wheel.name:
            raise VerifyMismatch(f"the rebuild is {built.wheel.name}, not {wheel.name}: the wheel's name does not "
                                 "match its SBOM (renamed or built from something else).")
        if built.sha256 != expected:
            kept = root / "build" / "verify" / built.wheel.name
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(built.wheel, kept)
            raise VerifyMismatch(
                f"{wheel.name} does NOT match its rebuild from the pins and series its SBOM names.",
                details=f"  wheel   sha256 {expected}\n  rebuilt sha256 {built.sha256} (kept: {kept})\n"
                        f"  first difference: {first_difference(wheel, built.wheel)}",
            )
    ui.info(f"{wheel.name}: the rebuild matches, sha256 {expected}")


def cmd_verify(args) -> int:
    verify(Path(args.root).resolve(), Path(args.wheel))
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="rebuild a wheel from the pins and series its SBOM names; exit 0 on the same sha256")
    p.add_argument("wheel", help="a headroom wheel, e.g. dist/transformers-5.23.0+headroom.<hash>-py3-none-any.whl")
    p.set_defaults(func=cmd_verify)
