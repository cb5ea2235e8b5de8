"""How long `soak --help` takes, against a bare interpreter start (issue 15: target <= 0.15 s).

    python3 benchmarks/bench_cli_startup.py [--runs 20]

Prints the medians and the ratio.  `soak --help` imports no command module (cli.py lists
them from soak.commands.COMMANDS), so what is left is the interpreter's own start.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def median_s(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    bare = median_s([sys.executable, "-c", "pass"], args.runs)
    help_ = median_s([sys.executable, "-m", "soak", "--help"], args.runs)
    run_help = median_s([sys.executable, "-m", "soak", "run", "--help"], args.runs)
    print(f"bare interpreter      {bare * 1000:7.1f} ms")
    print(f"soak --help           {help_ * 1000:7.1f} ms   ({help_ / bare:.2f}x bare; target <= 150 ms)")
    print(f"soak run --help       {run_help * 1000:7.1f} ms   ({run_help / bare:.2f}x bare)")


if __name__ == "__main__":
    main()
