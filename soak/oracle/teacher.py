"""Teacher-forced turns through an engine's own forward (soak_engine.h ABI 2), in the worker.

- `reference_turn`: the oracle engine runs a turn greedily, and each step's logits become a reference
  step (top-k, log-sum-exp, the token it picked).  `soak reference` stores these.
- `check_turn`: the candidate engine is fed the reference's ids, one step at a time, through the same
  live KV cache a normal turn uses; each step's logits are compared with the reference's where they lie
  (native/oracle), and only the turn's summary leaves.

`engine` is any engine wrapper with `forward(ids, prefill) -> float32 buffer`, `is_stop(id)` (the
native loader's NativeEngine, pip MNN's PyMnnEngine).
"""

from __future__ import annotations

import time

from soak.oracle.native import OracleLib
from soak.oracle.reference import RefTurn
from soak.oracle.turn import TurnCheck


def reference_turn(engine, lib: OracleLib, input_ids, max_new: int, k: int,
                   where: tuple[int, int, int] = (0, 0, 0)) -> RefTurn:
    """Greedy turn on the oracle engine: up to max_new steps, ended early by a stop token."""
    steps = []
    end = "length"
    logits = engine.forward(list(input_ids), True)
    for n in range(max_new):
        step = lib.topk(logits, k)
        steps.append(step)
        if engine.is_stop(step.token):
            end = "stop"
            break
        # every generated token but a stop token is fed, the last one too: the KV cache then ends
        # as respond() leaves it (soak_engine.h), and a later free turn sees the same history
        logits = engine.forward([step.token], False)
    conv, turn, iteration = where
    return RefTurn(conv, turn, iteration, tuple(int(i) for i in input_ids), tuple(steps), end)


def check_turn(engine, lib: OracleLib, ref: RefTurn, limits: tuple[float, float] | None = None) -> dict:
    """Feed `ref` through the candidate engine and compare every step; returns the turn's summary
    (soak.oracle.turn) with `prefill_us` and `decode_us` of the engine's forward calls."""
    check = TurnCheck(limits)
    t0 = time.perf_counter_ns()
    logits = engine.forward(list(ref.input_ids), True)
    t1 = time.perf_counter_ns()
    decode_ns = 0
    last = len(ref.steps) - 1
    for n, step in enumerate(ref.steps):
        check.add(lib.compare(logits, step))
        if n < last or ref.end != "stop":          # fed as reference_turn fed it
            s = time.perf_counter_ns()
            logits = engine.forward([step.token], False)
            decode_ns += time.perf_counter_ns() - s
    summary = check.summary()
    summary["prefill_us"] = (t1 - t0) // 1000
    summary["decode_us"] = decode_ns // 1000
    summary["input_tokens"] = len(ref.input_ids)
    return summary
