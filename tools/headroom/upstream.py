"""Upstream test suites against the wheels (issue 4). Placeholder until it lands."""

from __future__ import annotations

from pathlib import Path

from . import ui
from .pins import Pin


def run(root: Path, pins: list[Pin], pythons: dict[str, Path], *, selection: str) -> list[str]:
    ui.step("test", f"upstream suites ({selection}): not yet implemented, skipped")
    return []
