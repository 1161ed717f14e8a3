"""Upstream's own test suites (shipped in the sdists) against both environments.

The suites run from outside the vendored tree: ``vendor/<name>/tests`` is copied to
``build/upstream/<name>/<env>/tests`` and run there with our own ``pytest.ini`` (``-c``, so
upstream's addopts such as peft's coverage options do not apply) and our own conftest layer
(``upstream_data/<name>_conftest.py``). Nothing under vendor/ is edited. Test files that a
patch of the series adds are left out (they are the proof's business, see proof.py).

Every test case ends up as one of: passed, failed, skipped (upstream's own skip: no GPU, an
optional dependency), needs_hub (it tried to reach the Hugging Face hub, which is offline here;
never counted as passed) or known (a failure listed, with its reason, in
``upstream_data/known_failures.txt``). ``make test`` fails on any other failure, and on any
regression: a test that passes on pristine but not on patched.

Selections: ``default`` (small, for CI) and ``full`` (everything that can run offline).
A pin with ``tests = "git"`` takes its tests from upstream's git tag instead (testsource.py);
for transformers the suites are then GIT_SUITES, the tests near the patched code.
Results: build/report.json ("upstream"), JUnit XML and logs under build/upstream/.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..ground import ui
from ..ground.errors import CommandFailed, DataError
from ..sources import checkout
from ..sources.pins import Pin
from . import testrun, testsource, tinyhub

UPSTREAM_DIR = Path("build") / "upstream"
DATA = Path(__file__).resolve().parent / "upstream_data"
KNOWN_FAILURES = DATA / "known_failures.txt"
ENVS = ("pristine", "patched")
OUTCOMES = testrun.OUTCOMES


@dataclass(frozen=True)
class Suite:
    name: str  # unique; names the JUnit XML and the log
    upstream: str  # the pin it belongs to (vendor/<upstream>/tests is copied)
    paths: tuple[str, ...]  # pytest arguments, relative to the copy's root ("tests/test_x.py", "tests")
    keyword: str = ""  # a -k expression
    ours: tuple[str, ...] = ()  # our own test modules from upstream_data/, copied next to tests/
    ignore: tuple[str, ...] = ()  # paths (relative to the copy's root) left out
    tinyhub: bool = False  # HF_HOME is the local tiny hub (tinyhub.py) instead of an empty one (unless --no-tinyhub)
    parallel: bool = True  # pytest-xdist may spread it over workers (--jobs); False: always one process


# peft files that collect and run in the test environments (no datasets, diffusers, GPU there); their
# hub-bound tests load the tiny hub's stand-ins, or fail at once offline and count as needs_hub.
PEFT_CORE = (
    "test_config", "test_other", "test_low_level_api", "test_helpers", "test_target_parameters",
    "test_trainable_tokens", "test_adaption_prompt", "test_shadow", "test_lora_ga", "test_integrations",
    "test_lora_conversion", "test_lora_variants", "test_xlora", "test_arrow", "test_frod", "test_vera",
    "test_shira", "test_riemannian_lora", "test_pvera", "test_multitask_prompt_tuning", "test_vblora",
    "test_randlora", "test_lorafa", "test_cartridge", "test_incremental_pca", "test_bdlora", "test_velora",
    "test_unilora", "test_adamss_asa", "test_supertuning", "test_cpt", "test_osf", "test_loraplus",
    "test_lora_intruders", "test_bufferdict", "test_mapping", "test_deft", "test_boft", "test_poly", "test_auto",
    "test_hub_features", "test_token_classification_qa", "test_mixed", "test_tuners_utils", "test_initialization",
)
# test_custom_models.py in `default`: the adapter load/save/state-dict tests of its main class, about
# 2,000 of its 19,500 cases, each over every tuner type (the whole file is in `full`).
CUSTOM_MODELS_K = (
    "TestPeftCustomModel and (test_load_model_low_cpu_mem_usage or test_load_multiple_adapters"
    " or test_save_load_roundtrip or test_get_base_model_state_dict"
    " or (test_save_pretrained and not test_save_pretrained_))"
)
TRAINING = "test_headroom_tiny_llama_training.py"  # TrainingTesterMixin with a tiny Llama of ours
# The transformers sdist's tests/ is mostly shared mixins for per-model tests it does not ship
# (they import tests.utils, tests.pipelines...): only these files are test modules of their own.
TRANSFORMERS_TEST_FILES = ("tests/test_monkey_patching.py", "tests/test_executorch.py", "tests/test_image_transforms.py")

# accelerate's sdist ships no tests/fsdp (the patched code's own tests are the proof's): a small, fast smoke test of the
# build (operations, dataclasses, the optimizer wrapper), about 40 s per environment here. Its multi-process and
# big-model files (test_memory_utils alone takes ~60 s) are left out, in `full` too: they are not triaged yet.
ACCELERATE_CORE = ("tests/test_utils.py", "tests/test_dataclasses.py", "tests/test_optimizer.py")

SELECTIONS: dict[str, tuple[Suite, ...]] = {
    "default": (
        # Too small to gain from workers: starting them cost more than they saved (reports/README.md: 8 s in one process, 14 s
        # on 2 workers), and the training suite is one test.
        Suite("accelerate-core", "accelerate", ACCELERATE_CORE, parallel=False),
        # with random-weight stand-ins for the tiny hub models its tests load (tinyhub.py)
        Suite("peft-core", "peft", tuple(f"tests/{f}.py" for f in PEFT_CORE), tinyhub=True),
        Suite("peft-custom-models", "peft", ("tests/test_custom_models.py",), keyword=CUSTOM_MODELS_K),
        Suite("transformers-training", "transformers", (TRAINING,), ours=(TRAINING,), parallel=False),
    ),
    # The regression guards alone (added to every selection): what `make test TORCH=<another torch>` runs by default.
    "guards": (),
    # Everything offline. Without the tiny hub: with it, the hub-model files (test_decoder_models.py
    # and the like) would run thousands of tests on random stand-ins that nobody has triaged yet.
    "full": (
        Suite("accelerate-core", "accelerate", ACCELERATE_CORE, parallel=False),
        Suite("peft-all", "peft", ("tests",)),
        Suite("transformers-all", "transformers", (TRAINING, *TRANSFORMERS_TEST_FILES), ours=(TRAINING,),
              parallel=False),
    ),
}

# With tests = "git", transformers' tag has the tests the sdist lacks: the suites near the patched
# code replace its suites in every selection (peft's git tests/ is its sdist's: same suites).
GIT_SUITES: dict[str, tuple[Suite, ...]] = {
    "transformers": (
        Suite("transformers-training", "transformers", (TRAINING,), ours=(TRAINING,)),
        Suite("transformers-trainer-checkpoints", "transformers", ("tests/trainer",),
              keyword="best_model or checkpoint"),
        Suite("transformers-peft-integration", "transformers", ("tests/peft_integration",)),
        Suite("transformers-fsdp", "transformers", ("tests/fsdp",)),
    ),
}


# Regression guards: behaviour that a retired patch fixed and upstream now gets right, one folder per upstream
# (guards/<name>/test_*.py). They run in every selection, on both environments, and in `make canary` on each new release.
GUARDS = DATA / "guards"


def guard_files(name: str, guards: Path = GUARDS) -> tuple[str, ...]:
    """The guard test modules of upstream ``name``, relative to upstream_data/ (``guards/<name>/test_x.py``)."""
    folder = guards / name
    return tuple(f"guards/{name}/{f.name}" for f in sorted(folder.glob("test_*.py"))) if folder.is_dir() else ()


def needs(path: Path, upstreams: set[str]) -> set[str]:
    """Which of ``upstreams`` the test module ``path`` imports at its top (``from peft import ...``)."""
    text = path.read_text(encoding="utf-8")
    return {u for u in upstreams if re.search(rf"^(from|import) {re.escape(u)}\b", text, re.M)}


def guard_suites(pins: list[Pin], missing: set[str] = frozenset()) -> list[Suite]:
    """One suite per upstream that has guards, in one process (they start torchrun jobs of their own). ``missing``:
    upstreams the line does not carry; a guard that imports one is left out, and said (it cannot run there)."""
    out = []
    for pin in pins:
        files = tuple(f for f in guard_files(pin.name) if not needs(DATA / f, set(missing)))
        for f in sorted(set(guard_files(pin.name)) - set(files)):
            ui.info(f"{f}: not run on this line: it needs {', '.join(sorted(needs(DATA / f, set(missing))))}, "
                    "which the line does not carry")
        if files:
            out.append(Suite(f"{pin.name}-guards", pin.name, files, ours=files, parallel=False))
    return out


def selected_suites(selection: str, pins: list[Pin], missing: set[str] = frozenset()) -> list[Suite]:
    """The suites of ``selection`` for ``pins``, with GIT_SUITES for the pins whose tests come from git, then the
    regression guards of every pin."""
    by_name = {p.name: p for p in pins}
    out: list[Suite] = []
    for s in SELECTIONS[selection]:
        pin = by_name.get(s.upstream)
        if pin is None:
            continue
        if pin.tests == "git" and s.upstream in GIT_SUITES:
            out += [g for g in GIT_SUITES[s.upstream] if g not in out]
        else:
            out.append(s)
    return out + guard_suites(pins, missing)


PYTEST_INI = """\
# Written by headroom (tools/headroom/proof/upstream.py): replaces upstream's pytest configuration.
[pytest]
addopts =
pythonpath = .
markers =
    single_gpu_tests: tests that run on a single GPU
    multi_gpu_tests: tests that run on multiple GPUs
    regression: whether to run regression suite test
    bitsandbytes: select bitsandbytes integration tests
    is_training_test: transformers training tests
