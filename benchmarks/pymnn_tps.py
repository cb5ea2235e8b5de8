#!/usr/bin/env python3
"""pip MNN speed on a model: load time, prefill and decode tok/s per thread count.

    python benchmarks/pymnn_tps.py                                   # committed tiny model
    python benchmarks/pymnn_tps.py --model /work/models/qwen2-768x6 --threads 1,2,4

Drives soak.engine.pymnn.PyMnnEngine directly (no worker, no soak loop), greedy,
fresh conversation per prompt, the first prompt of each engine discarded as warm-up.
Prints mean ± stdev (n) and the ratio to the first thread count. Figures, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from soak.engine.pymnn import PyMnnEngine  # noqa: E402

WORDS = ("soak test the OpenCL backend of MNN with random prompts and watch memory "
         "kernel cache decode prefill tokens per second 你好 世界 🚀").split()


def prompt(i: int, words: int) -> bytes:
    return " ".join(WORDS[(i * 7 + k) % len(WORDS)] for k in range(words)).encode()


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):9.1f} ± {sd:7.1f} (n={len(values)})"


def bench(model: str, threads: int, n: int, words: int, max_new: int) -> dict:
    e = PyMnnEngine(model)
    e.set_config(json.dumps({"thread_num": threads}))
    t0 = time.perf_counter()
    e.load()
    load_s = time.perf_counter() - t0
    prefill, decode = [], []
    for i in range(n + 1):
        e.reset()
        e.respond(prompt(i, words), max_new)
        p = e.perf()
        if i == 0:
            continue                                   # warm-up
        if p["prefill_us"]:
            prefill.append(p["prompt_tokens"] / (p["prefill_us"] / 1e6))
        if p["decode_us"] and p["generated_tokens"] > 1:
            decode.append(p["generated_tokens"] / (p["decode_us"] / 1e6))
    e.close()
    return {"threads": threads, "load_s": load_s, "prefill": prefill, "decode": decode,
            "prompt_tokens": p["prompt_tokens"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=str(REPO / "soak" / "models" / "qwen2-tiny" / "config.json"))
    ap.add_argument("--threads", default="1,2,4", help="comma list of thread_num values")
    ap.add_argument("--prompts", type=int, default=10, help="measured prompts per thread count")
    ap.add_argument("--words", type=int, default=60, help="words per prompt")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    args = ap.parse_args()
    os.chdir(tempfile.mkdtemp(prefix="pymnn-bench-"))
    from soak.engine._mnn_guard import import_mnn_llm

    import_mnn_llm()                                   # not part of the first load time
    rows = [bench(args.model, int(t), args.prompts, args.words, args.max_new_tokens)
            for t in args.threads.split(",")]
    base = rows[0]
    print(f"\nmodel {args.model}  cpus {os.cpu_count()}  load avg {os.getloadavg()[0]:.1f}  "
          f"prompt ~{base['prompt_tokens']} tokens, {args.max_new_tokens} new tokens")
    print(f"{'threads':>7}  {'load s':>7}  {'prefill tok/s':>28}  {'decode tok/s':>28}  decode vs first")
    for r in rows:
        ratio = (statistics.fmean(r["decode"]) / statistics.fmean(base["decode"])
                 if r["decode"] and base["decode"] else float("nan"))
        print(f"{r['threads']:>7}  {r['load_s']:7.3f}  {fmt(r['prefill']):>28}  {fmt(r['decode']):>28}  "
              f"{ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
