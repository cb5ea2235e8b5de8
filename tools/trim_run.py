#!/usr/bin/env python3
"""Trim a real run folder into a test case for tests/data/real/<case>/.

    python3 tools/trim_run.py SRC_RUN DST_CASE [--max-kb 200] [--text 48]

Keeps what classification reads, exactly: every fault, cl_call_error, load,
run_start/run_end and iteration event (their prompt and output texts cut to
--text characters: the output checks were judged when the run was recorded),
manifest.json, summary.json and verdicts.json.  Thins memory events (every
k-th) and cuts engine.log and cl_trace.jsonl to a head and a tail until the
case fits in --max-kb.  Writes TRIMMED.txt saying what was cut.  Never copies
a library or a model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

KEEP = ("manifest.json", "summary.json", "verdicts.json", "command.txt", "console.txt")


def _cut_text(ev: dict, n: int) -> dict:
    for key in ("prompt", "output"):
        v = ev.get(key)
        if isinstance(v, str) and len(v) > n:
            ev[key] = v[:n] + f"…[{len(v) - n} chars cut]"
    ev.pop("output_tokens", None)  # token ids: generated_tokens keeps the count
    return ev


def _head_tail(lines: list[bytes], budget: int) -> tuple[list[bytes], int]:
    if sum(len(x) for x in lines) <= budget:
        return lines, 0
    head, tail, used = [], [], 0
    i, j = 0, len(lines) - 1
    while i <= j and used < budget:
        head.append(lines[i])
        used += len(lines[i])
        i += 1
        if i <= j and used < budget:
            tail.append(lines[j])
            used += len(lines[j])
            j -= 1
    cut = j - i + 1
    return head + [f"[... {cut} lines cut by tools/trim_run.py ...]\n".encode()] + tail[::-1], cut


def trim(src: Path, dst: Path, max_kb: int, text: int) -> list[str]:
    dst.mkdir(parents=True, exist_ok=True)
    notes = []
    for name in KEEP:
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    events, memory = [], []
    cut_samples = 0
    if (src / "events.jsonl").is_file():
        for raw in (src / "events.jsonl").read_bytes().splitlines():
            try:
                ev = json.loads(raw)
            except ValueError:
                continue
            ev.pop("ts", None)  # wall-clock stamps: `t` (seconds since start) orders the run
            if ev.get("event") == "cl_call_error" and isinstance(ev.get("samples"), list) and len(ev["samples"]) > 1:
                ev["samples"] = ev["samples"][:1]  # count, first_seq and last_seq stay exact
                cut_samples += 1
            if ev.get("event") == "memory":
                memory.append(ev)
            else:
                events.append(_cut_text(ev, text) if ev.get("event") == "iteration" else ev)
    if cut_samples:
        notes.append(f"cl_call_error samples: the first kept of each folded record ({cut_samples} records)")
    fixed = sum(len(json.dumps(e, ensure_ascii=False)) + 1 for e in events)
    fixed += sum((dst / n).stat().st_size for n in KEEP if (dst / n).is_file())
    budget = max_kb * 1024 - fixed - 40 * 1024  # room for the logs
    stride = 1
    while memory and sum(len(json.dumps(e)) + 1 for e in memory[::stride]) > max(budget, 0) and stride < len(memory):
        stride += 1
    if stride > 1:
        notes.append(f"memory events: every {stride}th kept ({len(memory[::stride])} of {len(memory)})")
    notes.append("`ts` (wall clock) dropped from every event; `t` and `seq` kept")
    if text:
        notes.append(f"iteration prompt/output texts cut to {text} characters, output token ids dropped")
    kept = sorted(events + memory[::stride], key=lambda e: e.get("seq", 0))
    if kept:
        with open(dst / "events.jsonl", "w", encoding="utf-8") as fh:
            for ev in kept:
                fh.write(json.dumps(ev, ensure_ascii=False) + "\n")
    for name, budget in (("engine.log", 24 * 1024), ("cl_trace.jsonl", 12 * 1024)):
        if (src / name).is_file():
            lines, cut = _head_tail((src / name).read_bytes().splitlines(keepends=True), budget)
            (dst / name).write_bytes(b"".join(lines))
            if cut:
                notes.append(f"{name}: {cut} lines cut from the middle")
    (dst / "TRIMMED.txt").write_text(f"trimmed from {src.name} by tools/trim_run.py\n" + "\n".join(notes) + "\n")
    size = sum(p.stat().st_size for p in dst.iterdir() if p.is_file())
    if size > max_kb * 1024:
        notes.append(f"still {size // 1024} KB > {max_kb} KB")
    return notes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--max-kb", type=int, default=200)
    ap.add_argument("--text", type=int, default=48)
    a = ap.parse_args(argv)
    if not (a.src / "events.jsonl").is_file() and not (a.src / "engine.log").is_file():
        print(f"trim_run: {a.src} is not a run folder (no events.jsonl or engine.log)", file=sys.stderr)
        return 3
    for n in trim(a.src, a.dst, a.max_kb, a.text):
        print(n)
    return 0


if __name__ == "__main__":
    sys.exit(main())
