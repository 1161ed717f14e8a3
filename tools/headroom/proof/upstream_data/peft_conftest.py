"""headroom's conftest layer for peft's own tests (copied out of vendor/peft/tests; never edited).

Installed in build/upstream/peft/<env>/conftest.py after common_conftest.py, next to the copied ``tests/`` package. It
neutralises what would make the suite depend on the network or on test-only packages that
the test environments do not carry:

* ``tests.testing_utils.hub_online_once`` forces online mode for a model id's first use even
  with HF_HUB_OFFLINE=1, so hub-bound tests would wait on network timeouts. It is replaced
  by a context manager that changes nothing: offline stays offline, and a test that needs
  the hub fails at once with huggingface_hub's offline error (counted as needs_hub).
* ``datasets`` and ``diffusers`` are imported at module level by peft's shared test helpers
  but not installed. When absent, a stub module stands in: ``datasets.load_dataset`` fails
  like a hub miss (it always downloads), anything taken from ``diffusers`` skips the test
  that uses it (an optional dependency that is not installed). The diffusers stub says it is
  version 0: older than any check, so what a version gates counts as missing, and a module
  that reads the version at import (test_tuners_utils.py, ~260 tests) runs instead of being
  skipped whole.
"""

import contextlib
import importlib.machinery
import importlib.util
import sys
import types

import pytest

# Import the libraries first so that their "is X available" flags are computed before any stub exists.
import accelerate  # noqa: F401
import peft  # noqa: F401
import transformers  # noqa: F401


class _NotInstalled:
    """Stands in for a name of an optional test dependency: using it skips the test."""

    def __init__(self, dist: str, name: str) -> None:
        self._dist, self._name = dist, name

    def _skip(self):
        pytest.skip(f"optional test dependency {self._dist!r} is not installed (needs {self._dist}.{self._name})",
                    allow_module_level=True)

    def __call__(self, *args, **kwargs):
        self._skip()

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        self._skip()


def _stub(dist: str, **names) -> None:
    module = types.ModuleType(dist)
    module.__spec__ = importlib.machinery.ModuleSpec(dist, None)
    module.__headroom_stub__ = True
    module.__dict__.update(names)

    def __getattr__(name):
        if name == "__version__":  # a version check at import time, with no version given: the module needs it
            _NotInstalled(dist, name)()
        if name.startswith("__"):
            raise AttributeError(name)
        return _NotInstalled(dist, name)

    module.__getattr__ = __getattr__
    sys.modules[dist] = module


def _load_dataset(path, *args, **kwargs):
    raise OSError(
        f"headroom stub: load_dataset({path!r}) downloads from the hub, and outgoing traffic has been disabled "
        "(HF_HUB_OFFLINE=1; the 'datasets' package is not installed either)"
    )


if importlib.util.find_spec("datasets") is None:
    _stub("datasets", load_dataset=_load_dataset)
if importlib.util.find_spec("diffusers") is None:
    # testing_common checks isinstance(model, StableDiffusionPipeline): a real class, that no model is an instance
    # of, whose use (StableDiffusionPipeline.from_pretrained, ...) skips the test like every other stub name.
    class _SkippingClass(type):
        def __getattr__(cls, name):
            if name.startswith("__"):
                raise AttributeError(name)
            return _NotInstalled("diffusers", f"{cls.__name__}.{name}")

        def __call__(cls, *args, **kwargs):
            _NotInstalled("diffusers", cls.__name__)()

    _stub("diffusers", StableDiffusionPipeline=_SkippingClass("StableDiffusionPipeline", (), {}), __version__="0")

import tests.testing_utils as _testing_utils  # noqa: E402  (the copied upstream helpers)


@contextlib.contextmanager
def _stay_offline(model_id):
    yield


_testing_utils.hub_online_once = _stay_offline
