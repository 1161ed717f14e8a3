"""publish to real index servers on 127.0.0.1, then install with real pip and uv.

Two local indexes: the private one (pypiserver with an htpasswd file, where ``headroom
publish`` uploads toypkg's headroom build; devpi-server for the PEP 691 JSON pages) and a
"public" one (headroom's own static index over ``index.server``, what ``make serve`` runs,
holding the official toypkg 1.0.0). pip and uv only ever see these loopback URLs; every
server is stopped by its fixture's finalizer."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from string import Template

import pytest
from conftest import FIXTURES, Project

from headroom.ground import errors
from headroom.sources import checkout
from headroom.wheels import index as index_mod, publish as publish_mod
from headroom.ground.fsutil import sha256_file

USER, PASSWORD = "alice", "pw-9f2c1e-never-printed"
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_proxy_get(url: str) -> int:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=2) as resp:
            return resp.status
    except urllib.error.HTTPError as exc:
        return exc.code


@dataclass
class Server:
    url: str  # the upload URL; the simple index is url + "simple/"
    packages: Path
    proc: subprocess.Popen

    @property
    def simple(self) -> str:
        return self.url + "simple/"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_pypiserver(tmp: Path, *, authenticate: str = "update") -> Server:
    with warnings.catch_warnings():  # passlib imports the deprecated crypt module (its fallback is fine)
        warnings.simplefilter("ignore", DeprecationWarning)
        from passlib.apache import HtpasswdFile

    tmp.mkdir(parents=True, exist_ok=True)
    packages = tmp / "packages"
    packages.mkdir(exist_ok=True)
    htpasswd = HtpasswdFile(str(tmp / "htpasswd"), new=True, default_scheme="apr_md5_crypt")
    htpasswd.set_password(USER, PASSWORD)
    htpasswd.save()
    port = _free_port()
    log = open(tmp / "server.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pypiserver", "run", "-i", "127.0.0.1", "-p", str(port), "-P", str(tmp / "htpasswd"),
         "-a", authenticate, "--disable-fallback", str(packages)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    log.close()
    server = Server(f"http://127.0.0.1:{port}/", packages, proc)
    deadline = time.monotonic() + 30
    while proc.poll() is None and _up(server.url + "health") != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc.poll() is not None or _up(server.url + "health") != 200:
        server.stop()
        pytest.fail(f"pypiserver did not start: {(tmp / 'server.log').read_text()}")
    return server


def _up(url: str) -> int:
    try:
        return _no_proxy_get(url)
    except OSError:
        return 0


@pytest.fixture
def pypiserver(tmp_path, request):
    servers: list[Server] = []

    def start(**kwargs) -> Server:
        server = start_pypiserver(tmp_path / f"pypiserver{len(servers)}", **kwargs)
        servers.append(server)
        return server

    request.addfinalizer(lambda: [s.stop() for s in servers])
    return start


def start_devpi(tmp: Path) -> tuple[str, subprocess.Popen]:
    """devpi-server with no PyPI mirror, offline; user alice with index alice/dev (no bases). Returns its upload URL."""
    import requests

    bin_dir = Path(sys.executable).parent
    server_dir = tmp / "devpi"
    subprocess.run([bin_dir / "devpi-init", "--serverdir", server_dir, "--root-passwd", "root-pw", "--no-root-pypi"],
                   check=True, capture_output=True)
    port = _free_port()
    log = open(tmp / "devpi.log", "wb")
    proc = subprocess.Popen([bin_dir / "devpi-server", "--serverdir", server_dir, "--host", "127.0.0.1", "--port",
                             str(port), "--offline-mode",
                             # devpi derives its token key with argon2 (512 MiB, 16 passes): seconds of CPU
                             # and memory that a throwaway test server does not need (devpi's own tests lower it too).
                             "--argon2-memory-cost", "8", "--argon2-parallelism", "1", "--argon2-time-cost", "1"],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    root = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 90
    while proc.poll() is None and _up(root + "+api") != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    if proc.poll() is not None or _up(root + "+api") != 200:
        proc.kill()
        pytest.fail(f"devpi-server did not start: {(tmp / 'devpi.log').read_text()}")
    session = requests.Session()
    session.trust_env = False
    assert session.put(root + USER, json={"password": PASSWORD, "email": "a@example.invalid"}).status_code == 201
    r = session.put(root + f"{USER}/dev", json={"type": "stage", "bases": [], "volatile": False}, auth=(USER, PASSWORD))
    assert r.status_code == 200, r.text
    return root + f"{USER}/dev/", proc


@pytest.fixture
def devpi(tmp_path, request):
    url, proc = start_devpi(tmp_path)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    request.addfinalizer(stop)
    return url


@pytest.fixture
def creds(monkeypatch, tmp_path):
    """twine's environment: the test's credentials, an empty HOME (no ~/.pypirc), no keyring, no proxy."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("TWINE_USERNAME", USER)
    monkeypatch.setenv("TWINE_PASSWORD", PASSWORD)
    monkeypatch.setenv("PYTHON_KEYRING_BACKEND", "keyring.backends.null.Keyring")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for var in ("TWINE_REPOSITORY", "TWINE_REPOSITORY_URL", "TWINE_CONFIG_FILE"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def built(project: Project) -> Project:
    assert project.run("apply") == 0
    assert project.run("build") == 0
    return project


def _wheel(project: Project) -> Path:
    (wheel,) = (project.root / "dist").glob("*.whl")
    return wheel


def _out(capsys) -> str:
    c = capsys.readouterr()
    text = c.out + c.err
    assert PASSWORD not in text
    return text


def _no_secret_in(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file() and ".git" not in path.parts:
            assert PASSWORD.encode() not in path.read_bytes(), path


# ---- publishing ----------------------------------------------------------------------------------


def test_publish_then_republish_is_a_no_op(built: Project, pypiserver, creds, capsys, monkeypatch):
    server = pypiserver()
    wheel = _wheel(built)
    # First publish: the index named by a ~/.pypirc section holding the credentials. An exported
    # TWINE_REPOSITORY_URL (twine would prefer it) must not divert the upload from the index we read.
    (creds / ".pypirc").write_text(
        f"[distutils]\nindex-servers = private\n\n[private]\nrepository = {server.url}\n"
        f"username = {USER}\npassword = {PASSWORD}\n")
    monkeypatch.delenv("TWINE_USERNAME")
    monkeypatch.delenv("TWINE_PASSWORD")
    monkeypatch.setenv("TWINE_REPOSITORY_URL", f"http://127.0.0.1:{_free_port()}/")
    assert built.run("publish", "--repository", "private") == 0
    out = _out(capsys)
    assert f"{wheel.name}: uploaded" in out and f"the index serves sha256 {sha256_file(wheel)}" in out
    published = server.packages / wheel.name
    assert sha256_file(published) == sha256_file(wheel)
    stamp = published.stat().st_mtime_ns

    # Second publish: the upload URL, credentials from TWINE_USERNAME/TWINE_PASSWORD: a no-op.
    (creds / ".pypirc").unlink()
    monkeypatch.setenv("TWINE_USERNAME", USER)
    monkeypatch.setenv("TWINE_PASSWORD", PASSWORD)
    assert built.run("publish", "--repository", server.url) == 0
    out = _out(capsys)
    assert f"{wheel.name}: on the index with the same sha256 {sha256_file(wheel)}: skipped" in out
    assert "published 0, already there 1: nothing to do" in out
    assert "twine upload" not in out
    assert published.stat().st_mtime_ns == stamp
    _no_secret_in(built.root)


def test_same_name_with_other_bytes_is_refused_naming_both_hashes(built: Project, pypiserver, creds, capsys):
    server = pypiserver()
    wheel = _wheel(built)
    theirs = server.packages / wheel.name
    theirs.write_bytes(wheel.read_bytes() + b"\0")  # someone else's file under our name
    before = sha256_file(theirs)
    assert built.run("publish", "--repository", server.url) == errors.PublishConflict.exit_code
    out = _out(capsys)
    assert f"the index serves sha256 {before}, dist/ holds sha256 {sha256_file(wheel)}" in out
    assert "nothing was uploaded and nothing is overwritten" in out
    assert sha256_file(theirs) == before


def test_a_wheel_changed_after_build_is_not_published(built: Project, pypiserver, creds, capsys):
    server = pypiserver()
    wheel = _wheel(built)
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    assert built.run("publish", "--repository", server.url) == errors.IndexConflict.exit_code
    assert f"dist/{wheel.name} changed since `make build`" in capsys.readouterr().err
    assert list(server.packages.iterdir()) == []


def test_wrong_credentials_fail_clearly_and_the_next_publish_completes(built: Project, pypiserver, creds, capsys,
                                                                      monkeypatch):
    server = pypiserver()
    monkeypatch.setenv("TWINE_PASSWORD", "not-the-password")
    assert built.run("publish", "--repository", server.url) == errors.PublishAuthError.exit_code
    out = capsys.readouterr().err
    assert "answered 403: it refused the credentials" in out and "TWINE_USERNAME and TWINE_PASSWORD" in out
    assert "not-the-password" not in out
    assert list(server.packages.iterdir()) == []
    monkeypatch.setenv("TWINE_PASSWORD", PASSWORD)
    assert built.run("publish", "--repository", server.url) == 0
    assert [p.name for p in server.packages.iterdir()] == [_wheel(built).name]


def test_an_index_that_needs_credentials_to_read(built: Project, pypiserver, creds, capsys, monkeypatch, tmp_path):
    server = pypiserver(authenticate="update,download,list")
    monkeypatch.setenv("TWINE_PASSWORD", "not-the-password")
    assert built.run("publish", "--repository", server.url) == errors.PublishAuthError.exit_code
    assert "the index refused the credentials or needs some" in capsys.readouterr().err
    monkeypatch.setenv("TWINE_PASSWORD", PASSWORD)
    assert built.run("publish", "--repository", server.url) == 0
    assert built.run("publish", "--repository", server.url) == 0
    assert "already there 1: nothing to do" in _out(capsys)
    # uv reads it with the named index's credentials from the environment; uv.lock does not keep them.
    proj = tmp_path / "uv-project"
    proj.mkdir()
    (proj / "pyproject.toml").write_text(UV_PRIVATE_ONLY.substitute(private=server.simple))
    env = _clean_env(tmp_path)
    env["UV_DEFAULT_INDEX"] = f"http://127.0.0.1:{_free_port()}/simple/"  # nothing may come from elsewhere
    res = subprocess.run([_uv(), "lock", "--python", sys.executable], env=env, cwd=proj, capture_output=True, text=True)
    assert res.returncode != 0  # without credentials
    env.update(UV_INDEX_HEADROOM_USERNAME=USER, UV_INDEX_HEADROOM_PASSWORD=PASSWORD)
    _run([_uv(), "lock", "--python", sys.executable], env, cwd=proj)
    lock = (proj / "uv.lock").read_text()
    assert f'version = "{checkout.read_state(built.vendor)["local_version"]}"' in lock and PASSWORD not in lock


def test_unreachable_index_fails_clearly(built: Project, pypiserver, creds, capsys):
    url = f"http://127.0.0.1:{_free_port()}/"
    assert built.run("publish", "--repository", url) == errors.IndexUnreachable.exit_code
    err = capsys.readouterr().err
    assert f"cannot reach {url}simple/" in err and "Is the index running" in err


def test_upload_rejected_half_way_is_completed_by_the_next_publish(built: Project, pypiserver, creds, capsys,
                                                                  monkeypatch, tmp_path):
    server = pypiserver()
    good = _wheel(built)
    bad = tmp_path / "other" / "otherpkg-2.0.0-py3-none-any.whl"
    bad.parent.mkdir()
    _write_wheel(bad, "otherpkg", "2.0.0", metadata_version="9.9")  # twine refuses its metadata
    monkeypatch.setattr(publish_mod, "built_wheels", lambda root, pins: [good, bad])
    assert built.run("publish", "--repository", server.url) == errors.UploadFailed.exit_code
    err = _out(capsys)
    assert "rejected otherpkg-2.0.0-py3-none-any.whl" in err and "1 of 2 wheel(s) were uploaded before this one" in err
    assert [p.name for p in server.packages.iterdir()] == [good.name]
    _write_wheel(bad, "otherpkg", "2.0.0")  # fixed
    assert built.run("publish", "--repository", server.url) == 0
    out = _out(capsys)
    assert f"{good.name}: on the index with the same sha256" in out and "published 1, already there 1" in out
    assert sorted(p.name for p in server.packages.iterdir()) == sorted([good.name, bad.name])


def test_devpi_json_pages_and_plus_simple(built: Project, devpi, creds, capsys, monkeypatch, tmp_path):
    seen: list[str] = []
    real_parse = publish_mod.parse_page

    def spy(body, content_type, page_url):
        seen.append(content_type)
        return real_parse(body, content_type, page_url)

    monkeypatch.setattr(publish_mod, "parse_page", spy)
    wheel = _wheel(built)
    assert built.run("publish", "--repository", devpi) == 0
    out = _out(capsys)
    assert f"reading {devpi}+simple/" in out and f"{wheel.name}: uploaded" in out
    assert seen and set(seen) == {publish_mod.JSON_TYPE}  # devpi answers PEP 691 JSON
    assert built.run("publish", "--repository", devpi) == 0
    assert "published 0, already there 1: nothing to do" in _out(capsys)
    env = _clean_env(tmp_path)
    py = _venv(tmp_path / "pip-devpi", env)
    local = checkout.read_state(built.vendor)["local_version"]
    _run([sys.executable, "-m", "pip", "--python", py, "install", "--index-url", devpi + "+simple/", "toypkg==1.0.0"],
         env)
    assert _version(py) == local


def test_credentials_in_the_url_and_pypi_are_refused(built: Project, creds, capsys):
    assert built.run("publish", "--repository", f"http://{USER}:{PASSWORD}@127.0.0.1:1/") == errors.UsageError.exit_code
    assert "carries credentials in the URL" in _out(capsys)
    assert built.run("publish", "--repository", "https://upload.pypi.org/legacy/") == errors.UsageError.exit_code
    assert "PyPI refuses local versions" in _out(capsys)


def _write_wheel(path: Path, name: str, version: str, *, metadata_version: str = "2.1",
                 requires_python: str | None = None) -> Path:
    meta = f"Metadata-Version: {metadata_version}\nName: {name}\nVersion: {version}\n"
    if requires_python:
        meta += f"Requires-Python: {requires_python}\n"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}/__init__.py", f'__version__ = "{version}"\n')
        info = f"{name}-{version}.dist-info"
        zf.writestr(f"{info}/METADATA", meta)
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


# ---- the static index ----------------------------------------------------------------------------


def test_static_index_escapes_requires_python_and_percent_encodes_links(tmp_path):
    dist = tmp_path / "dist"
    dist.mkdir()
    _write_wheel(dist / "toypkg-1.0.0+headroom.0123abcd-py3-none-any.whl", "toypkg", "1.0.0+headroom.0123abcd",
                 requires_python=">=3.9,<4")
    index_mod.write_index(dist)
    page = (dist / "simple" / "toypkg" / "index.html").read_text()
    assert 'href="../../toypkg-1.0.0%2Bheadroom.0123abcd-py3-none-any.whl#sha256=' in page
    assert 'data-requires-python="&gt;=3.9,&lt;4"' in page
    assert ">toypkg-1.0.0+headroom.0123abcd-py3-none-any.whl</a>" in page
    files = publish_mod.parse_page(page, "text/html", "http://127.0.0.1/simple/toypkg/")
    (remote,) = files.values()
    assert remote.url == "http://127.0.0.1/toypkg-1.0.0%2Bheadroom.0123abcd-py3-none-any.whl"
    assert remote.sha256 == sha256_file(dist / remote.filename)


def test_serve_command_serves_dist_on_localhost(built: Project, tmp_path):
    """``make serve``: the static index over HTTP on 127.0.0.1; pip installs from it."""
    serve = subprocess.Popen([sys.executable, "-m", "headroom", "--root", str(built.root), "serve", "--port", "0"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = serve.stdout.readline()
        assert line.startswith("[serve] dist/ on http://127.0.0.1:"), line
        url = line.split(" on ", 1)[1].split()[0] + "simple/"
        env = _clean_env(tmp_path)
        py = _venv(tmp_path / "served", env)
        _run([sys.executable, "-m", "pip", "--python", py, "install", "--index-url", url, "toypkg==1.0.0"], env)
        assert _version(py) == checkout.read_state(built.vendor)["local_version"]
    finally:
        serve.terminate()
        serve.wait(timeout=10)


def test_json_project_page_is_read():
    body = ('{"meta": {"api-version": "1.1"}, "name": "toypkg", "files": [{"filename": "toypkg-1.0.0-py3-none-any.whl",'
            ' "url": "../../files/toypkg-1.0.0-py3-none-any.whl", "hashes": {"sha256": "ab"}}]}')
    files = publish_mod.parse_page(body, publish_mod.JSON_TYPE, "http://127.0.0.1/root/simple/toypkg/")
    assert files == {"toypkg-1.0.0-py3-none-any.whl": publish_mod.Remote(
        "toypkg-1.0.0-py3-none-any.whl", "http://127.0.0.1/root/files/toypkg-1.0.0-py3-none-any.whl", "ab")}


# ---- installing, as users do ---------------------------------------------------------------------


@pytest.fixture
def public_index(tmp_path, offline_pip):
    """The "public index": headroom's static index server (``make serve``) with the official toypkg 1.0.0."""
    dist = tmp_path / "public"
    dist.mkdir()
    shutil.copy(offline_pip / "toypkg-1.0.0-py3-none-any.whl", dist)
    index_mod.write_index(dist)
    server = index_mod.server(dist, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
    server.shutdown()
    server.server_close()


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """Only loopback indexes: no pip/uv config, no user config, no proxies, caches in tmp_path."""
    return {"PATH": os.environ["PATH"], "HOME": str(tmp_path / "client-home"), "PIP_CONFIG_FILE": os.devnull,
            "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1", "UV_NO_CONFIG": "1",
            "UV_CACHE_DIR": str(tmp_path / "uv-cache"), "UV_PYTHON_DOWNLOADS": "never", "UV_NO_PROGRESS": "1",
            "NO_PROXY": "*", "NO_COLOR": "1"}


def _uv() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def _run(args: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    res = subprocess.run([str(a) for a in args], env=env, cwd=cwd, capture_output=True, text=True)
    assert res.returncode == 0, f"{args}\n{res.stdout}\n{res.stderr}"
    return res.stdout + res.stderr


def _venv(path: Path, env: dict[str, str]) -> Path:
    _run([_uv(), "venv", "-q", "--python", sys.executable, path], env)
    return path / "bin" / "python"


def _version(python: Path) -> str:
    out = subprocess.run([python, "-c", "import toypkg; print(toypkg.__version__)"], capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_pip_and_uv_install_the_published_build(built: Project, pypiserver, creds, public_index, tmp_path):
    server = pypiserver()
    assert built.run("publish", "--repository", server.url) == 0
    local = checkout.read_state(built.vendor)["local_version"]
    assert local.startswith("1.0.0+headroom.")
    env = _clean_env(tmp_path)
    pip = [sys.executable, "-m", "pip"]

    # pip, the exact local version from the private index alone.
    py = _venv(tmp_path / "pip-exact", env)
    _run([*pip, "--python", py, "install", "--index-url", server.simple, f"toypkg=={local}"], env)
    assert _version(py) == local
    # pip, private first + public as extra: the plain public pin resolves to the headroom build.
    py = _venv(tmp_path / "pip-plain", env)
    _run([*pip, "--python", py, "install", "--index-url", server.simple, "--extra-index-url", public_index,
          "toypkg==1.0.0"], env)
    assert _version(py) == local

    # uv pip, the exact local version.
    py = _venv(tmp_path / "uv-exact", env)
    _run([_uv(), "pip", "install", "--python", py, "--index-url", server.simple, f"toypkg=={local}"], env)
    assert _version(py) == local
    # uv pip with pip's recipe: uv searches --extra-index-url first and stops at the first index that has
    # the project (first-index), so the plain pin gets the official release, not ours.
    py = _venv(tmp_path / "uv-plain", env)
    _run([_uv(), "pip", "install", "--python", py, "--index-url", server.simple, "--extra-index-url", public_index,
          "toypkg==1.0.0"], env)
    assert _version(py) == "1.0.0"
    # uv pip with the private index searched first (as the extra index): ours.
    py = _venv(tmp_path / "uv-private-first", env)
    _run([_uv(), "pip", "install", "--python", py, "--index-url", public_index, "--extra-index-url", server.simple,
          "toypkg==1.0.0"], env)
    assert _version(py) == local

    # uv project: the private index explicit, toypkg pinned to it in [tool.uv.sources]; uv lock, uv sync.
    proj = tmp_path / "uv-project"
    proj.mkdir()
    (proj / "pyproject.toml").write_text(UV_PROJECT.substitute(private=server.simple, public=public_index))
    _run([_uv(), "lock", "--python", sys.executable], env, cwd=proj)
    lock = (proj / "uv.lock").read_text()
    assert f'version = "{local}"' in lock and f'source = {{ registry = "{server.simple}' in lock
    _run([_uv(), "sync", "--python", sys.executable], env, cwd=proj)
    assert _version(proj / ".venv" / "bin" / "python") == local


UV_PRIVATE_ONLY = Template((FIXTURES / "uv-project.toml").read_text(encoding="utf-8"))  # toypkg from headroom's index
UV_PROJECT = Template(UV_PRIVATE_ONLY.template + """
[[tool.uv.index]]
name = "public"
url = "$public"
default = true
""")  # and everything else from the public one