"""


# ---------------------------------------------------------------- known failures


def load_known(path: Path = KNOWN_FAILURES) -> list[testrun.KnownFailure]:
    return testrun.parse_known(path.read_text(encoding="utf-8"), path.name) if path.exists() else []


# ---------------------------------------------------------------- running


def _layer(root: Path, pin: Pin, env: str, suites: list[Suite], tests: Path | None = None,
           out: Path = UPSTREAM_DIR) -> Path:
    """build/upstream/<name>/<env>: a fresh copy of upstream's tests (``tests``, by default
    vendor/<name>/tests) plus our config and conftest (the common layer, then the upstream's own)."""
    where = root / out / pin.name / env
    if where.exists():
        shutil.rmtree(where)
    where.mkdir(parents=True)
    if tests is None:
        tests = checkout.vendor_dir(root, pin) / "tests"
    shutil.copytree(tests, where / "tests", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    init = where / "tests" / "__init__.py"
    if not init.exists():  # peft's tests import each other relatively but ship no __init__.py
        init.write_text("# added by headroom: upstream's tests use relative imports\n", encoding="utf-8")
    (where / "pytest.ini").write_text(PYTEST_INI, encoding="utf-8")
    layers = [DATA / "common_conftest.py", DATA / f"{pin.name}_conftest.py"]  # every suite's, then this upstream's
    (where / "conftest.py").write_text("\n\n".join(f.read_text(encoding="utf-8") for f in layers if f.exists()),
                                       encoding="utf-8")
    for suite in suites:
        for f in suite.ours:
            (where / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(DATA / f, where / f)
    return where


def _patch_added_tests(root: Path, pin: Pin) -> list[str]:
    try:
        return sorted({f for _, files in testrun.series_tests(root, pin) for f in files})
    except Exception as exc:  # noqa: BLE001 (a missing series only means there is nothing to leave out)
        ui.detail(f"{pin.name}: could not list the patches' own tests ({exc})")
        return []


def cores() -> int:
    """The cores this process may run on (taskset and cgroup cpusets count; os.cpu_count() would not)."""
    return len(os.sched_getaffinity(0))


def workers(jobs: str) -> int:
    """pytest-xdist workers for ``--jobs``: ``auto`` is one per core."""
    return cores() if jobs == "auto" else int(jobs)


def worker_threads(jobs: str) -> int | None:
    """Threads for torch in each pytest-xdist worker: the cores shared out among the workers; None for one process
    (torch's own default). Without this every worker starts one thread per core: on 2 cores that made ``JOBS=auto``
    1.3-2.8x slower than one process instead of faster (reports/README.md)."""
    return None if jobs == "1" else max(1, cores() // workers(jobs))


def run_suite(root: Path, suite: Suite, env: str, py: Path, layer: Path, ignore: list[str],
              known: list[testrun.KnownFailure], selection: str, *,
              use_tinyhub: bool = True, jobs: str = "1",
              out: Path = UPSTREAM_DIR) -> tuple[dict, dict[str, tuple[str, str]], list[str]]:
    out_dir = root / out  # build/upstream/, or a line's build/lines/<line>/upstream/
    # --tb=native: pytest's own traceback rendering costs ~0.5 s per failure here, and the
    # hundreds of hub misses made it the bulk of the run; the native one takes milliseconds.
    args = ["-q", "-rfE", "--tb=native", "--continue-on-collection-errors", "-o", "junit_family=xunit2"]
    # pytest-xdist (requirements/test-env.txt) unless --jobs 1; each worker gets its share of the cores (worker_threads).
    if suite.parallel and jobs != "1":
        args += ["-n", str(workers(jobs))]
    if suite.keyword:
        args += ["-k", suite.keyword]
    for path in [*suite.ignore, *ignore]:
        args += ["--ignore", path]
    args += list(suite.paths)
    hf_home = out_dir / "hf-home"  # empty (or the tiny hub): nothing from the user's own cache
    tiny = None
    if suite.tinyhub and use_tinyhub:  # generated by this env's own torch/transformers, kept while its spec is unchanged
        hf_home = out_dir / "tinyhub" / env
        try:
            tiny = tinyhub.build_cache(hf_home, py)
        except (CommandFailed, DataError, OSError) as exc:
            return ({"selection": selection, **testrun.counts({}), "seconds": 0.0, "exit": -1}, {},
                    [f"upstream {suite.name} on {env}: could not build the tiny hub: {exc}"])
    hf_home.mkdir(parents=True, exist_ok=True)
    env_vars = {"HF_HOME": str(hf_home), "HF_DATASETS_OFFLINE": "1", "RUN_TRAINING_TESTS": "1",
                "CUDA_VISIBLE_DEVICES": ""}
    threads = worker_threads(jobs) if suite.parallel else None
    if threads and "OMP_NUM_THREADS" not in os.environ:  # a thread count the user set wins
        env_vars |= {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    threads_each = env_vars.get("OMP_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
    ui.info(f"{suite.name} on {env}" + (f" ({workers(jobs)} pytest-xdist workers, OMP_NUM_THREADS={threads_each})"
                                        if "-n" in args else ""))
    result = testrun.pytest(py, args, cwd=layer, env=env_vars, what=f"pytest {suite.name} ({env})",
                            junit=out_dir / f"junit-{suite.name}-{env}.xml", log=out_dir / f"{suite.name}-{env}.log")
    junit, log = result.junit, result.log
    outcomes = testrun.read_junit(junit, known)
    entry = {"selection": selection, **testrun.counts(outcomes), "seconds": result.seconds, "exit": result.returncode,
             "junit": str(junit.relative_to(root)), "log": str(log.relative_to(root))}
    if tiny is not None:
        entry["tinyhub"] = tiny
    failures = []
    if not outcomes:
        failures.append(f"upstream {suite.name} on {env}: pytest ran no test (exit {result.returncode}); "
                        f"see {entry['log']}")
    elif result.returncode not in (0, 1):
        failures.append(f"upstream {suite.name} on {env}: pytest exited {result.returncode}; see {entry['log']}")
    failed = sorted(n for n, (o, _) in outcomes.items() if o == "failed")
    if failed:
        entry["failures"] = {n: outcomes[n][1][:300] for n in failed[:50]}
        shown = ", ".join(failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        failures.append(f"upstream {suite.name} on {env}: {len(failed)} unexplained failure(s): {shown}; "
                        f"see {entry['log']}")
    known_hits = sorted(n for n, (o, _) in outcomes.items() if o == "known")
    if known_hits:
        entry["known_failures"] = {n: outcomes[n][1] for n in known_hits[:50]}
    return entry, outcomes, failures


def _table(report: dict) -> None:
    torch = report.get("torch", "")
    rows = [("suite", "env", "torch", *OUTCOMES, "seconds")]
    for name, suite in report["suites"].items():
        for env in ENVS:
            if env in suite:
                e = suite[env]
                rows.append((name, env, torch, *(str(e[k]) for k in OUTCOMES), f"{e['seconds']:.0f}"))
    for env in ENVS:
        entries = [suite[env] for suite in report["suites"].values() if env in suite]
        if len(entries) > 1:
            rows.append(("(all)", env, torch, *(str(sum(e[k] for e in entries)) for k in OUTCOMES),
                         f"{sum(e['seconds'] for e in entries):.0f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for i, r in enumerate(rows):
        print("  " + " | ".join(c.rjust(w) if 2 < j < len(r) else c.ljust(w)
                                for j, (c, w) in enumerate(zip(r, widths))), flush=True)
        if i == 0:
            print("  " + "-+-".join("-" * w for w in widths), flush=True)


def run(root: Path, pins: list[Pin], pythons: dict[str, Path], *, selection: str,
        use_tinyhub: bool = True, jobs: str = "1", out: Path = UPSTREAM_DIR, line: str = "",
        home: bool = True, carried: set[str] | None = None, torch: str = "", primary: bool = True) -> list[str]:
    if selection not in SELECTIONS:
        return [f"unknown upstream selection {selection!r}: use one of {', '.join(SELECTIONS)} or none"]
    by_name = {p.name: p for p in pins}
    carried = carried or {p.name for p in pins}  # the line's upstreams (``pins`` may be --only's)
    missing = {d.name for d in (root / "patches").iterdir() if d.is_dir()} - carried if (root / "patches").is_dir() else set()
    suites = selected_suites(selection, pins, missing)
    hub = "" if use_tinyhub or not any(s.tinyhub for s in suites) else ", without the tiny hub"
    on = f" on torch {torch}" if torch else ""
    ui.step("test", f"upstream suites ({selection}{hub}){on}: "
                    f"{', '.join(s.name for s in suites) or 'none for these upstreams'}")
    try:
        known = load_known()
    except DataError as exc:
        return [str(exc)]
    report: dict = {"selection": selection, "tinyhub": use_tinyhub, "jobs": jobs, "suites": {},
                    **({"torch": torch} if torch else {})}
    failures: list[str] = []
    envs = [e for e in ENVS if e in pythons]
    for name in dict.fromkeys(s.upstream for s in suites):
        pin = by_name[name]
        mine = [s for s in suites if s.upstream == name]
        tests = testsource.tests_tree(root, pin)
        if not tests.is_dir():
            failures.append(f"upstream {name}: {pin.vendor}/tests is missing; run `make apply` first")
            continue
        ignore = _patch_added_tests(root, pin)
        for env in envs:
            layer = _layer(root, pin, env, mine, tests, out=out)
            for suite in mine:
                entry, outcomes, bad = run_suite(root, suite, env, pythons[env], layer, ignore, known, selection,
                                                 use_tinyhub=use_tinyhub, jobs=jobs, out=out)
                report["suites"].setdefault(suite.name, {"upstream": name})[env] = entry
                report["suites"][suite.name].setdefault("_outcomes", {})[env] = outcomes
                failures += bad
    for name, suite in report["suites"].items():
        results = suite.pop("_outcomes")
        if "pristine" in results and "patched" in results:
            reg = testrun.regressions(results["pristine"], results["patched"])
            suite["regressions"] = reg[:200]
            suite["regression_count"] = len(reg)
            if reg:
                shown = "; ".join(reg[:5]) + (f"; and {len(reg) - 5} more" if len(reg) > 5 else "")
                failures.append(f"upstream {name}: {len(reg)} regression(s) caused by the series: {shown}")
    _table(report)
    for name, suite in report["suites"].items():
        for r in suite.get("regressions", [])[:10]:
            ui.warn(f"regression in {name}: {r}")
    if primary:  # the top-level section is the primary torch's
        testrun.write_report(root, "upstream", report, line=line, home=home)
    if torch:
        testrun.write_torch_report(root, torch, "upstream", report, line=line, home=home)
    return failures
