"""Read one run folder (logs/<run-id>/) for the analyses and outputs.

Everything after the engine reads only the run folder (docs/ARCHITECTURE.md).
`RunFolder` loads manifest.json, events.jsonl (through
`soak.events.read_events`, which tolerates a truncated last line),
summary.json and classification.json once, and answers the questions the
verdicts, gate, bundle and report ask of them.
"""

from __future__ import annotations

import json
import sys
from functools import cached_property
from pathlib import Path
from typing import Any

from soak.errors import BadInput


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path} is not valid JSON ({exc})",
                       hint="the run folder is damaged; re-run `soak run`, or delete the file "
                            "if it is optional (summary.json, classification.json)") from exc
    if not isinstance(data, dict):
        raise BadInput(f"{path} does not hold a JSON object", hint="the run folder is damaged")
    return data


# With slim=True, iteration events keep only these fields: the numbers and
# statuses the verdicts, gate and plots use.  Prompts and outputs (long text)
# stay on disk, so a 100k-iteration run fits in tens of MiB, not a GiB.
SLIM_ITERATION_FIELDS = frozenset({
    "event", "seq", "t", "ts", "run_id", "i", "conversation", "turn", "max_new_tokens", "status",
    "status_name", "ok", "prompt_tokens", "generated_tokens", "prefill_us", "decode_us", "prefill_tps",
    "decode_tps", "wall_s", "context_tokens", "output_bytes", "cl_errors", "cl_call_errors", "failures",
    "worker_generation", "backend_actual", "log_span",
})


def _slim(event: dict) -> dict:
    """The event without long text, its keys and short strings shared (interned):
    json.loads makes new key strings for every line, which dominates a long run."""
    keep = SLIM_ITERATION_FIELDS if event.get("event") == "iteration" else None
    return {sys.intern(k): (sys.intern(v) if isinstance(v, str) and len(v) <= 32 else v)
            for k, v in event.items() if keep is None or k in keep}


class RunFolder:
    """A run folder, loaded lazily.  Raises BadInput if `path` is not one.

    slim=True drops the prompt/output text of iteration events (for analyses
    that never read it); the bundle, which ships prompts, loads them whole.
    """

    def __init__(self, path: str | Path, slim: bool = False):
        self.slim = slim
        self.path = Path(path)
        if not self.path.is_dir():
            raise BadInput(f"run folder {self.path} does not exist",
                           hint="pass a folder written by `soak run`, e.g. logs/<run-id>")
        if not (self.path / "events.jsonl").is_file():
            raise BadInput(f"{self.path} has no events.jsonl, so it is not a soak run folder",
                           hint="pass a folder written by `soak run`, e.g. logs/<run-id>")

    # --- files -----------------------------------------------------------------
    @cached_property
    def manifest(self) -> dict:
        return _read_json(self.path / "manifest.json") or {}

    @cached_property
    def summary(self) -> dict:
        return _read_json(self.path / "summary.json") or {}

    @cached_property
    def classification(self) -> dict | None:
        return _read_json(self.path / "classification.json")

    @cached_property
    def events(self) -> list[dict]:
        from soak.events import read_events

        try:
            if self.slim:
                return [_slim(e) for e in read_events(self.path) if isinstance(e, dict)]
            return [e for e in read_events(self.path) if isinstance(e, dict)]
        except (OSError, ValueError) as exc:
            raise BadInput(f"cannot read {self.path / 'events.jsonl'}: {exc}",
                           hint="the run folder is damaged; re-run `soak run`") from exc

    @property
    def run_id(self) -> str:
        for e in self.events:
            if e.get("run_id"):
                return str(e["run_id"])
        return str(self.manifest.get("run_id") or self.path.name)

    # --- event selections --------------------------------------------------------
    def of(self, kind: str) -> list[dict]:
        return [e for e in self.events if e.get("event") == kind]

    @cached_property
    def iterations(self) -> list[dict]:
        return self.of("iteration")

    @cached_property
    def faults(self) -> list[dict]:
        return self.of("fault")

    @cached_property
    def recoveries(self) -> list[dict]:
        return self.of("recovery")

    @cached_property
    def memory(self) -> list[dict]:
        return self.of("memory")

    def first(self, kind: str) -> dict | None:
        return next((e for e in self.events if e.get("event") == kind), None)

    @property
    def seed(self) -> Any:
        start = self.first("run_start") or {}
        return start.get("seed", self.manifest.get("seed"))

    @property
    def iteration_count(self) -> int:
        end = self.first("run_end") or {}
        if isinstance(end.get("iterations"), int):
            return end["iterations"]
        return len(self.iterations)

    @property
    def elapsed_s(self) -> float | None:
        end = self.first("run_end") or {}
        if isinstance(end.get("elapsed_s"), (int, float)):
            return float(end["elapsed_s"])
        ts = [e.get("t") for e in self.events if isinstance(e.get("t"), (int, float))]
        return float(max(ts)) if ts else None

    @property
    def backend_requested(self) -> str | None:
        start = self.first("run_start") or {}
        return start.get("backend") or self.manifest.get("backend") or \
            (self.manifest.get("config") or {}).get("backend")

    @property
    def backend_actual(self) -> str | None:
        if self.manifest.get("backend_actual"):
            return self.manifest["backend_actual"]
        loads = [e for e in self.of("load") if e.get("backend_actual")]
        return loads[-1]["backend_actual"] if loads else None

    # --- engine.log --------------------------------------------------------------
    def log_bytes(self, start: int, end: int, limit: int = 1 << 20) -> bytes:
        path = self.path / "engine.log"
        if not path.is_file() or end <= start:
            return b""
        start = max(0, int(start))
        end = min(int(end), start + limit)
        with path.open("rb") as fh:
            fh.seek(start)
            return fh.read(end - start)

    def cl_trace_files(self) -> list[Path]:
        return sorted(p for p in self.path.glob("cl_trace.*") if p.is_file())
