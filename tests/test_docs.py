"""The documentation says what the code says: the generated reference pages match the parser and the error classes
(and the check can fail), every pointer into a page and its heading resolves, no page names another pin as today's,
and the command line refuses what it cannot honour before any work."""

from __future__ import annotations

import argparse
import re
import subprocess
import tomllib
import unicodedata
from pathlib import Path

import pytest

from headroom import __version__, cli
from headroom.ground import errors, refdocs

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", REPO / "CHANGELOG.md", REPO / "reports" / "README.md", *(REPO / "docs").rglob("*.md")])


# --------------------------------------------------------------------------- generated reference pages

def test_the_committed_reference_pages_are_what_the_code_says():
    for rel, text in refdocs.pages(cli.parser()).items():
        assert (REPO / rel).read_text(encoding="utf-8") == text, f"{rel} is stale: run `make docs-ref` and commit it"


def test_the_pages_are_byte_stable():
    assert refdocs.pages(cli.parser()) == refdocs.pages(cli.parser())


def _copy_pages(tmp_path: Path) -> Path:
    for rel in refdocs.pages(cli.parser()):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes((REPO / rel).read_bytes())
    return tmp_path


def test_docs_check_fails_on_a_changed_parser(tmp_path, monkeypatch, capsys):
    root = _copy_pages(tmp_path)
    assert cli.main(["--root", str(root), "docs", "--check"]) == 0
    real = cli.parser

    def changed() -> argparse.ArgumentParser:
        p = real()
        sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices["build"].add_argument("--new-option", help="an option the committed page does not list")
        return p

    monkeypatch.setattr(cli, "parser", changed)
    with pytest.raises(errors.DocsStale, match="commands.md differ"):
        refdocs.write(root, cli.parser(), check=True)
    assert cli.main(["--root", str(root), "docs", "--check"]) == errors.DocsStale.exit_code
    assert "make docs-ref" in capsys.readouterr().err
    assert cli.main(["--root", str(root), "docs"]) == 0  # rewrites the page
    assert "--new-option" in (root / refdocs.COMMANDS).read_text()
    assert cli.main(["--root", str(root), "docs", "--check"]) == 0


def test_docs_check_fails_on_a_changed_error_class(tmp_path, monkeypatch):
    root = _copy_pages(tmp_path)

    class NewError(errors.HeadroomError):
        """A failure the committed page does not list."""

        exit_code = 99

    monkeypatch.setattr(errors, "NewError", NewError, raising=False)
    with pytest.raises(errors.DocsStale, match="exit-codes.md differ"):
        refdocs.write(root, cli.parser(), check=True)


# --------------------------------------------------------------------------- pointers resolve

def slug(heading: str) -> str:
    """The anchor MkDocs (Python-Markdown's toc) gives a heading."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", text, flags=re.M)}


def test_slug_is_mkdocs_s():
    assert slug("When a patch does not apply") == "when-a-patch-does-not-apply"
    assert slug("Canary (`make canary`)") == "canary-make-canary"


# a path to a Markdown page, with an optional #anchor, in code (strings, comments) or in a page's link
POINTER = re.compile(r"((?:\.\./)*(?:docs/[\w./-]+|[\w./-]*README|CHANGELOG|[\w-]+/[\w./-]*)\.md)(#[\w-]+)?")


def pointers() -> list[tuple[Path, str, str]]:
    """(file, target path, anchor) for every pointer to a Markdown page in the tool's code and in the docs."""
    found = []
    sources = [*sorted((REPO / "tools").rglob("*.py")), REPO / "Makefile", REPO / "mkdocs.yml",
               *sorted((REPO / ".github").rglob("*.yml")), REPO / ".ci" / "run", *PAGES]
    for src in sources:
        text = src.read_text(encoding="utf-8")
        if src.suffix == ".md":  # links only: [text](target)
            hits = [(m.group(1), m.group(2) or "") for m in re.finditer(r"\]\(([^)#\s]+\.md)(#[\w-]+)?\)", text)]
            hits += [("", m.group(1)) for m in re.finditer(r"\]\((#[\w-]+)\)", text)]
        else:
            hits = [(m.group(1), m.group(2) or "") for m in POINTER.finditer(text)
                    if m.group(1).startswith(("docs/", "README", "CHANGELOG", "reports/"))]
        found += [(src, target, anchor) for target, anchor in hits if "://" not in target]
    return found


def test_every_pointer_to_a_page_and_heading_resolves():
    bad = []
    for src, target, anchor in pointers():
        base = src.parent if src.suffix == ".md" else REPO
        page = (base / target).resolve() if target else src
        if not page.is_file():
            bad.append(f"{src.relative_to(REPO)}: {target} does not exist")
        elif anchor and anchor[1:] not in anchors(page):
            bad.append(f"{src.relative_to(REPO)}: {target}{anchor}: no such heading")
    assert bad == []


