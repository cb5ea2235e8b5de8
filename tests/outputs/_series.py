"""Recorded memory series (tests/data/series/*.jsonl): trim a real run folder, and rebuild one from a trim.

A trimmed series keeps only what the memory and speed verdicts read: the
manifest's model shape and backend, `iteration` events (index, conversation,
turn, context, tokens, speeds) and `memory` events, plus worker starts,
recoveries and run_end.  No prompt or output text.  Make one with

    python3 tests/outputs/_series.py RUN_DIR tests/data/series/NAME.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SERIES_DIR = Path(__file__).resolve().parents[1] / "data" / "series"
_KEEP = {
    "iteration": ("i", "conversation", "turn", "context_tokens", "prompt_tokens", "generated_tokens",
                  "decode_tps", "prefill_tps", "wall_s", "ok"),
    "memory": ("source", "iteration", "rss", "uss", "pss", "gpu_live_bytes"),
    "worker_start": ("generation",),
    "recovery": ("iteration", "recovered_by"),
    "run_start": ("engine", "backend"),
    "run_end": ("reason", "iterations", "elapsed_s"),
}
_COMMON = ("event", "t", "seq", "run_id")


def trim(run_dir: Path, out: Path, source: str) -> None:
    manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
    model = manifest.get("model") or {}
    head = {"series": 1, "source": source, "backend": manifest.get("backend_actual") or manifest.get("backend"),
            "model": {k: model.get(k) for k in ("name", "family", "params", "layers", "kv_heads", "head_dim",
                                                 "max_position_embeddings", "config")}}
    lines = [json.dumps(head)]
    for raw in (Path(run_dir) / "events.jsonl").read_text(encoding="utf-8").split("\n"):
        if not raw.strip():
            continue
        e = json.loads(raw)
        keep = _KEEP.get(e.get("event"))
        if keep is not None:
            lines.append(json.dumps({k: e[k] for k in (*_COMMON, *keep) if k in e}, separators=(",", ":")))
    Path(out).write_text("\n".join(lines) + "\n")


def rebuild(name: str, dest: Path) -> Path:
    """A run folder (manifest.json + events.jsonl) from tests/data/series/NAME.jsonl."""
    lines = (SERIES_DIR / f"{name}.jsonl").read_text().splitlines()
    head = json.loads(lines[0])
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "manifest.json").write_text(json.dumps({"run_id": name, "backend": head["backend"],
                                                    "backend_actual": head["backend"], "model": head["model"]}))
    (dest / "events.jsonl").write_text("\n".join(lines[1:]) + "\n")
    return dest


if __name__ == "__main__":
    trim(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 else str(sys.argv[1]))
