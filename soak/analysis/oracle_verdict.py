"""The oracle's verdict over a run: what the teacher-forced turns (`oracle_turn` events) say.

- counts: turns checked, wrong (`wrong_output`), non-finite (`nonfinite_logits`), the rate, the first
  wrong and the first non-finite iteration, and the same split by turn 0 / later turns (a first turn
  right and every later one wrong is a state left behind: alibaba/MNN#3370);
- distributions of the per-turn worst step, `kl_max` and `abs_max` (median, p99, max), so a healthy
  run's margin to the thresholds is visible;
- drift: the per-turn mean KL over the run, by soak.analysis.trend (the one trend test: Theil-Sen and
  the corrected Mann-Kendall).  A KL that grows over the night is corruption building up, often well
  before one step crosses the wrong_output threshold.  `growing` needs a significant increasing trend
  (confidence DRIFT_CONFIDENCE, 95 %), an end level (median of the last tenth) at least DRIFT_RATIO (2)
  times the start (the first tenth) and a growth of at least DRIFT_MATERIAL (1 %) of the comparison
  class's per-step KL threshold: a healthy run's KL is float noise (1e-15 against itself) or a GPU's
  steady fp16 difference, whose random wander must not read as corruption;
- the wrong turns themselves (iteration, conversation, turn, first step over the thresholds, worst
  |delta| and KL): the first WRONG_KEEP of them, for the report's table.

`OracleTally` is what the run folder's one pass (soak.analysis.loaded_run) keeps of the `oracle_turn`
events: bounded (reservoirs, an evenly thinned series, the first wrong turns), mergeable over the parts
of a split file.  `oracle_verdict(run)` turns it into the verdict; None when the run checked nothing
and was not asked to.
"""

from __future__ import annotations

import math
from statistics import median

from soak.analysis.streaming import SERIES_CAP, Decimator, Reservoir
from soak.analysis.trend import trend

WRONG_KEEP = 200            # wrong turns kept whole (the report's table); the rest are counted
DRIFT_CONFIDENCE = 0.95
DRIFT_RATIO = 2.0
DRIFT_MATERIAL = 0.01       # of the per-step KL threshold (soak.oracle.judge) of the run's comparison class
DRIFT_MIN_TURNS = 8
SERIES_OUT = 1000           # (iteration, mean KL) points written to verdicts.json (the report's chart)

_WRONG_FIELDS = ("i", "conversation", "turn", "steps", "flips", "first_flip", "first_over", "nonfinite_steps",
                 "first_nonfinite", "kl_mean", "kl_max", "kl_max_step", "abs_max", "abs_max_step", "rank_max")


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _int(v) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) else None


class OracleTally:
    """The `oracle_turn` events of one pass, in bounded memory."""

    def __init__(self, cap: int = SERIES_CAP):
        self.checked = self.wrong = self.nonfinite = 0
        self.steps = 0
        self.turn0_checked = self.turn0_wrong = 0      # turn 0 of a conversation; the rest are later turns
        self.first_wrong: int | None = None
        self.first_nonfinite: int | None = None
        self.kl_max = Reservoir(1 << 14)
        self.abs_max = Reservoir(1 << 14)
        self.kl_series = Decimator(cap)               # (i, kl_mean) of the turns with finite logits
        self.wrong_turns: list[dict] = []

    def add(self, e: dict) -> None:
        i = _int(e.get("i"))
        self.checked += 1
        self.steps += _int(e.get("steps")) or 0
        nonfinite = bool(_int(e.get("nonfinite_steps")))
        wrong = bool(e.get("wrong")) and not nonfinite
        self.wrong += wrong
        self.nonfinite += nonfinite
        if e.get("turn") == 0:
            self.turn0_checked += 1
            self.turn0_wrong += wrong or nonfinite
        if i is not None:
            if wrong and self.first_wrong is None:
                self.first_wrong = i
            if nonfinite and self.first_nonfinite is None:
                self.first_nonfinite = i
        if (_int(e.get("steps")) or 0) > 0:   # a turn with no step measured nothing
            for res, key in ((self.kl_max, "kl_max"), (self.abs_max, "abs_max")):
                v = _num(e.get(key))
                if v is not None:
                    res.add(v)
            km = _num(e.get("kl_mean"))
            if km is not None and i is not None and not nonfinite:
                self.kl_series.add((i, km))
        if (wrong or nonfinite) and len(self.wrong_turns) < WRONG_KEEP:
            self.wrong_turns.append({k: e.get(k) for k in _WRONG_FIELDS})

    def merge(self, other: "OracleTally") -> None:
        """Append the tally of the next part of the same file."""
        for k in ("checked", "wrong", "nonfinite", "steps", "turn0_checked", "turn0_wrong"):
            setattr(self, k, getattr(self, k) + getattr(other, k))
        self.first_wrong = self.first_wrong if self.first_wrong is not None else other.first_wrong
        self.first_nonfinite = self.first_nonfinite if self.first_nonfinite is not None else other.first_nonfinite
        self.kl_max.merge(other.kl_max)
        self.abs_max.merge(other.abs_max)
        self.kl_series.merge(other.kl_series)
        self.wrong_turns = (self.wrong_turns + other.wrong_turns)[:WRONG_KEEP]


