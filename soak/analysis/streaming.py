"""Bounded accumulators for streaming analyses: what the verdicts
(soak.analysis.loaded_run) and the classifier (soak.catalog._runscan) keep of
the per-iteration data of a run, in memory that does not grow with its length.

- `Decimator`: at most `cap` items, evenly spaced (stride doubles when full);
- `Reservoir`: at most `cap` numbers, every one while fewer came, else a
  uniform random sample (fixed seed: the same run gives the same figures);
- `Intervals`: a set of integers kept as sorted [lo, hi] runs (the iterations
  a run recorded: one run for 0..N-1, one more per gap).

Each can `merge` the accumulator of the next part of the same stream (the
classifier splits a large file over processes).
"""

from __future__ import annotations

import math
import random
from bisect import bisect_right

SERIES_CAP = 8192


class Decimator:
    """At most `cap` items of a stream, evenly spaced: every item until the
    cap is reached, then every 2nd, 4th, ... (`stride`).  `count` is how many
    were offered.  Per-series accumulator of the streaming analysis."""

    __slots__ = ("cap", "items", "stride", "count")

    def __init__(self, cap: int = SERIES_CAP):
        self.cap = max(2, cap)
        self.items: list = []
        self.stride = 1
        self.count = 0

    def wants(self) -> bool:
        """Whether the next item offered will be kept (so worth preparing)."""
        return self.count % self.stride == 0

    def add(self, item) -> None:
        if self.count % self.stride == 0:
            self.items.append(item)
            if len(self.items) > self.cap:
                self.items = self.items[::2]
                self.stride *= 2
        self.count += 1

    def merge(self, other: "Decimator") -> None:
        """Append the decimation of the stream's next part: both thinned to
        the larger stride, then halved while over the cap."""
        stride = max(self.stride, other.stride)
        mine = self.items[::stride // self.stride]
        theirs = other.items[::stride // other.stride]
        self.items = mine + theirs
        self.stride = stride
        while len(self.items) > self.cap:
            self.items = self.items[::2]
            self.stride *= 2
        self.count += other.count


class Reservoir:
    """At most `cap` numbers of a stream: all of them while at most `cap`
    came (so a median over them is exact), else a uniform sample (Li's
    algorithm L: a random draw only per replaced item, not per item)."""

    __slots__ = ("cap", "items", "count", "_rng", "_w", "_next")

    def __init__(self, cap: int = 1 << 16, seed: int = 12):
        self.cap = max(1, cap)
        self.items: list = []
        self.count = 0
        self._rng = random.Random(seed)
        self._w = 1.0
        self._next = -1   # 0-based index of the next item to take once full

    def wants(self) -> bool:
        """Whether the next item offered will be kept (else count it: `count += 1`)."""
        return self.count < self.cap or self.count == self._next

    def add(self, x) -> None:
        n = self.count
        self.count = n + 1
        if n < self.cap:
            self.items.append(x)
            if n + 1 == self.cap:
                self._skip()
            return
        if n == self._next:
            self.items[self._rng.randrange(self.cap)] = x
            self._skip()

    def _skip(self) -> None:
        rnd = self._rng.random
        self._w *= math.exp(math.log(rnd() or 1e-300) / self.cap)
        gap = math.floor(math.log(rnd() or 1e-300) / math.log1p(-self._w)) if self._w < 1.0 else 0
        self._next = max(self._next, self.count - 1) + gap + 1

    def merge(self, other: "Reservoir") -> None:
        total = self.count + other.count
        if total <= self.cap:
            self.items = self.items + other.items
        else:  # each side's share of the sample, in proportion to what it saw
            k = min(round(self.cap * self.count / total), len(self.items))
            k = max(k, self.cap - len(other.items))
            rng = self._rng
            self.items = rng.sample(self.items, k) + rng.sample(other.items, self.cap - k)
        self.count = total
        if self.count >= self.cap:
            self._next = -1
            self._skip()

    def __len__(self) -> int:
        return self.count


class Intervals:
    """A set of integers as sorted, disjoint [lo, hi] runs.  Adding the next
    integer (the common case) extends the last run in O(1)."""

    __slots__ = ("runs",)

    def __init__(self, values=()):
        self.runs: list[list[int]] = []
        for v in sorted(values):
            self.add(v)

    def add(self, v: int) -> None:
        runs = self.runs
        if runs:
            last = runs[-1]
            if last[1] + 1 == v:
                last[1] = v
                return
            if last[0] <= v <= last[1]:
                return
            if v > last[1]:
                runs.append([v, v])
                return
        self._insert(v, v)

    def _insert(self, lo: int, hi: int) -> None:
        runs = self.runs
        k = bisect_right(runs, [lo, math.inf])  # runs starting at or before lo come first
        if k and runs[k - 1][1] + 1 >= lo:
            k -= 1
            lo = runs[k][0]
            hi = max(hi, runs[k][1])
        else:
            runs.insert(k, [lo, hi])
        j = k + 1
        while j < len(runs) and runs[j][0] <= hi + 1:
            hi = max(hi, runs[j][1])
            j += 1
        runs[k:j] = [[lo, hi]]

    def merge(self, other: "Intervals") -> None:
        for lo, hi in other.runs:
            if self.runs and self.runs[-1][1] + 1 >= lo and self.runs[-1][0] <= lo:
                self.runs[-1][1] = max(self.runs[-1][1], hi)
            else:
                self._insert(lo, hi)

    def any_between(self, lo: int, hi: int) -> bool:
        """Whether some member x has lo <= x <= hi."""
        if lo > hi or not self.runs:
            return False
        k = bisect_right(self.runs, [hi, math.inf]) - 1  # the last run starting at or before hi
        return k >= 0 and self.runs[k][1] >= lo

    def __iter__(self):
        for lo, hi in self.runs:
            yield from range(lo, hi + 1)

    def __bool__(self) -> bool:
        return bool(self.runs)

    def __eq__(self, other) -> bool:
        return isinstance(other, Intervals) and self.runs == other.runs

    @property
    def lo(self) -> int | None:
        return self.runs[0][0] if self.runs else None

    @property
    def hi(self) -> int | None:
        return self.runs[-1][1] if self.runs else None
