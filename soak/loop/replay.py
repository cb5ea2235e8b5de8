"""Replay: re-run the recorded prompts that led to an iteration.

The conversation holding iteration N is replayed from its first turn up to
N, on a fresh engine with the run's own engine, model, backend and options
(and, for the test engine, its fault plan and iteration numbers), into a
new run folder.  Whether the same faults came back is judged on the run
folders, by catalog signature (soak.outputs.replay_source.replay_verdict).
"""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from soak import errors, run_folder
from soak.run_folder import read_events
from soak.loop.config import RunConfig
from soak.loop.runner import RunResult, run_soak
from soak.loop.session import Timeouts


def load_run(run_dir: str | Path) -> tuple[dict, Path]:
    run_dir = run_folder.require(run_dir)
    manifest = run_folder.read_json(run_dir / run_folder.MANIFEST)
    if manifest is None:
        raise errors.BadInput(f"{run_dir} is not a soak run folder (no {run_folder.MANIFEST})",
                              "pass a folder under logs/ written by `soak run`")
    return manifest, run_dir


def script_for(run_dir: Path, iteration: int) -> list[dict]:
    """The turns to replay: the conversation holding `iteration`, up to it.
    Type-tolerant: an iteration event whose fields have the wrong type is not
    replayable and is left out; a prompt with a lone surrogate (no UTF-8
    engine can take it) is replayed with U+FFFD in its place."""
    iterations = {ev["i"]: ev for ev in read_events(run_dir, {"iteration"})
                  if _int(ev.get("i")) and isinstance(ev.get("prompt"), str)}
    if iteration not in iterations:
        known = f"0..{max(iterations)}" if iterations else "none"
        raise errors.BadInput(f"iteration {iteration} is not in {run_dir} (iterations recorded: {known})")
    target = iterations[iteration]
    turns = [ev for i, ev in sorted(iterations.items())
             if _same(ev.get("conversation"), target.get("conversation")) and i <= iteration
             and _same(ev.get("worker_generation"), target.get("worker_generation"))]
    script = [{"i": ev["i"], "conversation": 0, "turn": ev["turn"] if _int(ev.get("turn")) else k,
               "prompt": _SURROGATE.sub("\ufffd", ev["prompt"]),
               "max_new_tokens": ev["max_new_tokens"] if _int(ev.get("max_new_tokens")) else None}
              for k, ev in enumerate(turns)]
    return script


_SURROGATE = re.compile("[\ud800-\udfff]")


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _same(a, b) -> bool:
    return type(a) is type(b) and a == b


def config_from_manifest(manifest: dict) -> RunConfig:
    saved = dict(manifest.get("config") or {})
    names = {f.name for f in fields(RunConfig)}
    cfg = RunConfig(**{k: v for k, v in saved.items() if k in names and k != "timeouts"})
    t = saved.get("timeouts") or {}
    cfg.timeouts = Timeouts(**{k: v for k, v in t.items() if k in Timeouts.__dataclass_fields__})
    return cfg


def replay(run: str | Path, iteration: int, out_dir: str | None = None, quiet: bool = False,
           engine_lib: str | None = None, model: str | None = None) -> tuple[RunResult, dict]:
    manifest, run_dir = load_run(run)
    script = script_for(run_dir, iteration)
    cfg = config_from_manifest(manifest)
    for turn in script:
        if turn["max_new_tokens"] is None:
            turn["max_new_tokens"] = cfg.max_new_tokens
    cfg.script = script
    cfg.iterations = None
    cfg.duration_s = None
    cfg.fail_fast = False
    cfg.quiet = quiet
    cfg.run_id = None
    if engine_lib:
        cfg.engine_lib = engine_lib
    if model:
        cfg.model = model
    cfg.out_dir = out_dir or str(run_dir.parent)
    cfg.argv = ["replay", str(run_dir), "--iteration", str(iteration)]
    result = run_soak(cfg)
    return result, {"run": str(run_dir), "iteration": iteration, "replay_run": str(result.run_dir),
                    "turns_replayed": len(script)}
