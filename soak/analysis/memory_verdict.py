"""Memory-growth verdicts: host RSS, USS, PSS and GPU live bytes.

For each series of `memory` events the verdict is one of
  leak          the series rises: the modified Mann–Kendall test finds an
                increasing trend and the Theil–Sen interval lies above zero,
                or the path is monotone (rises in at least a quarter of the steps,
                at least 5, and the drops add up to at most a tenth of the
                rises, see below); the growth over the
                analysed span is material (`LeakCriteria`), and it is sustained:
                the slope of the last half is at least half the overall slope;
  growth_stopped  a significant rise that did not go on (a step: a cache or
                pool that grew once and then held); reported, not a leak;
  ratchet       the level follows the longest context seen so far and is not
                given back at reset (soak.analysis.context_model): linearly
                (KV bytes per token) or in steps (a pool that jumps at context
                thresholds and keeps its high-water mark, `step_ratchet`): one
                long conversation costs its memory for good;
  retained      growth of at least `kept_fraction` (20 %) of the starting
                level that reset does not give back and that neither a
                trend nor the context explains (never "stable");
  stable        no such trend (or growth too small to matter);
  decreasing    a significant downward trend;
  insufficient  too few samples after warm-up;
  no_data       the series was never sampled (e.g. GPU bytes without the interposer).

The LLM workload first: when iterations carry `conversation` and
`context_tokens`, each series is also fitted against the context
(soak.analysis.context_model): floors at conversation starts, growth per
context token against the model's KV bytes per token, and the residual trend
once both are removed.  That verdict replaces the one-series verdict
(`verdict_one_series`, kept for comparison) when a context model fits;
otherwise the one-series verdict stands.  Either way the 20 % rule applies.

Warm-up (model load, first KV-cache allocations, allocator arenas filling)
is excluded: the first `warmup_fraction` of the run's iterations (at least
`warmup_min`, at most `warmup_max`), and the first samples of every later
segment.  Segments start at every worker start and every `recovery` event, so
a reload or restart that resets the level is neither read as a fall nor
hides a leak that starts over (see soak.analysis.trend).

Why the monotone path rule: a malloc leak often hides in free heap at
first and then grows page by page (flat, then a ramp: a hockey stick).
Detrended with one line, that curve looks like strong autocorrelation, and
the corrected test, rightly unable to tell a smooth curve from a slow random
walk by shape alone, loses it.  Noise of any correlation goes down about as
much as it goes up, and so does a sawtooth allocator; a leak never gives
memory back.  So a series whose drops add up to at most 10 % of its rises
(rising in at least a quarter of its steps) is rising whatever its
autocorrelation.  A single step (a pool that grew once) has too few rises,
and a step followed by a plateau fails the "sustained" check.  PSS needs the
"quarter of the steps" part: it also rises when *other* processes that
share pages with the worker exit (the share is split fewer ways), a few
monotone steps that are no leak; a leak rises at most steps.

The slope is given per iteration (x = iteration index) and per hour
(x = `t`, seconds since the run started), each with its interval.

`after_recovery` checks each `recovery` event: the level just after it
against the level before it (memory given back) and against the level at the
start of the run after warm-up (memory came back).
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass
from statistics import median

from soak.analysis.context_model import BETTER_FIT, expected_kv_bytes_per_token, fit_context, fit_steps, floor_summary, floors, rows_for
from soak.analysis.loaded_run import RunFolder
from soak.analysis.trend import trend
from soak.errors import BadInput

SERIES = ("rss", "uss", "pss", "gpu_live_bytes")
RESIDUAL_SIGMAS = 4.0     # a residual leak grows by at least this many noise sd over the run
STEP_SIGMAS = 4.0         # a ratchet's step is at least this many noise sd of the floors about the step fit
STEP_WITHIN = 0.25        # ...and the floors rise inside a plateau of the high-water mark by at most this share of the steps
FLOOR_CONFIDENCE = 0.95   # the floor's confirmation of a residual leak (a second, mostly independent test)
MIB = 1 << 20


@dataclass(frozen=True)
class LeakCriteria:
    confidence: float = 0.99          # of the trend test and of the slope interval
    min_growth_bytes: float = 256 * 1024  # growth over the analysed span that counts as a leak...
    min_growth_fraction: float = 0.0   # ...and as a fraction of the starting level
    min_samples: int = 8
    warmup_fraction: float = 0.1
    warmup_min: int = 3
    warmup_max: int = 500
    segment_warmup: int = 2            # samples dropped at the start of each later segment
    monotone_min_rises: int = 5        # the monotone path rule (module docstring)...
    monotone_min_rise_fraction: float = 0.25  # ...rises in at least this share of the steps
    monotone_max_drop_ratio: float = 0.1
    return_tolerance_bytes: float = 4 * MIB   # "came back": within this of the start level...
    return_tolerance_fraction: float = 0.05   # ...or this fraction of it
    kept_fraction: float = 0.2         # kept after reset, of the starting level: never "stable"


def warmup_iterations(total_iterations: int, c: LeakCriteria) -> int:
    w = math.ceil(total_iterations * c.warmup_fraction)
    return int(min(c.warmup_max, max(c.warmup_min, w)))


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _samples(run: RunFolder) -> list[tuple[int, dict]]:
    """(segment, memory event) in file order; segment counts worker starts and recoveries.
    Bounded whatever the run length (RunFolder.memory_samples)."""
    return run.memory_samples


def in_progress(iterations: list[dict]):
    """seq -> the iteration in progress at that point of the file: one past the last iteration
    event before it (0 before the first).  For samples that carry no iteration (timer samples: a
    long cold kernel build takes minutes inside the first respond), so that warm-up and the
    iterations a trend spans count iterations, not samples.  Over a thinned series, the nearest
    iteration kept before it."""
    pts = sorted((e["seq"], e["i"]) for e in iterations
                 if isinstance(e.get("seq"), int) and isinstance(e.get("i"), int))
    seqs = [p[0] for p in pts]

    def at(seq) -> int:
        k = bisect.bisect_left(seqs, seq) if isinstance(seq, int) else len(seqs)
        return pts[k - 1][1] + 1 if k > 0 else 0
    return at


def _select(samples: list[tuple[int, dict]], field: str, warmup: int, c: LeakCriteria, at=None):
    """Analysed (segment, iteration, t, value, iteration in progress) after warm-up, plus
    excluded count.  `at(seq)`: the iteration in progress of a sample without one (in_progress)."""
    by_iter = [s for s in samples if s[1].get("source") == "iteration"]
    pool = by_iter if sum(_num(e.get(field)) is not None for _, e in by_iter) >= c.min_samples else samples
    rows = [(seg, _num(e.get("iteration")), _num(e.get("t")), _num(e.get(field)), e.get("seq")) for seg, e in pool]
    rows = [(seg, it, t, v, it if it is not None or at is None else at(seq))
            for seg, it, t, v, seq in rows if v is not None]
    if not rows:
        return [], 0
    first_seg = rows[0][0]
    kept, seen_in_seg = [], {}
    for seg, it, t, v, now in rows:
        if now is not None and now < warmup:
            continue
        if seg != first_seg:
            seen_in_seg[seg] = seen_in_seg.get(seg, 0) + 1
            if seen_in_seg[seg] <= c.segment_warmup:
                continue
        kept.append((seg, it, t, v, now))
    return kept, len(rows) - len(kept)


def _interval(tr, scale: float = 1.0) -> dict:
    def f(v):
        return None if v is None or not math.isfinite(v) else v * scale
    return {"value": f(tr.slope), "lo": f(tr.slope_lo), "hi": f(tr.slope_hi)}


def series_verdict(run: RunFolder, field: str, c: LeakCriteria = LeakCriteria(),
                   samples: list | None = None, iterations: dict | None = None,
                   expected: dict | None = None) -> dict:
    samples = _samples(run) if samples is None else samples
    iterations = _iterations(run) if iterations is None else iterations
    if not any(_num(e.get(field)) is not None for _, e in samples):
        return {"series": field, "verdict": "no_data", "samples": 0}
    warmup = warmup_iterations(run.iteration_count, c)
    rows, excluded = _select(samples, field, warmup, c, in_progress(run.iteration_series))
    out = {"series": field, "samples": len(rows), "warmup_excluded": excluded, "warmup_iterations": warmup}
    placed = [r[4] for r in rows if r[4] is not None]
    if placed:  # the iterations the analysed samples span (a finding's range), never sample numbers
        last = max((e["i"] for e in run.iteration_series if isinstance(e.get("i"), int)), default=None)
        lo, hi = int(min(placed)), int(max(placed))  # a sample after the last iteration: at the last
        out["iterations"] = [lo, hi] if last is None else [min(lo, last), min(hi, last)]
    if len(rows) < c.min_samples:
        out["verdict"] = "insufficient"
        return out
    values = [r[3] for r in rows]
    start_level = median(values[: max(1, min(10, len(values) // 10 or 1))])
    out["start_level"] = start_level
    out["end_level"] = median(values[-max(1, min(10, len(values) // 10 or 1)):])
    out["peak"] = max(values)
    it_rows = [r for r in rows if r[1] is not None]
    tr = trend([r[1] for r in it_rows], [r[3] for r in it_rows], [r[0] for r in it_rows],
               confidence=c.confidence) if len(it_rows) >= c.min_samples else None
    t_rows = [r for r in rows if r[2] is not None]
    tr_h = trend([r[2] / 3600.0 for r in t_rows], [r[3] for r in t_rows], [r[0] for r in t_rows],
                 confidence=c.confidence) if len(t_rows) >= c.min_samples else None
    main = tr or tr_h
    if main is None:
        out["verdict"] = "insufficient"
        return out
    if tr is not None:
        span = (it_rows[-1][1] - it_rows[0][1])
        out["slope_per_iteration"] = _interval(tr)
        out["span_iterations"] = span
    if tr_h is not None:
        out["slope_per_hour"] = _interval(tr_h)
        out["span_hours"] = (t_rows[-1][2] - t_rows[0][2]) / 3600.0
    out["test"] = {"method": "Mann-Kendall, Hamed-Rao corrected; Theil-Sen slope",
                   "p": main.p, "z": main.z, "s": main.s, "inflation": main.inflation,
                   "confidence": main.confidence, "points": main.n}
    growth = main.slope * (out.get("span_iterations") if tr is not None else out.get("span_hours", 0.0))
    out["growth_bytes"] = growth
    use = it_rows if tr is not None else t_rows
    # x in the units `main` was fitted in (hours for time): decide() compares the late half's slope with it
    x = [r[1] for r in use] if tr is not None else [r[2] / 3600.0 for r in use]
    out["verdict"] = decide(main, growth, start_level, x, [r[3] for r in use], [r[0] for r in use], c)
    out["verdict_one_series"] = out["verdict"]
    work = workload_verdict(samples, iterations, field, warmup, c, expected)
    if work is not None:
        out["workload"] = work
        if work["verdict"] is not None:
            out["verdict"] = work["verdict"]
    kept_rule(out, c)
    return out


def _iterations(run: RunFolder) -> dict:
    """iteration index -> (conversation, context_tokens), for iterations that carry both."""
    out = {}
    for e in run.iteration_series:
        i, ctx = e.get("i"), _num(e.get("context_tokens"))
        if isinstance(i, int) and ctx is not None and e.get("conversation") is not None:
            out[i] = (e["conversation"], ctx)
    return out


def workload_verdict(samples, iterations: dict, field: str, warmup: int, c: LeakCriteria,
                     expected: dict | None) -> dict | None:
    """The series against the LLM workload (soak.analysis.context_model), or None without one.

    verdict: "leak" when the residual (what the context model leaves) rises;
    "ratchet" when the level follows the longest context seen and is not given
    back at reset; None to keep the one-series verdict (no context model fits).
    """
    rows = rows_for([s for s in samples if s[1].get("source") == "iteration"], iterations, field)
    if len(rows) < c.min_samples or len({(r.segment, r.conversation) for r in rows}) < 2:
        return None
    fit = fit_context(rows, expected, c.confidence)
    residual = fit.pop("residual", None)
    out = {"model": fit["model"], "fit": fit, "expected_kv": expected, "verdict": None}
    fl = floor_summary(rows, 0 if fit["model"] != "none" else warmup, first_only=fit["model"] != "none")
    out["floor"] = fl
    if residual is None:
        if step_ratchet(rows, out, c):
            out["verdict"] = "ratchet"
        return out
    keep = [k for k, r in enumerate(rows) if r.iteration >= min(warmup, c.warmup_min)]
    x = [rows[k].iteration for k in keep]
    y = [residual[k] for k in keep]
    segs = [(rows[k].segment, rows[k].high_water) if fit["model"] == "high_water" else rows[k].segment
            for k in keep]
    tr = trend(x, y, segs, confidence=c.confidence) if len(x) >= c.min_samples else None
    start = fl["start"] if fl else rows[0].value
    if tr is None:
        verdict = "stable"
    else:
        span = x[-1] - x[0]
        growth = tr.slope * span
        out["residual"] = {"slope_per_iteration": {"value": tr.slope, "lo": tr.slope_lo, "hi": tr.slope_hi},
                           "growth_bytes": growth, "p": tr.p, "inflation": tr.inflation, "points": tr.n,
                           "segments": "high-water plateaus" if fit["model"] == "high_water" else "worker segments"}
        verdict = decide(tr, growth, start, x, y, segs, c)
        if verdict == "decreasing":
            verdict = "stable"
        if verdict == "leak":
            # growth the residual's own wander could make is no leak: at least RESIDUAL_SIGMAS robust
            # standard deviations of the detrended residual (an AR(1) wobble once the sawtooth is gone)
            detr = [yi - tr.slope * xi for xi, yi in zip(x, y)]
            by_seg: dict = {}
            for sg, v in zip(segs, detr):
                by_seg.setdefault(sg, []).append(v)
            mids = {sg: median(v) for sg, v in by_seg.items()}
            sd = 1.4826 * median(abs(v - mids[sg]) for sg, v in zip(segs, detr))
            out["residual"]["noise_sd"] = sd
            if growth < RESIDUAL_SIGMAS * sd:
                verdict = "stable"
        if verdict == "leak" and fit["model"] != "high_water":
            # a leak also lifts the floor: confirm on the conversation starts (fewer, less correlated points).
            # Not for the high-water model: its residual was already tested inside each plateau of the
            # high-water mark, where a ratchet holds still and only a leak grows; a plateau holds one or
            # two conversation starts, too few for a second test (a 1 MiB/call leak was called a ratchet)
            first = {}
            for k in keep:
                first.setdefault((rows[k].segment, rows[k].conversation), k)
            fk = sorted(first.values())
            ftr = trend([rows[k].iteration for k in fk], [residual[k] for k in fk],
                        [segs[keep.index(k)] for k in fk], confidence=FLOOR_CONFIDENCE) if len(fk) >= 4 else None
            out["residual"]["floor_confirms"] = bool(ftr is not None and ftr.increasing)
            if not out["residual"]["floor_confirms"]:
                verdict = "stable"
    if verdict != "leak" and fit["model"] == "high_water":
        b = fit["bytes_per_token"]
        rise = rows[-1].high_water - rows[0].high_water
        out["ratchet_bytes"] = {"value": b["value"] * rise, "lo": b["lo"] * rise,
                                "hi": b["hi"] * rise if math.isfinite(b["hi"]) else None}
        kept = fl["kept"] if fl else b["value"] * rise
        if kept >= c.min_growth_bytes or b["value"] * rise >= c.min_growth_bytes:
            verdict = "ratchet"
    if verdict not in ("leak", "ratchet") and step_ratchet(rows, out, c):
        verdict = "ratchet"
    out["verdict"] = verdict
    return out


def step_ratchet(rows, out: dict, c: LeakCriteria) -> bool:
    """A floor that follows the longest context in steps (soak.analysis.context_model.fit_steps): a ratchet.

    All of: steps of at least STEP_SIGMAS noise sd of the floors (and `min_growth_bytes`) adding up to
    at least `kept_fraction` of the first floor; no rise inside one plateau of the high-water mark of more
    than STEP_WITHIN of those steps (a lasting step in time lands inside a plateau: it does not follow
    the context, it is "retained"); and the step fit explains the floors: its mean absolute
    deviation is at most BETTER_FIT of a flat level's and of a straight line's over iterations (a leak
    rises inside the plateaus of the high-water mark too, where a ratchet holds).  On success `out`
    becomes the step model: model "steps", the steps, and the floors from the first conversation."""
    st = fit_steps(rows)
    if st is None or st["noise_sd"] is None:
        return False
    out["steps"] = st
    big = [s for s in st["steps"] if s["bytes"] >= max(STEP_SIGMAS * st["noise_sd"], c.min_growth_bytes)]
    first = floors(rows)[0].value
    total = sum(s["bytes"] for s in big)
    sp = st["spread"]
    st["significant"] = big
    st["significant_bytes"] = total
    if not big or total < c.kept_fraction * abs(first) or st["within_plateau_rise"] > STEP_WITHIN * total \
            or sp["steps"] > BETTER_FIT * min(sp["flat"], sp["line"]):
        return False
    out["model"] = "steps"
    out["floor"] = floor_summary(rows, 0, first_only=True)
    return True


def kept_rule(out: dict, c: LeakCriteria) -> None:
    """Growth of at least `kept_fraction` of the starting level that reset does not give back is never stable."""
    fl = (out.get("workload") or {}).get("floor")
    if fl:
        start, kept, where = fl["start"], fl["kept"], "at conversation starts"
    elif "start_level" in out:
        start, kept, where = out["start_level"], out["end_level"] - out["start_level"], "end vs start level"
    else:
        return
    out["kept_after_reset"] = {"bytes": kept, "start": start, "fraction": (kept / start) if start else None,
                               "measured": where}
    if out["verdict"] in ("stable", "growth_stopped", "decreasing") and kept >= c.min_growth_bytes \
            and start > 0 and kept >= c.kept_fraction * start:
        out["verdict"] = "retained"


def monotone_path(y, segs, c: LeakCriteria) -> bool:
    """At least `monotone_min_rises` rises, and drops summing to at most `monotone_max_drop_ratio` of the rises."""
    rises = rise_sum = drop_sum = 0.0
    for i in range(1, len(y)):
        if segs[i] != segs[i - 1]:
            continue
        d = y[i] - y[i - 1]
        if d > 0:
            rises += 1
            rise_sum += d
        elif d < 0:
            drop_sum -= d
    steps = max(1, len(y) - 1)
    return (rises >= max(c.monotone_min_rises, c.monotone_min_rise_fraction * steps) and rise_sum > 0
            and drop_sum <= c.monotone_max_drop_ratio * rise_sum)


def decide(main, growth: float, start_level: float, x, y, segs, c: LeakCriteria) -> str:
    """The verdict rule (module docstring), shared with the synthetic benchmark."""
    if main.decreasing:
        return "decreasing"
    material = growth >= c.min_growth_bytes and growth >= c.min_growth_fraction * abs(start_level)
    rising = main.increasing or (main.slope > 0 and monotone_path(y, segs, c))
    if not (rising and material):
        return "stable"
    half = len(x) // 2
    late = trend(x[half:], y[half:], segs[half:], confidence=c.confidence)
    if late is not None and late.slope < 0.5 * main.slope:
        return "growth_stopped"
    return "leak"


class _BySeq:
    """The samples of one field, ordered by `seq`, for nearest-before/after look-ups in O(log n)."""

    def __init__(self, samples: list[tuple[int, dict]], field: str):
        pairs = sorted((e.get("seq", -1), v) for _, e in samples if (v := _num(e.get(field))) is not None)
        self.seqs = [p[0] for p in pairs]
        self.values = [p[1] for p in pairs]

    def before(self, seq: int) -> float | None:
        k = bisect.bisect_left(self.seqs, seq)
        return self.values[k - 1] if k > 0 else None

    def after(self, seq: int) -> float | None:
        k = bisect.bisect_right(self.seqs, seq)
        return self.values[k] if k < len(self.values) else None


def after_recovery(run: RunFolder, verdicts: dict, c: LeakCriteria = LeakCriteria(),
                   samples: list | None = None) -> list[dict]:
    samples = _samples(run) if samples is None else samples
    index = {field: _BySeq(samples, field) for field in SERIES}
    out = []
    for rec in run.recoveries:
        seq = rec.get("seq", -1)
        entry = {"iteration": rec.get("iteration"), "recovered_by": rec.get("recovered_by"),
                 "trigger": rec.get("trigger"), "series": {}}
        for field in SERIES:
            before = index[field].before(seq)
            after = index[field].after(seq)
            if field == "rss":
                before = _num(rec.get("rss_before")) if _num(rec.get("rss_before")) is not None else before
                after = _num(rec.get("rss_after")) if _num(rec.get("rss_after")) is not None else after
            if before is None or after is None:
                continue
            base = (verdicts.get(field) or {}).get("start_level")
            item = {"before": before, "after": after, "given_back": before - after}
            if base is not None:
                tol = max(c.return_tolerance_bytes, c.return_tolerance_fraction * abs(base))
                item["start_level"] = base
                item["returned"] = after <= base + tol
            entry["series"][field] = item
        out.append(entry)
    return out


def memory_verdicts(run: RunFolder, c: LeakCriteria = LeakCriteria()) -> dict:
    samples = _samples(run)
    iterations = _iterations(run)
    try:
        expected = expected_kv_bytes_per_token(run.manifest.get("model"), run.backend_actual or run.backend_requested)
    except BadInput:  # a damaged manifest.json: judged without the model's KV size (the classifier reads such runs)
        expected = None
    series = {f: series_verdict(run, f, c, samples, iterations, expected) for f in SERIES}
    rec = after_recovery(run, series, c, samples)
    checked = [s.get("returned") for r in rec for s in r["series"].values() if "returned" in s]
    leaking = sorted(f for f, v in series.items() if v["verdict"] == "leak")
    kept = sorted(f for f, v in series.items() if v["verdict"] in ("ratchet", "retained"))
    return {
        "series": series,
        "leak": bool(leaking),
        "leaking_series": leaking,
        "kept_series": kept,
        "expected_kv": expected,
        "after_recovery": rec,
        "returned_after_recovery": (all(checked) if checked else None),
        "criteria": {k: getattr(c, k) for k in c.__dataclass_fields__},
    }
