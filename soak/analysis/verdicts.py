"""All verdicts of one run: memory, recovery, performance, the oracle.  Writes verdicts.json.

`compute_verdicts(run_dir, baseline=None)` reads only the run folder (and the
baseline's), so it works on a finished run, a copied run or a bundle.
"""

from __future__ import annotations

import math
from pathlib import Path

from soak.analysis.memory_verdict import LeakCriteria, memory_verdicts
from soak.analysis.oracle_verdict import oracle_line, oracle_verdict
from soak.analysis.perf import perf_verdicts
from soak.analysis.recovery_verdict import recovery_verdicts
from soak.analysis.loaded_run import RunFolder
from soak.run_folder import VERDICTS, finite, write_json

VERSION = 1


def compute_verdicts(run_dir: str | Path | RunFolder, baseline: str | Path | RunFolder | None = None,
                     criteria: LeakCriteria = LeakCriteria(), write: bool = True) -> dict:
    run = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    base = (None if baseline is None else baseline if isinstance(baseline, RunFolder)
            else RunFolder(baseline))
    memory = memory_verdicts(run, criteria)
    recovery = recovery_verdicts(run, memory["after_recovery"])
    perf = perf_verdicts(run, base)
    oracle = oracle_verdict(run)
    verdicts = {
        "version": VERSION,
        "run_id": run.run_id,
        "iterations": run.iteration_count,
        "elapsed_s": run.elapsed_s,
        "memory": memory,
        "recovery": recovery,
        "perf": perf,
        "oracle": oracle,     # None: the run was not checked against a reference
        "baseline_run_id": base.run_id if base is not None else None,
        "overall": {
            "leak": memory["leak"],
            "leaking_series": memory["leaking_series"],
            "recovery_rate": recovery["rate"],
            "recovery_score": recovery["score"],
            "perf_degrading": perf["degrading"],
            "tps_regression_pct": (perf["baseline"] or {}).get("tps_regression_pct"),
            "oracle_checked": oracle["checked"] if oracle else None,
            "oracle_wrong": oracle["wrong"] + oracle["nonfinite"] if oracle else None,
            "oracle_drift": oracle["drift"]["verdict"] if oracle else None,
        },
    }
    verdicts = finite(verdicts)
    if write:
        write_json(run.path / VERDICTS, verdicts)
    return verdicts


NAMES = {"rss": "RSS", "uss": "USS", "pss": "PSS", "gpu_live_bytes": "GPU bytes"}


def _b(n: float | None, sign: bool = False) -> str:
    if n is None or not math.isfinite(n):
        return "?"
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= f:
            return f"{n / f:{'+' if sign else ''}.{1 if abs(n) / f < 100 else 0}f} {unit}"
    return f"{n:{'+' if sign else ''}.0f} B"


def _per_token(fit: dict, expected: dict | None = None) -> str:
    b = fit.get("bytes_per_token") or {}
    text = f"{_b(b.get('value'))}/token [{_b(b.get('lo'))}, {_b(b.get('hi'))}]"
    ratio = (fit.get("kv_ratio") or {}).get("value")
    if ratio is None:
        return text
    text += f", KV growth {ratio:.{1 if ratio < 10 else 0}f}x expected"
    if expected and expected.get("bytes_per_token"):     # the model's own theory, per size
        text += (f" ({_b(expected['bytes_per_token'])}/token: {expected.get('layers')} layers x "
                 f"{expected.get('kv_heads')} KV heads x {expected.get('head_dim')} dims x K+V x "
                 f"{'fp32' if expected.get('dtype_bytes') == 4 else 'fp16'})")
    return text


