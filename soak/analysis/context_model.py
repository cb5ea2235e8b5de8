"""The LLM workload behind a memory series: conversations, context, reset.

An LLM's memory is not one series over iterations.  Inside a conversation the
KV cache grows with the context; `reset()` (a new conversation) should give it
back.  For each memory series this module separates

* the **floor**: the level at the first sample of each conversation (context
  back to one turn).  A floor that rises is memory that reset did not give
  back;
* the **growth per context token**, fitted two ways and the better fit kept:
    - `context`: level = floor + b x context_tokens (pooled Theil-Sen within
      conversations): memory that follows the context and comes back at reset;
    - `high_water`: level = base + b x the longest context seen so far in this
      worker (a running max, reset only by a worker restart or a recovery):
      a **ratchet**, memory that grows to the longest context and is never
      given back (MNN keeps its KV allocation at the high-water mark);
  and compared with the model's theoretical KV bytes per token
  (layers x KV heads x head dim x 2 x dtype bytes) as a ratio ("1.1x expected");
* the **residual**: the level minus the fitted context term, tested for a
  trend over iterations.  For the high-water model the residual is tested
  within each plateau of the high-water mark (segments), so growth while the
  longest context did not change is a leak whatever the fitted slope absorbed.
  A residual leak must also grow by at least 4 robust noise sd of the
  residual over the run and lift the conversation floors (95 % trend test on
  them): once the sawtooth is removed, what is left is an AR(1) wobble that
  wanders (2/300 noisy clean runs were called leaks without these checks;
  benchmarks/bench_leak_detector.py).

A ratchet need not be linear in the context: MNN OpenCL's GPU allocations
jump at thresholds (51 MB -> 1.09 GB once the context passed ~5.6k tokens on
the H200, tests/data/series/h200-opencl-60turn.jsonl) and its memory pool
keeps the largest allocation.  `fit_steps` fits the conversation floors to the
longest context seen so far with a non-decreasing step function (isotonic
regression, pool-adjacent-violators on medians) and says where it steps.

Everything here is computed from per-sample rows (iteration, t, conversation,
context, worker segment, value), which a streaming reader can build from
per-iteration accumulators: the running max context per segment and the
first sample per conversation are O(1) state, and the fits run on the
binned rows `trend()` reduces to at most 400 points per segment group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import median
from typing import Sequence

from soak.analysis.trend import Trend, trend
from soak.engine.model_info import kv_cache_theory

MODELS = ("none", "context", "high_water", "steps")
BETTER_FIT = 0.8          # a context model must cut the residual spread (mean |deviation|) to this share of the flat model's


@dataclass(frozen=True)
class Row:
    iteration: float
    t: float | None
    conversation: object
    context: float
    high_water: float      # longest context so far in this worker segment (including this sample)
    segment: int
    value: float


def expected_kv_bytes_per_token(model: dict | None, backend: str | None) -> dict | None:
    """layers x KV heads x head dim x 2 (K and V) x dtype bytes, from the manifest's `model`
    (the theory lives with the model facts: soak.engine.model_info.kv_cache_theory)."""
    return kv_cache_theory(model, backend)


class Accumulator:
    """Per-sample rows of one series, fed online, held in bounded memory.

    Up to `cap` rows are kept as they come.  Past that, every finished
    conversation is reduced to three rows (its floor, the first sample, its
    peak, the sample at its longest context, and one between), and when that is still too many,
    every other kept conversation is dropped and only every 2nd, 4th, ... new
    conversation is kept (a deterministic thinning).  The running high-water
    mark per worker segment is O(1) state and is exact whatever is dropped.
    """

    def __init__(self, cap: int = 8192):
        self.cap = cap
        self.convs: list[list[Row]] = []
        self.total = 0
        self.reduced = False
        self.stride = 1
        self.seen = 0            # conversations started
        self._key = None
        self._keep = True
        self._hw: dict[int, float] = {}

    def add(self, iteration: float, t: float | None, conversation, context: float, segment: int, value: float) -> None:
        hw = self._hw[segment] = max(self._hw.get(segment, 0.0), context)
        key = (segment, conversation)
        if key != self._key:
            self._close()
            self._key = key
            self._keep = self.seen % self.stride == 0
            self.seen += 1
            if self._keep:
                self.convs.append([])
        if self._keep:
            self.convs[-1].append(Row(iteration, t, conversation, context, hw, segment, value))
            self.total += 1

    def _close(self) -> None:
        if not self.convs:
            return
        if self.reduced:
            self.convs[-1] = self._two(self.convs[-1])
        if self.total > self.cap:
            if not self.reduced:
                self.reduced = True
                self.convs = [self._two(c) for c in self.convs]
            while sum(len(c) for c in self.convs) > self.cap:
                self.convs = self.convs[::2]
                self.stride *= 2
            self.total = sum(len(c) for c in self.convs)

    @staticmethod
    def _two(rows: list[Row]) -> list[Row]:
        """Floor, middle and peak (three rows: the within-conversation fit needs three)."""
        if len(rows) <= 3:
            return rows
        k = max(range(1, len(rows)), key=lambda j: rows[j].context)
        if k == 1:
            return [rows[0], rows[1]]
        return [rows[0], rows[k // 2 or 1], rows[k]]

    def rows(self) -> list[Row]:
        self._close()
        self._key = None
        return [r for c in self.convs for r in c]


def rows_for(samples: Sequence[tuple[int, dict]], iterations: dict, field: str, cap: int = 8192) -> list[Row]:
    """Join memory samples (segment, event) with their iteration's conversation and context (bounded: Accumulator)."""
    acc = Accumulator(cap)
    for seg, e in samples:
        it = e.get("iteration")
        info = iterations.get(it) if isinstance(it, int) else None
        v = e.get(field)
        if info is None or isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        conv, ctx = info
        t = e.get("t")
        acc.add(float(it), float(t) if isinstance(t, (int, float)) else None, conv, float(ctx), seg, float(v))
    return acc.rows()


