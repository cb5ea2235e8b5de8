"""Replay: re-run the recorded prompts that led to an iteration.

The conversation holding iteration N is replayed from its first turn up to
N, on a fresh engine with the run's own engine, model, backend and options
(and, for the test engine, its fault plan and iteration numbers), into a
new run folder.  Whether the same faults came back is judged on the run
folders, by catalog signature (soak.outputs.replay_source.replay_verdict).
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from soak import errors
from soak.events import read_events
from soak.loop.config import RunConfig
from soak.loop.runner import RunResult, run_soak
from soak.loop.session import Timeouts
from soak.manifest import read_json


def load_run(run_dir: str | Path) -> tuple[dict, Path]:
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").exists():
        raise errors.BadInput(f"{run_dir} is not a soak run folder (no manifest.json)",
                              "pass a folder under logs/ written by `soak run`")
    return read_json(run_dir / "manifest.json"), run_dir


def script_for(run_dir: Path, iteration: int) -> list[dict]:
    """The turns to replay: the conversation holding `iteration`, up to it."""
    iterations = {ev["i"]: ev for ev in read_events(run_dir, {"iteration"})}
    if iteration not in iterations:
        known = f"0..{max(iterations)}" if iterations else "none"
        raise errors.BadInput(f"iteration {iteration} is not in {run_dir} (iterations recorded: {known})")
    target = iterations[iteration]
    turns = [ev for i, ev in sorted(iterations.items())
             if ev["conversation"] == target["conversation"] and i <= iteration
             and ev.get("worker_generation") == target.get("worker_generation")]
    script = [{"i": ev["i"], "conversation": 0, "turn": ev["turn"], "prompt": ev["prompt"],
               "max_new_tokens": ev["max_new_tokens"]} for ev in turns]
    return script


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
