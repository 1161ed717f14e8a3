"""publish: upload the built wheels to a package index with twine, never overwriting a file.

``make publish REPOSITORY=<upload url or ~/.pypirc section>``. Before uploading, the
index's simple page of each project is read (PEP 691 JSON when the server offers it, else
PEP 503 HTML): a file of the same name and the same sha256 is skipped (a second publish is
a no-op), the same name with other bytes stops everything (:class:`PublishConflict`, both
hashes named), and only the missing wheels are uploaded, one ``twine upload`` each, so an
upload rejected half-way leaves the index consistent and the next publish completes it.
After each upload the index is read again and must serve the bytes we built.

Credentials are twine's business: ``TWINE_USERNAME``/``TWINE_PASSWORD``, keyring, or the
``~/.pypirc`` section. They never appear on a command line, in our output or in a file:
twine reads them from the environment it inherits; the reads of the simple pages get them
from twine's own resolver, in memory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urljoin, urlsplit

from ..ground import proc, ui
from ..ground.errors import (
    IndexConflict, IndexUnreachable, NotApplied, PublishAuthError, PublishConflict, UploadFailed, UsageError,
)
from ..ground.fsutil import sha256_file
from ..sources.pins import Pin
from .build import DIST_DIR, STATE_DIR
from .index import normalize

ACCEPT = "application/vnd.pypi.simple.v1+json, application/vnd.pypi.simple.v1+html;q=0.2, text/html;q=0.01"
JSON_TYPE = "application/vnd.pypi.simple.v1+json"
TIMEOUT = 60
# PyPI and TestPyPI refuse PEP 440 local versions: a headroom build never goes there.
PUBLIC_HOSTS = {"pypi.org", "upload.pypi.org", "pypi.python.org", "test.pypi.org", "testpypi.python.org"}
CREDENTIALS_HINT = ("set TWINE_USERNAME and TWINE_PASSWORD, store them in keyring, or put username/password "
                    "in the ~/.pypirc section named by REPOSITORY")


@dataclass(frozen=True)
class Remote:
    """A file the index lists for a project."""

    filename: str
    url: str
    sha256: str | None


@dataclass(frozen=True)
class Target:
    upload_url: str
    simple_url: str
    twine_args: tuple[str, ...]
    auth: tuple[str, str] | None
    verify: str | bool = True  # TWINE_CERT / the section's ca_cert, as twine uses them
    cert: str | None = None  # the section's client_cert


def built_wheels(root: Path, pins: list[Pin]) -> list[Path]:
    """The wheel ``make build`` recorded for each pin, checked against its recorded sha256."""
    wheels = []
    for pin in pins:
        state_file = root / STATE_DIR / f"{pin.key}.json"
        if not state_file.exists():
            raise NotApplied(f"no build of {pin.name} is recorded ({state_file.relative_to(root)}). Run `make build` first.")
        recorded = json.loads(state_file.read_text(encoding="utf-8"))
        wheel = root / DIST_DIR / recorded["wheel"]
        if not wheel.exists():
            raise NotApplied(f"dist/{wheel.name} is gone (recorded by the last build of {pin.name}). Run `make build`.")
        actual = sha256_file(wheel)
        if actual != recorded["sha256"]:
            raise IndexConflict(
                f"dist/{wheel.name} changed since `make build` (sha256 {actual}, built {recorded['sha256']}); "
                "it is not published. `make build FORCE=1` rebuilds it.")
        wheels.append(wheel)
    return wheels


# ---- where to upload, where to read, with which credentials --------------------------------------


def redact(text: str) -> str:
    """``text`` with any ``user:password@`` of a URL replaced by ``****@`` (for printing)."""
    return re.sub(r"(?<=://)[^/@\s]+@", "****@", text)


def _no_userinfo(url: str, what: str) -> None:
    parts = urlsplit(url)
    if parts.username or parts.password:
        raise UsageError(f"{what}={redact(url)} carries credentials in the URL; they would be printed and logged. "
                         f"Remove them and {CREDENTIALS_HINT}.")


def _simple_candidates(upload_url: str) -> list[str]:
    base = upload_url.rstrip("/")
    base = base.removesuffix("/legacy")  # warehouse-style upload endpoint
    return [base + "/simple/", base + "/+simple/"]  # pypiserver, Artifactory, Nexus... ; devpi


def target(repository: str, *, index_url: str | None = None, config_file: str | None = None) -> Target:
    """Resolve REPOSITORY (a URL, or a ~/.pypirc section) the way twine does."""
    from twine import exceptions as twine_exc, settings as twine_settings

    if not repository:
        raise UsageError("no repository given: `make publish REPOSITORY=<upload url or ~/.pypirc section name>`")
    config_file = config_file or os.path.expanduser("~/.pypirc")
    is_url = "://" in repository
    if is_url:
        _no_userinfo(repository, "REPOSITORY")
    if index_url:
        _no_userinfo(index_url, "INDEX_URL")
    try:
        settings = twine_settings.Settings(
            repository_name="pypi" if is_url else repository, repository_url=repository if is_url else None,
            config_file=config_file, non_interactive=True, cacert=os.environ.get("TWINE_CERT"),
            username=os.environ.get("TWINE_USERNAME"), password=os.environ.get("TWINE_PASSWORD"),
        )
    except twine_exc.TwineException as exc:
        what = "" if is_url else f" (not a URL, so a section of {config_file})"
        raise UsageError(f"REPOSITORY={repository}{what}: {str(exc).strip().rstrip('.')}. "
                         "Give the upload URL, or a section name of that file.") from None
    upload_url = settings.repository_config["repository"]
    _no_userinfo(upload_url, f"the repository of section [{repository}] in {config_file}")
    if urlsplit(upload_url).hostname in PUBLIC_HOSTS:
        raise UsageError(f"REPOSITORY={repository} is {upload_url}: PyPI refuses local versions (+headroom.*), and "
                         "patched builds belong on your private index. Name that index instead.")
    auth = None
    try:
        username, password = settings.auth.username, settings.password
        if username and password:
            auth = (username, password)
    except twine_exc.TwineException:
        pass  # no credentials: read anonymously; twine says what is missing if the upload needs them
    twine_args = ("--repository-url", upload_url) if is_url else ("--repository", repository)
    if config_file != os.path.expanduser("~/.pypirc"):
        twine_args += ("--config-file", config_file)
    t = Target(upload_url, "", twine_args, auth, settings.cacert or True, settings.client_cert)
    session = _session(t)
    if index_url:
        simple = index_url.rstrip("/") + "/"
        _probe(session, simple, auth)
    else:
        simple = _find_simple(session, upload_url, auth)
    return dataclasses.replace(t, simple_url=simple)


def _session(t: Target):
    import requests

    s = requests.Session()
    s.headers["User-Agent"] = "headroom-publish"
    s.verify, s.cert = t.verify, t.cert
    return s


def _get(session, url: str, auth, *, accept: str | None = None, what: str):
    """GET following redirects on the same origin only (a fallback to another index is not this index)."""
    import requests

    origin = urlsplit(url)[:2]
    for _ in range(5):
        try:
            resp = session.get(url, auth=auth, headers={"Accept": accept} if accept else {}, allow_redirects=False,
                               timeout=TIMEOUT)
        except requests.RequestException as exc:
            reason = type(exc).__name__
            inner = exc.args[0] if exc.args else ""
            m = re.search(r"\[Errno[^\]]*\][^')\"]*", str(inner))
            raise IndexUnreachable(
                f"cannot reach {url} ({what}): {reason}{': ' + m.group(0) if m else ''}. Is the index running and the "
                "URL right? Nothing more was uploaded; run `make publish` again once it answers.") from None
        if resp.is_redirect:
            nxt = urljoin(url, resp.headers["Location"])
            if urlsplit(nxt)[:2] != origin:
                return resp
            url = nxt
            continue
        if resp.status_code in (401, 403):
            raise PublishAuthError(
                f"{url} answered {resp.status_code} {resp.reason} ({what}): the index refused the credentials or needs "
                f"some. Check them: {CREDENTIALS_HINT}. Nothing more was uploaded.")
        return resp
    raise IndexUnreachable(f"{url} ({what}): too many redirects")


def _probe(session, simple: str, auth) -> bool:
    resp = _get(session, simple, auth, accept=ACCEPT, what="the simple index")
    if resp.status_code == 200:
        return True
    raise IndexUnreachable(f"{simple} answered {resp.status_code} {resp.reason}: it is not a simple index. "
                           "Pass INDEX_URL=<the index's simple URL> (what pip's --index-url takes).")


def _find_simple(session, upload_url: str, auth) -> str:
    tried = []
    for simple in _simple_candidates(upload_url):
        resp = _get(session, simple, auth, accept=ACCEPT, what="the simple index")
        if resp.status_code == 200:
            return simple
        tried.append(f"{simple} ({resp.status_code})")
    raise IndexUnreachable(f"found no simple index beside {upload_url}: tried {', '.join(tried)}. "
                           "Pass INDEX_URL=<the index's simple URL> (what pip's --index-url takes).")


# ---- reading a project's files ------------------------------------------------------------------


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[tuple[str, str]] = []
        self._href: str | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self._href = dict(attrs).get("href")
            self._text = []

    def handle_data(self, data):
        if self._href is not None:
            self._text.append(data)

    def handle_endtag(self, tag):
        if tag == "a" and self._href is not None:
            self.links.append((self._href, "".join(self._text).strip()))
            self._href = None


def _filename(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def parse_page(body: str, content_type: str, page_url: str) -> dict[str, Remote]:
    """The files of a PEP 691 JSON or PEP 503 HTML project page, by file name."""
    files: dict[str, Remote] = {}
    if content_type == JSON_TYPE:
        for f in json.loads(body).get("files", []):
            url = urljoin(page_url, f["url"])
            files[f["filename"]] = Remote(f["filename"], url, (f.get("hashes") or {}).get("sha256"))
        return files
    parser = _Links()
    parser.feed(body)
    for href, text in parser.links:
        url = urljoin(page_url, href)
        fragment = urlsplit(url).fragment
        digest = fragment.split("=", 1)[1] if fragment.startswith("sha256=") else None
        name = text or _filename(url)
        files[name] = Remote(name, url.split("#", 1)[0], digest)
    return files


def list_files(session, t: Target, project: str) -> dict[str, Remote]:
    url = urljoin(t.simple_url, project + "/")
    resp = _get(session, url, t.auth, accept=ACCEPT, what=f"reading {project}'s page")
    if resp.is_redirect:
        ui.info(f"{url} redirects to {urlsplit(resp.headers['Location']).netloc} (a fallback index): "
                f"{project} has no files on this index yet")
        return {}
    if resp.status_code == 404:
        return {}
    if resp.status_code != 200:
        raise IndexUnreachable(f"{url} answered {resp.status_code} {resp.reason} (reading {project}'s page). "
                               "Nothing more was uploaded; run `make publish` again once the index answers.")
    ctype = resp.headers.get("Content-Type", "").split(";")[0].strip()
    return parse_page(resp.text, ctype, resp.url)


def remote_sha256(session, t: Target, remote: Remote) -> str:
    """The index's sha256 of a file: from its page, else by downloading it."""
    if remote.sha256:
        return remote.sha256.lower()
    import hashlib

    resp = _get(session, remote.url, t.auth, what=f"downloading {remote.filename} to hash it")
    if resp.is_redirect:  # files served from another host (a CDN): let requests follow, without our credentials
        resp = session.get(resp.headers["Location"], timeout=TIMEOUT)
    if resp.status_code != 200:
        raise IndexUnreachable(f"{remote.url} answered {resp.status_code} {resp.reason}: cannot hash {remote.filename}")
    return hashlib.sha256(resp.content).hexdigest()


