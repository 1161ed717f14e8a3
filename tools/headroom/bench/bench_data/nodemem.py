"""One sampler per node: the node's total anonymous RSS, every rank of the node read at the same instant.

A node's peak is not the sum of its ranks' peaks (rank 0 peaks while loading, the others while receiving their
shards): :class:`NodeTotals` adds the ranks' ``RssAnon`` of one sample and keeps the highest sum, per phase, beside
each rank's own peak (what a sum of per-rank peaks would have said). :class:`NodeSampler` reads
``/proc/<pid>/status`` of the node's ranks in a thread of the node's local rank 0. Stdlib only: it runs inside the
bench environments (phase_worker.py imports it from this folder) and in the tooling tests (the aggregation).
"""

import threading
import time

BEFORE = "before"  # the phase of the samples taken before the measured ones
BUCKET_SECONDS = 0.05  # the series kept for the plot: the highest total of each 50 ms


class NodeTotals:
    """The samples of one node, added up: ``add(t, phase, readings)`` with ``readings`` {rank: MiB} read at ``t``."""

    def __init__(self, bucket_seconds: float = BUCKET_SECONDS) -> None:
        self.bucket_seconds = bucket_seconds
        self.baseline: float | None = None  # the node total of the first sample (before the phase starts)
        self.phases: dict[str, dict] = {}  # phase -> {"peak_mib", "peak_t", "samples"}, in the order first seen
        self.rank_peaks: dict[str, float] = {}  # rank (as a str, JSON keys) -> its own highest reading
        self.series: list[list[float]] = []  # [t, highest total in the bucket starting at t]
        self.samples = 0

    def add(self, t: float, phase: str, readings: dict) -> float:
        """One sample: every rank's reading at instant ``t`` (seconds) during ``phase``; returns the node total."""
        total = sum(readings.values())
        if self.baseline is None:
            self.baseline = total
        self.samples += 1
        entry = self.phases.setdefault(phase, {"peak_mib": total, "peak_t": t, "samples": 0})
        entry["samples"] += 1
        if total > entry["peak_mib"]:
            entry["peak_mib"], entry["peak_t"] = total, t
        for rank, value in readings.items():
            key = str(rank)
            self.rank_peaks[key] = max(self.rank_peaks.get(key, value), value)
        start = t - t % self.bucket_seconds
        if self.series and self.series[-1][0] == round(start, 3):
            self.series[-1][1] = max(self.series[-1][1], total)
        else:
            self.series.append([round(start, 3), total])
        return total

    def result(self) -> dict:
        """The node's figures: its baseline, each phase's peak, the whole run's peak (the highest of the phases), the
        sum of the ranks' own peaks (never below the node's peak), the bucketed series. The phase :data:`BEFORE`
        (the samples before the measured phases) gives the baseline and no peak."""
        measured = {name: p for name, p in self.phases.items() if name != BEFORE}
        peak = max((p["peak_mib"] for p in measured.values()), default=0.0)
        return {"baseline_mib": self.baseline or 0.0, "peak_mib": peak,
                "peak_phase": next((name for name, p in measured.items() if p["peak_mib"] == peak), None),
                "phases": self.phases, "rank_peaks_mib": self.rank_peaks,
                "sum_of_rank_peaks_mib": sum(self.rank_peaks.values()), "samples": self.samples,
                "series": self.series}


def rss_anon_mib(pid: int) -> float:
    """``RssAnon`` of process ``pid`` in MiB (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) / 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0.0


class NodeSampler:
    """Samples the node's ranks (``{rank: pid}``) every ``interval`` seconds in a thread; ``phase`` names the current
    phase (set it between barriers); ``totals`` holds the result."""

    def __init__(self, pids: dict, interval: float = 0.002) -> None:
        self.pids = pids
        self.interval = interval
        self.phase = BEFORE
        self.totals = NodeTotals()
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def sample(self) -> None:
        readings = {rank: rss_anon_mib(pid) for rank, pid in self.pids.items()}
        self.totals.add(time.monotonic() - self._t0, self.phase, readings)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def start(self) -> "NodeSampler":
        self.sample()  # the baseline
        self._thread.start()
        return self

    def set_phase(self, phase: str) -> None:
        self.sample()
        self.phase = phase
        self.sample()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        self.sample()
        return self.totals.result()
