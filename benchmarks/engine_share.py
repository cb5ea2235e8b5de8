"""How much of a real run's wall time is the engine's own time (issue 13: keep it >= 99 %).

    python benchmarks/engine_share.py RUN_DIR [RUN_DIR ...]

Reads each run folder's events (never the engine):
  per iteration  engine = prefill_us + decode_us (the engine's own timers, inside respond)
                 call   = engine_s (the worker's clock around the engine's respond call: the
                          engine's timers plus its untimed work, e.g. sampling and detokenizing,
                          and soak's per-token callback)
                 soak   = wall_s (soak's clock around the same respond call, worker and
                          supervisor round trip included)
  whole run      engine = loads' load_us + every iteration's engine time
                 soak   = run_end elapsed_s (start-up, loads, iterations, checks, teardown)
and prints the engine's share of each.  The per-iteration figure is what soak's loop costs
around every respond; the whole-run figure adds start-up and teardown.

Measured 2026-12-01 on one NVIDIA H200 (hand-built MNN 3.6.1, 44M Qwen2, --thread-num 68, seed 1;
30 iterations x 64 new tokens unless said; `soak run --engine lib --engine-lib libsoak_mnn_shim.so ...`):
  run                          engine timers / soak   respond call / soak   soak's own share
  OpenCL, interposer (x2)      99.02 %, 97.04 %        99.81 %, 99.47 %      0.19 %, 0.53 %
  OpenCL, --no-intercept (x2)  96.80 %, 96.84 %        99.29 %, 99.29 %      0.71 %, 0.71 %
  CPU, 4 threads               99.05 %                 99.81 %               0.19 %
  OpenCL, 10 x 256 tokens      97.72 %                 99.81 %               0.19 %
The gap between MNN's own timers and the call (about 60 us per generated token) is MNN's work outside
prefill_us/decode_us (sampling, detokenizing) and the text callback, inside the engine's call.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from soak.run_folder import read_events  # noqa: E402


def share(run_dir: Path) -> dict:
    engine_us = wall_s = load_us = call_s = 0.0
    calls = 0
    iterations = 0
    elapsed = None
    for e in read_events(run_dir):
        kind = e.get("event")
        if kind == "iteration" and e.get("prefill_us") is not None and e.get("wall_s"):
            engine_us += float(e.get("prefill_us") or 0) + float(e.get("decode_us") or 0)
            wall_s += float(e["wall_s"])
            iterations += 1
            if e.get("engine_s") is not None:
                call_s += float(e["engine_s"])
                calls += 1
        elif kind == "load" and e.get("ok"):
            load_us += float(e.get("load_us") or float(e.get("duration_s") or 0) * 1e6)
        elif kind == "run_end":
            elapsed = e.get("elapsed_s")
    out = {"run": run_dir.name, "iterations": iterations,
           "per_iteration": engine_us / 1e6 / wall_s if wall_s else None,
           "call_share": call_s / wall_s if wall_s and calls == iterations else None, "call_s": call_s,
           "whole_run": (engine_us + load_us) / 1e6 / float(elapsed) if elapsed else None,
           "engine_s": engine_us / 1e6, "wall_s": wall_s, "load_s": load_us / 1e6, "elapsed_s": elapsed}
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    for arg in argv:
        s = share(Path(arg))

        def pct(x):
            return f"{x:.2%}" if x is not None else "-"

        call = (f"; the respond call {s['call_s']:.3f} s = {pct(s['call_share'])} (soak's own share "
                f"{pct(1 - s['call_share'])})" if s["call_share"] is not None else "")
        print(f"{s['run']}: {s['iterations']} iterations; engine timers {s['engine_s']:.3f} s of soak's {s['wall_s']:.3f} s "
              f"around respond = {pct(s['per_iteration'])}{call}; whole run (loads {s['load_s']:.2f} s + iterations) "
              f"of elapsed {s['elapsed_s']} s = {pct(s['whole_run'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
