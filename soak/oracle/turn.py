"""One checked turn's metrics: the steps' `StepMetrics` folded into what travels from the worker.

The worker keeps the candidate's logits; only this summary (a few hundred bytes a turn) reaches the
supervisor and the `oracle_turn` event.
"""

from __future__ import annotations

import math

from soak.oracle.native import StepMetrics


def _num(x: float) -> float | None:
    """JSON-safe: a non-finite measure travels as None (the flags say why)."""
    return x if math.isfinite(x) else None


class TurnCheck:
    """Accumulates one turn's steps, in order.  With `limits` (abs_max, kl_max: soak.oracle.judge's
    thresholds) it also notes the first step that exceeds one: the first diverging step."""

    def __init__(self, limits: tuple[float, float] | None = None):
        self.limits = limits
        self.first_over: int | None = None
        self.steps = 0
        self.flips = 0                  # argmax differs from the reference's token
        self.first_flip: int | None = None
        self.nonfinite_steps = 0
        self.first_nonfinite: int | None = None
        self.kl_sum = 0.0
        self.kl_max = 0.0
        self.kl_max_step: int | None = None
        self.nmse_max = 0.0
        self.abs_max = 0.0
        self.abs_max_step: int | None = None
        self.rank_max = 0
        self.nll_sum = 0.0

    def add(self, m: StepMetrics) -> None:
        step = self.steps
        self.steps += 1
        if not m.agree:
            self.flips += 1
            if self.first_flip is None:
                self.first_flip = step
        if m.nonfinite or not math.isfinite(m.kl):
            self.nonfinite_steps += 1
            if self.first_nonfinite is None:
                self.first_nonfinite = step
        kl = m.kl if math.isfinite(m.kl) else math.inf
        self.kl_sum += kl
        if kl > self.kl_max or self.kl_max_step is None:
            self.kl_max, self.kl_max_step = kl, step
        self.nmse_max = max(self.nmse_max, m.nmse if not math.isnan(m.nmse) else math.inf)
        ab = m.max_abs if not math.isnan(m.max_abs) else math.inf
        if ab > self.abs_max or self.abs_max_step is None:
            self.abs_max, self.abs_max_step = ab, step
        if self.limits and self.first_over is None and (ab > self.limits[0] or kl > self.limits[1]):
            self.first_over = step
        self.rank_max = max(self.rank_max, m.ref_rank if m.ref_rank >= 0 else 1 << 30)
        self.nll_sum += -m.ref_logprob if math.isfinite(m.ref_logprob) else math.inf

    def summary(self) -> dict:
        n = max(self.steps, 1)
        return {
            "steps": self.steps,
            "flips": self.flips,
            "first_flip": self.first_flip,
            "nonfinite_steps": self.nonfinite_steps,
            "first_nonfinite": self.first_nonfinite,
            "first_over": self.first_over,
            "kl_mean": _num(self.kl_sum / n),
            "kl_max": _num(self.kl_max),
            "kl_max_step": self.kl_max_step,
            "nmse_max": _num(self.nmse_max),
            "abs_max": _num(self.abs_max),
            "abs_max_step": self.abs_max_step,
            "rank_max": self.rank_max,
            "nll": _num(self.nll_sum / n),
        }
