"""The recovery ladder: after a failure, climb until the engine is healthy.

Steps, cheapest first (configurable with --recovery):
  reset    Llm::reset()            clears history; MNN keeps an error status
  reinit   Llm::generate_init()    leaves MNN's sticky error state
  reload   destroy + create + load, same process
  restart  kill the worker, start a new one, load
Each step is followed by a probe (a short fixed prompt).  The first step
whose probe is healthy is the one that recovered the engine.
"""

from __future__ import annotations

import time

from soak.diagnostics import get_logger
from soak.loop.session import Session

STEPS = ("reset", "reinit", "reload", "restart")


def parse_ladder(text: str) -> list[str]:
    steps = [s.strip() for s in text.split(",") if s.strip()]
    bad = [s for s in steps if s not in STEPS]
    if bad or not steps:
        from soak.errors import BadInput

        raise BadInput(f"unknown recovery step(s) {bad or text!r}", f"use a comma list of {', '.join(STEPS)}")
    return steps


def climb(session: Session, ladder: list[str], trigger: list[str], iteration: int,
          memory_now) -> dict:
    """Run the ladder; returns the recovery record (also emitted as an event)."""
    started = time.monotonic()
    rss_before = memory_now()
    steps_done = []
    recovered_by = None
    worker_dead = not session.alive
    ladder = list(ladder)
    if worker_dead and "restart" not in ladder:
        ladder.append("restart")  # a dead worker can only be restarted
    for step in ladder:
        if worker_dead and step != "restart":
            continue
        t0 = time.monotonic()
        healthy = False
        seen: list[dict] = []
        if step in ("reset", "reinit"):
            out = session.simple(step, "reset")
            if out.died or out.hung:
                worker_dead = True
            elif out.ok:
                healthy, seen = session.probe()
        elif step == "reload":
            loaded, seen = session.reload(iteration + 1)
            if loaded:
                healthy, seen = session.probe()
            worker_dead = not session.alive
        elif step == "restart":
            loaded, seen = session.restart(iteration + 1)
            if loaded:
                healthy, seen = session.probe()
            worker_dead = not session.alive
        if not session.alive:
            worker_dead = True
            healthy = False
        steps_done.append({"step": step, "ok": healthy, "duration_s": round(time.monotonic() - t0, 6),
                           "faults": sorted({f["kind"] for f in seen})})
        if healthy:
            recovered_by = step
            break
    record = {
        "iteration": iteration,
        "trigger": trigger,
        "steps": steps_done,
        "recovered_by": recovered_by,
        "duration_s": round(time.monotonic() - started, 6),
        "rss_before": rss_before,
        "rss_after": memory_now(),
    }
    session.events.emit("recovery", **record)
    get_logger(__name__).debug(f"recovered by {recovered_by}" if recovered_by else "not recovered", iteration=iteration,
                               trigger=",".join(trigger), steps=",".join(f"{s['step']}:{'ok' if s['ok'] else 'failed'}"
                                                                         for s in steps_done))
    return record
