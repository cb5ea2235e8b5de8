"""Performance drift over a run (throttling, fragmentation) and against a baseline run.

Series come from successful `iteration` events:
  decode_tps    generated tokens per second of decode
  prefill_tps   prompt tokens per second of prefill
  latency_s     wall time of the whole respond call (`wall_s`)
  ttft_s        prefill time (`prefill_us`), the time to the first token

Drift uses the same trend test as memory (Theil–Sen + corrected Mann–Kendall,
warm-up excluded) and states it as the change over the run in percent of
the starting level; `retained_pct` is the median of the last tenth of the
run over the median of the first tenth after warm-up (100 = no change).

Speed against context: decode gets slower as the context grows (attention
reads the whole KV cache), so a run whose later conversations are longer
looks like drift when it is not.  When iterations carry `context_tokens`,
decode time per token (1 / tok/s) and latency are fitted against the context
(Theil-Sen, with interval); drift is then judged on the residual, what the
context does not explain, over iterations.  Iterations past the model's
`max_position_embeddings` are left out of the fit and reported with their
tok/s against what the fit predicts there (the cliff).

A tok/s that jumps right after a GPU error is the forward having stopped (failed kernels return at
once), not a speed-up: the loop records it as a `forward_stopped` fault (soak.loop.runner), and the
decode drift verdict of such a run is `forward_stopped`, never `improving`.

Against a baseline: medians after warm-up, `change_pct` = (run - base) / base.
For throughput a negative change is a regression; `tps_regression_pct`
is the decode tok/s drop in percent (positive = slower than the baseline).
"""

from __future__ import annotations

import math
from statistics import median

from soak.analysis.memory_verdict import LeakCriteria, warmup_iterations
from soak.analysis.loaded_run import RunFolder
from soak.analysis.trend import trend

METRICS = {"decode_tps": True, "prefill_tps": True, "latency_s": False, "ttft_s": False}  # name -> higher is better
DRIFT_PCT = 5.0


def _value(e: dict, metric: str) -> float | None:
    if metric == "latency_s":
        v = e.get("wall_s")
    elif metric == "ttft_s":
        v = e.get("prefill_us")
        v = v / 1e6 if isinstance(v, (int, float)) and not isinstance(v, bool) else None
    else:
        v = e.get(metric)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    if metric.endswith("_tps") and v <= 0:
        return None
    return float(v)


def series(run: RunFolder, metric: str, skip_warmup: bool = True) -> list[tuple[int, float]]:
    warm = warmup_iterations(run.iteration_count, LeakCriteria()) if skip_warmup else 0
    out = []
    for e in run.iteration_series:
        if not e.get("ok", True) or not isinstance(e.get("i"), int) or e["i"] < warm:
            continue
        v = _value(e, metric)
        if v is not None:
            out.append((e["i"], v))
    return out