def _mad(values: Sequence[float]) -> float:
    if not values:
        return 0.0
    m = median(values)
    return sum(abs(v - m) for v in values) / len(values)  # mean, not median: a minority of steps must count


def _fit(rows: list[Row], basis: str, confidence: float) -> Trend | None:
    if basis == "context":
        # within each conversation (context rises turn by turn, so x is in order)
        return trend([r.context for r in rows], [r.value for r in rows],
                     [(r.segment, r.conversation) for r in rows], confidence=confidence)
    # one point per plateau of the high-water mark (its median level): within a plateau the
    # model predicts a constant, so the samples there are repeats, not independent evidence
    plateaus: dict = {}
    for r in rows:
        plateaus.setdefault((r.segment, r.high_water), []).append(r.value)
    pts = sorted((seg, hw, median(v)) for (seg, hw), v in plateaus.items())
    return trend([p[1] for p in pts], [p[2] for p in pts], [p[0] for p in pts], confidence=confidence,
                 correct=False)


def floors(rows: list[Row]) -> list[Row]:
    """The first sample of every conversation (the level just after reset)."""
    out, seen = [], set()
    for r in rows:
        key = (r.segment, r.conversation)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def fit_context(rows: list[Row], expected: dict | None, confidence: float = 0.99) -> dict:
    """Which context model explains the series, its bytes per token with interval, and the residuals."""
    levels: dict = {}
    for r in rows:
        levels.setdefault(r.segment, []).append(r.value)
    level = {k: median(v) for k, v in levels.items()}
    flat_spread = _mad([r.value - level[r.segment] for r in rows])
    fits = {}
    for basis in ("context", "high_water"):
        tr = _fit(rows, basis, confidence)
        if tr is None or not math.isfinite(tr.slope):
            continue
        x = [r.context if basis == "context" else r.high_water for r in rows]
        res = [r.value - tr.slope * xi for r, xi in zip(rows, x)]
        # one level per worker segment, as for the flat model (a floor per conversation is not free)
        groups: dict = {}
        for r, v in zip(rows, res):
            groups.setdefault(r.segment, []).append(v)
        med = {k: median(v) for k, v in groups.items()}
        fits[basis] = (tr, res, _mad([v - med[r.segment] for r, v in zip(rows, res)]))
    # memory that grows with the context inside conversations is the context model, whatever else a
    # leak makes the high-water fit look like; a ratchet shows (almost) no growth below the high-water
    # mark, so its within-conversation slope is 0 and only the high-water model is left
    eligible = [k for k, (tr, _res, spread) in fits.items()
                if tr.slope_lo > 0 and tr.slope > 0 and spread <= BETTER_FIT * flat_spread]
    best = "context" if "context" in eligible else eligible[0] if eligible else "none"
    out = {"model": best, "spread_flat": flat_spread,
           "fits": {k: {"bytes_per_token": tr.slope, "lo": tr.slope_lo, "hi": tr.slope_hi, "spread": spread}
                    for k, (tr, _r, spread) in fits.items()}}
    if best != "none":
        tr = fits[best][0]
        out["bytes_per_token"] = {"value": tr.slope, "lo": tr.slope_lo, "hi": tr.slope_hi}
        if expected:
            e = expected["bytes_per_token"]
            out["kv_ratio"] = {"value": tr.slope / e, "lo": tr.slope_lo / e,
                               "hi": tr.slope_hi / e if math.isfinite(tr.slope_hi) else math.inf}
        out["residual"] = fits[best][1]
    return out


