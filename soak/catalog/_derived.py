"""Faults the classifier derives from a whole run (no event of their own):
the silent CPU fallback from the manifest, memory growth (a leak) and memory
kept after reset (a ratchet or retained), tok/s rising while kernels fail
(research §6 M8), history past the model's context (§6 M7).

Memory is judged once, by soak.analysis.memory_verdict (the verdicts, `soak gate`
and `soak status` read the same judgment): here its verdicts only become findings."""

from __future__ import annotations

import statistics

# tok/s rising while kernels fail (research §6 M8)
_TPS_MIN_ITERS = 3
_TPS_RATIO = 1.25


def cpu_fallback(scan, requested, actual) -> None:
    if scan.has_cpu_fallback or not requested or not actual:
        return
    if requested != "cpu" and actual == "cpu":
        line = f"backend {requested} requested, {actual} used (load event / manifest)"
        scan.add_derived("cpu_fallback", "load", {"line": line, "backend_requested": requested}, [], {})


def memory_findings(scan, memory: dict | None) -> None:
    """soak.analysis.memory_verdict's judgment (`memory_verdicts(run)`) as findings: a `leak` is
    memory_growth; a `ratchet` or `retained` (memory not given back at reset) is memory_kept, one
    per resource, the ratchet first."""
    series = (memory or {}).get("series")
    if not isinstance(series, dict):
        return
    for res, names in (("host", ("rss", "pss", "uss")), ("gpu", ("gpu_live_bytes",))):
        leaking = [n for n in names if isinstance(series.get(n), dict) and series[n].get("verdict") == "leak"]
        if not leaking:
            _memory_kept(scan, res, names, series)
            continue
        v = series[leaking[0]]
        slope = (v.get("slope_per_iteration") or {}).get("value")
        extra = {"series": leaking, "start_bytes": v.get("start_level"), "end_bytes": v.get("end_level"),
                 "growth_bytes": v.get("growth_bytes"), "bytes_per_iteration": slope,
                 "source": "memory verdict"}
        its, infos = _span(scan, v)
        scan.add_derived("memory_growth", None, {"resource": res}, its, extra, count=1, infos=infos)


def _memory_kept(scan, res: str, names, series: dict) -> None:
    for shape in ("ratchet", "retained"):
        kept = [n for n in names if isinstance(series.get(n), dict) and series[n].get("verdict") == shape]
        if not kept:
            continue
        v = series[kept[0]]
        work = v.get("workload") or {}
        after = v.get("kept_after_reset") or {}
        extra = {"series": kept, "verdict": shape, "kept_bytes": after.get("bytes"),
                 "start_bytes": after.get("start"), "kept_fraction": after.get("fraction"),
                 "model": work.get("model"), "source": "memory verdict"}
        fl = work.get("floor") or {}
        if shape == "ratchet":
            extra["high_water_tokens"] = [fl.get("high_water_start"), fl.get("high_water_end")]
            if work.get("model") == "steps":
                extra["steps_at_tokens"] = [s.get("at_tokens") for s in (work.get("steps") or {}).get("significant", [])]
            else:
                extra["bytes_per_token"] = ((work.get("fit") or {}).get("bytes_per_token") or {}).get("value")
                extra["kv_ratio"] = ((work.get("fit") or {}).get("kv_ratio") or {}).get("value")
        its, infos = _span(scan, v)
        scan.add_derived("memory_kept", "reset", {"resource": res, "symptom": shape}, its,
                         extra, count=1, infos=infos)
        return


def _span(scan, verdict: dict) -> tuple[list[int], list]:
    """The first and last iteration of a trend over the whole run, with their (turn, context):
    the iterations the verdict's samples span, else the iterations read."""
    its = verdict.get("iterations")
    if isinstance(its, list) and len(its) == 2 and all(isinstance(i, int) for i in its):
        return its, [scan._info(its[0]), scan._info(its[1])]
    pts = scan.iteration_bounds or [(0, None)]
    return [pts[0][0], pts[-1][0]], [pts[0][1], pts[-1][1]]


def tps_up_with_errors(scan) -> None:
    """Medians over bounded samples (soak.analysis.streaming.Reservoir: every
    value up to its cap, so exact on all but very long runs)."""
    if len(scan.tps_err) < _TPS_MIN_ITERS or len(scan.tps_clean) < _TPS_MIN_ITERS:
        return
    err, clean = statistics.median(scan.tps_err.items), statistics.median(scan.tps_clean.items)
    if err >= _TPS_RATIO * clean:
        extra = {"decode_tps_with_errors": round(err, 2), "decode_tps_clean": round(clean, 2),
                 "iterations_with_errors": len(scan.tps_err)}
        scan.add_derived("perf_anomaly", "decode", {"symptom": "tps_up_with_errors"},
                         scan.err_iters, extra, ranges=scan.err_info)


def context_overflow(scan, max_context: int | None) -> None:
    if not max_context:
        return
    """From the iterations past max_context, collected as the scan read them
    (Scan(max_context=...)): a fault each, so kept."""
    if scan.over:
        last = dict(scan.over)  # an iteration read twice: its last record
        over = sorted(last)
        top = max(last.values())
        scan.add_derived("context_overflow", "prefill", {}, over,
                         {"max_context": max_context, "max_context_tokens_seen": top}, ranges=scan.over_info)
