"""How a run ended: the one table of `run_end` reasons, and what every judge concludes from each.

The loop (soak.loop.runner) writes one of these names as `run_end.reason` and as
summary.json's `end_reason`.  Everything that interprets a reason reads it here: the
gate's `run.complete` rule (soak.outputs.gate), merge's `run.ended` case and its report
(soak.outputs.merge), `soak run`'s exit code, the recovery verdict.  `conclude()` is the
one judgement: gate and merge draw the same conclusion from the same run end.

Conclusions:
  pass        the run ended by itself, after the work it was asked for
  fail        the engine failed: the run stopped because of what it found
  incomplete  the run stopped early for another reason (a person, CI, the host): it
              cannot vouch for the engine, so it never passes a gate

tests/core/test_end_reasons.py fails when the runner writes a reason this table lacks,
or when the gate and merge conclude differently on any row.
"""

from __future__ import annotations

from dataclasses import dataclass

from soak.errors import ExitCode

PASS, FAIL, INCOMPLETE = "pass", "fail", "incomplete"
CONCLUSIONS = (PASS, FAIL, INCOMPLETE)


@dataclass(frozen=True)
class EndReason:
    name: str
    conclusion: str             # one of CONCLUSIONS
    meaning: str                # what ended the run, in words (shown by the gate and merge)
    exit_code: ExitCode | None  # `soak run`'s exit code for it; None: the error that ended the run gives its own
    counted: bool = False       # the run ends at a count of iterations: fewer done than asked is incomplete


# the names, for the code that sets them (a typo is then a NameError, not a new reason)
ITERATIONS, DURATION, WORKLOAD = "iterations", "duration", "workload"
FAIL_FAST, UNRECOVERABLE, ENGINE_ERROR = "fail_fast", "unrecoverable", "engine_error"
INTERRUPTED, TERMINATED, HARNESS_ERROR, DISK_FULL = "interrupted", "terminated", "harness_error", "disk_full"

REASONS: dict[str, EndReason] = {r.name: r for r in (
    EndReason(ITERATIONS, PASS, "the iterations asked for were done", ExitCode.OK, counted=True),
    EndReason(DURATION, PASS, "the duration asked for ran out", ExitCode.OK),
    EndReason(WORKLOAD, PASS, "the workload had no more turns to give", ExitCode.OK, counted=True),
    EndReason(FAIL_FAST, FAIL, "--fail-fast stopped it at the first failure", ExitCode.FAILED),
    EndReason(UNRECOVERABLE, FAIL, "the engine could not be recovered", ExitCode.FAILED),
    EndReason(ENGINE_ERROR, FAIL, "the engine or its device raised an error that ended the run", None),
    EndReason(INTERRUPTED, INCOMPLETE, "it was interrupted (Ctrl-C or a signal)", ExitCode.INTERRUPTED),
    EndReason(TERMINATED, INCOMPLETE, "it was terminated (SIGTERM, e.g. a CI timeout)", ExitCode.TERMINATED),
    EndReason(HARNESS_ERROR, INCOMPLETE, "soak's own worker failed (not the engine's fault)", None),
    EndReason(DISK_FULL, INCOMPLETE, "the disk holding the run folder filled up", None),
)}

NO_RUN_END = "no run_end: the run was killed or is still going"


@dataclass(frozen=True)
class Conclusion:
    conclusion: str     # one of CONCLUSIONS
    message: str        # one line: why

    @property
    def passed(self) -> bool:
        return self.conclusion == PASS


def conclude(reason: object, done: int | None = None, asked: object = None) -> Conclusion:
    """What a run that ended by `reason` (None: no run_end) after `done` iterations, of the
    `asked` ones (its config's iterations; None: not asked), proves."""
    n = "?" if done is None else str(done)
    if reason is None:
        return Conclusion(INCOMPLETE, f"{NO_RUN_END} ({n} iteration(s))")
    row = REASONS.get(reason) if isinstance(reason, str) else None
    if row is None:
        return Conclusion(FAIL, f"run_end gives no known reason ({reason!r})")
    if row.conclusion != PASS:
        return Conclusion(row.conclusion, f"ended early: {row.meaning} after {n} iteration(s)")
    if (row.counted and isinstance(asked, int) and not isinstance(asked, bool) and done is not None
            and done < asked):
        return Conclusion(INCOMPLETE, f"ended after {done} of the {asked} iterations asked for")
    return Conclusion(PASS, f"ended by {reason} after {n} iteration(s)")


def exit_code(reason: str | None) -> ExitCode:
    """`soak run`'s exit code for a run that returned (one that raised exits with its error's)."""
    row = REASONS.get(reason)
    return row.exit_code if row is not None and row.exit_code is not None else ExitCode.OK