def floor_summary(rows: list[Row], warmup: int, first_only: bool = False) -> dict | None:
    """Level at each conversation start after warm-up: start, end and kept (with a min..max interval).

    The start is the median of the first few floors, or the first floor alone
    when a context model explains the rise (the second conversation may
    already sit on the first one's high-water mark)."""
    fl = [r for r in floors(rows) if r.iteration >= warmup]
    if len(fl) < 2:
        return None
    k = max(1, min(3, len(fl) // 4))
    first, last = [r.value for r in fl[:1 if first_only else k]], [r.value for r in fl[-k:]]
    return {"conversations": len(fl), "start": median(first), "end": median(last),
            "kept": median(last) - median(first),
            "kept_lo": min(last) - max(first), "kept_hi": max(last) - min(first),
            "first_iteration": fl[0].iteration, "last_iteration": fl[-1].iteration,
            "high_water_start": fl[0].high_water, "high_water_end": max(r.high_water for r in rows)}


def isotonic(groups: Sequence[Sequence[float]]) -> list[float]:
    """Non-decreasing fit, one level per group of values (groups in x order): pool-adjacent-violators,
    each pooled block at the median of all its values (an L1 fit: a transient spike moves a block's level
    by at most one rank, not by its size)."""
    blocks: list[tuple[list[float], int]] = []      # (values, groups pooled)
    for g in groups:
        blocks.append((list(g), 1))
        while len(blocks) > 1 and median(blocks[-2][0]) > median(blocks[-1][0]):
            vals, k = blocks.pop()
            blocks[-1] = (blocks[-1][0] + vals, blocks[-1][1] + k)
    out: list[float] = []
    for vals, k in blocks:
        out += [median(vals)] * k
    return out


def _rise_inside(vals: Sequence[float]) -> float:
    """The largest rise of the median after a split point over the median before it (values in time
    order; at most ~20 split points, and the last two)."""
    n = len(vals)
    if n < 2:
        return 0.0
    ks = sorted({max(1, min(n - 1, round(j * n / 20))) for j in range(1, 20)} | {n - 1, max(1, n - 2)})
    return max(0.0, max(median(vals[k:]) - median(vals[:k]) for k in ks))


def fit_steps(rows: list[Row]) -> dict | None:
    """The conversation floors as a non-decreasing step function of the longest context seen so far.

    Floors are pooled per (worker segment, high-water mark) first (the model predicts one level there),
    then fitted per segment with `isotonic`.  Returned: the steps (high-water mark where the level rose,
    bytes), the total rise, the largest rise inside one plateau of the high-water mark (a ratchet holds
    there; a step in time or a leak does not), the robust noise sd of the floors about the fit, and the mean absolute
    deviation of the floors about the step fit, a flat level, and a straight line over iterations (a leak);
    the caller decides (soak.analysis.memory_verdict)."""
    fl = floors(rows)
    if len(fl) < 4:
        return None
    by_seg: dict = {}
    for r in fl:
        by_seg.setdefault(r.segment, []).append(r)
    steps, dev_step, dev_flat, dev_line, noise = [], [], [], [], []
    rise = within = 0.0
    for seg, rs in by_seg.items():
        plateaus: dict = {}
        for r in rs:
            plateaus.setdefault(r.high_water, []).append(r.value)
        hws = sorted(plateaus)
        for vals in plateaus.values():
            within = max(within, _rise_inside(vals))
        fitted = isotonic([plateaus[h] for h in hws])
        level = dict(zip(hws, fitted))
        for k in range(1, len(hws)):
            if fitted[k] > fitted[k - 1]:
                steps.append({"segment": seg, "at_tokens": hws[k], "from_tokens": hws[k - 1],
                              "bytes": fitted[k] - fitted[k - 1]})
        rise += fitted[-1] - fitted[0]
        res = [r.value - level[r.high_water] for r in rs]
        dev_step += [abs(v) for v in res]
        # noise from the plateaus holding 3 floors or more (a lone floor sits on its own level, deviation 0)
        noise += [v for r, v in zip(rs, res) if len(plateaus[r.high_water]) >= 3]
        m = median(r.value for r in rs)
        dev_flat += [abs(r.value - m) for r in rs]
        if len(rs) >= 3:
            line = trend([r.iteration for r in rs], [r.value for r in rs], confidence=0.95, correct=False)
        else:
            line = None
        if line is not None and math.isfinite(line.slope):
            off = median(r.value - line.slope * r.iteration for r in rs)
            dev_line += [abs(r.value - off - line.slope * r.iteration) for r in rs]
        else:
            dev_line += [abs(r.value - m) for r in rs]
    n = len(fl)
    return {"floors": n, "steps": steps, "rise": rise, "within_plateau_rise": within,
            "noise_sd": 1.4826 * median(abs(v) for v in noise) if len(noise) >= 3 else None,
            "spread": {"steps": sum(dev_step) / n, "flat": sum(dev_flat) / n, "line": sum(dev_line) / n}}
