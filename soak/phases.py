"""Phases: the one declaration of both phase vocabularies.

Fault phases: the engine call a fault happened in (`fault.phase`, catalog `match.phase`,
soak.fault_kinds' hints).  Profile phases: what the worker marks in the interposer's stats
header (soak.cl.trace.PhaseMarker) and what each `profile` record's `phase` code stands for
(native/interposer/soak_interposer.h, soak_stats_header.phase).
tests/core/test_vocabulary_tables.py fails when a second copy of either set appears in soak/.
"""

from __future__ import annotations

# fault phases, in the order a run meets them
FAULT_PHASES = ("init", "load", "prefill", "decode", "reset", "teardown")

# profile phase codes: 0 is the header before the worker's first mark (the load)
PROFILE_PHASES = {0: "load", 1: "load", 2: "prefill", 3: "decode", 4: "idle", 5: "respond"}
# the code the worker writes for each phase it marks
PROFILE_PHASE_CODE = {name: code for code, name in PROFILE_PHASES.items() if code}
# the order a profile lists them in (respond: prefill and decode of an engine that does not stream)
PROFILE_PHASE_ORDER = ("load", "prefill", "decode", "respond", "idle")


def profile_phase(code: object) -> str:
    """A `profile` record's phase code -> its name (an unknown or missing code: load)."""
    try:
        return PROFILE_PHASES.get(int(code or 0), "load")
    except (TypeError, ValueError):
        return "load"
