"""Command line: one subcommand per step; ``main(argv)`` returns an exit code.

Every Makefile target is a thin call to one of these.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from . import build as build_mod, checkout, export as export_mod, fetch as fetch_mod, index as index_mod
from . import pins as pins_mod, pr as pr_mod, rebase as rebase_mod, ui
from .errors import HeadroomError


def _root(args: argparse.Namespace) -> Path:
    return Path(args.root).resolve()


def _pins(args: argparse.Namespace) -> list[pins_mod.Pin]:
    return pins_mod.select(pins_mod.load(_root(args)), args.only)


def cmd_fetch(args: argparse.Namespace) -> int:
    for pin in _pins(args):
        ui.step("fetch", f"{pin.name} {pin.version}")
        for kind in ("sdist", "wheel"):
            path = fetch_mod.fetch(pin, kind)
            ui.info(f"{path.name}: verified ({path})")
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    for pin in _pins(args):
        ui.step("apply", f"{pin.name} {pin.version}")
        checkout.apply(_root(args), pin, force=args.force)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    for pin in _pins(args):
        ui.step("export", f"{pin.name}" + (" (check)" if args.check else ""))
        export_mod.export(_root(args), pin, check=args.check)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    root = _root(args)
    for pin in _pins(args):
        ui.step("build", f"{pin.name}")
        build_mod.build(root, pin, force=args.force)
    ui.step("index", "dist/simple/")
    index_mod.write_index(root / build_mod.DIST_DIR)
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    ui.step("index", "dist/simple/")
    index_mod.write_index(_root(args) / build_mod.DIST_DIR)
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
    from . import proof

    return proof.run(_root(args), _pins(args), upstream=args.upstream, tinyhub=args.tinyhub)


def cmd_bench(args: argparse.Namespace) -> int:
    from . import bench

    return bench.run(_root(args), mode=args.mode, releases_text=args.releases)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="headroom", description=__doc__)
    p.add_argument("--root", default=".", help="repository root (where vendor/pins.toml is); default: .")
    p.add_argument("-v", "--verbose", action="store_true", help="show every command's output (also V=1)")
    p.add_argument("--only", action="append", metavar="NAME", help="only this upstream (repeatable)")
    sub = p.add_subparsers(dest="command", required=True)
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
    t = sub.add_parser("test", help="prove each patch red on pristine, green on patched; run upstream suites")
    t.add_argument("--upstream", default="default", help="upstream suite selection: default, full or none")
    t.add_argument("--no-tinyhub", dest="tinyhub", action="store_false",
                   help="run every suite with an empty Hugging Face cache (default: the suites marked for it "
                        "get the local tiny hub); compare the two to see what the tiny hub brings in")
    t.set_defaults(func=cmd_test)
    bn = sub.add_parser("bench", help="measure the memory fixes (pristine vs patched) and the pipeline's wall time")
    bn.add_argument("--mode", choices=("quick", "full"), default="full",
                    help="quick: one small model, releases 5.5.4 + the pin, a no-op pipeline run (~5 min); "
                    "full: 3 model sizes, 2 and 4 ranks, 4 releases, an 8-rank node, 3 cold pipeline runs (~45 min)")
    bn.add_argument("--releases", metavar="X,Y,...",
                    help="official transformers releases to measure fix 2 on, beside the patched build (e.g. "
                    "5.5.4,5.6.0,5.22.2,5.23.0; 'pin' = the pinned one); default: quick 5.5.4,pin, "
                    "full 5.5.4,5.6.0,5.22.2,5.23.0")
    bn.set_defaults(func=cmd_bench)
    rebase_mod.add_parsers(sub)  # rebase, rebase-continue, rebase-abort
    pr_mod.add_parser(sub)  # pr
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.verbose:
        ui.set_verbose(True)
    try:
        return args.func(args)
    except HeadroomError as exc:
        ui.error(exc.message)
        if exc.details:
            print(exc.details, flush=True)
        return exc.exit_code
    except KeyboardInterrupt:
        ui.error("interrupted; the next run starts the interrupted step again")
        return 130
