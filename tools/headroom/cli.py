"""Command line: one subcommand per step; ``main(argv)`` returns an exit code.

Every Makefile target is a thin call to one of these. Every value is checked before any work (``_check``): a wrong one
is a usage error (exit 2) that names what would be right.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from pathlib import Path

from . import __version__
from .ground import lock, ui
from .ground import refdocs
from .ground.errors import INTERRUPTED, HeadroomError, ProofFailed, UsageError
from .sources import checkout, export as export_mod, fetch as fetch_mod, lines as lines_mod, pins as pins_mod
from .upkeep import pr as pr_mod, rebase as rebase_mod
from .wheels import build as build_mod, index as index_mod, publish as publish_mod, inspect as inspect_mod
from .wheels import verify as verify_mod


def _root(args: argparse.Namespace) -> Path:
    return Path(args.root).resolve()


def _lines(args: argparse.Namespace) -> list[tuple[lines_mod.Line, list[pins_mod.Pin]]]:
    """Each release line (--line: one) with its pins (--only: those named): the one loop every stage runs in."""
    lines = lines_mod.select(lines_mod.load(_root(args)), args.line)
    if not args.only:
        return [(ln, list(ln.pins)) for ln in lines]
    by_name = {p.name: p for ln in lines for p in ln.pins}
    pins_mod.select(list(by_name.values()), args.only)  # an unknown name: a usage error naming the known ones
    return [(ln, [p for p in ln.pins if p.name in args.only]) for ln in lines if any(ln.carries(n) for n in args.only)]


def _pins(args: argparse.Namespace) -> list[pins_mod.Pin]:
    return [p for _, pins in _lines(args) for p in pins]


def _step(line: lines_mod.Line, pin: pins_mod.Pin) -> str:
    return f"{pin.name} {pin.version}" + (f" ({line.name} line)" if line.name else "")


def cmd_fetch(args: argparse.Namespace) -> int:
    for line, pins in _lines(args):
        for pin in pins:
            ui.step("fetch", _step(line, pin))
            for kind in ("sdist", "wheel"):
                path = fetch_mod.fetch(pin, kind)
                ui.info(f"{path.name}: verified ({path})")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    for line, pins in _lines(args):
        for pin in pins:
            ui.step("apply", _step(line, pin))
            checkout.apply(_root(args), pin, force=args.force)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    for line, pins in _lines(args):
        for pin in pins:
            ui.step("export", _step(line, pin) + (" (check)" if args.check else ""))
            export_mod.export(_root(args), pin, check=args.check, original=line.original)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    root = _root(args)
    for line, pins in _lines(args):
        for pin in pins:
            ui.step("build", _step(line, pin))
            build_mod.build(root, pin, force=args.force)
    ui.step("index", "dist/simple/")
    index_mod.write_index(root / build_mod.DIST_DIR)
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    ui.step("index", "dist/simple/")
    index_mod.write_index(_root(args) / build_mod.DIST_DIR)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    ui.step("publish", "dist/ wheels to " + publish_mod.redact(args.repository))
    return publish_mod.publish(_root(args), _pins(args), args.repository, index_url=args.index_url,
                               config_file=args.config_file)


def cmd_serve(args: argparse.Namespace) -> int:
    root = _root(args)
    server = index_mod.server(root / build_mod.DIST_DIR, host=args.host, port=args.port)
    host, port = server.server_address[:2]
    ui.step("serve", f"dist/ on http://{host}:{port}/ (Ctrl-C stops it)")
    ui.info(f"pip install --index-url http://{host}:{port}/simple/ --extra-index-url https://pypi.org/simple <name>==<version>")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        ui.info("stopped")
    finally:
        server.server_close()
    return 0


def cmd_clean(args: argparse.Namespace) -> int:
    root = _root(args)
    ui.step("clean", "dist/ build/")
    for d in (root / "dist", root / "build"):
        if d.exists():
            shutil.rmtree(d)
            ui.info(f"removed {d.relative_to(root)}/")
    ui.info("vendor/ checkouts are kept (they may hold your work); `make apply FORCE=1` rebuilds them")
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    """Each line's proof, upstream suites and guards; then the table of lines by patches. A line that fails does not
    stop the next one: every line is proven, and the failures are said together."""
    from .proof import proof, testrun

    root, failed = _root(args), []
    work = [(line, pins, torch) for line, pins in _lines(args) for torch in line.torches(args.torch)]
    for line, pins, torch in work:
        try:
            proof.run(root, line, pins, upstream=args.upstream, tinyhub=args.tinyhub, jobs=args.jobs, torch=torch)
        except ProofFailed as exc:
            if len(work) == 1:
                raise
            ui.error(exc.message)
            failed.append(exc.message)
    if any(ln.name for ln, _, _ in work):
        rows = proof.lines_table(root, lines_mod.load(root))
        testrun.write_report(root, "lines_table", rows)
        ui.step("test", "patches by lines (build/report.json: lines_table)")
        proof.print_table(rows)
    if failed:
        raise ProofFailed(" | ".join(failed))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    line = lines_mod.select(lines_mod.load(_root(args)), args.line)[0] if args.line else None
    return bench.run(_root(args), mode=args.mode, releases_text=args.transformers, part=args.part, line=line)


def cmd_rebase(args: argparse.Namespace) -> int:
    factory = rebase_mod.source_env if args.env == "source" else rebase_mod.wheel_env
    return rebase_mod.start(_root(args), args.requirement, line=args.line, drop=args.drop, env_factory=factory)


def cmd_rebase_continue(args: argparse.Namespace) -> int:
    return rebase_mod.resume(_root(args), (args.only or [None])[0], line=args.line, drop=args.drop)


def cmd_rebase_abort(args: argparse.Namespace) -> int:
    return rebase_mod.abort(_root(args), (args.only or [None])[0], line=args.line)


def cmd_pr(args: argparse.Namespace) -> int:
    pr_mod.make(_root(args), args.patch, bench=args.bench, line=args.line)
    return 0


def cmd_canary(args: argparse.Namespace) -> int:
    from .upkeep import canary

    factory = canary.source_env if args.env == "source" else canary.wheel_env
    guards = Path(args.guards) if args.guards else canary.GUARDS
    return canary.run(_root(args), releases=args.releases, pre=args.pre, guards=guards, env_factory=factory,
                      line=args.line, torch=args.torch)


def cmd_docs(args: argparse.Namespace) -> int:
    ui.step("docs", "docs/reference/ from the parser, the error classes and vendor/lines.toml" + (" (check)" if args.check else ""))
    for path in refdocs.write(_root(args), parser(), check=args.check, extra=lines_mod.generated_pages(_root(args))):
        ui.info(f"{'differs' if args.check else 'written'}: {path}")
    return 0


def _port(value: str) -> int:
    if value.isdigit() and int(value) <= 65535:
        return int(value)
    raise argparse.ArgumentTypeError(f"expected a port number from 0 to 65535, not {value!r}")


def _jobs(value: str) -> str:
    if value == "auto" or value.isdigit() and int(value) > 0:
        return value
    raise argparse.ArgumentTypeError(f"expected auto or a positive number, not {value!r}")


DESCRIPTION = """\
Carry memory fixes for accelerate, transformers and peft as an upstream-style patch series on pinned releases: apply
it, build patched wheels and a package index, prove every fix red on the official release and green on the patched
build, and keep the series alive as upstream moves on."""

EPILOG = """\
the main job, in order:
  headroom apply          vendor/<name>: the pinned release + the series (make apply)
  headroom build          dist/: one wheel per upstream + the index dist/simple/ (make build)
  headroom test           the proof (red on the release, green on the build) + upstream's suites (make test)

