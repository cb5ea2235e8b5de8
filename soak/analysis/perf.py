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

Against a baseline: medians after warm-up, `change_pct` = (run - base) / base.
For throughput a negative change is a regression; `tps_regression_pct`
is the decode tok/s drop in percent (positive = slower than the baseline).
"""

from __future__ import annotations

import math
from statistics import median

from soak.analysis.memory_verdict import LeakCriteria, warmup_iterations
from soak.analysis.runfolder import RunFolder
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
    for e in run.iterations:
        if not e.get("ok", True) or not isinstance(e.get("i"), int) or e["i"] < warm:
            continue
        v = _value(e, metric)
        if v is not None:
            out.append((e["i"], v))
    return out


def _tenth(values: list[float], last: bool) -> float:
    k = max(1, len(values) // 10)
    return median(values[-k:] if last else values[:k])


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
    span = rows[-1][0] - rows[0][0]
    out.update(median=median(values), start=start, end=end,
               retained_pct=(100.0 * end / start) if start else None,
               slope_per_iteration=tr.slope, slope_lo=tr.as_dict()["slope_lo"], slope_hi=tr.as_dict()["slope_hi"],
               p=tr.p, drift_pct=(100.0 * tr.slope * span / start) if start else None)
    worse = tr.decreasing if METRICS[metric] else tr.increasing
    better = tr.increasing if METRICS[metric] else tr.decreasing
    big = out["drift_pct"] is not None and abs(out["drift_pct"]) >= DRIFT_PCT
    out["verdict"] = "degrading" if worse and big else "improving" if better and big else "stable"
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


def perf_verdicts(run: RunFolder, baseline: RunFolder | None = None) -> dict:
    result = {"drift": {m: drift(run, m) for m in METRICS}}
    degrading = sorted(m for m, d in result["drift"].items() if d["verdict"] == "degrading")
    result["degrading"] = degrading
    result["baseline"] = compare(run, baseline) if baseline is not None else None
    return result
