"""The soak loop: workload in, events out.

    run_soak(RunConfig) -> RunResult

Writes logs/<run-id>/ (manifest.json, events.jsonl, engine.log,
summary.json), then hands the folder to the analysis stages that exist
(classification, verdicts).  See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import datetime as _dt
import json
import secrets
import shutil
import signal
import math
import statistics
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path

from soak import errors
from soak.loop import ladder as recovery, outcomes as faultlib
from soak.loop.checks import check_output
from soak.loop.console import Progress, summary_table
from soak.events import EventLog
from soak.manifest import base_manifest, library_hashes, read_json, write_json
from soak.loop.session import EngineSetup, Session, Timeouts
from soak.targets.base import Target
from soak.engine.abi import FINISHED_STATUSES, STATUS_NAMES
from soak.worker.protocol import unb64
from soak.loop.workload import Prefetcher, WorkloadSpec

ENGINE_KINDS = ("test", "mnn-pip", "mnn", "lib")
BACKENDS = ("cpu", "opencl", "vulkan")
ENGINE_OPTION_KEYS = ("precision", "memory", "thread_num", "power", "use_mmap", "tmp_path")
EMBEDDED_MODEL = Path(__file__).resolve().parent / "models" / "qwen2-tiny" / "config.json"


@dataclass
class RunConfig:
    engine: str = "test"
    engine_lib: str | None = None
    mnn_build: str | None = None
    plugins: list[str] = field(default_factory=list)
    model: str | None = None
    backend: str = "cpu"
    engine_options: dict = field(default_factory=dict)
    iterations: int | None = None
    duration_s: float | None = None
    seed: int = 0
    fail_fast: bool = False
    out_dir: str = "logs"
    run_id: str | None = None
    fault_plan: list | None = None
    test_engine: dict = field(default_factory=dict)
    max_new_tokens: int = 64
    max_turns: int = 4
    context_tokens: int | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    ladder: list[str] = field(default_factory=lambda: list(recovery.STEPS))
    recover_on_output: bool = False
    memory_interval_s: float = 1.0
    max_unrecovered: int = 3
    target: str = "local"
    intercept: dict | None = None
    argv: list[str] = field(default_factory=list)
    script: list[dict] | None = None
    quiet: bool = False
    demo: bool = False


class RunningStats:
    """Mean, stdev, min, max, first and last in O(1) memory (Welford)."""

    def __init__(self):
        self.n, self.mean, self._m2 = 0, 0.0, 0.0
        self.first = self.last = self.min = self.max = None

    def add(self, x: float) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self._m2 += delta * (x - self.mean)
        self.first = x if self.first is None else self.first
        self.last = x
        self.min = x if self.min is None else min(self.min, x)
        self.max = x if self.max is None else max(self.max, x)

    @property
    def stdev(self) -> float | None:
        return math.sqrt(self._m2 / (self.n - 1)) if self.n > 1 else None


@dataclass
class RunResult:
    run_dir: Path
    summary: dict
    exit_code: int


def new_run_id(cfg: RunConfig) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{cfg.engine}-{cfg.backend}-{secrets.token_hex(2)}"


def resolve_model(path: str | None, required: bool) -> Path | None:
    if path:
        from soak.engine.model_info import builtin_model

        path = str(builtin_model(path) or path)  # "tiny": the model shipped in the package
    if not path:
        if required:
            raise errors.BadInput("this engine needs a model: pass --model PATH/config.json",
                                  "the committed tiny model is soak/models/qwen2-tiny/config.json")
        return None
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "config.json"
    if not p.exists():
        raise errors.BadInput(f"model config not found: {p}",
                              "pass the model's config.json (or its folder) with --model")
    try:
        json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.BadInput(f"model config {p} is not valid JSON: {exc}") from None
    return p.resolve()


def engine_setup(cfg: RunConfig, run_dir: Path) -> EngineSetup:
    if cfg.engine not in ENGINE_KINDS:
        raise errors.BadInput(f"unknown engine {cfg.engine!r}", f"use one of {', '.join(ENGINE_KINDS)}")
    if cfg.backend not in BACKENDS:
        raise errors.BadInput(f"unknown backend {cfg.backend!r}", f"use one of {', '.join(BACKENDS)}")
    config = {"backend_type": cfg.backend, "reuse_kv": True}
    config.update({k: v for k, v in cfg.engine_options.items() if v is not None})
    if cfg.engine == "test":
        from soak.native_build import build_test_engine

        engine_config = {"seed": cfg.seed, "faults": cfg.fault_plan or []}
        engine_config.update(cfg.test_engine)
        path = run_dir / "test_engine.json"
        path.write_text(json.dumps(engine_config, indent=2) + "\n")
        spec = {"kind": "native", "engine_lib": str(build_test_engine()), "plugins": [],
                "config_path": str(path)}
        return EngineSetup(spec, config, cfg.backend, per_iteration_config=True)
    if cfg.engine == "mnn-pip" and not cfg.model and EMBEDDED_MODEL.exists():
        cfg.model = str(EMBEDDED_MODEL)  # the embedded default: pip MNN on the committed tiny model
    model = resolve_model(cfg.model, required=True)
    if cfg.engine == "mnn-pip":
        if cfg.backend != "cpu":
            raise errors.BadInput(f"pip MNN runs on the CPU only; --backend {cfg.backend} needs a hand-built MNN",
                                  errors.HAND_BUILT_MNN_HINT)
        return EngineSetup({"kind": "pymnn", "config_path": str(model)}, config, cfg.backend)
    if cfg.engine == "mnn":
        # a hand-built MNN: build the shim against it, load libMNN_CL.so first
        from soak.engine.mnn_native import build_shim, locate

        mnn = locate(cfg.mnn_build)
        cfg.engine_lib = str(build_shim(mnn))
        cfg.plugins = [str(p) for p in [*mnn.extra_libs(), *mnn.plugins] if str(p) not in cfg.plugins] + cfg.plugins
    if not cfg.engine_lib:
        raise errors.BadInput("--engine lib needs --engine-lib PATH (the MNN shim or another soak engine)")
    from soak.engine.loader import check_loadable

    if cfg.target == "local":  # a phone's libraries are checked by the runner on the phone
        check_loadable(Path(cfg.engine_lib), "engine library")
        for plugin in cfg.plugins:
            check_loadable(Path(plugin), "backend plugin")
    spec = {"kind": "native", "engine_lib": str(Path(cfg.engine_lib).resolve()),
            "plugins": [str(Path(p).resolve()) for p in cfg.plugins], "config_path": str(model)}
    return EngineSetup(spec, config, cfg.backend)


def _model_info(cfg: RunConfig) -> dict | None:
    if cfg.engine == "test":
        return {"family": "test", "params": None, "note": "fault-injecting test engine"}
    try:
        from soak.engine.model_info import describe_model
    except ImportError:
        return None
    try:
        return describe_model(str(resolve_model(cfg.model, required=True)))
    except errors.SoakError:
        raise
    except Exception as exc:  # a model we can't describe still runs
        return {"error": f"could not describe model: {exc}"}


def _opencl_info(cfg: RunConfig) -> dict | None:
    if cfg.backend != "opencl" or cfg.engine == "test":
        return None
    try:
        from soak.cl.devinfo import describe_opencl
    except ImportError:
        return None
    try:
        return describe_opencl(cfg.intercept.get("real_lib") if cfg.intercept else None)
    except Exception as exc:
        return {"error": str(exc)}


class _MemoryTimer(threading.Thread):
    def __init__(self, runner: "Runner", interval: float):
        super().__init__(daemon=True, name="soak-memory")
        self.runner = runner
        self.interval = interval
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.runner.sample_memory("timer")


class Runner:
    def __init__(self, cfg: RunConfig, target: Target | None = None):
        self.cfg = cfg
        if target is None:
            from soak.targets.local import LocalTarget

            target = LocalTarget()
        self.target = target
        self.stop_reason: str | None = None
        self.interrupted = False
        self.last_memory: dict | None = None
        self.gpu_bytes = None  # callable -> int | None, set when the interposer runs
        self.cl_trace = None
        self.counts = {"faults": 0, "recovered": 0}
        self.faults_by_kind: dict[str, int] = {}
        self.recovery = {"attempts": 0, "by_step": {}, "unrecovered": 0, "durations": RunningStats()}
        self.decode_tps = RunningStats()
        self.prefill_tps = RunningStats()
        self.rss = RunningStats()
        self.recent_decode_tps: deque = deque(maxlen=30)

    # -- helpers ------------------------------------------------------------
    def sample_memory(self, source: str, iteration: int | None = None) -> dict | None:
        pid = self.session.sup.pid if self.session else None
        if not pid:
            return None
        sample = self.target.sample_memory(pid)
        if sample is None:
            return None
        gpu = None
        if self.gpu_bytes is not None:
            try:
                gpu = self.gpu_bytes()
            except Exception:
                gpu = None
        sample.setdefault("gpu_live_bytes", gpu)
        self.last_memory = sample
        if sample.get("rss"):
            self.rss.add(sample["rss"])
        self.events.emit("memory", source=source, iteration=iteration, pid=pid,
                         generation=self.session.sup.generation, **sample)
        return sample

    def _rss_now(self):
        return (self.last_memory or {}).get("rss")

    def _record_faults(self, found: list[dict]) -> None:
        for f in found:
            self.counts["faults"] += 1
            self.faults_by_kind[f["kind"]] = self.faults_by_kind.get(f["kind"], 0) + 1

    def _poll_cl_trace(self, iteration: int) -> list[dict]:
        if self.cl_trace is None:
            return []
        records = []
        try:
            records = self.cl_trace.poll()
        except Exception as exc:
            self.events.emit("warning", message=f"interposer trace unreadable: {exc}")
        out = []
        for rec in records:
            kind = rec.get("type")
            if kind == "error":
                ev = {"api": rec.get("api"), "code": rec.get("code"), "code_name": rec.get("code_name"),
                      "injected": bool(rec.get("injected")), "call_seq": rec.get("seq"), "t_ns": rec.get("t_ns"),
                      "call_index": rec.get("index"), "detail": rec.get("detail"), "why": rec.get("why"),
                      "pid": rec.get("pid"), "iteration": iteration}
                self.events.emit("cl_call_error", **ev)
                out.append(ev)
            elif kind == "build_failure":
                fields = {k: v for k, v in rec.items() if k not in ("type", "iteration", "seq")}
                self.events.emit("cl_build_failure", iteration=iteration, call_seq=rec.get("seq"), **fields)
            elif kind in ("start", "config_error"):
                self.events.emit(f"cl_{kind}", iteration=iteration,
                                 **{k: v for k, v in rec.items() if k not in ("type", "iteration")})
        return out

    def _should_stop(self, i: int, started: float) -> bool:
        if self.stop_reason:
            return True
        if self.interrupted:
            self.stop_reason = "interrupted"
        elif self.cfg.iterations is not None and i >= self.cfg.iterations:
            self.stop_reason = "iterations"
        elif self.cfg.duration_s is not None and time.monotonic() - started >= self.cfg.duration_s:
            self.stop_reason = "duration"
        return self.stop_reason is not None

    def _slowdown(self, tps: float | None, generated: int) -> dict | None:
        """A call decoding 3x slower than the recent median, and slow enough
        (>= 50 ms) that scheduler jitter can't explain it."""
        if not tps or generated < 4 or generated / tps < 0.05:
            return None
        window = list(self.recent_decode_tps)
        if len(window) < 8:
            return None
        baseline = statistics.median(window)
        if tps < baseline / 3:
            return {"kind": "slowdown", "phase": "decode", "decode_tps": round(tps, 2),
                    "baseline_tps": round(baseline, 2)}
        return None

    # -- the loop -----------------------------------------------------------
    def iteration(self, i: int, conv_index: int, turn_index: int, prompt: str, max_new: int,
                  context_tokens: int) -> tuple[list[dict], int]:
        out = self.session.respond(prompt.encode("utf-8"), max_new, i)
        res = out.result or {}
        perf = res.get("perf") or {}
        output = unb64(res["output_b64"]) if res.get("output_b64") else b""
        prompt_tokens = perf.get("prompt_tokens", 0)
        generated = perf.get("generated_tokens", 0)
        prefill_tps = prompt_tokens / (perf["prefill_us"] / 1e6) if perf.get("prefill_us") else None
        decode_tps = generated / (perf["decode_us"] / 1e6) if perf.get("decode_us") and generated else None
        found = faultlib.from_outcome(out, "decode", self.cfg.timeouts.respond)
        checks = None
        if out.result is not None and out.ok:
            checks = check_output(output, max_new, generated)
            status = res.get("status")
            if status in FINISHED_STATUSES:  # the engine says it finished: judge the text
                found += faultlib.from_output(checks, "decode")
            slow = self._slowdown(decode_tps, generated)
            if slow:
                found.append(slow)
        cl_calls = self._poll_cl_trace(i)
        context_tokens += prompt_tokens + generated
        status = res.get("status")
        self.events.emit(
            "iteration", i=i, conversation=conv_index, turn=turn_index, prompt=prompt,
            max_new_tokens=max_new, status=status, status_name=STATUS_NAMES.get(status),
            ok=out.ok and not found, prompt_tokens=prompt_tokens, generated_tokens=generated,
            prefill_us=perf.get("prefill_us"), decode_us=perf.get("decode_us"),
            prefill_tps=round(prefill_tps, 3) if prefill_tps else None,
            decode_tps=round(decode_tps, 3) if decode_tps else None,
            wall_s=round(out.elapsed_s, 6), context_tokens=context_tokens,
            output=output.decode("utf-8", errors="replace"), output_bytes=len(output), checks=checks,
            output_tokens=res.get("output_tokens"),
            cl_errors=[{"code": f["code"], "name": f["name"], "info": f["info"], "count": f["count"]}
                       for f in found if f["kind"] == "cl_error"],
            cl_call_errors=len(cl_calls),
            error_lines=[f["line"] for f in found if f["kind"] == "error_line"],
            log_span=list(out.span), failures=sorted({f["kind"] for f in found}),
            worker_generation=self.session.sup.generation,
            backend_actual=self.session.backend_actual,
        )
        for f in found:
            self.events.emit("fault", iteration=i, **f)
        self._record_faults(found)
        if decode_tps:
            self.decode_tps.add(decode_tps)
            self.recent_decode_tps.append(decode_tps)
        if prefill_tps:
            self.prefill_tps.add(prefill_tps)
        if self.session.alive:
            self.sample_memory("iteration", i)
        return found, context_tokens

    def _recover(self, found: list[dict], i: int) -> None:
        trigger = sorted({f["kind"] for f in found})
        record = recovery.climb(self.session, self.cfg.ladder, trigger, i, self._rss_now)
        self.recovery["attempts"] += 1
        if record["recovered_by"]:
            self.counts["recovered"] += 1
            by = self.recovery["by_step"]
            by[record["recovered_by"]] = by.get(record["recovered_by"], 0) + 1
            self.recovery["durations"].add(record["duration_s"])
            self.consecutive_unrecovered = 0
        else:
            self.recovery["unrecovered"] += 1
            self.consecutive_unrecovered += 1
            if self.consecutive_unrecovered >= self.cfg.max_unrecovered:
                self.stop_reason = "unrecoverable"

    def _ensure_alive(self, next_i: int) -> bool:
        """Before a conversation: if the last recovery left no worker, try again."""
        if self.session.alive:
            return True
        loaded, found = self.session.restart(next_i)
        self._record_faults(found)
        if loaded:
            self.consecutive_unrecovered = 0
            return True
        self.consecutive_unrecovered += 1
        if self.consecutive_unrecovered >= self.cfg.max_unrecovered:
            self.stop_reason = "unrecoverable"
        return False

    def _turns(self, spec: WorkloadSpec):
        """(conversation, turn, prompt, max_new_tokens, i) in run order."""
        if self.cfg.script is not None:
            for item in self.cfg.script:
                yield item["conversation"], item["turn"], item["prompt"], item["max_new_tokens"], item.get("i")
            return
        prefetch = Prefetcher(spec)
        try:
            for conv in prefetch:
                for t, turn in enumerate(conv.turns):
                    yield conv.index, t, turn.prompt, turn.max_new_tokens, None
        finally:
            prefetch.close()

    def loop(self, started: float, progress: Progress) -> None:
        cfg = self.cfg
        spec = WorkloadSpec(seed=cfg.seed, max_turns=cfg.max_turns, max_new_tokens=cfg.max_new_tokens,
                            context_tokens=cfg.context_tokens or 2048)
        i = 0
        current_conv = None
        broken_conv = None
        context_tokens = 0
        for conv_index, turn_index, prompt, max_new, fixed_i in self._turns(spec):
            if fixed_i is not None:
                i = fixed_i
            if self._should_stop(i if cfg.script is None else 0, started):
                break
            if conv_index == broken_conv:
                continue
            if conv_index != current_conv:
                if not self._ensure_alive(i):
                    if self.stop_reason:
                        break
                    continue
                if current_conv is not None:
                    out = self.session.simple("reset", "reset")
                    found = faultlib.from_outcome(out, "reset", cfg.timeouts.reset)
                    for f in found:
                        self.events.emit("fault", iteration=i, **f)
                    self._record_faults(found)
                    if any(faultlib.is_hard(f) for f in found):
                        self._recover(found, i)
                        if cfg.fail_fast:
                            self.stop_reason = "fail_fast"
                current_conv = conv_index
                context_tokens = 0
            if self.stop_reason:
                break
            found, context_tokens = self.iteration(i, conv_index, turn_index, prompt, max_new, context_tokens)
            hard = [f for f in found if faultlib.is_hard(f)
                    or (cfg.recover_on_output and f["kind"] == "bad_output")]
            if not hard and not self.session.alive:
                hard = [{"kind": "worker_lost"}]  # e.g. a phone went offline: its target recorded why
            i += 1
            if hard and cfg.fail_fast:
                self.stop_reason = "fail_fast"
            elif hard:
                self._recover(found, i - 1)
                broken_conv = conv_index  # its history is gone: go on with the next one
                current_conv = None
            progress.update(iteration=i, total=cfg.iterations, elapsed=time.monotonic() - started,
                            duration=cfg.duration_s, faults=self.counts["faults"],
                            recovered=self.counts["recovered"], rss=self._rss_now(),
                            decode_tps=self.decode_tps.last)
        self.iterations_done = i if cfg.script is None else len(cfg.script)
        progress.update(iteration=self.iterations_done, total=cfg.iterations, elapsed=time.monotonic() - started,
                        duration=cfg.duration_s, faults=self.counts["faults"], recovered=self.counts["recovered"],
                        rss=self._rss_now(), decode_tps=self.decode_tps.last, force=True)
        if self.stop_reason is None:
            self.stop_reason = "iterations" if cfg.script is not None else "workload"

    def summary(self, run_id: str, run_dir: Path, elapsed: float) -> dict:
        def mean(stats: RunningStats):
            return round(stats.mean, 3) if stats.n else None

        rec = dict(self.recovery)
        durations = rec.pop("durations")
        rec["mean_duration_s"] = mean(durations)
        return {
            "schema": 1,
            "run_id": run_id,
            "run_dir": str(run_dir),
            "end_reason": self.stop_reason,
            "iterations": getattr(self, "iterations_done", 0),
            "elapsed_s": round(elapsed, 3),
            "engine": self.cfg.engine,
            "engine_name": self.session.engine_name if self.session else None,
            "backend_requested": self.cfg.backend,
            "backend_actual": self.backend_actual_overall(),
            "worker_restarts": max(0, self.session.sup.generation) if self.session else 0,
            "faults": self.counts["faults"],
            "faults_by_kind": self.faults_by_kind,
            "recovery": rec,
            "decode_tps_mean": mean(self.decode_tps),
            "decode_tps_stdev": round(self.decode_tps.stdev, 3) if self.decode_tps.stdev else None,
            "prefill_tps_mean": mean(self.prefill_tps),
            "rss": {"first": self.rss.first, "last": self.rss.last, "max": self.rss.max},
        }

    def backend_actual_overall(self) -> str | None:
        """cpu if any load fell back: a run that was partly on the CPU is not an OpenCL run."""
        if not self.session:
            return None
        if self.faults_by_kind.get("cpu_fallback"):
            return "cpu"
        return self.session.backend_actual

    def run(self) -> RunResult:
        cfg = self.cfg
        run_id = cfg.run_id or new_run_id(cfg)
        run_dir = (Path(cfg.out_dir) / run_id).resolve()  # the worker runs in it: no relative paths
        if run_dir.exists() and any(run_dir.iterdir()):
            raise errors.BadInput(f"run folder {run_dir} already exists and is not empty",
                                  "choose another --run-id or --out")
        created = not run_dir.exists()
        run_dir.mkdir(parents=True, exist_ok=True)
        self.session = None
        try:
            setup = engine_setup(cfg, run_dir)
            if cfg.intercept is not None:
                self._setup_interposer(setup, run_dir)
        except errors.SoakError:
            if created:  # bad input: leave nothing behind
                shutil.rmtree(run_dir, ignore_errors=True)
            raise
        host = self.target.describe()
        manifest = base_manifest(cfg.argv, _config_dict(cfg), host)
        manifest.update({
            "run_id": run_id, "engine": cfg.engine, "engine_spec": setup.spec, "engine_config": setup.config,
            "backend": cfg.backend, "target": self.target.name, "model": _model_info(cfg),
            "libraries": library_hashes([setup.spec.get("engine_lib"), *setup.spec.get("plugins", [])]),
            "opencl": _opencl_info(cfg), "mnn_version": _mnn_version(cfg), "started": _now(),
            "interposer": cfg.intercept,  # None: the engine loaded OpenCL directly
            "mnn": _mnn_build_info(cfg),
        })
        write_json(run_dir / "manifest.json", manifest)
        t0 = time.monotonic()
        self.events = EventLog(run_dir / "events.jsonl", run_id, t0=t0)
        self.events.emit("run_start", argv=cfg.argv, seed=cfg.seed, engine=cfg.engine, backend=cfg.backend,
                         target=self.target.name, run_dir=str(run_dir))
        early = self.target.check_health()  # what the target saw before there was an event log
        for f in early:
            self.events.emit("fault", iteration=None, **f)
        self._record_faults(early)
        self.session = Session(self.target, setup, self.events, run_dir, cfg.timeouts)
        self.consecutive_unrecovered = 0
        progress = Progress(quiet=cfg.quiet)
        timer = _MemoryTimer(self, cfg.memory_interval_s)
        previous = signal.getsignal(signal.SIGINT)
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            signal.signal(signal.SIGINT, self._on_sigint)
        error: errors.SoakError | None = None
        try:
            loaded = False
            first_i = cfg.script[0].get("i") or 0 if cfg.script else 0
            for attempt in range(cfg.max_unrecovered):
                loaded, found = (self.session.start(first_i) if attempt == 0
                                 else self.session.restart(first_i))
                self._record_faults(found)
                if loaded or self.interrupted:
                    break
            if not loaded:
                self.stop_reason = "interrupted" if self.interrupted else "unrecoverable"
            elif cfg.fail_fast and self.faults_by_kind.get("cpu_fallback"):
                self.stop_reason = "fail_fast"  # an OpenCL run that silently runs on the CPU
            else:
                self.sample_memory("iteration", None)
                timer.start()
                self.loop(t0, progress)
        except errors.SoakError as exc:
            error = exc
            self.stop_reason = "engine_error"
            self.events.emit("error", error_type=type(exc).__name__, message=exc.message, hint=exc.hint,
                             exit_code=int(exc.exit_code))
        finally:
            timer.stop_event.set()
            if in_main:
                signal.signal(signal.SIGINT, previous)
            progress.done()
            self.session.close()
        elapsed = time.monotonic() - t0
        self.events.emit("run_end", reason=self.stop_reason, iterations=getattr(self, "iterations_done", 0),
                         elapsed_s=round(elapsed, 3))
        self.events.close()
        summary = self.summary(run_id, run_dir, elapsed)
        manifest.update({"backend_actual": summary["backend_actual"], "engine_name": summary["engine_name"],
                         "ended": _now()})
        write_json(run_dir / "manifest.json", manifest)
        write_json(run_dir / "summary.json", summary)
        if error is not None:
            raise error
        summary["analysis"] = _analyse(run_dir)
        write_json(run_dir / "summary.json", summary)
        if not cfg.quiet:
            print(summary_table(summary), flush=True)
        code = errors.ExitCode.OK
        if self.stop_reason in ("fail_fast", "unrecoverable"):
            code = errors.ExitCode.FAILED
        elif self.stop_reason == "interrupted":
            code = errors.ExitCode.INTERRUPTED
        return RunResult(run_dir, summary, int(code))

    def _on_sigint(self, signum, frame):
        if self.interrupted:
            raise KeyboardInterrupt
        self.interrupted = True
        print("\nsoak: stopping after this iteration (Ctrl-C again to abort)", flush=True)

    def _setup_interposer(self, setup: EngineSetup, run_dir: Path) -> None:
        from soak.cl import interposer

        setup.env.update(interposer.prepare(self.cfg.intercept, run_dir, base_env={}))
        try:
            from soak.cl.trace import open_trace

            self.cl_trace = open_trace(run_dir)
            self.gpu_bytes = self.cl_trace.live_bytes
        except ImportError:
            self.cl_trace = None


