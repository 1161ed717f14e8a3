"""index: a static PEP 503 simple index of dist/*.whl under dist/simple/.

Normalised project names (PEP 503), ``#sha256=`` on every link, and the core metadata
served beside each wheel as ``<wheel>.metadata`` (PEP 658) announced with both
``data-dist-info-metadata`` and ``data-core-metadata`` (PEP 714), and the wheel's
``Requires-Python`` as ``data-requires-python`` (HTML-escaped). File links are
percent-encoded: a raw ``+`` (every local version has one) reads as a space on object
stores. Every file is written atomically; a metadata file that exists with other bytes is
an error. ``server`` serves dist/ over HTTP (``make serve``).
"""

from __future__ import annotations

import email.parser
import html
import re
import zipfile
from collections import defaultdict
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

from ..ground import ui
from ..ground.errors import IndexConflict, NotApplied
from ..ground.fsutil import atomic_write, sha256_bytes, sha256_file

SIMPLE = "simple"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _metadata(wheel: Path) -> bytes:
    with zipfile.ZipFile(wheel) as zf:
        names = [n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/METADATA", n)]
        if len(names) != 1:
            raise IndexConflict(f"{wheel.name} has {len(names)} .dist-info/METADATA files; it is not a valid wheel")
        return zf.read(names[0])


def _page(title: str, links: list[str]) -> str:
    body = "\n".join(f"    {link}<br/>" for link in links)
    return (
        "<!DOCTYPE html>\n<html>\n  <head>\n"
        '    <meta name="pypi:repository-version" content="1.0">\n'
        f"    <title>{html.escape(title)}</title>\n  </head>\n  <body>\n"
        f"    <h1>{html.escape(title)}</h1>\n{body}\n  </body>\n</html>\n"
    )


def write_index(dist: Path) -> Path:
    wheels = sorted(dist.glob("*.whl"))
    projects: dict[str, list[Path]] = defaultdict(list)
    for w in wheels:
        projects[normalize(w.name.split("-", 1)[0])].append(w)
    simple = dist / SIMPLE
    for project, files in sorted(projects.items()):
        links = []
        for w in files:
            meta = _metadata(w)
            meta_path = dist / f"{w.name}.metadata"
            if meta_path.exists() and meta_path.read_bytes() != meta:
                raise IndexConflict(f"{meta_path} exists with different bytes than {w.name}'s METADATA. `make clean` and rebuild.")
            if not meta_path.exists():
                atomic_write(meta_path, meta)
            m = sha256_bytes(meta)
            href = html.escape(f"../../{quote(w.name)}#sha256={sha256_file(w)}")
            requires = email.parser.BytesHeaderParser().parsebytes(meta).get("Requires-Python")
            rp = f' data-requires-python="{html.escape(requires.strip())}"' if requires else ""
            links.append(
                f'<a href="{href}"{rp} data-dist-info-metadata="sha256={m}" data-core-metadata="sha256={m}">{html.escape(w.name)}</a>'
            )
        atomic_write(simple / project / "index.html", _page(f"Links for {project}", links))
        builds: dict[tuple[str, str], set[str]] = defaultdict(set)  # (release, line) -> its builds' versions
        for w in files:
            version = w.name.split("-")[1]
            release, _, local = version.partition("+")
            builds[(release, ".".join(local.split(".")[1:-1]))].add(version)  # headroom.<line>.<hash>: the line
        for (release, line), versions in sorted(builds.items()):
            if len(versions) > 1:
                ui.warn(f"dist/ holds {len(versions)} headroom builds of {project} {release}"
                        + (f" on the {line} line" if line else "") + ": pip picks the highest local version, so "
                        "install the exact one you want (`make clean` drops old builds)")
        for release in sorted({r for r, _ in builds}):
            lines = sorted(ln for r, ln in builds if r == release and ln)
            if len(lines) > 1:
                ui.info(f"{project} {release} has a build per release line ({', '.join(lines)}): "
                        f"`{project}=={release}+headroom.<line>.<hash>` installs one line's build")
    root_links = [f'<a href="{p}/">{p}</a>' for p in sorted(projects)]
    atomic_write(simple / "index.html", _page("Simple index", root_links))
    ui.info(f"dist/{SIMPLE}/: {len(projects)} project(s), {len(wheels)} wheel(s)")
    return simple


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        ui.detail(f"{self.address_string()} {format % args}")


def server(dist: Path, *, host: str = "127.0.0.1", port: int = 8000) -> ThreadingHTTPServer:
    """An HTTP server for dist/ (bound, not yet serving): ``/simple/`` is the index."""
    if not (dist / SIMPLE / "index.html").exists():
        raise NotApplied(f"{dist / SIMPLE} has no index. Run `make build` (or `make index`) first.")
    return ThreadingHTTPServer((host, port), partial(_QuietHandler, directory=str(dist)))