def _tenth(values: list[float], last: bool) -> float:
    k = max(1, len(values) // 10)
    return median(values[-k:] if last else values[:k])


CONTEXT_METRICS = ("decode_tps", "latency_s")


def _context_rows(run: RunFolder, metric: str, warm: int) -> list[tuple[int, float, float]]:
    """(iteration, context_tokens, y) with y = seconds per token for tok/s metrics, else the value."""
    out = []
    for e in run.iteration_series:
        if not e.get("ok", True) or not isinstance(e.get("i"), int) or e["i"] < warm:
            continue
        v, ctx = _value(e, metric), e.get("context_tokens")
        if v is None or isinstance(ctx, bool) or not isinstance(ctx, (int, float)):
            continue
        out.append((e["i"], float(ctx), 1.0 / v if metric.endswith("_tps") else v))
    return out


def context_fit(run: RunFolder, metric: str, confidence: float = 0.95) -> dict | None:
    """The metric as a function of context length, its residual drift, and the cliff past the model's context."""
    warm = warmup_iterations(run.iteration_count, LeakCriteria())
    rows = _context_rows(run, metric, warm)
    limit = (run.manifest.get("model") or {}).get("max_position_embeddings")
    limit = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0 else None
    inside = [r for r in rows if limit is None or r[1] <= limit]
    past = [r for r in rows if limit is not None and r[1] > limit]
    if len(inside) < 8 or len({r[1] for r in inside}) < 4:
        return None
    by_ctx = sorted(inside, key=lambda r: r[1])
    fit = trend([r[1] for r in by_ctx], [r[2] for r in by_ctx], confidence=confidence)
    if fit is None:
        return None
    tps = metric.endswith("_tps")
    slope = fit.slope if fit.slope_lo > 0 or fit.slope_hi < 0 else 0.0  # no context effect unless shown
    res = [r[2] - slope * r[1] for r in inside]
    level = median(res)
    out = {"unit": "s/token" if tps else "s", "per_1k_tokens": {"value": 1000 * fit.slope,
                                                                 "lo": 1000 * fit.slope_lo, "hi": 1000 * fit.slope_hi},
           "context_effect": slope != 0.0, "samples": len(inside), "context_range": [by_ctx[0][1], by_ctx[-1][1]]}
    at = [1000.0, float(by_ctx[-1][1])]
    out["predicted"] = {str(int(c)): ((1.0 / (level + slope * c)) if tps else level + slope * c) for c in at
                        if level + slope * c > 0}
    # the run at one reference context (the median): what the context does not explain
    ref = median(r[1] for r in inside)
    adjusted = [v + slope * ref for v in res]
    tr = trend([r[0] for r in inside], adjusted, confidence=confidence)
    k = max(3, len(adjusted) // 10)
    first, last = median(adjusted[:k]), median(adjusted[-k:])
    if tr is not None and first > 0 and last > 0:
        pct = 100.0 * (last - first) / first      # change in s/token (or s) at the reference context
        if tps:
            pct = 100.0 * (first / last - 1.0)    # as tok/s
        out["at_context"] = {"context": ref, "start": (1 / first) if tps else first, "end": (1 / last) if tps else last}
        out["residual_drift_pct"] = pct
        out["residual_p"] = tr.p
        worse, better = tr.increasing, tr.decreasing   # in s/token or s: up is worse
        big = abs(pct) >= DRIFT_PCT
        out["residual_verdict"] = "degrading" if worse and big else "improving" if better and big else "stable"
    if past:
        got = median(r[2] for r in past)
        want = level + slope * median(r[1] for r in past)
        out["past_context_limit"] = {
            "max_position_embeddings": limit, "iterations": len(past), "first_iteration": past[0][0],
            # > 1: slower than the context fit predicts (for tok/s: predicted / observed rate)
            "slowdown": (got / want) if want > 0 else None,
            "median": (1.0 / got) if tps and got > 0 else got,
        }
    return out


def drift(run: RunFolder, metric: str, confidence: float = 0.95) -> dict:
    rows = series(run, metric)
    out = {"metric": metric, "samples": len(rows)}
    if len(rows) < 8:
        out["verdict"] = "insufficient"
        if rows:
            out["median"] = median(v for _, v in rows)
        return out
    values = [v for _, v in rows]
    start, end = _tenth(values, False), _tenth(values, True)
    tr = trend([i for i, _ in rows], values, confidence=confidence)
    if tr is None:  # no two samples at different iterations (a damaged `i`): no slope to judge
        out.update(verdict="insufficient", median=median(values))
        return out
    span = rows[-1][0] - rows[0][0]
    out.update(median=median(values), start=start, end=end,
               retained_pct=(100.0 * end / start) if start else None,
               slope_per_iteration=tr.slope, slope_lo=tr.as_dict()["slope_lo"], slope_hi=tr.as_dict()["slope_hi"],
               p=tr.p, drift_pct=(100.0 * tr.slope * span / start) if start else None)
    worse = tr.decreasing if METRICS[metric] else tr.increasing
    better = tr.increasing if METRICS[metric] else tr.decreasing
    big = out["drift_pct"] is not None and abs(out["drift_pct"]) >= DRIFT_PCT
    out["verdict"] = "degrading" if worse and big else "improving" if better and big else "stable"
    if metric in CONTEXT_METRICS:
        ctx = context_fit(run, metric, confidence)
        if ctx is not None:
            out["context"] = ctx
            if ctx["context_effect"] and "residual_verdict" in ctx:
                # judged on what the context does not explain
                out["verdict_raw"], out["drift_pct_raw"] = out["verdict"], out["drift_pct"]
                out["verdict"], out["drift_pct"] = ctx["residual_verdict"], ctx["residual_drift_pct"]
    return out


def compare(run: RunFolder, baseline: RunFolder) -> dict:
    out = {"baseline_run_id": baseline.run_id, "metrics": {}}
    for metric, higher_better in METRICS.items():
        a = [v for _, v in series(run, metric)]
        b = [v for _, v in series(baseline, metric)]
        if not a or not b:
            continue
        ma, mb = median(a), median(b)
        change = 100.0 * (ma - mb) / mb if mb else None
        out["metrics"][metric] = {"run": ma, "baseline": mb, "change_pct": change,
                                  "regression": (change is not None and (change < 0 if higher_better else change > 0))}
    d = out["metrics"].get("decode_tps")
    out["tps_regression_pct"] = (-d["change_pct"]) if d and d["change_pct"] is not None else None
    return out


def forward_stops(run: RunFolder) -> list[dict]:
    """The run's forward_stopped faults: decode sped up right after a GPU error."""
    keep = ("iteration", "decode_tps", "baseline_tps", "speedup", "after_iteration", "after_error")
    return [{k: e.get(k) for k in keep} for e in run.faults if e.get("kind") == "forward_stopped"]


def perf_verdicts(run: RunFolder, baseline: RunFolder | None = None) -> dict:
    result = {"drift": {m: drift(run, m) for m in METRICS}}
    stops = forward_stops(run)
    result["forward_stopped"] = stops
    dec = result["drift"]["decode_tps"]
    if stops and dec.get("verdict") in ("improving", "stable"):   # a jump after a GPU error is no speed-up
        dec["verdict_raw"] = dec.get("verdict_raw", dec["verdict"])
        dec["verdict"] = "forward_stopped"
    degrading = sorted(m for m, d in result["drift"].items() if d["verdict"] == "degrading")
    result["degrading"] = degrading
    result["baseline"] = compare(run, baseline) if baseline is not None else None
    return result