# ---- publishing ----------------------------------------------------------------------------------


def _upload(wheel: Path, t: Target, done: int, total: int) -> None:
    args = [sys.executable, "-m", "twine", "--no-color", "upload", "--non-interactive", "--disable-progress-bar",
            *(["--verbose"] if ui.verbose() else []), *t.twine_args, wheel]
    # twine takes the credentials from the environment it inherits (or keyring, ~/.pypirc); nothing is on argv.
    # An empty TWINE_REPOSITORY_URL: an exported one must not send the upload elsewhere than the index we read.
    res = proc.run(args, check=False, what=f"twine upload {wheel.name}",
                   env={"COLUMNS": "120", "TWINE_NON_INTERACTIVE": "1", "TWINE_REPOSITORY_URL": ""})
    if res.returncode == 0:
        return
    if not ui.verbose():
        tail = "\n".join(line.rstrip() for line in res.output[-8000:].splitlines())
        sys.stderr.write(tail + "\n")
    text = res.output
    after = (f"{done} of {total} wheel(s) were uploaded before this one. Fix the cause and run `make publish` again: "
             "what is on the index is skipped, the rest is uploaded.")
    m = re.search(r"HTTPError: (\d{3})", text)
    code = int(m.group(1)) if m else 0
    if code in (401, 403) or "NonInteractive" in text or "Credential not found" in text:
        why = f"answered {code}: it refused the credentials" if code else "no credentials were found"
        raise PublishAuthError(f"uploading {wheel.name} to {t.upload_url}: {why}. {CREDENTIALS_HINT[0].upper()}"
                               f"{CREDENTIALS_HINT[1:]}. {after}")
    if code == 0 and re.search(r"ConnectionError|Connection refused|Max retries exceeded|timed out", text):
        raise IndexUnreachable(f"cannot reach {t.upload_url} to upload {wheel.name}. {after}")
    hint = ""
    if code in (400, 409):
        hint = (" The index may already hold this file while its simple page at "
                f"{t.simple_url} does not list it: check INDEX_URL.")
    raise UploadFailed(f"{t.upload_url} rejected {wheel.name} ({code or 'see twine output above'}).{hint} {after}")