def test_the_code_points_at_the_docs():
    assert any(src.name == "checkout.py" and target.startswith("docs/") for src, target, _ in pointers())


# --------------------------------------------------------------------------- facts agree with the pins

def pinned_claims(text: str, names: list[str]) -> list[tuple[str, str]]:
    """(upstream, version) for every place a text calls a version the pin: "transformers is pinned to 5.23.0", "the
    pins (accelerate 1.16.0, transformers 5.23.0, ...)", "today's pins: ..."."""
    alt = "|".join(names)
    found = [(m.group(1), m.group(2)) for m in re.finditer(rf"\b({alt}) (?:is )?pinned (?:to|at) (\d+(?:\.\d+)+)", text)]
    for m in re.finditer(r"\b(?:pins|pinned)\b[^\n]{0,40}?[:(]\s*((?:[a-z]+ \d+(?:\.\d+)+(?:,\s*(?:and\s+)?|\s+and\s+)?)+)", text):
        found += re.findall(rf"\b({alt}) (\d+(?:\.\d+)+)", m.group(1))
    return found


def line_pins() -> dict[str, set[str]]:
    """{upstream: the versions the release lines pin} (vendor/pins.toml and each vendor/<line>.pins.toml)."""
    out: dict[str, set[str]] = {}
    for f in [REPO / "vendor" / "pins.toml", *sorted((REPO / "vendor").glob("*.pins.toml"))]:
        for name, pin in tomllib.loads(f.read_text()).items():
            out.setdefault(name, set()).add(pin["version"])
    return out


def test_pinned_claims_are_found():
    text = "On the pins in `vendor/pins.toml`: accelerate 1.16.0, transformers 5.23.0 and peft 0.21.2. peft is pinned to 0.2.0"
    assert pinned_claims(text, ["accelerate", "transformers", "peft"]) == [
        ("peft", "0.2.0"), ("accelerate", "1.16.0"), ("transformers", "5.23.0"), ("peft", "0.21.2")]


def test_no_page_names_another_version_as_pinned():
    """README and docs state today's pins only as vendor/pins.toml has them (the reports and the changelog are dated)."""
    pins = line_pins()
    wrong, seen = [], 0
    for page in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        claims = pinned_claims(page.read_text(encoding="utf-8"), list(pins))
        seen += len(claims)
        wrong += [f"{page.relative_to(REPO)}: {name} {v} (pinned: {pins[name]})" for name, v in claims if v not in pins[name]]
    assert wrong == [] and seen >= 3


def test_the_readme_is_a_front_door():
    assert len((REPO / "README.md").read_text().splitlines()) <= 120


# --------------------------------------------------------------------------- the command line

def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0 and capsys.readouterr().out.strip() == f"headroom {__version__}"


def test_help_is_for_a_user(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "Carry memory fixes for accelerate, transformers and peft" in out and "``main(argv)``" not in out
    assert "headroom apply" in out and "docs/reference/" in out


@pytest.mark.parametrize("command", [["bench"], ["canary"], ["pr", "toypkg/0001"], ["serve"], ["index"], ["clean"],
                                     ["inspect", "transformers"], ["verify", "x.whl"], ["rebase", "toypkg==1.1.0"],
                                     ["docs"]])
def test_only_is_refused_where_it_cannot_be_honoured(tmp_path, capsys, command):
    assert cli.main(["--root", str(tmp_path), "--only", "toypkg", *command]) == errors.UsageError.exit_code
    err = capsys.readouterr().err
    assert f"`{command[0]}` cannot work on one upstream" in err
    assert list(tmp_path.iterdir()) == []  # refused before any work


def test_an_unknown_upstream_is_a_usage_error_naming_the_known_ones(capsys):
    assert cli.main(["--root", str(REPO), "--only", "nope", "fetch"]) == errors.UsageError.exit_code
    assert "no upstream named 'nope' in vendor/pins.toml. Known: accelerate, peft, transformers." in capsys.readouterr().err


def test_rebase_continue_takes_one_upstream(capsys):
    argv = ["--root", str(REPO), "--only", "peft", "--only", "accelerate", "rebase-abort"]
    assert cli.main(argv) == errors.UsageError.exit_code
    assert "give one --only NAME" in capsys.readouterr().err


def test_publish_needs_a_repository_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["--root", str(tmp_path), "publish"])
    assert exc.value.code == 2 and "--repository" in capsys.readouterr().err
    assert cli.main(["--root", str(tmp_path), "publish", "--repository", " "]) == errors.UsageError.exit_code
    assert "no repository given" in capsys.readouterr().err and list(tmp_path.iterdir()) == []


