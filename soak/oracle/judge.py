"""From a checked turn's metrics to faults: `wrong_output` and `nonfinite_logits`.

The thresholds are per comparison class: a candidate run exactly as the reference's oracle ran
(`self`: the same engine, backend and precision: differences are bugs), and a candidate on another
backend or precision (`cross`: fp16 GPUs and other kernels differ from fp32 CPU legitimately).  A turn
is wrong when one of its steps leaves what healthy runs of its class show: the numbers, and how they
were chosen from measured healthy and broken runs, are in docs/ORACLE.md.

Argmax agreement is not a criterion: on a healthy GPU about 6 % of steps flip on near-ties (random
models have top-1 margins of a few thousandths), so flips are reported, never judged alone.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Thresholds:
    name: str
    abs_max: float      # per step: max |candidate - reference| log-probability over the reference's top-k
    kl_max: float       # per step: KL(reference || candidate) over the top-k union plus the rest, nats

    def as_dict(self) -> dict:
        return {"class": self.name, "abs_max": self.abs_max, "kl_max": self.kl_max}


THRESHOLDS = {
    "self": Thresholds("self", abs_max=1e-3, kl_max=1e-6),
    "cross": Thresholds("cross", abs_max=1.0, kl_max=0.05),
}


def comparison_class(candidate: dict, oracle: dict) -> str:
    """`self` when the candidate runs the reference's engine, backend and precision, else `cross`."""
    same = all(candidate.get(f) == oracle.get(f) for f in ("engine", "backend", "precision"))
    return "self" if same else "cross"


def judge_turn(summary: dict, thresholds: Thresholds) -> list[dict]:
    """Fault records (kind + fields) for one checked turn's summary (soak.oracle.turn.TurnCheck)."""
    found = []
    if summary.get("nonfinite_steps"):
        found.append({"kind": "nonfinite_logits", "first_step": summary.get("first_nonfinite"),
                      "steps": summary["nonfinite_steps"], "of_steps": summary.get("steps")})
    abs_max, kl_max = summary.get("abs_max"), summary.get("kl_max")
    over = []
    if abs_max is None or abs_max > thresholds.abs_max:
        over.append("abs")
    if kl_max is None or kl_max > thresholds.kl_max:
        over.append("kl")
    if over and not found:            # a non-finite turn is that, not also "wrong"
        found.append({"kind": "wrong_output", "over": over, "abs_max": abs_max, "kl_max": kl_max,
                      "first_step": summary.get("first_over"),
                      "worst_step": summary.get("abs_max_step") if "abs" in over else summary.get("kl_max_step"),
                      "first_flip": summary.get("first_flip"), "flips": summary.get("flips"),
                      "of_steps": summary.get("steps"), "thresholds": thresholds.as_dict()})
    return found