def publish(root: Path, pins: list[Pin], repository: str, *, index_url: str | None = None,
            config_file: str | None = None) -> int:
    wheels = built_wheels(root, pins)
    t = target(repository, index_url=index_url, config_file=config_file)
    ui.info(f"upload to {t.upload_url}, reading {t.simple_url}"
            + (" (with credentials)" if t.auth else " (anonymously)"))
    session = _session(t)
    by_project: dict[str, list[Path]] = {}
    for w in wheels:
        by_project.setdefault(normalize(w.name.split("-", 1)[0]), []).append(w)
    todo: list[tuple[Path, str, str]] = []
    skipped, conflicts = [], []
    for project, files in by_project.items():
        remote = list_files(session, t, project)
        for w in files:
            local = sha256_file(w)
            if w.name in remote:
                theirs = remote_sha256(session, t, remote[w.name])
                if theirs == local:
                    skipped.append(w)
                    ui.info(f"{w.name}: on the index with the same sha256 {local}: skipped")
                else:
                    conflicts.append(f"{w.name}: the index serves sha256 {theirs}, dist/ holds sha256 {local}")
            else:
                todo.append((w, project, local))
    if conflicts:
        raise PublishConflict(
            "the index already holds a file of the same name with other bytes; nothing was uploaded and nothing is "
            "overwritten. A published name must never change content: if the index's file is a broken upload of "
            "this build, delete it on the index and publish again; otherwise change the series so the version "
            "changes.", details="\n".join(f"  {c}" for c in conflicts))
    for done, (w, project, local) in enumerate(todo):
        ui.info(f"{w.name}: uploading ({w.stat().st_size / 1e6:.1f} MB)")
        with ui.Timer() as timer:
            _upload(w, t, done, len(todo))
        remote = list_files(session, t, project).get(w.name)
        if remote is None:
            raise UploadFailed(f"twine uploaded {w.name} but {t.simple_url}{project}/ does not list it: "
                               "check INDEX_URL (the simple index of the repository you upload to).")
        theirs = remote_sha256(session, t, remote)
        if theirs != local:
            raise PublishConflict(f"after the upload, the index serves {w.name} with sha256 {theirs}, "
                                  f"not the built {local}. Delete it on the index and publish again.")
        ui.info(f"{w.name}: uploaded in {timer.seconds:.1f}s; the index serves sha256 {theirs}")
    ui.info(f"published {len(todo)}, already there {len(skipped)}"
            + ("" if todo else ": nothing to do"))
    return 0
