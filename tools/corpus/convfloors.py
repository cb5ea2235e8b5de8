#!/usr/bin/env python3
"""Per conversation: first-turn memory, last-turn memory, longest context (corpus helper)."""
import json, sys
d = sys.argv[1]
its, mem = {}, {}
for l in open(d + "/events.jsonl", errors="replace"):
    try: e = json.loads(l)
    except Exception: continue
    if e.get("event") == "iteration": its[e["i"]] = e
    elif e.get("event") == "memory" and e.get("iteration") is not None: mem[e["iteration"]] = e
convs = {}
for i, e in sorted(its.items()):
    convs.setdefault(e["conversation"], []).append(i)
def f(x): return "-" if x is None else f"{x/2**20:.1f}"
print("conv turns maxctx rss_first rss_last gpu_first gpu_last (MiB)")
for c, ii in convs.items():
    m0, m1 = mem.get(ii[0], {}), mem.get(ii[-1], {})
    print(c, len(ii), max(its[i].get("context_tokens") or 0 for i in ii), f(m0.get("rss")), f(m1.get("rss")), f(m0.get("gpu_live_bytes")), f(m1.get("gpu_live_bytes")))
