"""All verdicts of one run: memory, recovery, performance.  Writes verdicts.json.

`compute_verdicts(run_dir, baseline=None)` reads only the run folder (and the
baseline's), so it works on a finished run, a copied run or a bundle.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from soak.analysis.memory_verdict import LeakCriteria, memory_verdicts
from soak.analysis.perf import perf_verdicts
from soak.analysis.recovery_verdict import recovery_verdicts
from soak.analysis.runfolder import RunFolder

VERSION = 1


def compute_verdicts(run_dir: str | Path | RunFolder, baseline: str | Path | RunFolder | None = None,
                     criteria: LeakCriteria = LeakCriteria(), write: bool = True) -> dict:
    run = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir, slim=True)
    base = (None if baseline is None else baseline if isinstance(baseline, RunFolder)
            else RunFolder(baseline, slim=True))
    memory = memory_verdicts(run, criteria)
    recovery = recovery_verdicts(run, memory["after_recovery"])
    perf = perf_verdicts(run, base)
    verdicts = {
        "version": VERSION,
        "run_id": run.run_id,
        "iterations": run.iteration_count,
        "elapsed_s": run.elapsed_s,
        "memory": memory,
        "recovery": recovery,
        "perf": perf,
        "baseline_run_id": base.run_id if base is not None else None,
        "overall": {
            "leak": memory["leak"],
            "leaking_series": memory["leaking_series"],
            "recovery_rate": recovery["rate"],
            "recovery_score": recovery["score"],
            "perf_degrading": perf["degrading"],
            "tps_regression_pct": (perf["baseline"] or {}).get("tps_regression_pct"),
        },
    }
    verdicts = _finite(verdicts)
    if write:
        _write_json(run.path / "verdicts.json", verdicts)
    return verdicts


def _finite(obj):
    """JSON has no Infinity/NaN: open interval ends become null."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2, allow_nan=False, default=str) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # read-only run folder (e.g. an extracted bundle): verdicts still returned
