"""sbom: a CycloneDX SBOM inside every built wheel (PEP 770), and reading it back.

The SBOM says what the wheel is: the component (name, local version, purl) and its
pedigree: the upstream release it descends from (PyPI purl with the sdist's file name,
its sha256, repository and tag) and every patch of the series (the patch file itself,
embedded, its file name, sha256 and subject, and the upstream issue or pull request it
resolves, from its ``Fixes:``/``Upstream-Issue:``/``Upstream-PR:`` trailers).

It is written with cyclonedx-python-lib, checked against the CycloneDX JSON schema, and
made byte-stable: the timestamp is the build's ``SOURCE_DATE_EPOCH``, the serial number
a UUID derived from the content, every bom-ref explicit, keys sorted. Upstream build
backends (setuptools) know nothing of ``.dist-info/sboms/``, so the SBOM is added to the
built wheel by rewriting it: members in their order with their dates and modes, the SBOM
just before RECORD with RECORD's date, RECORD gaining its line. Same wheel in, same
bytes out.

The patch order of the series lives in the component's properties
(``headroom:patch:NNNN:file``/``sha256``/``subject``, NNNN the position in the series):
CycloneDX keeps ``pedigree.patches`` as an unordered set.
"""

from __future__ import annotations

import base64
import datetime
import email
import email.policy
import hashlib
import json
import re
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .. import __version__
from ..ground.errors import NotApplied, SbomMissing
from ..sources import checkout, series as series_mod, version as version_mod
from ..sources.pins import Pin

SBOM_FILE = "headroom.cdx.json"  # under <name>-<version>.dist-info/sboms/ (PEP 770)
SPEC_VERSION = "1.6"
TRAILERS = ("Fixes", "Upstream-Issue", "Upstream-PR")
PROP = "headroom"  # property namespace
_TRAILER = re.compile(r"^(" + "|".join(TRAILERS) + r"):\s*(\S.*?)\s*$", re.IGNORECASE)
_DIST_INFO = re.compile(r"^([^/]+)\.dist-info/RECORD$")


# --- what a patch file says about itself -------------------------------------------------

@dataclass(frozen=True)
class PatchFacts:
    position: int  # 1-based place in the series
    file: str  # file name in patches/<name>/
    sha256: str  # of the patch file's bytes
    subject: str
    links: tuple[tuple[str, str], ...]  # (trailer, value as written), in the patch's order, no duplicate


def patch_facts(path: Path, position: int) -> PatchFacts:
    """Subject and upstream links of a ``git format-patch`` file (an RFC 2822 message)."""
    data = path.read_bytes()
    msg = email.message_from_bytes(data, policy=email.policy.default)
    subject = " ".join(str(msg.get("Subject", "")).split())
    subject = re.sub(r"^\[PATCH[^\]]*\]\s*", "", subject)
    body = msg.get_payload(decode=True) or b""
    links: list[tuple[str, str]] = []
    seen: set[str] = set()
    for line in body.decode("utf-8", "replace").splitlines():
        if line == "---" or line.startswith("diff --git "):
            break  # the message ends where the diff begins
        m = _TRAILER.match(line)
        if m and (_url(m.group(2)) or m.group(2)) not in seen:
            key = next(t for t in TRAILERS if t.lower() == m.group(1).lower())
            links.append((key, m.group(2)))
            seen.add(_url(m.group(2)) or m.group(2))
    return PatchFacts(position, path.name, hashlib.sha256(data).hexdigest(), subject, tuple(links))


def _url(value: str) -> str | None:
    """The URL in a trailer's value (``https://... (open)`` -> ``https://...``), if any."""
    m = re.search(r"https?://[^\s<>\"]+", value)
    return m.group(0).rstrip(".,;:)]}") if m else None


def _link_kind(url: str) -> str:
    path = urlsplit(url).path
    if re.search(r"/(pull|pulls|merge_requests)/\d+", path):
        return "pull request"
    if re.search(r"/issues?/\d+", path):
        return "issue"
    return "link"


def _link_id(url: str) -> str:
    """``owner/repo#123`` for forge URLs, else the URL itself."""
    m = re.match(r"^/([^/]+)/([^/]+)/(?:-/)?(?:issues|pull|pulls|merge_requests)/(\d+)", urlsplit(url).path)
    return f"{m.group(1)}/{m.group(2)}#{m.group(3)}" if m else url


# --- writing ------------------------------------------------------------------------------