def memory_line(field: str, v: dict) -> str | None:
    """One line per memory series: the verdict and what explains it."""
    verdict = v.get("verdict")
    if verdict in (None, "no_data"):
        return None
    name = NAMES.get(field, field)
    if verdict == "insufficient":
        return f"{name}: not judged ({v.get('samples', 0)} samples)"
    work = v.get("workload") or {}
    fit = work.get("fit") or {}
    kept = (v.get("kept_after_reset") or {}).get("bytes")
    if verdict == "ratchet" and work.get("model") == "steps":
        at = ", ".join(f"~{s['at_tokens'] / 1000:.1f}k" for s in (work.get("steps") or {}).get("significant", []))
        return f"{name}: ratchet, {_b(kept, True)} kept after reset, follows the longest context (steps at {at} tokens)"
    if verdict == "ratchet":
        return (f"{name}: ratchet, {_b(kept, True)} kept after reset, follows the longest context "
                f"({_per_token(fit, work.get('expected_kv'))})")
    if verdict == "leak":
        res = (work.get("residual") or {}).get("slope_per_iteration") if work.get("model") not in (None, "none") \
            else v.get("slope_per_iteration")
        res = res or {}
        beyond = " beyond the context" if work.get("model") not in (None, "none") else ""
        return (f"{name}: leak, {_b(res.get('value'), True)}/iteration [{_b(res.get('lo'))}, {_b(res.get('hi'))}]"
                f"{beyond}, {_b(kept, True)} kept after reset")
    if verdict == "retained":
        frac = (v.get("kept_after_reset") or {}).get("fraction") or 0
        return f"{name}: retained, {_b(kept, True)} ({100 * frac:.0f}%) not given back at reset, not explained by the context"
    text = f"{name}: {verdict.replace('_', ' ')}"
    if work.get("model") == "context":
        text += f", grows with the context and comes back at reset ({_per_token(fit, work.get('expected_kv'))})"
    elif kept is not None:
        text += f", {_b(kept, True)} kept after reset"
    return text


def speed_line(perf: dict) -> str | None:
    d = (perf.get("drift") or {}).get("decode_tps") or {}
    stops = perf.get("forward_stopped") or []
    if stops:
        s = stops[0]
        more = f" (and {len(stops) - 1} more)" if len(stops) > 1 else ""
        return (f"decode: FORWARD STOPPED after {s.get('after_error')} at iteration {s.get('after_iteration')}: "
                f"{s.get('decode_tps')} tok/s at iteration {s.get('iteration')}, {s.get('speedup')}x the "
                f"{s.get('baseline_tps')} tok/s before it, is skipped work, not a speed-up{more}")
    if not d or d.get("verdict") == "insufficient":
        return None
    text = f"decode: {d['verdict']}"
    ctx = d.get("context")
    if ctx and ctx.get("context_effect"):
        pred = ctx.get("predicted") or {}
        at = " -> ".join(f"{v:.0f} tok/s at {int(k)} tokens" for k, v in pred.items())
        text += f", {at}"
    elif d.get("median") is not None:
        text += f", {d['median']:.0f} tok/s median"
    at = (ctx or {}).get("at_context")
    if d.get("drift_pct") is not None and at and "verdict_raw" in d and d["verdict"] != "stable":
        text += (f"; at {int(at['context'])} tokens of context {at['start']:.0f} -> {at['end']:.0f} tok/s "
                 f"({d['drift_pct']:+.1f}%) over the run")
    elif d.get("drift_pct") is not None and d["verdict"] != "stable":
        text += f"; {d['drift_pct']:+.1f}% over the run"
    past = (ctx or {}).get("past_context_limit")
    if past:
        text += (f"; PAST max_position_embeddings {past['max_position_embeddings']}: {past['iterations']} iterations "
                 f"from {past['first_iteration']}, {past['median']:.0f} tok/s, "
                 f"{past['slowdown']:.1f}x slower than the context predicts")
    return text


def summary_lines(verdicts: dict) -> list[str]:
    """The console's verdict lines: one per memory series with data, one for speed, one for the oracle."""
    series = (verdicts.get("memory") or {}).get("series") or {}
    lines = [line for f, v in series.items() if (line := memory_line(f, v))]
    sl = speed_line(verdicts.get("perf") or {})
    ol = oracle_line(verdicts.get("oracle"))
    return lines + [x for x in (sl, ol) if x]
