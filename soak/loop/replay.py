"""Replay: re-run the recorded prompts that led to an iteration.

The conversation holding iteration N is replayed from its first turn up to
N, on a fresh engine with the run's own engine, model, backend and options
(and, for the test engine, its fault plan and iteration numbers), into a
new run folder.  Whether the same faults came back is judged on the run
folders, by catalog signature (soak.outputs.replay_source.replay_verdict).

A recorded run soak did not make here (a bundle) is data from a stranger:
its manifest names files on the sender's machine, and the same path on this
disk may be anything.  Such a replay loads only what the receiver names
(--engine-lib, --plugin, --model, --mnn-build; soak's own test engine) and
writes only in its own run folder: recorded library, plugin, model and
OpenCL paths and every file-writing option are left out, and said so
(ReplayPlan.ignored).  ReplayPlan.describe() says what will be loaded,
before anything is.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path

from soak import errors, run_folder
from soak.run_folder import read_events
from soak.loop.config import BACKENDS, ENGINE_KINDS, RunConfig, validate
from soak.loop.ladder import STEPS as LADDER_STEPS
from soak.loop.runner import RunResult, run_soak
from soak.loop.session import Timeouts


def load_run(run_dir: str | Path) -> tuple[dict, Path]:
    run_dir = run_folder.require(run_dir)
    manifest = run_folder.read_manifest(run_dir)
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
    """The recorded config, as recorded (a run folder of this machine's own)."""
    saved = dict(manifest.get("config") or {})
    names = {f.name for f in fields(RunConfig)}
    # the oracle is not replayed: a replay runs the recorded turns free (a reference's key would not fit)
    cfg = RunConfig(**{k: v for k, v in saved.items() if k in names and k not in ("timeouts", "oracle")})
    t = saved.get("timeouts") or {}
    cfg.timeouts = Timeouts(**{k: v for k, v in t.items() if k in Timeouts.__dataclass_fields__})
    return cfg


# The test engine's settings that neither load nor write a file (native/test_engine/FAULTS.md).
# Anything else a bundle's test-engine config holds (teardown_file writes one) is left out.
SAFE_TEST_ENGINE = {"seed": (int,), "prefill_tok_per_s": (int, float), "decode_tok_per_s": (int, float),
                    "stop_probability": (int, float), "context_len": (int,), "zero_work": (bool,),
                    "echo": (bool,), "opencl": (bool,), "teardown_s": (int, float), "max_new_tokens": (int,),
                    "kv_pool_bytes_per_token": (int, float)}
# MNN runtime options a stranger's bundle may set: tmp_path is left out (MNN writes its mmap
# files and kernel cache there), so the engine writes in the replay's own run folder.
SAFE_ENGINE_OPTIONS = {"precision": (str,), "memory": (str,), "power": (str,), "thread_num": (int,),
                       "use_mmap": (bool,)}
# Plain settings taken as recorded (checked by validate); the rest is set by the replay.
SAFE_SETTINGS = {"backend": (str,), "seed": (int,), "max_new_tokens": (int,), "max_turns": (int,),
                 "context_tokens": (int, type(None)), "recover_on_output": (bool,), "max_unrecovered": (int,),
                 "memory_interval_s": (int, float)}


def _typed(value, types) -> bool:
    return isinstance(value, types) and not (isinstance(value, bool) and bool not in types)


def stranger_config(manifest: dict, engine_lib: str | None = None, model: str | None = None,
                    plugins: list[str] | None = None, mnn_build: str | None = None) -> tuple[RunConfig, list[str]]:
    """A RunConfig from a manifest that is data, not instructions: (config, what was left out)."""
    saved = manifest.get("config") if isinstance(manifest.get("config"), dict) else {}
    ignored: list[str] = []
    engine = saved.get("engine")
    if engine not in ENGINE_KINDS:
        raise errors.BadInput(f"the bundle's run used engine {engine!r}, which this soak does not know",
                              f"replay needs one of {', '.join(ENGINE_KINDS)}")
    cfg = RunConfig(engine=engine, target="local")
    for name, types in SAFE_SETTINGS.items():
        if name in saved:
            if _typed(saved[name], types):
                setattr(cfg, name, saved[name])
            else:
                ignored.append(f"{name}={saved[name]!r} (wrong type)")
    if cfg.backend not in BACKENDS:
        raise errors.BadInput(f"the bundle's run used backend {cfg.backend!r}, which this soak does not know")
    t = saved.get("timeouts") if isinstance(saved.get("timeouts"), dict) else {}
    cfg.timeouts = Timeouts(**{k: v for k, v in t.items() if k in Timeouts.__dataclass_fields__})
    ladder = saved.get("ladder")
    if isinstance(ladder, list) and ladder and all(step in LADDER_STEPS for step in ladder):
        cfg.ladder = list(ladder)
    elif ladder is not None:
        ignored.append(f"ladder={ladder!r} (not a recovery ladder; the default is used)")
    # what the sender loaded: paths on the sender's machine, never loaded here
    for name in ("engine_lib", "mnn_build", "model"):
        if saved.get(name):
            ignored.append(f"{name}={saved[name]!r}")
    for plugin in saved.get("plugins") or []:
        ignored.append(f"plugin={plugin!r}")
    options = saved.get("engine_options") if isinstance(saved.get("engine_options"), dict) else {}
    for key, value in options.items():
        if value is None:
            continue
        if key in SAFE_ENGINE_OPTIONS and _typed(value, SAFE_ENGINE_OPTIONS[key]):
            cfg.engine_options[key] = value
        else:
            ignored.append(f"engine option {key}={value!r}")
    intercept = saved.get("intercept")
    if isinstance(intercept, dict):
        faults = intercept.get("faults")
        mem_limit = intercept.get("mem_limit")
        cfg.intercept = {"faults": faults if isinstance(faults, str) else "",
                         "gpu_override": intercept.get("gpu_override") is True,
                         "mem_limit": mem_limit if _typed(mem_limit, (int,)) else None,
                         "real_lib": None}  # the system's OpenCL, as found here
        if intercept.get("real_lib"):
            ignored.append(f"OpenCL library {intercept['real_lib']!r}")
    if engine == "test":
        plan = saved.get("fault_plan")
        cfg.fault_plan = plan if isinstance(plan, list) else None
        extra = saved.get("test_engine") if isinstance(saved.get("test_engine"), dict) else {}
        for key, value in extra.items():
            if key in SAFE_TEST_ENGINE and _typed(value, SAFE_TEST_ENGINE[key]):
                cfg.test_engine[key] = value
            else:
                ignored.append(f"test engine {key}={value!r}")
    # what the receiver names
    cfg.engine_lib = engine_lib
    cfg.plugins = list(plugins or [])
    cfg.model = model
    cfg.mnn_build = mnn_build
    if engine == "lib" and not engine_lib:
        raise errors.BadInput("this bundle's run loaded its own engine library; a replay loads only a library "
                              "you name", "pass --engine-lib PATH (and --plugin PATH, --model PATH as needed)")
    if engine == "mnn" and not (mnn_build or os.environ.get("SOAK_MNN_BUILD")):
        raise errors.BadInput("this bundle's run used a hand-built MNN; a replay loads only a build you name",
                              "pass --mnn-build DIR (or set $SOAK_MNN_BUILD) and --model PATH")
    if engine in ("lib", "mnn") and not model:
        raise errors.BadInput("a replay of this bundle needs the model: the recorded path is the sender's",
                              "pass --model PATH/config.json")
    return cfg, ignored


@dataclass
class ReplayPlan:
    cfg: RunConfig
    run_dir: Path
    iteration: int
    from_stranger: bool
    ignored: list[str] = field(default_factory=list)

    def describe(self) -> list[str]:
        """What the replay will load and where it writes: said before anything is loaded."""
        cfg = self.cfg
        engine = {"test": "soak's test engine (built from soak's own source)",
                  "mnn-pip": "pip MNN (the installed MNN package)",
                  "mnn": f"a hand-built MNN in {cfg.mnn_build or os.environ.get('SOAK_MNN_BUILD')} "
                         "(soak's shim, built against it, and its libraries)",
                  "lib": f"engine library {cfg.engine_lib}"}[cfg.engine]
        lines = [f"replay of iteration {self.iteration} ({len(cfg.script or [])} turns) of {self.run_dir}",
                 f"  loads: {engine}"]
        lines += [f"  loads: plugin {p}" for p in cfg.plugins]
        if cfg.model:
            lines.append(f"  model: {cfg.model}")
        if cfg.intercept is not None:
            lines.append(f"  OpenCL: through soak's interposer to {cfg.intercept.get('real_lib') or 'the system OpenCL'}")
        lines.append(f"  writes: a new run folder under {cfg.out_dir}")
        if self.ignored:
            lines.append("  left out (the bundle names them; a bundle is data, nothing it names is loaded "
                         "or written):")
            lines += [f"    {item}" for item in self.ignored]
        return lines


def plan_replay(run: str | Path, iteration: int, out_dir: str | None = None, quiet: bool = False,
                engine_lib: str | None = None, model: str | None = None, plugins: list[str] | None = None,
                mnn_build: str | None = None, from_stranger: bool = False) -> ReplayPlan:
    """Everything a replay will do, checked, with nothing loaded or written yet."""
    manifest, run_dir = load_run(run)
    script = script_for(run_dir, iteration)
    ignored: list[str] = []
    if from_stranger:
        cfg, ignored = stranger_config(manifest, engine_lib, model, plugins, mnn_build)
    else:
        cfg = config_from_manifest(manifest)
        if engine_lib:
            cfg.engine_lib = engine_lib
        if model:
            cfg.model = model
        if plugins:
            cfg.plugins = list(plugins)
        if mnn_build:
            cfg.mnn_build = mnn_build
    for turn in script:  # a recorded turn whose max_new_tokens was unreadable: the run's own
        if turn["max_new_tokens"] is None:
            turn["max_new_tokens"] = cfg.max_new_tokens
    cfg.script = script
    cfg.iterations = None
    cfg.duration_s = None
    cfg.fail_fast = False
    cfg.quiet = quiet
    cfg.run_id = None
    cfg.out_dir = out_dir or str(run_dir.parent)
    cfg.argv = ["replay", str(run_dir), "--iteration", str(iteration)]
    validate(cfg)
    return ReplayPlan(cfg, run_dir, iteration, from_stranger, ignored)


def run_replay(plan: ReplayPlan) -> tuple[RunResult, dict]:
    result = run_soak(plan.cfg)
    return result, {"run": str(plan.run_dir), "iteration": plan.iteration, "replay_run": str(result.run_dir),
                    "turns_replayed": len(plan.cfg.script or []), "ignored": plan.ignored}


def replay(run: str | Path, iteration: int, out_dir: str | None = None, quiet: bool = False,
           engine_lib: str | None = None, model: str | None = None, from_stranger: bool = False
           ) -> tuple[RunResult, dict]:
    return run_replay(plan_replay(run, iteration, out_dir, quiet, engine_lib=engine_lib, model=model,
                                  from_stranger=from_stranger))