def _purl(distribution: str, version: str, **qualifiers: str):
    from packageurl import PackageURL

    return PackageURL(type="pypi", name=re.sub(r"[-_.]+", "-", distribution).lower(), version=version,
                      qualifiers=qualifiers or None)


def document(pin: Pin, series: series_mod.Series, *, epoch: int) -> str:
    """The SBOM of the headroom build of ``pin`` with ``series``, as stable JSON text."""
    from cyclonedx.model import AttachedText, Encoding, ExternalReference, ExternalReferenceType, HashAlgorithm
    from cyclonedx.model import HashType, Property, XsUri
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType, Diff, Patch, PatchClassification, Pedigree
    from cyclonedx.model.issue import IssueClassification, IssueType, IssueTypeSource
    from cyclonedx.output.json import JsonV1Dot6

    local = version_mod.local_version(pin.version, series, pin.line)
    facts = [patch_facts(p, i) for i, p in enumerate(series.patches, 1)]
    repo_url = pin.repository.rstrip("/")
    upstream_purl = _purl(pin.distribution, pin.version, file_name=pin.sdist)
    ancestor = Component(
        type=ComponentType.LIBRARY, name=pin.distribution, version=pin.version,
        bom_ref=f"upstream:{upstream_purl.to_string()}", purl=upstream_purl,
        hashes=[HashType(alg=HashAlgorithm.SHA_256, content=pin.sdist_sha256)],
        external_references=[
            ExternalReference(type=ExternalReferenceType.VCS, url=XsUri(repo_url), comment=f"tag {pin.tag}"),
            ExternalReference(type=ExternalReferenceType.DISTRIBUTION,
                              url=XsUri(f"https://pypi.org/project/{pin.distribution}/{pin.version}/"),
                              comment=f"sdist {pin.sdist}",
                              hashes=[HashType(alg=HashAlgorithm.SHA_256, content=pin.sdist_sha256)]),
        ],
        properties=[Property(name=f"{PROP}:upstream:sdist", value=pin.sdist),
                    Property(name=f"{PROP}:upstream:sdist-sha256", value=pin.sdist_sha256),
                    Property(name=f"{PROP}:upstream:repository", value=repo_url),
                    Property(name=f"{PROP}:upstream:tag", value=pin.tag)],
    )
    patches = []
    props = [Property(name=f"{PROP}:series:sha256", value=series.digest()),
             Property(name=f"{PROP}:series:length", value=str(len(facts)))]
    if pin.line:  # the release line the build belongs to (vendor/lines.toml); its name is in the version too
        props.append(Property(name=f"{PROP}:line", value=pin.line))
    for f, path in zip(facts, series.patches, strict=True):
        resolves = []
        for trailer, value in f.links:  # the value as written; its URL, if any, as the reference
            url = _url(value)
            resolves.append(IssueType(
                type=IssueClassification.DEFECT, id=_link_id(url) if url else value, description=value,
                name=f"{trailer}: {_link_kind(url) if url else 'note'}",
                source=IssueTypeSource(name=urlsplit(url).netloc) if url else None,
                references=[XsUri(url)] if url else []))
        text = AttachedText(content=base64.b64encode(path.read_bytes()).decode("ascii"),
                            content_type="text/x-diff", encoding=Encoding.BASE_64)
        patches.append(Patch(type=PatchClassification.UNOFFICIAL, resolves=resolves,
                             diff=Diff(url=XsUri(f"patches/{series.name}/{path.relative_to(series.folder).as_posix()}"),
                                       text=text)))
        n = f"{PROP}:patch:{f.position:04d}"
        props += [Property(name=f"{n}:file", value=f.file), Property(name=f"{n}:sha256", value=f.sha256),
                  Property(name=f"{n}:subject", value=f.subject)]
    purl = _purl(pin.distribution, local)
    component = Component(
        type=ComponentType.LIBRARY, name=pin.distribution, version=local, bom_ref=purl.to_string(), purl=purl,
        description=f"{pin.distribution} {pin.version} with {len(facts)} headroom patch(es)"
                    + (f", release line {pin.line}" if pin.line else ""),
        pedigree=Pedigree(ancestors=[ancestor], patches=patches,
                          notes=f"Built by headroom from {pin.sdist} (sha256 {pin.sdist_sha256}) with the "
                                f"series patches/{series.name}/series applied in order (headroom:patch:NNNN properties)."),
        properties=props,
    )
    tool = Component(type=ComponentType.APPLICATION, name="headroom", version=__version__, bom_ref="tool:headroom")
    bom = Bom()
    bom.metadata.component = component
    bom.metadata.tools.components.add(tool)
    bom.metadata.timestamp = datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc)
    identity = json.dumps([pin.identity(), local, [(f.file, f.sha256) for f in facts], epoch, __version__], sort_keys=True)
    bom.serial_number = uuid.uuid5(uuid.NAMESPACE_URL, f"urn:headroom:sbom:{hashlib.sha256(identity.encode()).hexdigest()}")
    raw = JsonV1Dot6(bom).output_as_string()
    return json.dumps(json.loads(raw), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def validate(text: str, *, where: str) -> None:
    """Raise :class:`SbomMissing` unless ``text`` is valid CycloneDX JSON of our schema version."""
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    error = JsonStrictValidator(SchemaVersion.from_version(SPEC_VERSION)).validate_str(text)
    if error is not None:
        raise SbomMissing(f"{where}: the SBOM does not validate against the CycloneDX {SPEC_VERSION} schema: {error}")


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode("ascii")
    return f"{name},sha256={digest},{len(data)}"


def dist_info(zf: zipfile.ZipFile, where: str) -> str:
    """The one ``<name>-<version>.dist-info`` folder of a wheel."""
    found = [m.group(1) for n in zf.namelist() if (m := _DIST_INFO.match(n))]
    if len(found) != 1:
        raise SbomMissing(f"{where} has {len(found)} .dist-info/RECORD files; it is not a valid wheel")
    return f"{found[0]}.dist-info"


def embed(wheel: Path, text: str) -> str:
    """Add (or replace) ``<dist-info>/sboms/headroom.cdx.json`` in ``wheel``; return the member name."""
    data = text.encode("utf-8")
    with zipfile.ZipFile(wheel) as src:
        info_dir = dist_info(src, wheel.name)
        record_name, member = f"{info_dir}/RECORD", f"{info_dir}/sboms/{SBOM_FILE}"
        entries = [(i, src.read(i.filename)) for i in src.infolist() if i.filename != member]
    record_info, record = next((i, d) for i, d in entries if i.filename == record_name)
    # RECORD: drop an old line for the SBOM, add ours just before RECORD's own line.
    newline = "\r\n" if b"\r\n" in record else "\n"
    lines = [ln for ln in record.decode("utf-8").splitlines() if ln and not ln.startswith(member + ",")]
    own = next((k for k, ln in enumerate(lines) if ln.startswith(record_name + ",")), len(lines))
    lines.insert(own, _record_line(member, data))
    record = (newline.join(lines) + newline).encode("utf-8")
    sbom_info = zipfile.ZipInfo(member, record_info.date_time)
    sbom_info.external_attr = 0o644 << 16
    sbom_info.compress_type = zipfile.ZIP_DEFLATED
    tmp = wheel.with_name(f".{wheel.name}.sbom.part")
    try:
        with zipfile.ZipFile(tmp, "w") as out:
            for info, content in entries:
                if info.filename == record_name:
                    out.writestr(sbom_info, data)
                    content = record
                copy = zipfile.ZipInfo(info.filename, info.date_time)
                copy.external_attr, copy.compress_type = info.external_attr, info.compress_type
                copy.create_system = info.create_system
                out.writestr(copy, content)
        tmp.replace(wheel)
    finally:
        tmp.unlink(missing_ok=True)
    return member


def add_to_wheel(root: Path, pin: Pin, wheel: Path, *, epoch: int) -> str:
    """The build step's call: the SBOM of vendor/<name>'s series, checked and embedded in ``wheel``."""
    series = series_mod.load(root, pin.name, pin.line)
    state = checkout.read_state(checkout.vendor_dir(root, pin))
    if state.get("key") != checkout.apply_key(pin, series):
        raise NotApplied(f"patches/{pin.name}/ or vendor/pins.toml changed since vendor/{pin.name} was applied: "
                         "the wheel would not match what its SBOM names. Run `make apply`, then `make build`.")
    local = version_mod.local_version(pin.version, series, pin.line)
    text = document(pin, series, epoch=epoch)
    validate(text, where=wheel.name)
    member = embed(wheel, text)
    with zipfile.ZipFile(wheel) as zf:
        if not dist_info(zf, wheel.name).endswith(f"-{local}.dist-info"):
            raise NotApplied(f"{wheel.name} is not version {local} of patches/{pin.name}/series. Run `make apply` again.")
    return member


# --- reading ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PatchRecord:
    position: int
    file: str
    sha256: str
    subject: str
    links: tuple[tuple[str, str], ...]  # (trailer, value as written in the patch)
    content: bytes | None  # the embedded patch file, when present


@dataclass(frozen=True)
class Provenance:
    name: str
    version: str  # the local version of the build
    purl: str
    upstream_version: str
    upstream_purl: str
    sdist: str
    sdist_sha256: str
    repository: str
    tag: str
    series_sha256: str
    patches: tuple[PatchRecord, ...]
    tool: str  # "headroom 0.1.0"
    timestamp: str
    line: str = ""  # the release line (vendor/lines.toml) it belongs to; "" for a build made without lines


def _props(obj: dict) -> dict[str, str]:
    return {p.get("name", ""): p.get("value", "") for p in obj.get("properties", [])}


def parse(text: str, *, where: str) -> Provenance:
    """The facts of a headroom SBOM; :class:`SbomMissing` if it is not one."""
    try:
        doc = json.loads(text)
        comp = doc["metadata"]["component"]
        props = _props(comp)
        (anc,) = comp["pedigree"]["ancestors"]
        up = _props(anc)
        embedded = {}
        for p in comp["pedigree"].get("patches", []):
            blob = p.get("diff", {}).get("text", {})
            content = base64.b64decode(blob["content"]) if blob.get("encoding") == "base64" else blob.get("content", "").encode()
            found = [(r.get("name", "").split(":", 1)[0], r.get("description") or r.get("id", ""))
                     for r in p.get("resolves", [])]
            rank = {t: i for i, t in enumerate(TRAILERS)}
            links = tuple(sorted(found, key=lambda link: (rank.get(link[0], len(TRAILERS)), link[1])))
            embedded[hashlib.sha256(content).hexdigest()] = (content, links)
        records = []
        for i in range(1, int(props[f"{PROP}:series:length"]) + 1):
            n = f"{PROP}:patch:{i:04d}"
            content, links = embedded.get(props[f"{n}:sha256"], (None, ()))
            records.append(PatchRecord(i, props[f"{n}:file"], props[f"{n}:sha256"], props[f"{n}:subject"], links, content))
        tools = doc["metadata"].get("tools", {}).get("components", [])
        return Provenance(
            name=comp["name"], version=comp["version"], purl=comp.get("purl", ""), upstream_version=anc["version"],
            upstream_purl=anc.get("purl", ""), sdist=up[f"{PROP}:upstream:sdist"],
            sdist_sha256=up[f"{PROP}:upstream:sdist-sha256"], repository=up[f"{PROP}:upstream:repository"],
            tag=up[f"{PROP}:upstream:tag"], series_sha256=props[f"{PROP}:series:sha256"], patches=tuple(records),
            tool=", ".join(f"{t.get('name')} {t.get('version', '')}".strip() for t in tools),
            timestamp=doc["metadata"].get("timestamp", ""), line=props.get(f"{PROP}:line", ""),
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise SbomMissing(f"{where}: not a headroom SBOM (missing or malformed {exc}).") from None


def has_sbom(wheel: Path) -> bool:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return any(n.endswith(f".dist-info/sboms/{SBOM_FILE}") for n in zf.namelist())
    except zipfile.BadZipFile:
        return False


def read_wheel(wheel: Path) -> tuple[str, str]:
    """(member name, text) of the headroom SBOM inside ``wheel``."""
    if not wheel.is_file():
        raise SbomMissing(f"{wheel}: no such file.")
    try:
        with zipfile.ZipFile(wheel) as zf:
            info_dir = dist_info(zf, wheel.name)
            member = f"{info_dir}/sboms/{SBOM_FILE}"
            if member not in zf.namelist():
                others = [n for n in zf.namelist() if n.startswith(f"{info_dir}/sboms/")]
                hint = f" (it has other SBOMs: {', '.join(others)})" if others else ""
                raise SbomMissing(f"{wheel.name} carries no headroom SBOM ({member}){hint}. "
                                  "Was it built by headroom? Rebuild it with `make build`.")
            return member, zf.read(member).decode("utf-8")
    except zipfile.BadZipFile as exc:
        raise SbomMissing(f"{wheel}: not a readable wheel ({exc}).") from None
