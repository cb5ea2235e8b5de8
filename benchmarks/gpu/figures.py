"""The closing-note figures of a GPU recipe's soak runs, one block per run folder: backend, iterations,
decode/prefill tok/s (the engine's own perf, mean over iterations), GPU bytes after load (the first memory
sample of the engine's process) and at the peak, the GPU series' memory verdict with its bytes per context
token (fits against the longest context and the context in use) next to the KV-cache theory, the model's
parameters and KV bytes per token from the manifest, and the root-cause rows of `soak classify`.

    python3 benchmarks/gpu/figures.py RUN [RUN...]
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from soak.run_folder import SUMMARY, VERDICTS, read_events, read_json, read_manifest  # noqa: E402


def _mb(x) -> str:
    return f"{x / 1e6:.1f} MB" if isinstance(x, (int, float)) else "-"


def figures(run: Path) -> None:
    summary = read_json(run / SUMMARY) or {}
    verdicts = read_json(run / VERDICTS) or {}
    manifest = read_manifest(run) or {}
    model = manifest.get("model") or {}
    print(f"== {run.name}: backend {summary.get('backend_actual')} (asked {summary.get('backend_requested')}), "
          f"{summary.get('iterations')} iterations, {summary.get('elapsed_s', 0):.0f} s, end {summary.get('end_reason')}")
    print(f"   model: {model.get('params') or model.get('parameters')} parameters, KV {model.get('kv_bytes_per_token')} "
          f"B/token (manifest)")
    print(f"   decode {summary.get('decode_tps_mean') or 0:.1f} tok/s, prefill {summary.get('prefill_tps_mean') or 0:.1f} "
          f"tok/s (means over iterations)")
    gpu = [e for e in read_events(run, kinds={"memory"}) if e.get("gpu_live_bytes") is not None]
    if gpu:
        print(f"   GPU live bytes: after load {_mb(gpu[0]['gpu_live_bytes'])} (iteration {gpu[0].get('iteration')}), "
              f"peak {_mb(max(e['gpu_live_bytes'] for e in gpu))}, last {_mb(gpu[-1]['gpu_live_bytes'])}")
    g = ((verdicts.get("memory") or {}).get("series") or {}).get("gpu_live_bytes") or {}
    w = g.get("workload") or {}
    fits = (w.get("fit") or {}).get("fits") or {}
    kv = w.get("expected_kv") or (verdicts.get("memory") or {}).get("expected_kv") or {}
    fit_s = ", ".join(f"{k} {v.get('bytes_per_token', 0):,.0f} B/token [{v.get('lo', 0):,.0f}, {v.get('hi', 0):,.0f}]"
                      for k, v in fits.items())
    print(f"   GPU verdict {g.get('verdict')}; fit {(w.get('fit') or {}).get('model')}: {fit_s or '-'}; theory "
          f"{kv.get('bytes_per_token')} B/token ({kv.get('dtype_assumed', '')}); kv_ratio "
          f"{((w.get('fit') or {}).get('kv_ratio') or {}).get('value')}")
    cls = subprocess.run([sys.executable, "-m", "soak", "classify", str(run)], capture_output=True, text=True)
    for line in (cls.stdout or cls.stderr).splitlines()[:8]:
        print("   |", line)


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        try:
            figures(Path(arg))
        except Exception as e:  # one broken run folder does not hide the others' figures
            print(f"== {arg}: {type(e).__name__}: {e}")
