"""soak's own overhead per iteration, on a zero-work engine.

    python benchmarks/bench_overhead.py [--iterations 100000]

The test engine in zero_work mode does no sleeping and emits one token, so
what is measured is soak: the worker protocol round trips, log capture,
output checks, event writing and memory sampling.  Prints iterations per
second and soak's own RSS (the supervisor process) at checkpoints; the RSS
must stay flat as iterations grow.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time

import psutil

from soak.runner import RunConfig, run_soak


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=100_000)
    ap.add_argument("--max-new-tokens", type=int, default=1)
    args = ap.parse_args()
    me = psutil.Process()
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def watch():
        while not stop.wait(1.0):
            samples.append((time.monotonic(), me.memory_info().rss))

    with tempfile.TemporaryDirectory() as out:
        cfg = RunConfig(engine="test", iterations=args.iterations, out_dir=out, run_id="bench", quiet=True,
                        test_engine={"zero_work": True}, max_new_tokens=args.max_new_tokens,
                        memory_interval_s=1.0)
        t = threading.Thread(target=watch, daemon=True)
        t.start()
        start = time.monotonic()
        result = run_soak(cfg)
        elapsed = time.monotonic() - start
        stop.set()
    n = result.summary["iterations"]
    print(f"iterations          {n}")
    print(f"elapsed             {elapsed:.1f} s")
    print(f"iterations/s        {n / elapsed:.0f}")
    print(f"overhead/iteration  {elapsed / n * 1e6:.0f} us")
    if len(samples) >= 4:
        q = len(samples) // 4
        early = sum(r for _, r in samples[q:2 * q]) / q
        late = sum(r for _, r in samples[-q:]) / q
        print(f"soak RSS 2nd quarter {early / 2**20:.1f} MiB, last quarter {late / 2**20:.1f} MiB, "
              f"ratio {late / early:.3f}")
    print(f"soak max RSS        {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