def test_bench_checks_its_transformers_releases_before_any_work(tmp_path, capsys):
    assert cli.main(["--root", str(tmp_path), "bench", "--transformers", "5.23.0@x"]) == errors.UsageError.exit_code
    assert "--transformers (TRANSFORMERS=): '5.23.0@x' is not a release version" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_canary_checks_its_releases_before_any_work(capsys):
    code = cli.main(["--root", str(REPO), "canary", "--releases", "transformers=5.25.0"])
    assert code == errors.UsageError.exit_code
    assert "give each release as NAME==VERSION" in capsys.readouterr().err


def test_one_name_for_one_idea():
    subs = {name: p for name, _, p in refdocs._subcommands(cli.parser())}
    options = {name: {o for a in p._actions for o in a.option_strings} for name, p in subs.items()}
    assert "--env" in options["rebase"] and "--env" in options["canary"] and "--landed-env" not in options["rebase"]
    assert "--releases" in options["canary"] and "--releases" not in options["bench"]
    assert "--transformers" in options["bench"]


def test_make_help_lists_every_target_with_one_line():
    makefile = (REPO / "Makefile").read_text()
    targets = re.findall(r"^([a-z][\w-]*):", makefile, flags=re.M)
    out = subprocess.run(["make", "--no-print-directory", "-C", str(REPO), "help"], capture_output=True, text=True,
                         check=True).stdout
    listed = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
    missing = [t for t in targets if t not in listed]
    assert missing == [], f"`make help` misses {missing}: add a `## ` comment to their line in the Makefile"
    assert all(len(listed[t].split(None, 1)) == 2 for t in targets), "a target without its one line"


def test_every_path_the_comments_name_exists():
    """A file named in a comment of the requirements, the pins, the series' records, the Makefile or the docs exists
    (requirements/tools.txt once named tools/headroom/sbom.py, moved to wheels/sbom.py)."""
    sources = [*sorted((REPO / "requirements").glob("*.txt")), REPO / "vendor" / "pins.toml", REPO / "Makefile",
               *sorted((REPO / "vendor").glob("lines.toml")), *sorted((REPO / "vendor").glob("*.pins.toml")),
               *sorted((REPO / "patches").glob("*/retired.toml")), *PAGES]
    missing = [f"{src.relative_to(REPO)}: {m.group(0)}" for src in sources
               for m in re.finditer(r"tools/headroom/[\w/]+\.py", src.read_text(encoding="utf-8"))
               if not (REPO / m.group(0)).is_file()]
    assert missing == []


def test_install_recipes_name_the_pins():
    """The install commands (README, tutorial, publish how-to) name exactly the pinned versions."""
    pins = line_pins()
    wrong = []
    for page in (REPO / "README.md", REPO / "docs" / "tutorial.md", REPO / "docs" / "how-to" / "publish-and-install.md",
                 REPO / "docs" / "how-to" / "pick-a-line.md"):
        for name, version in re.findall(rf"\b({'|'.join(pins)})==(\d+(?:\.\d+)+)", page.read_text(encoding="utf-8")):
            if version not in pins[name]:
                wrong.append(f"{page.relative_to(REPO)}: {name}=={version} (pinned: {pins[name]})")
    assert wrong == []


def test_install_recipes_name_a_torch_the_lines_are_proven_on():
    """A ``torch==X`` in an install recipe is a torch some line declares (vendor/lines.toml ``torch``), and the
    generated page of the torch each fix is proven on is what the configuration says."""
    from headroom.sources import lines

    declared = {t for ln in lines.load(REPO) for t in ln.torch}
    wrong = []
    for page in (REPO / "README.md", REPO / "docs" / "tutorial.md", REPO / "docs" / "how-to" / "publish-and-install.md",
                 REPO / "docs" / "how-to" / "pick-a-line.md"):
        wrong += [f"{page.relative_to(REPO)}: torch=={v} (declared: {sorted(declared)})"
                  for v in re.findall(r"\btorch==(\d+(?:\.\d+)+)", page.read_text(encoding="utf-8")) if v not in declared]
    assert wrong == []
    assert (REPO / lines.PROVEN_ON).read_text(encoding="utf-8") == lines.proven_on_page(REPO), "run `make docs-ref`"


def test_verify_inspect_and_serve_check_their_values_first(tmp_path, capsys):
    assert cli.main(["--root", str(tmp_path), "verify", "dist/nope.whl"]) == errors.UsageError.exit_code
    assert "dist/nope.whl: no such wheel file" in capsys.readouterr().err
    argv = ["--root", str(tmp_path), "inspect", "transformers", "--python", "nope/bin/python"]
    assert cli.main(argv) == errors.UsageError.exit_code
    assert "no such interpreter" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main(["--root", str(tmp_path), "serve", "--port", "70000"])
    assert exc.value.code == 2 and "expected a port number" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
