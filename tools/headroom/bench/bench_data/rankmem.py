"""What every bench worker rank measures and how it hands its result back, in one place: the workers of this folder
import it (``torch.distributed.run`` starts each rank as ``python <worker>.py``, so the worker's folder is on
``sys.path``). Runs inside build/envs/<env>: stdlib and torch (transformers too, in ``warm_up``).
"""

import ctypes
import gc
import json
import os
import sys
import threading

_LIBC = None


def trim() -> None:
    """Collect garbage and give freed heap back to the kernel, so that RSS readings show what is really held."""
    global _LIBC
    gc.collect()
    try:
        if _LIBC is None:
            _LIBC = ctypes.CDLL("libc.so.6")
        _LIBC.malloc_trim(0)
    except (OSError, AttributeError):
        pass


def warm_up(checkpoint_dir: str, out_dir: str, dtype) -> None:
    """Load a one-layer model of the checkpoint's class on every rank (rank 0 saves it), so that imports and
    first-time caches are not measured in the load that is."""
    import torch.distributed as dist
    from transformers import AutoConfig, AutoModelForCausalLM

    warmup_dir = os.path.join(out_dir, "warmup")
    if dist.get_rank() == 0:
        config = AutoConfig.from_pretrained(checkpoint_dir)
        config.num_hidden_layers, config.vocab_size = 1, 64
        AutoModelForCausalLM.from_config(config).save_pretrained(warmup_dir)
    dist.barrier()
    warm = AutoModelForCausalLM.from_pretrained(warmup_dir, dtype=dtype)
    del warm
    dist.barrier()


def status_mib(field: str) -> float:
    """A field of /proc/self/status (RssAnon, VmRSS, VmHWM), in MiB."""
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not found in /proc/self/status")


def rss_anon_mib() -> float:
    """Anonymous RSS after a trim (a memory-mapped checkpoint's file pages are not counted)."""
    trim()
    return status_mib("RssAnon")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False when the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as f:
            f.write("5")
        return True
    except OSError:
        return False


class PeakSampler:
    """Samples RssAnon in a background thread; ``peak`` is the highest reading."""

    def __init__(self, interval: float = 0.002) -> None:
        self.interval = interval
        self.peak = 0.0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, status_mib("RssAnon"))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> "PeakSampler":
        self.peak = status_mib("RssAnon")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, status_mib("RssAnon"))


def finish(result: dict, out_dir: str, rank: int) -> None:
    """Write this rank's ``rank<N>.json`` (what the bench reads back), wait for the others, end the process group and
    the process.

    The process ends without the interpreter's teardown: FSDP2 keeps the process group referenced (its module states
    and hooks live on), so ``destroy_process_group`` cannot free the gloo backend, whose threads would then be torn
    down with the interpreter while the other ranks exit; on a busy machine that aborted rank 1 (``terminate called
    without an active exception``)."""
    import torch.distributed as dist

    with open(os.path.join(out_dir, f"rank{rank}.json"), "w", encoding="utf-8") as f:
        json.dump(result, f)
    dist.barrier()
    dist.destroy_process_group()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
