"""Recovery verdicts: per fault kind, which ladder step recovered it, how often, how fast.

Reads the `recovery` events the runner writes after a failure:
`trigger` (fault kinds), `steps` [{step, ok, duration_s}] in ladder order,
`recovered_by` (step name or null), `duration_s`, `rss_before`, `rss_after`.

Recovery score of a run (0..100): the mean over recovery attempts of

    0                      not recovered by any step
    1 / 2**k               recovered by the k-th step of the ladder (0 = cheapest,
                           e.g. reset 1, reinit 0.5, reload 0.25, restart 0.125)
    x 0.5                  when memory did not come back afterwards

so a run whose faults are all cleared by a plain reset, with memory given
back, scores 100; a run that needs worker restarts scores about 12.
A run with no recovery attempt has no score (None), not 100.
"""

from __future__ import annotations

from statistics import median

from soak.analysis.loaded_run import RunFolder
from soak.end_reasons import UNRECOVERABLE

DEFAULT_LADDER = ("reset", "reinit", "reload", "restart")


def _ladder(recoveries: list[dict]) -> list[str]:
    order: list[str] = []
    for rec in recoveries:
        for st in rec.get("steps") or []:
            name = st.get("step") if isinstance(st, dict) else None
            if name and name not in order:
                order.append(name)
    return list(DEFAULT_LADDER) + [s for s in order if s not in DEFAULT_LADDER]


def _step_index(rec: dict, ladder: list[str]) -> int | None:
    """Position of the recovering step: in this attempt's own steps (tried in ladder order), else the ladder."""
    by = rec.get("recovered_by")
    if by is None:
        return None
    tried = [s.get("step") for s in rec.get("steps") or [] if isinstance(s, dict)]
    if by in tried:
        return tried.index(by)
    return ladder.index(by) if by in ladder else None


def _num(v):
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def recovery_verdicts(run: RunFolder, after_recovery: list[dict] | None = None) -> dict:
    recs = list(run.recoveries)
    ladder = _ladder(recs)
    returned_by_iter = {}
    for item in after_recovery or []:
        flags = [s.get("returned") for s in item.get("series", {}).values() if "returned" in s]
        returned_by_iter[item.get("iteration")] = all(flags) if flags else None

    end = run.first("run_end") or {}
    attempts = []
    for rec in recs:
        by = rec.get("recovered_by")
        rb, ra = _num(rec.get("rss_before")), _num(rec.get("rss_after"))
        attempts.append({
            "iteration": rec.get("iteration"),
            "trigger": [str(t) for t in (rec.get("trigger") or ["unknown"])],
            "recovered_by": by,
            "recovered": by is not None,
            "step_index": _step_index(rec, ladder),
            "duration_s": _num(rec.get("duration_s")),
            "given_back": (rb - ra) if rb is not None and ra is not None else None,
            "returned": returned_by_iter.get(rec.get("iteration")),
            "steps_tried": [s.get("step") for s in rec.get("steps") or [] if isinstance(s, dict)],
        })
    if end.get("reason") == UNRECOVERABLE and not (attempts and not attempts[-1]["recovered"]):
        attempts.append({"iteration": None, "trigger": ["unrecoverable"], "recovered_by": None,
                         "recovered": False, "step_index": None, "duration_s": None,
                         "given_back": None, "returned": None, "steps_tried": []})

    per_kind: dict[str, dict] = {}
    for a in attempts:
        for kind in a["trigger"]:
            k = per_kind.setdefault(kind, {"attempts": 0, "recovered": 0, "by_step": {},
                                           "_dur": [], "_back": [], "_ret": []})
            k["attempts"] += 1
            if a["recovered"]:
                k["recovered"] += 1
                k["by_step"][a["recovered_by"]] = k["by_step"].get(a["recovered_by"], 0) + 1
            if a["duration_s"] is not None:
                k["_dur"].append(a["duration_s"])
            if a["given_back"] is not None:
                k["_back"].append(a["given_back"])
            if a["returned"] is not None:
                k["_ret"].append(a["returned"])
    for k in per_kind.values():
        dur, back, ret = k.pop("_dur"), k.pop("_back"), k.pop("_ret")
        k["rate"] = k["recovered"] / k["attempts"] if k["attempts"] else None
        k["duration_s_median"] = median(dur) if dur else None
        k["duration_s_max"] = max(dur) if dur else None
        k["rss_given_back_median"] = median(back) if back else None
        k["memory_returned"] = (sum(ret) / len(ret)) if ret else None

    def score(a: dict) -> float:
        if not a["recovered"]:
            return 0.0
        s = 1.0 / (2 ** (a["step_index"] or 0))
        return s * (0.5 if a["returned"] is False else 1.0)

    n = len(attempts)
    recovered = sum(a["recovered"] for a in attempts)
    return {
        "ladder": ladder,
        "attempts": n,
        "recovered": recovered,
        "rate": recovered / n if n else None,
        "score": round(100.0 * sum(score(a) for a in attempts) / n, 1) if n else None,
        "per_kind": dict(sorted(per_kind.items())),
        "events": attempts,
    }
