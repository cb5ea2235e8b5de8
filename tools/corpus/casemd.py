#!/usr/bin/env python3
"""Write CASE.md for a corpus run folder: facts from the folder + the observation text given.

    casemd.py RUN_DIR ENGINE INJECTED OBSERVED_TEXT_FILE [ENV]
"""
import json, os, subprocess, sys, shlex
d, engine, injected, obs_file = sys.argv[1:5]
env = sys.argv[5] if len(sys.argv) > 5 else ""
start = None
for l in open(os.path.join(d, "events.jsonl"), errors="replace"):
    e = json.loads(l); start = e; break
argv = start.get("argv", []) if start else []
cmd = (env + " " if env else "") + "python3 -m soak " + " ".join(shlex.quote(a) for a in argv)
here = os.path.dirname(os.path.abspath(__file__))
summ = subprocess.run([sys.executable, os.path.join(here, "summarize.py"), d], capture_output=True, text=True).stdout
cls = subprocess.run([sys.executable, "-m", "soak", "classify", os.path.abspath(d)], capture_output=True, text=True, cwd="/work/wt/realruns")
cls_txt = (cls.stdout + cls.stderr)
verd = ""
try:
    v = json.load(open(os.path.join(d, "verdicts.json")))
    for k, s in v.get("memory", {}).get("series", {}).items():
        if "start_level" in s:
            verd += f"- {k}: {s.get('verdict')} ({s['start_level']/2**20:.1f} -> {s['end_level']/2**20:.1f} MiB after warm-up, p={s['test']['p']:.3f}, slope {s['slope_per_hour']['value']/2**20:.0f} MiB/h)\n"
        else:
            verd += f"- {k}: {s.get('verdict')} ({s.get('reason', '')})\n"
except Exception as exc:
    verd = f"(no verdicts.json: {exc})\n"
obs = open(obs_file).read().strip()
rev = subprocess.run(["git", "-C", "/work/wt/realruns", "log", "--oneline", "-1"], capture_output=True, text=True).stdout.strip()
md = f"""# {os.path.basename(d.rstrip('/'))}

- **Command** (run in the repo checkout /work/wt/realruns):
  `{cmd}`
- **Engine:** {engine}
- **Date:** {start.get('ts') if start else '?'}
- **Injected:** {injected}

## Observed (own reading of engine.log, events.jsonl, cl_trace)
{obs}

## Facts from the run folder (corpus/tools/summarize.py)
```
{summ.strip()}
```

## soak classify as of today (soak at {rev}, analysis code as on main)
```
{cls_txt.strip()}
```

## Memory verdicts as of today (verdicts.json)
{verd}"""
open(os.path.join(d, "CASE.md"), "w").write(md)
print(md[:400])
