"""The regression guards as data (upstream_data/guards/<name>/test_*.py): which run on which line, what they import
from each other, and the pinned client they drive (TRL, requirements/test-env.txt)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from headroom.proof import envs, upstream
from headroom.sources import pins

ROOT = Path(__file__).resolve().parents[1]
LORA, FSDP = "guards/transformers/test_headroom_trl_sft_lora.py", "guards/transformers/test_headroom_trl_sft_fsdp.py"


def pin(name: str) -> pins.Pin:
    h = "a" * 64
    return pins.Pin(name, name, "1.0.0", f"{name}-1.0.0.tar.gz", h, f"{name}-1.0.0-py3-none-any.whl", h,
                    f"https://example.invalid/{name}", "v1.0.0")


def sibling_imports(path: Path) -> set[str]:
    """The guard modules (test_*) that the guard ``path`` imports: torchrun runs it as a script and pytest imports it
    with its folder on sys.path, so a sibling is found only if it was copied beside it."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return {n for n in names if n.startswith("test_")}


def test_the_trl_lora_guard_is_left_out_on_a_line_without_peft_and_said(capsys):
    """The newest line carries no peft: the LoRA guard (it imports peft at its top) does not run there, and the run
    says why; the FSDP one runs on every line."""
    everywhere = upstream.guard_suites([pin("transformers")])
    assert {LORA, FSDP} <= set(everywhere[0].ours)
    capsys.readouterr()
    (suite,) = upstream.guard_suites([pin("transformers")], missing={"peft"})
    assert FSDP in suite.ours and LORA not in suite.ours
    assert f"{LORA}: not run on this line: it needs peft, which the line does not carry" in capsys.readouterr().out


@pytest.mark.parametrize("missing", [set(), {"peft"}], ids=["every upstream", "no peft"])
def test_a_guard_imports_only_guards_that_run_beside_it(missing):
    """A guard that reuses another's helpers (`from test_headroom_x import ...`) needs that file in the layer, which
    holds only the suite's own files: the one it imports must be run on every line it is."""
    for name in ("accelerate", "transformers", "peft"):
        for suite in upstream.guard_suites([pin(name)], missing):
            present = {Path(f).stem for f in suite.ours}
            for f in suite.ours:
                assert sibling_imports(upstream.DATA / f) <= present, f


def test_the_trl_guards_reuse_the_other_guards_helpers():
    assert sibling_imports(upstream.DATA / LORA) == {"test_headroom_trl_sft_fsdp"}
    assert sibling_imports(upstream.DATA / FSDP) == {"test_headroom_fsdp_cpu_ram_efficient_loading",
                                                     "test_headroom_fsdp_two_nodes"}


def test_trl_and_what_it_brings_are_pinned_in_the_test_requirements():
    """Every test requirement is one exact release (a new TRL or datasets never slips into an environment), and TRL
    with the dependencies it adds is among them."""
    text = (ROOT / envs.REQUIREMENTS).read_text(encoding="utf-8")
    pinned = {}
    for number, line in envs.requirement_lines(text):
        req = Requirement(line)
        (spec,) = req.specifier
        assert spec.operator == "==", f"{envs.REQUIREMENTS}:{number}: {line!r} is not one release"
        pinned[canonicalize_name(req.name)] = spec.version
    assert pinned["trl"] == "1.16.0"
    assert {"datasets", "pandas", "pyarrow", "dill", "multiprocess", "xxhash"} <= set(pinned)