def _config_dict(cfg: RunConfig) -> dict:
    d = asdict(cfg)
    d.pop("script", None)
    return d


def _mnn_version(cfg: RunConfig) -> str | None:
    if cfg.engine == "mnn-pip":
        try:
            from importlib.metadata import version

            return version("mnn")
        except Exception:
            return None
    if cfg.engine == "mnn":
        try:
            from soak.engine.mnn_native import locate

            return locate(cfg.mnn_build).version
        except Exception:
            return None
    return None


def _mnn_build_info(cfg: RunConfig) -> dict | None:
    """A hand-built MNN's folders, version and library hashes (libllm.so, libMNN.so, plugins)."""
    if cfg.engine != "mnn":
        return None
    try:
        from soak.engine.mnn_native import locate

        return locate(cfg.mnn_build).manifest()
    except Exception as exc:
        return {"error": str(exc)}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _analyse(run_dir: Path) -> dict:
    """Run the analysis stages present in this tree; a failing stage is reported, not fatal.
    Verdicts come first: the classifier reads their memory symptoms."""
    done = {}
    try:
        from soak.analysis.verdicts import compute_verdicts
    except ImportError:
        compute_verdicts = None
    if compute_verdicts is not None:
        try:
            compute_verdicts(run_dir)
            done["verdicts"] = {"ok": True}
        except Exception as exc:
            done["verdicts"] = {"error": f"{type(exc).__name__}: {exc}"}
    try:
        from soak.catalog.classify import classify_run
    except ImportError:
        classify_run = None
    if classify_run is not None:
        try:
            result = classify_run(run_dir)
            findings = result.get("findings", []) if isinstance(result, dict) else []
            done["classification"] = {"findings": len(findings),
                                      "known": sum(1 for f in findings if f.get("known"))}
        except errors.SoakError as exc:
            done["classification"] = {"error": exc.message}
        except Exception as exc:
            done["classification"] = {"error": f"{type(exc).__name__}: {exc}"}
    return done


def run_soak(cfg: RunConfig, target: Target | None = None) -> RunResult:
    return Runner(cfg, target).run()


def load_run(run_dir: str | Path) -> tuple[dict, Path]:
    run_dir = Path(run_dir)
    if not (run_dir / "manifest.json").exists():
        raise errors.BadInput(f"{run_dir} is not a soak run folder (no manifest.json)",
                              "pass a folder under logs/ written by `soak run`")
    return read_json(run_dir / "manifest.json"), run_dir


def parse_duration(text: str) -> float:
    """'90', '30s', '10m', '8h', '1h30m' -> seconds."""
    import re

    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise errors.BadInput(f"bad duration {text!r}", "use e.g. 90, 30s, 10m, 8h or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