def _quantiles(values: list[float]) -> dict | None:
    if not values:
        return None
    s = sorted(values)
    p99 = s[min(len(s) - 1, max(0, math.ceil(0.99 * len(s)) - 1))]
    return {"median": median(s), "p99": p99, "max": s[-1], "samples": len(s)}


def kl_drift(series: list[tuple[int, float]], kl_threshold: float | None) -> dict:
    """The drift verdict on the per-turn mean KL: growing, stable or insufficient (module docstring)."""
    out = {"samples": len(series), "metric": "kl_mean"}
    if len(series) < DRIFT_MIN_TURNS:
        out["verdict"] = "insufficient"
        return out
    xs, ys = [float(i) for i, _ in series], [v for _, v in series]
    tr = trend(xs, ys, confidence=DRIFT_CONFIDENCE)
    if tr is None:
        out["verdict"] = "insufficient"
        return out
    k = max(2, len(ys) // 10)
    start, end = median(ys[:k]), median(ys[-k:])
    floor = DRIFT_MATERIAL * kl_threshold if kl_threshold else 0.0
    growth = end - start
    out.update(start=start, end=end, growth=growth, slope_per_iteration=tr.slope,
               slope_lo=tr.as_dict()["slope_lo"], slope_hi=tr.as_dict()["slope_hi"], p=tr.p,
               material=floor, first_iteration=series[0][0], last_iteration=series[-1][0])
    growing = tr.increasing and end >= DRIFT_RATIO * max(start, 0.0) and growth >= floor and growth > 0
    out["verdict"] = "growing" if growing else "stable"
    return out


def oracle_verdict(run) -> dict | None:
    """The run's oracle verdict (module docstring) from its one pass; None when it was neither
    checked against a reference nor has a checked turn."""
    tally: OracleTally = run.oracle_tally
    info = run.manifest.get("oracle") if isinstance(run.manifest.get("oracle"), dict) else None
    if info is not None and info.get("mode") == "make":
        return None                       # `soak reference`: the oracle itself, nothing to judge
    if tally.checked == 0 and info is None:
        return None
    thresholds = (info or {}).get("thresholds") if isinstance((info or {}).get("thresholds"), dict) else None
    n = tally.checked
    later = n - tally.turn0_checked
    return {
        "reference": (info or {}).get("reference"),
        "every": (info or {}).get("every"),
        "thresholds": thresholds,
        "checked": n,
        "steps": tally.steps,
        "wrong": tally.wrong,
        "nonfinite": tally.nonfinite,
        "wrong_rate": (tally.wrong + tally.nonfinite) / n if n else None,
        "first_wrong_iteration": tally.first_wrong,
        "first_nonfinite_iteration": tally.first_nonfinite,
        "by_turn": {"first": {"checked": tally.turn0_checked, "wrong": tally.turn0_wrong},
                    "later": {"checked": later, "wrong": tally.wrong + tally.nonfinite - tally.turn0_wrong}},
        "kl_max": _quantiles(tally.kl_max.items),
        "abs_max": _quantiles(tally.abs_max.items),
        "drift": kl_drift(tally.kl_series.items, _num((thresholds or {}).get("kl_max"))),
        "wrong_turns": tally.wrong_turns,
        "wrong_turns_kept": len(tally.wrong_turns),
        "series": [[i, v] for i, v in _thin(tally.kl_series.items, SERIES_OUT)],
    }


def _thin(items: list, cap: int) -> list:
    """At most `cap` of `items`, evenly spaced, the first kept."""
    return items[::max(1, math.ceil(len(items) / cap))]


def _g(v) -> str:
    return "?" if v is None else f"{v:.3g}"


def oracle_line(v: dict | None) -> str | None:
    """The console's verdict line for the oracle."""
    if not v:
        return None
    if not v["checked"]:
        return "oracle: no turn checked against the reference"
    text = f"oracle: {v['checked']} turns checked, {v['wrong']} wrong, {v['nonfinite']} non-finite"
    firsts = [f"first wrong at iteration {v['first_wrong_iteration']}" if v["first_wrong_iteration"] is not None
              else None,
              f"first non-finite at iteration {v['first_nonfinite_iteration']}"
              if v["first_nonfinite_iteration"] is not None else None]
    text += "".join(f"; {f}" for f in firsts if f)
    kl = v.get("kl_max") or {}
    if kl:
        text += f"; per-turn max KL median {_g(kl.get('median'))}, p99 {_g(kl.get('p99'))}"
    d = v.get("drift") or {}
    if d.get("verdict") == "growing":
        text += (f"; KL GROWING over the run ({_g(d['start'])} -> {_g(d['end'])} nats mean per step, "
                 f"from iteration {d['first_iteration']})")
    return text
