"""Benchmark: decode tok/s through the oracle's forward (teacher-forced) vs free decode.

    python benchmarks/bench_forward.py --engine mnn|pymnn|test [--backend cpu|opencl] [--thread-num N]
        [--precision normal] [--model soak/models/qwen2-tiny/config.json] [--turns 8] [--max-new 64]

One engine, one conversation of --turns prompts, twice: first free (respond(),
MNN's own decode loop), then, after reset(), the same turns through forward()
teacher-forced on the tokens the free turns produced (tokenize, one prefill,
then one forward per token, fed as MNN's loop feeds them).  Greedy sampling,
so both passes compute the same tokens; reuse_kv on, as soak runs.

Reports per pass the decode tok/s by the engine's own clock (perf():
generated_tokens / decode_us) and by the wall clock: the forward calls of the
steps (ctypes and the memoryview included, the caller's comparison excluded)
against respond()'s wall time less its prefill_us.  On an asynchronous GPU
backend only the wall figures compare: MNN's decode_us stops its clock after
enqueuing a step, and the wait for the logits falls into the next sample,
outside it, while the shim's forward timing includes that wait.  Target (issue 23): teacher-forced >= 0.95x free decode
tok/s.

For --engine mnn set SOAK_MNN_BUILD (and SOAK_MNN_SOURCE), or pass a built
shim with --shim and its OpenCL plugin with --plugin; for --backend opencl
on PoCL, run it under the interposer with the GPU override (soak run's
--cl-gpu-override environment).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROMPTS = [b"Explain what a GPU kernel cache is.", b"And why would it grow over a night?",
           "用中文回答：内存为什么会增长？".encode(), b"List three OpenCL error codes.",
           b"What does CL_OUT_OF_RESOURCES mean on a phone?", b"Summarise the conversation so far.",
           b"One more question about decode speed.", b"Thanks, that is all."]


def open_engine(args):
    config = {"sampler_type": "greedy", "backend_type": args.backend, "thread_num": args.thread_num,
              "precision": args.precision, "reuse_kv": True}
    if args.engine == "pymnn":
        from soak.engine.pymnn import PyMnnEngine

        engine = PyMnnEngine(args.model)
        config.pop("backend_type")
    elif args.engine == "test":
        from soak.engine.loader import NativeEngine
        from soak.native_build import build_test_engine

        cfg = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-forward-{os.getpid()}.json"
        cfg.write_text(json.dumps({"seed": 1, "vocab_size": args.vocab, "stop_probability": 0}))
        engine = NativeEngine(str(build_test_engine()), str(cfg))
    elif args.shim:
        from soak.engine.loader import NativeEngine

        engine = NativeEngine(args.shim, args.model, args.plugin)
    else:
        from soak.engine import mnn_native
        from soak.engine.loader import NativeEngine

        build = mnn_native.locate()
        plugins = [str(p) for p in build.plugins] if args.backend == "opencl" else []
        engine = NativeEngine(str(mnn_native.build_shim(build)), args.model, plugins)
    engine.set_config(json.dumps(config))
    if not engine.load():
        raise SystemExit("load failed")
    return engine


def free_pass(engine, args):
    gen, decode_us, wall = 0, 0, 0.0
    for prompt in PROMPTS[:args.turns]:
        t0 = time.perf_counter()
        engine.respond(prompt, args.max_new)
        took = time.perf_counter() - t0
        perf = engine.perf()
        gen += perf["generated_tokens"]
        decode_us += perf["decode_us"]
        wall += took - perf["prefill_us"] / 1e6      # MNN's prefill_us waits for its logits
    return gen, decode_us, wall


def forced_pass(engine, args, reference=None):
    """Greedy through forward (reference None) or teacher-forced on reference; returns
    (tokens per turn, steps, engine decode_us, wall seconds of the step calls)."""
    turns, steps, decode_us, wall = [], 0, 0, 0.0
    for n, prompt in enumerate(PROMPTS[:args.turns]):
        logits = engine.forward(engine.tokenize(prompt), True)
        out = []
        while True:
            token = reference[n][len(out)] if reference else int(np.frombuffer(logits, np.float32).argmax())
            out.append(token)
            if engine.is_stop(token):
                break
            t0 = time.perf_counter()
            logits = engine.forward([token], False)
            wall += time.perf_counter() - t0
            if len(out) == (len(reference[n]) if reference else args.max_new):
                break
        perf = engine.perf()
        steps += perf["generated_tokens"]
        decode_us += perf["decode_us"]
        turns.append(out)
    return turns, steps, decode_us, wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", choices=("mnn", "pymnn", "test"), default="mnn")
    ap.add_argument("--model", default=str(REPO / "soak" / "models" / "qwen2-tiny" / "config.json"))
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--thread-num", type=int, default=1)
    ap.add_argument("--precision", default="normal")
    ap.add_argument("--turns", type=int, default=8)
    ap.add_argument("--max-new", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=32000, help="test engine's vocab_size")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shim", help="a built libsoak_mnn_shim.so (skips locating and building MNN's)")
    ap.add_argument("--plugin", action="append", default=[], help="backend plugin to load first (libMNN_CL.so)")
    args = ap.parse_args()
    args.turns = min(args.turns, len(PROMPTS))
    engine = open_engine(args)
    engine.reset()
    reference, _, _, _ = forced_pass(engine, args)      # warm-up, and the tokens to force
    rows = []
    for _ in range(args.rounds):
        engine.reset()
        gen, free_us, free_wall = free_pass(engine, args)
        engine.reset()
        turns, steps, forced_us, wall = forced_pass(engine, args, reference)
        rows.append((gen / (free_us / 1e6), steps / (forced_us / 1e6), steps / wall, gen / free_wall))
    free_tps, forced_tps, wall_tps, free_wall_tps = (float(np.median([r[i] for r in rows])) for i in range(4))
    print(f"engine {engine.name}, backend {args.backend}, {args.turns} turns x <= {args.max_new} tokens, "
          f"vocab {engine.vocab}, median of {args.rounds} rounds")
    print(f"free decode      {free_tps:10.1f} tok/s (perf)")
    print(f"teacher-forced   {forced_tps:10.1f} tok/s (perf)   {forced_tps / free_tps:.3f}x")
    print(f"free decode      {free_wall_tps:10.1f} tok/s (wall, respond minus prefill_us)")
    print(f"teacher-forced   {wall_tps:10.1f} tok/s (wall, forward calls)   {wall_tps / free_wall_tps:.3f}x")
    engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
