"""The run's running totals: faults, recoveries, speeds, memory.

The loop and the memory sampler thread both update them, so every change and
every read of more than one field happens under one lock.
"""

from __future__ import annotations

import math
import statistics
import threading
from collections import deque


class RunningStats:
    """Mean, stdev, min, max, first and last in O(1) memory (Welford).  Not thread-safe
    on its own: RunStats holds the lock."""

    def __init__(self):
        self.n, self.mean, self._m2 = 0, 0.0, 0.0
        self.first = self.last = self.min = self.max = None

    def add(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self._m2 += delta * (x - self.mean)
        self.first = x if self.first is None else self.first
        self.last = x
        self.min = x if self.min is None else min(self.min, x)
        self.max = x if self.max is None else max(self.max, x)

    @property
    def stdev(self) -> float | None:
        return math.sqrt(self._m2 / (self.n - 1)) if self.n > 1 else None

    def rounded_mean(self) -> float | None:
        return round(self.mean, 3) if self.n else None


TOKEN_TIMING = ("ttft_s", "itl_p50_s", "itl_p99_s", "itl_max_s")


class RunStats:
    def __init__(self, slowdown_window: int = 30):
        self._lock = threading.Lock()
        self.faults = 0
        self.faults_by_kind: dict[str, int] = {}
        self.recovered = 0
        self.recovery_attempts = 0
        self.recovered_by_step: dict[str, int] = {}
        self.unrecovered = 0
        self.recovery_durations = RunningStats()
        self.decode_tps = RunningStats()
        self.prefill_tps = RunningStats()
        self.rss = RunningStats()
        self.recent_decode_tps: deque = deque(maxlen=slowdown_window)
        self.last_memory: dict | None = None
        self.token_timing = {name: RunningStats() for name in TOKEN_TIMING}

    def add_fault(self, kind: str) -> None:
        """One fault event as soak.fault_kinds.fault_kind_of counts it (the runner's event listener
        calls this for every event written, so progress, summary and the gate count alike)."""
        with self._lock:
            self.faults += 1
            self.faults_by_kind[kind] = self.faults_by_kind.get(kind, 0) + 1

    def add_memory(self, sample: dict) -> None:
        with self._lock:
            self.last_memory = sample
            if sample.get("rss"):
                self.rss.add(sample["rss"])

    def add_speed(self, decode_tps: float | None, prefill_tps: float | None) -> None:
        with self._lock:
            if decode_tps:
                self.decode_tps.add(decode_tps)
                self.recent_decode_tps.append(decode_tps)
            if prefill_tps:
                self.prefill_tps.add(prefill_tps)

    def add_timing(self, timing: dict) -> None:
        """One iteration's time to first token and inter-token latency (seconds or None)."""
        with self._lock:
            for name, value in timing.items():
                if value is not None:
                    self.token_timing[name].add(value)

    def add_recovery(self, recovered_by: str | None, duration_s: float) -> None:
        with self._lock:
            self.recovery_attempts += 1
            if recovered_by:
                self.recovered += 1
                self.recovered_by_step[recovered_by] = self.recovered_by_step.get(recovered_by, 0) + 1
                self.recovery_durations.add(duration_s)
            else:
                self.unrecovered += 1

    def rss_now(self) -> int | None:
        with self._lock:
            return (self.last_memory or {}).get("rss")

    def decode_baseline(self, min_samples: int = 8) -> float | None:
        """Median decode tok/s of the recent calls; None until there are enough."""
        with self._lock:
            window = list(self.recent_decode_tps)
        return statistics.median(window) if len(window) >= min_samples else None

    def progress(self) -> dict:
        with self._lock:
            return {"faults": self.faults, "recovered": self.recovered,
                    "rss": (self.last_memory or {}).get("rss"), "decode_tps": self.decode_tps.last}

    def summary(self) -> dict:
        """The totals part of summary.json."""
        with self._lock:
            stdev = self.decode_tps.stdev
            return {
                "faults": self.faults,
                "faults_by_kind": dict(self.faults_by_kind),
                "recovery": {"attempts": self.recovery_attempts, "by_step": dict(self.recovered_by_step),
                             "unrecovered": self.unrecovered,
                             "mean_duration_s": self.recovery_durations.rounded_mean()},
                "decode_tps_mean": self.decode_tps.rounded_mean(),
                "decode_tps_stdev": round(stdev, 3) if stdev else None,
                "prefill_tps_mean": self.prefill_tps.rounded_mean(),
                "rss": {"first": self.rss.first, "last": self.rss.last, "max": self.rss.max},
                # per iteration: time to first token and inter-token latency, mean and worst over the run
                "token_timing": {name: {"mean": round(st.mean, 6) if st.n else None,
                                        "max": round(st.max, 6) if st.n else None}
                                 for name, st in self.token_timing.items()},
            }
