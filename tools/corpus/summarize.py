#!/usr/bin/env python3
"""One-line facts about a soak run folder (corpus helper, not part of soak)."""
import json, subprocess, sys, collections, os
def mb(x): return "?" if x is None else f"{x/2**20:.1f}MiB"
for d in sys.argv[1:]:
    ev = []
    with open(os.path.join(d, "events.jsonl"), errors="replace") as f:
        for l in f:
            try: ev.append(json.loads(l))
            except Exception: pass
    kinds = collections.Counter(e.get("event") for e in ev)
    mem = [e for e in ev if e.get("event") == "memory"]
    it = [e for e in ev if e.get("event") == "iteration"]
    end = [e for e in ev if e.get("event") == "run_end"]
    faults = collections.Counter((e.get("kind")) for e in ev if e.get("event") == "fault")
    loads = [(e.get("backend_requested"), e.get("backend_actual"), e.get("ok"), e.get("cache")) for e in ev if e.get("event") == "load"]
    gpu = [m.get("gpu_live_bytes") for m in mem if m.get("gpu_live_bytes") is not None]
    ctx = max((e.get("context_tokens") or 0) for e in it) if it else 0
    ok = sum(1 for e in it if e.get("ok"))
    print(f"== {d}")
    print(f"  events {dict(kinds)}")
    print(f"  end: {end[-1].get('reason') if end else 'NO run_end'}  iterations {len(it)} ok {ok}  max context {ctx}  conversations {len({e.get('conversation') for e in it})}")
    print(f"  loads {loads}")
    print(f"  faults {dict(faults)}")
    if mem:
        print(f"  rss {mb(mem[0].get('rss'))} -> {mb(mem[-1].get('rss'))} (max {mb(max(m.get('rss') or 0 for m in mem))})")
    if gpu:
        print(f"  gpu_live {mb(gpu[0])} -> {mb(gpu[-1])} (max {mb(max(gpu))})")
    sz = {n: os.path.getsize(os.path.join(d, n)) for n in os.listdir(d) if os.path.isfile(os.path.join(d, n))}
    print(f"  files {sz}")