every subcommand has its own --help (headroom rebase --help). Exit codes, options and files:
docs/reference/ (make docs builds the site into build/site/)."""

# The subcommands that act on a subset of the upstreams (--only NAME). Every other one refuses --only: it would be
# ignored there.
HONOURS_ONLY = frozenset({"fetch", "apply", "export", "build", "test", "publish", "rebase-continue", "rebase-abort"})
ONE_ONLY = frozenset({"rebase-continue", "rebase-abort"})  # these act on one upstream's rebase
# The subcommands that run once per release line or on one (--line LINE; rebase: the line it moves, needed when several
# lines pin the upstream; pr: the line it proposes from). The others act on the home line's pins.
HONOURS_LINE = frozenset({"fetch", "apply", "export", "build", "test", "publish", "bench", "pr", "rebase",
                          "rebase-continue", "rebase-abort", "canary"})
LOOPS_LINES = frozenset({"fetch", "apply", "export", "build", "test", "publish"})  # run once per line


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="headroom", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument("--root", default=".", help="repository root (where vendor/pins.toml is); default: .")
    p.add_argument("-v", "--verbose", action="store_true", help="show every command's output (also V=1)")
    p.add_argument("--only", action="append", metavar="NAME",
                   help="only this upstream (repeatable; ONLY=NAME): for " + ", ".join(sorted(HONOURS_ONLY))
                   + "; the other subcommands refuse it")
    p.add_argument("--line", metavar="LINE", default=None,
                   help="one release line of vendor/lines.toml (LINE=): " + ", ".join(sorted(LOOPS_LINES))
                   + " run on it alone (default: every line, in order); canary judges it alone; bench --part "
                   "measures it; pr proposes from it (default: the original line, vendor/lines.toml); rebase moves "
                   "it (needed when several lines pin the upstream); rebase-continue/-abort: its rebase")
    p.add_argument("--no-wait", action="store_true",
                   help="fail at once (exit 40) instead of waiting when another run holds a lock (also NO_WAIT=1)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")
    sub.add_parser("fetch", help="download and verify the pinned sdists and wheels").set_defaults(func=cmd_fetch)
    a = sub.add_parser("apply", help="materialise vendor/<name>: pristine + series + version commit")
    a.add_argument("--force", action="store_true", help="replace a checkout holding unsaved work (saved to a bundle first)")
    a.set_defaults(func=cmd_apply)
    e = sub.add_parser("export", help="write patches/<name>/ from vendor/<name>'s commits")
    e.add_argument("--check", action="store_true", help="fail if export would change patches/")
    e.set_defaults(func=cmd_export)
    b = sub.add_parser("build", help="build wheels into dist/ and write dist/simple/")
    b.add_argument("--force", action="store_true", help="rebuild even if dist/ has the wheel of this checkout")
    b.set_defaults(func=cmd_build)
    sub.add_parser("index", help="write the PEP 503 index dist/simple/").set_defaults(func=cmd_index)
    sub.add_parser("clean", help="remove dist/ and build/").set_defaults(func=cmd_clean)
    pb = sub.add_parser("publish", help="upload the built wheels with twine; skip what the index has, never overwrite")
    pb.add_argument("--repository", required=True,
                    help="the upload URL (twine's --repository-url) or a ~/.pypirc section name (twine's --repository)")
    pb.add_argument("--index-url", default=None,
                    help="the index's simple URL, read before uploading (default: <upload url>/simple/ or /+simple/)")
    pb.add_argument("--config-file", default=None, help="the .pypirc file (default: ~/.pypirc)")
    pb.set_defaults(func=cmd_publish)
    sv = sub.add_parser("serve", help="serve dist/ (the static index) over HTTP on localhost")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    sv.add_argument("--port", type=_port, default=8000, help="port (default: 8000; 0 picks a free one)")
    sv.set_defaults(func=cmd_serve)
    t = sub.add_parser("test", help="prove each patch red on pristine, green on patched; run upstream suites")
    t.add_argument("--upstream", choices=("default", "full", "guards", "none"), help="upstream suite selection "
                   "(guards: the regression guards alone); default: default on the primary torch, guards on another")
    t.add_argument("--torch", metavar="primary|newest|all|VERSION", help="the torch of vendor/lines.toml to prove each "
                   "line on (TORCH=; default: its primary, the first; newest: the highest); another gets envs of its own")
    t.add_argument("--jobs", default="auto", type=_jobs,
                   help="pytest-xdist workers for the upstream suites: auto (the default: one per core, each with "
                        "its share of torch's threads), a number, or 1 (one process per suite)")
    t.add_argument("--no-tinyhub", dest="tinyhub", action="store_false",
                   help="run every suite with an empty Hugging Face cache (default: the suites marked for it "
                        "get the local tiny hub); compare the two to see what the tiny hub brings in")
    t.set_defaults(func=cmd_test)
    bn = sub.add_parser("bench", help="measure the memory fixes (pristine vs patched) and the pipeline's wall time")
    bn.add_argument("--mode", choices=("quick", "full"), default="full",
                    help="quick: one small model, releases 5.5.4 + the pin, a no-op pipeline run (~5 min); "
                    "full: 3 model sizes, 2 and 4 ranks, 4 releases, an 8-rank node, 3 cold pipeline runs (~45 min)")
    bn.add_argument("--transformers", metavar="X[@Y],...",
                    help="official transformers releases to measure the loader on (TRANSFORMERS=), beside the "
                    "patched build (e.g. "
                    "5.5.4,5.6.0,5.22.2,5.23.0; 'pin' = the pinned one; X@Y: with official accelerate Y instead of "
                    "requirements/bench-env.txt's, e.g. 5.23.0@1.15.0); default: quick 5.5.4,pin, "
                    "full 5.5.4,5.6.0,5.22.2,5.23.0")
    bn.add_argument("--part", choices=("releases", "prepare", "node_loads", "load_phase"),
                    help="run this part alone (releases: the release rows beside the patched build; prepare: "
                    "Accelerate's FSDP2 prepare, official, patched, torch's path and the floor; node_loads: what "
                    "each rank of a node commits in from_pretrained, dense, dense cast and MoE, on 1 and 2 nodes; load_phase: "
                    "each node's total memory from from_pretrained to the end of the first optimizer step, one "
                    "sampler per node, against its floor); "
                    "results in build/bench/part-<part>/")
    bn.set_defaults(func=cmd_bench)
    r = sub.add_parser("rebase", help="move one upstream's series to a new release (NAME==VERSION)")
    r.add_argument("requirement", help="e.g. transformers==5.23.0")
    r.add_argument("--drop", action="append", metavar="P1,P2", help="drop these patches if found landed/empty (0002, file name)")
    r.add_argument("--env", choices=["wheel", "source"], default="wheel",
                   help="where a patch's tests run for the landed check: build/envs/landed-<name>-<version>, made "
                        "with the official wheels of every pin and the new release (default), or the pristine "
                        "source tree on PYTHONPATH")
    r.set_defaults(func=cmd_rebase)
    c = sub.add_parser("rebase-continue", help="go on with a rebase stopped on a conflict")
    c.add_argument("--drop", action="append", metavar="P1,P2", help="drop these patches (e.g. the conflicting one)")
    c.set_defaults(func=cmd_rebase_continue)
    sub.add_parser("rebase-abort", help="undo a rebase: pins, patches and checkout as before").set_defaults(func=cmd_rebase_abort)
    pr = sub.add_parser("pr", help="prepare one patch as an upstream pull request (branch, PR.md, checks; never pushes)")
    pr.add_argument("patch", help="UPSTREAM/NUMBER, e.g. transformers/0001")
    pr.add_argument("--bench", metavar="SECTION", help="the build/bench/*.json section with this patch's figures "
                    "(e.g. accelerate_prepare); default: pr_data/<upstream>.toml's [bench].sections, else the section named by "
                    "'(fix N)' in the commit that added the patch")
    pr.set_defaults(func=cmd_pr)
    cn = sub.add_parser("canary", help="what the new upstream releases do to the series (never touches vendor/ or patches/)")
    cn.add_argument("--releases", metavar="NAME==VERSION,...", help="these releases (RELEASES=; e.g. "
                    "accelerate==1.16.0,transformers==5.25.0) "
                    "instead of every release newer than the pins on the configured index")
    cn.add_argument("--torch", metavar="VERSION,...", help="these torch releases (TORCH=; or newest) with today's "
                    "pins, and nothing else unless --releases; default: those newer than vendor/lines.toml's torch")
    cn.add_argument("--pre", action="store_true", help="pre-releases too (when looking on the index)")
    cn.add_argument("--guards", metavar="DIR", help="the regression guards' folder (<DIR>/<upstream>/test_*.py); "
                    "default tools/headroom/proof/upstream_data/guards")
    cn.add_argument("--env", choices=("wheel", "source"), default="wheel",
                    help="where a patch's tests run: the official wheels in build/envs/canary-* (default) or the pristine "
                    "source trees on PYTHONPATH (pure-Python upstreams)")
    cn.set_defaults(func=cmd_canary)
    d = sub.add_parser("docs", help="regenerate docs/reference/commands.md and exit-codes.md from this parser and "
                       "the error classes")
    d.add_argument("--check", action="store_true", help="write nothing; fail (exit 16) if a page would change")
    d.set_defaults(func=cmd_docs)
    inspect_mod.add_parser(sub)  # inspect (sbom.py writes what it reads)
    verify_mod.add_parser(sub)  # verify
    return p


def _check(args: argparse.Namespace) -> None:
    """Every value the parser cannot check alone, before any work: raises UsageError."""
    if args.only:
        if args.command not in HONOURS_ONLY:
            raise UsageError(f"`{args.command}` cannot work on one upstream: it does not take --only (ONLY=). "
                             f"--only is for {', '.join(sorted(HONOURS_ONLY))}.")
        if args.command in ONE_ONLY and len(args.only) > 1:
            raise UsageError(f"`{args.command}` works on one upstream's rebase: give one --only NAME, not {args.only}.")
        _pins(args)  # an unknown name is a usage error naming the known ones
    if args.line is not None:
        if args.command not in HONOURS_LINE:
            raise UsageError(f"`{args.command}` does not take --line (LINE=) yet: it acts on the home line "
                             f"(vendor/pins.toml). --line is for {', '.join(sorted(HONOURS_LINE))}.")
        # an unknown line: a usage error naming the known ones; a retired one: its record and its successor
        lines_mod.select(lines_mod.load(_root(args)), args.line, _root(args))
    if args.command == "publish" and not args.repository.strip():
        raise UsageError("no repository given: `make publish REPOSITORY=<upload url or ~/.pypirc section name>`")
    if args.command == "bench" and args.transformers is not None:
        from .bench import releases

        releases.parse(args.transformers, args.mode, "0", "0")  # the syntax; the index is asked later
    if args.command == "verify" and not Path(args.wheel).is_file():
        raise UsageError(f"{args.wheel}: no such wheel file. `make verify WHEEL=dist/<name>-<version>+headroom.<hash>-"
                         "py3-none-any.whl` (ls dist/*.whl).")
    if args.command == "inspect" and args.python and not Path(args.python).is_file():
        raise UsageError(f"--python {args.python}: no such interpreter (e.g. build/envs/patched/bin/python).")
    if args.command == "canary":
        from .upkeep.canary import plan

        plan.check_options(lines_mod.select(lines_mod.load(_root(args)), args.line), args.releases, args.torch)
    for line in lines_mod.select(lines_mod.load(_root(args)), args.line) if args.command == "test" and args.torch else []:
        line.torches(args.torch)  # a torch the line does not declare: a usage error naming those it does


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.verbose:
        ui.set_verbose(True)
    lock.configure(no_wait=args.no_wait, command="headroom " + " ".join(sys.argv[1:] if argv is None else argv))
    try:
        _check(args)
        with _locks(args):
            return args.func(args)
    except HeadroomError as exc:
        ui.error(exc.message)
        if exc.details:
            print(exc.details, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        ui.error(f"interrupted: {ui.state_left()}")
        return INTERRUPTED


def _locks(args: argparse.Namespace) -> contextlib.AbstractContextManager[None]:
    """The locks of this command (lock.COMMAND_LOCKS), held for the whole command."""
    if not lock.needs_pins(args.command):
        names = []
    elif args.command in LOOPS_LINES:
        names = [p.key for p in _pins(args)]
    elif args.command == "pr" and "/" in args.patch:  # the checkout of the line it proposes from
        names = [pr_mod.line_pin(_root(args), args.patch.split("/", 1)[0], args.line).key]
    elif args.command.startswith("rebase"):  # the line it moves (several pin it: a usage error); continue/abort: all
        names = rebase_mod.lines_step.lock_keys(_root(args), getattr(args, "requirement", None), args.line, args.only)
    else:  # the home line's checkouts (pr: vendor/<name>)
        names = [p.key for p in pins_mod.select(pins_mod.load(_root(args)), args.only)]
    return lock.for_command(_root(args), args.command, names)
