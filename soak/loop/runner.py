"""The soak loop: workload in, events out.

    run_soak(RunConfig) -> RunResult

Writes logs/<run-id>/ (manifest.json, events.jsonl, engine.log,
summary.json) and returns: a producer only.  The command that started the run
hands the folder to its judges (soak.judges).  See docs/ARCHITECTURE.md.

Config and its validation: soak.loop.config.  Engine setup: soak.loop.engine_setup.
Totals: soak.loop.stats.  Interposer records -> events: soak.cl.trace_events.
"""

from __future__ import annotations

import datetime as _dt
import os
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from soak import end_reasons as ends, errors, signals
from soak.diagnostics import get_logger
from soak.engine.abi import FINISHED_STATUSES, STATUS_NAMES
from soak.events import EventLog
from soak.loop import ladder, outcomes
from soak.loop.checks import check_output
from soak.loop.config import RunConfig, config_dict, new_run_id, validate
from soak.fault_kinds import fault_detail, fault_kind_of
from soak.loop.console import Progress
from soak.loop.oracle_turns import OracleTurns, candidate_of as oracle_candidate, run_key as oracle_run_key
from soak.loop.engine_setup import engine_setup, manifest_facts
from soak.loop.reserve import DiskReserve, disk_full_error, is_disk_full
from soak.loop.session import EngineSetup, Session
from soak.loop.stats import TOKEN_TIMING, RunStats
from soak.loop.workload import Prefetcher, WorkloadSpec
from soak.manifest import base_manifest, library_hashes
from soak.run_folder import EVENTS, MANIFEST, SUMMARY, write_json
from soak.targets.base import Target
from soak.worker.protocol import unb64
from soak.worker.supervisor import Aborted


diag = get_logger(__name__)

# on abort (a second Ctrl-C, SIGTERM) the worker gets this long to quit before it is killed,
# instead of --timeout-teardown: an engine that hangs must not hold the user for minutes
ABORT_GRACE_S = 2.0


class _Abort(BaseException):
    """Raised by the signal handler: leave the iteration in flight, end the run now."""


@dataclass
class RunResult:
    run_dir: Path
    summary: dict
    exit_code: int
    aborted: bool = False   # a second Ctrl-C or SIGTERM abandoned the iteration in flight


DENSE_MEMORY_SAMPLES = 200
FORWARD_STOPPED_RATIO = 1.5   # decode this much faster than before a GPU error: the forward stopped
FORWARD_STOPPED_WINDOW = 8    # iterations after the error that are judged
_TIMING_KEYS = tuple((name, name[:-2] + "_us") for name in TOKEN_TIMING)  # ttft_s <- the worker's ttft_us


def _seconds(us: int | None) -> float | None:
    return us / 1e6 if us is not None else None


def run_soak(cfg: RunConfig, target: Target | None = None) -> RunResult:
    return Runner(cfg, target).run()


class Runner:
    def __init__(self, cfg: RunConfig, target: Target | None = None):
        if target is None:
            from soak.targets.local import LocalTarget

            target = LocalTarget()
        self.cfg = cfg
        self.target = target
        self.stats = RunStats()
        self.stop_reason: str | None = None
        self.interrupted = False  # set by Ctrl-C (or by multi-device orchestration for every device)
        self.iterations_done = 0
        self.consecutive_unrecovered = 0
        self.session: Session | None = None
        self.events: EventLog | None = None
        self.cl_trace = None    # soak.cl.trace.TraceReader while the interposer runs
        self.gpu_bytes = None   # callable -> int | None, set with cl_trace
        self.oracle: OracleTurns | None = None   # the wrong-answer oracle (soak.loop.oracle_turns)
        self._after_gpu_error: dict | None = None  # the last GPU error and the tok/s before it (_forward_stopped)
        self.iteration_samples = 0
        self.last_iteration_sample = 0.0
        self.reserve: DiskReserve | None = None
        self.aborted = False    # a second Ctrl-C or SIGTERM: the iteration in flight was abandoned
        self._ending = False    # writing run_end and the summary: signals no longer interrupt
        self._recording = False  # writing an iteration's event, count and faults: an abort waits
        self._abort_pending = False
        self._abort_reason: str | None = None  # "terminated" or "interrupted" once aborted
        self._abort_lock = threading.Lock()  # abort() from another thread vs the run's own end

    # -- a run, top to bottom ----------------------------------------------
    def run(self) -> RunResult:
        cfg = self.cfg
        validate(cfg)
        run_id = cfg.run_id or new_run_id(cfg)
        run_dir = self._make_run_dir(run_id)
        setup = self._setup_engine(run_dir)
        manifest = base_manifest(cfg.argv, config_dict(cfg), self.target.describe())
        facts = manifest_facts(cfg)
        libraries = library_hashes([setup.spec.get("engine_lib"), *setup.spec.get("plugins", [])])
        self.oracle = self._setup_oracle(run_dir, {**manifest, **facts, "libraries": libraries})
        manifest.update({
            "run_id": run_id, "engine": cfg.engine, "engine_spec": setup.spec, "engine_config": setup.config,
            "backend": cfg.backend, "target": self.target.name,
            "libraries": libraries,
            "started": _now(),
            "interposer": cfg.intercept,  # None: the engine loaded OpenCL directly
            **facts,
            "oracle": self.oracle.manifest() if self.oracle else None,
        })
        try:
            write_json(run_dir / MANIFEST, manifest)
            t0 = time.monotonic()
            self.progress = Progress(quiet=cfg.quiet, total=cfg.iterations, duration=cfg.duration_s)
            self.events = EventLog(run_dir / EVENTS, run_id, t0=t0, listener=self._on_event)
            self.events.emit("run_start", argv=cfg.argv, seed=cfg.seed, engine=cfg.engine, backend=cfg.backend,
                             target=self.target.name, run_dir=str(run_dir),
                             monotonic_t0=round(t0, 6))  # events' t is time.monotonic() - this (trace export)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self.reserve.release()
            raise disk_full_error(run_dir, exc, "the run could not start") from None
        self.progress.start(run_dir=run_dir, seed=cfg.seed, run_id=run_id)  # stopped in _supervised
        self._record_faults(self.target.check_health(), None)  # what the target saw before the event log
        self.target.attach(_RunnerSink(self))
        self.session = Session(self.target, setup, self.events, run_dir, cfg.timeouts)
        if self.aborted:  # abort() came before there was a session to wake
            self.session.sup.abort()
        previous = signals.catch(self._on_signal)  # Ctrl-C and SIGTERM while the run runs
        try:
            error = self._supervised(t0)
            with self._abort_lock:
                self._ending = True  # a signal from here on is noted, never raised: run_end and summary get written
                if self.aborted and error is None:  # not what the loop set meanwhile (abort() from another thread)
                    self.stop_reason = self._abort_reason
            elapsed = time.monotonic() - t0
            summary = self._end(run_id, run_dir, manifest, elapsed)
        finally:
            self._ending = True
            signals.restore(previous)
        if error is not None:
            raise error
        return RunResult(run_dir, summary, int(self._exit_code()), self.aborted)

    def _end(self, run_id: str, run_dir: Path, manifest: dict, elapsed: float) -> dict:
        """run_end, the manifest's end and summary.json; on a full disk, in the reserve's room."""
        try:
            self.events.emit("run_end", reason=self.stop_reason, iterations=self.iterations_done,
                             elapsed_s=round(elapsed, 3), **({"aborted": True} if self.aborted else {}))
            self.target.attach(None)
            if self.oracle is not None:
                self.oracle.close()
            self.events.close()
            summary = self.summary(run_id, run_dir, elapsed)
            manifest.update({"backend_actual": summary["backend_actual"], "engine_name": summary["engine_name"],
                             "ended": _now()})
            write_json(run_dir / MANIFEST, manifest)
            write_json(run_dir / SUMMARY, summary)
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            self.reserve.release()
            raise disk_full_error(run_dir, exc, "could not write the end of the run") from None
        self.reserve.release()
        return summary

    def _make_run_dir(self, run_id: str) -> Path:
        """Create the run folder, exclusively: a folder that exists (even empty) belongs to another run."""
        out = Path(self.cfg.out_dir).expanduser()
        try:
            out.mkdir(parents=True, exist_ok=True)
            run_dir = out.resolve() / run_id  # the worker runs in it: no relative paths
            os.mkdir(run_dir)
        except FileExistsError:
            if not out.is_dir():
                raise errors.BadInput(f"--out {out} is not a folder", "pass a folder for the run folders") from None
            raise errors.BadInput(f"run folder {out / run_id} already exists (another run's, or one running now)",
                                  "choose another --run-id or --out") from None
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error(out, exc, "could not create the run folder") from None
            why = "is not a folder" if isinstance(exc, NotADirectoryError) else f"cannot be written ({exc.strerror})"
            raise errors.BadInput(f"--out {out} {why}", "pass a folder you can write to with --out") from None
        try:
            self.reserve = DiskReserve(run_dir)
        except OSError as exc:
            shutil.rmtree(run_dir, ignore_errors=True)
            if is_disk_full(exc):
                raise disk_full_error(run_dir, exc, "no room to start a run") from None
            raise errors.BadInput(f"cannot write in the run folder {run_dir}: {exc.strerror}",
                                  "pass a folder you can write to with --out") from None
        return run_dir

    def _setup_engine(self, run_dir: Path) -> EngineSetup:
        try:
            setup = engine_setup(self.cfg, run_dir)
            if self.cfg.intercept is not None:
                self._setup_interposer(setup, run_dir)
            return setup
        except errors.SoakError:
            shutil.rmtree(run_dir, ignore_errors=True)  # bad input: leave nothing behind (the folder is ours)
            raise

    def _setup_oracle(self, run_dir: Path, manifest: dict) -> OracleTurns | None:
        """The oracle's reference (check) or its writer (make); bad input removes the run folder."""
        if self.cfg.oracle is None:
            return None
        try:
            from soak.native_build import ensure_built

            lib = str(ensure_built("soak_oracle"))
            return OracleTurns(self.cfg.oracle, run_dir, oracle_run_key(manifest, self.cfg),
                               oracle_candidate(self.cfg), lib)
        except errors.SoakError:
            shutil.rmtree(run_dir, ignore_errors=True)
            raise

    def _setup_interposer(self, setup: EngineSetup, run_dir: Path) -> None:
        from soak.cl import interposer
        from soak.cl.trace import open_trace

        setup.env.update(interposer.prepare(self.cfg.intercept, run_dir, base_env={}))
        self.cl_trace = open_trace(run_dir)
        self.gpu_bytes = self.cl_trace.live_bytes

    def _supervised(self, t0: float) -> errors.SoakError | None:
        """Start the engine and run the loop with the memory timer on, then end the worker.
        A SoakError ends the run (recorded as an `error` event) and is returned, as is a full disk
        (errors.DiskFull).  A second Ctrl-C or SIGTERM (_Abort) leaves the iteration in flight."""
        cfg = self.cfg
        progress = self.progress
        timer = _MemoryTimer(self, cfg.memory_interval_s)
        error = None
        try:
            if self._start_engine():
                if self.oracle is not None and self.session.oracle_unavailable:
                    raise errors.OracleUnavailable(
                        f"the engine cannot serve the wrong-answer oracle: {self.session.oracle_unavailable}",
                        "run without --reference, or use an engine with the forward entry point (ABI 2: the "
                        "test engine, pip MNN, a hand-built MNN through soak's shim)")
                self.sample_memory("iteration", None)
                timer.start()
                self.loop(t0, progress)
        except (_Abort, Aborted):
            pass  # the signal handler or abort() set stop_reason
        except errors.SoakError as exc:
            harness = isinstance(exc, errors.HarnessError)
            kind = ("harness" if harness else "device" if isinstance(exc, errors.DeviceUnavailable)
                    else "engine")
            self.stop_reason = ends.HARNESS_ERROR if harness else ends.ENGINE_ERROR
            self.events.emit("error", kind=kind, error_type=type(exc).__name__,
                             message=exc.message, hint=exc.hint, exit_code=int(exc.exit_code))
            error = exc
        except OSError as exc:
            if not is_disk_full(exc):
                raise
            error = self._disk_full(exc)
        finally:
            timer.stop_event.set()
            progress.done()
        if timer.error is not None and error is None:
            error = self._disk_full(timer.error)
        return self._close_session(error)

    def _close_session(self, error: errors.SoakError | None) -> errors.SoakError | None:
        """End the worker: the teardown timeout for a run that ends, ABORT_GRACE_S for an abort."""
        grace = ABORT_GRACE_S if (self.aborted or error is not None) else None
        try:
            try:
                self.session.close(grace_s=grace)
            except (_Abort, Aborted):  # a second Ctrl-C (or SIGTERM) while the engine shuts down
                self.session.close(grace_s=ABORT_GRACE_S)
            self._poll_cl_trace(None)  # what the worker's CL calls did after the last iteration
        except OSError as exc:  # the disk filled up while the worker was stopping
            if not is_disk_full(exc):
                raise
            self.session.close(grace_s=ABORT_GRACE_S)
            if error is None:
                error = self._disk_full(exc)
        return error

    def _disk_full(self, exc: OSError) -> errors.DiskFull:
        """No space left: free the reserve, record why, and end the run."""
        self.reserve.release()
        self.stop_reason = ends.DISK_FULL
        error = disk_full_error(self.events.path.parent, exc, "a write failed")
        try:
            self.events.emit("error", kind="disk", error_type=type(error).__name__, message=error.message,
                             hint=error.hint, exit_code=int(error.exit_code))
        except OSError:
            pass  # run_end and the summary matter more
        return error

    # -- signals ---------------------------------------------------------------
    def _on_signal(self, signum, frame):
        """First Ctrl-C: stop after this iteration.  A second Ctrl-C, or SIGTERM (what CI
        timeouts send; the SIGKILL follows soon): abort the iteration in flight.  Either way
        run_end and the summary are written."""
        terminated = signum == signal.SIGTERM
        if self._ending or self.aborted:
            return
        if not terminated and not self.interrupted:
            self.interrupted = True
            diag.info("stopping after this iteration (Ctrl-C again to abort it)", signal=signals.name(signum))
            return
        self.interrupted = True
        self.aborted = True
        self.stop_reason = self._abort_reason = ends.TERMINATED if terminated else ends.INTERRUPTED
        diag.info(f"{'SIGTERM' if terminated else 'Ctrl-C again'}: abandoning the iteration in flight, "
                  "writing run_end and the summary", signal=signals.name(signum))
        if self._recording:
            self._abort_pending = True  # raised once the iteration's record is whole
            return
        raise _Abort

    def abort(self, terminated: bool) -> None:
        """From another thread (several devices: the signals reach the main thread only): end
        the run as SIGTERM (terminated) or a second Ctrl-C would.  The call in flight is left
        (Supervisor.abort wakes it), the worker gets ABORT_GRACE_S, run_end and the summary are
        written by the run's own thread."""
        with self._abort_lock:
            if self._ending or self.aborted:
                return
            self.stop_reason = self._abort_reason = ends.TERMINATED if terminated else ends.INTERRUPTED
            self.interrupted = True
            self.aborted = True
        session = self.session
        if session is not None:
            session.sup.abort()

    def _start_engine(self) -> bool:
        """First worker and load, retried up to max_unrecovered times.  False: the run is over."""
        cfg = self.cfg
        first_i = cfg.script[0].get("i") or 0 if cfg.script else 0
        loaded = False
        for attempt in range(cfg.max_unrecovered):
            loaded, found = self.session.start(first_i) if attempt == 0 else self.session.restart(first_i)
            if loaded or self.interrupted:
                break
            diag.debug("the engine did not start", attempt=attempt + 1, of=cfg.max_unrecovered)
        if not loaded:
            self.stop_reason = ends.INTERRUPTED if self.interrupted else ends.UNRECOVERABLE
            return False
        if cfg.fail_fast and self.stats.faults_by_kind.get("cpu_fallback"):
            self.stop_reason = ends.FAIL_FAST  # an OpenCL run that silently runs on the CPU
            return False
        return True

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
                    self._reset_between_conversations(i)
                current_conv = conv_index
                context_tokens = 0
            if self.stop_reason:
                break
            found, context_tokens = self.iteration(i, conv_index, turn_index, prompt, max_new, context_tokens)
            hard = [f for f in found if outcomes.is_hard(f)
                    or (cfg.recover_on_output and f["kind"] == "bad_output")]
            if not hard and not self.session.alive:
                hard = [{"kind": "worker_lost"}]  # e.g. a phone went offline: its target recorded why
            i += 1
            if hard and cfg.fail_fast:
                self.stop_reason = ends.FAIL_FAST
            elif hard:
                self._recover(found, i - 1)
                broken_conv = conv_index  # its history is gone: go on with the next one
                current_conv = None
            self._progress(progress, i, started)
        self.iterations_done = i if cfg.script is None else len(cfg.script)
        self._progress(progress, self.iterations_done, started, force=True)
        if self.stop_reason is None:
            self.stop_reason = ends.ITERATIONS if cfg.script is not None else ends.WORKLOAD

    def iteration(self, i: int, conv_index: int, turn_index: int, prompt: str, max_new: int,
                  context_tokens: int) -> tuple[list[dict], int]:
        ref = self.oracle.turn_for(conv_index, turn_index) if self.oracle is not None else None
        if ref is not None:                     # teacher-forced through the reference's ids
            out = self.session.oracle("check", self.oracle.check_request(ref), i)
        elif self.oracle is not None and self.oracle.mode == "make":
            out = self.session.oracle("reference", self.oracle.reference_request(prompt.encode("utf-8"), max_new), i)
        else:
            out = self.session.respond(prompt.encode("utf-8"), max_new, i)
        res = out.result or {}
        perf = res.get("perf") or {}
        output = unb64(res["output_b64"]) if res.get("output_b64") else b""
        prompt_tokens = perf.get("prompt_tokens", 0)
        generated = perf.get("generated_tokens", 0)
        prefill_tps = prompt_tokens / (perf["prefill_us"] / 1e6) if perf.get("prefill_us") else None
        decode_tps = generated / (perf["decode_us"] / 1e6) if perf.get("decode_us") and generated else None
        status = res.get("status")
        found = outcomes.from_outcome(out, "decode", self.cfg.timeouts.respond)
        timing = res.get("timing") or {}
        checks = None
        if out.result is not None and out.ok:
            checks = check_output(output, max_new)
            if status in FINISHED_STATUSES:  # the engine says it finished: judge the text
                found += outcomes.from_output(checks, "decode")
            slow = self._slowdown(decode_tps, generated)
            if slow:
                found.append(slow)
        checked = res.get("oracle") if out.ok else None
        if checked is not None:
            found += [{**f, "phase": "decode"} for f in self.oracle.judge(checked)]
        elif out.ok and res.get("turn") is not None:
            self.oracle.keep(res, (conv_index, turn_index, i))
        cl_calls = self._poll_cl_trace(i)
        stopped = self._forward_stopped(i, decode_tps if out.ok else None, generated, found, cl_calls)
        if stopped:
            found.append(stopped)
        context_tokens += prompt_tokens + generated
        # the iteration's event, its count and its faults go together: an abort signal arriving
        # in this block waits for its end (else the summary could count one iteration fewer)
        self._recording = True
        try:
            self.events.emit(
                "iteration", i=i, conversation=conv_index, turn=turn_index, prompt=prompt,
                max_new_tokens=max_new, status=status, status_name=STATUS_NAMES.get(status),
                ok=out.ok and not found, prompt_tokens=prompt_tokens, generated_tokens=generated,
                prefill_us=perf.get("prefill_us"), decode_us=perf.get("decode_us"),
                prefill_tps=round(prefill_tps, 3) if prefill_tps else None,
                decode_tps=round(decode_tps, 3) if decode_tps else None,
                wall_s=round(out.elapsed_s, 6), engine_s=_seconds(res.get("engine_us")), context_tokens=context_tokens,
                ttft_s=_seconds(timing.get("ttft_us")), itl_p50_s=_seconds(timing.get("itl_p50_us")),
                itl_p99_s=_seconds(timing.get("itl_p99_us")), itl_max_s=_seconds(timing.get("itl_max_us")),
                output=output.decode("utf-8", errors="replace"), output_bytes=len(output), checks=checks,
                output_tokens=res.get("output_tokens"),
                cl_errors=[{"code": f["code"], "name": f["name"], "info": f["info"], "count": f["count"]}
                           for f in found if f["kind"] == "cl_error"],
                cl_call_errors=cl_calls,
                error_lines=[f["line"] for f in found if f["kind"] == "error_line"],
                log_span=list(out.span), failures=sorted({f["kind"] for f in found}),
                worker_generation=self.session.sup.generation,
                backend_actual=self.session.backend_actual,
            )
            if checked is not None:
                self.events.emit("oracle_turn", i=i, conversation=conv_index, turn=turn_index, **checked,
                                 wrong=any(f["kind"] in ("wrong_output", "nonfinite_logits") for f in found))
            self.iterations_done += 1  # so far (an abort leaves the loop here or earlier)
            self._record_faults(found, i)
        finally:
            self._recording = False
        if self._abort_pending:
            raise _Abort
        self.stats.add_speed(decode_tps, prefill_tps)
        if timing:
            self.stats.add_timing({name: _seconds(timing.get(key)) for name, key in _TIMING_KEYS})
        if self._memory_due() and self.session.alive:
            self.sample_memory("iteration", i)
        return found, context_tokens

    def _memory_due(self) -> bool:
        """An iteration's memory sample: each of the first DENSE_MEMORY_SAMPLES, then at most one
        per memory interval (a sample parses smaps_rollup: ~1 ms, too much per fast iteration)."""
        now = time.monotonic()
        if (self.iteration_samples < DENSE_MEMORY_SAMPLES
                or now - self.last_iteration_sample >= self.cfg.memory_interval_s):
            self.iteration_samples += 1
            self.last_iteration_sample = now
            return True
        return False

    # -- steps of the loop ----------------------------------------------------
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

    def _should_stop(self, i: int, started: float) -> bool:
        if self.stop_reason:
            return True
        if self.interrupted:
            self.stop_reason = ends.INTERRUPTED
        elif self.cfg.iterations is not None and i >= self.cfg.iterations:
            self.stop_reason = ends.ITERATIONS
        elif self.cfg.duration_s is not None and time.monotonic() - started >= self.cfg.duration_s:
            self.stop_reason = ends.DURATION
        return self.stop_reason is not None

    def _ensure_alive(self, next_i: int) -> bool:
        """Before a conversation: if the last recovery left no worker, try again."""
        if self.session.alive:
            return True
        loaded, _ = self.session.restart(next_i)
        if loaded:
            self.consecutive_unrecovered = 0
            return True
        self._unrecovered()
        return False

    def _reset_between_conversations(self, i: int) -> None:
        out = self.session.simple("reset", "reset")
        found = outcomes.from_outcome(out, "reset", self.cfg.timeouts.reset)
        self._record_faults(found, i)
        if any(outcomes.is_hard(f) for f in found):
            self._recover(found, i)
            if self.cfg.fail_fast:
                self.stop_reason = ends.FAIL_FAST

    def _recover(self, found: list[dict], i: int) -> None:
        trigger = sorted({f["kind"] for f in found})
        record = ladder.climb(self.session, self.cfg.ladder, trigger, i, self.stats.rss_now)
        self.stats.add_recovery(record["recovered_by"], record["duration_s"])
        if record["recovered_by"]:
            self.consecutive_unrecovered = 0
        else:
            self._unrecovered()

    def _unrecovered(self) -> None:
        self.consecutive_unrecovered += 1
        if self.consecutive_unrecovered >= self.cfg.max_unrecovered:
            self.stop_reason = ends.UNRECOVERABLE
            diag.debug("giving up: the engine did not recover", times_in_a_row=self.consecutive_unrecovered)

    def _slowdown(self, tps: float | None, generated: int) -> dict | None:
        """A call decoding 3x slower than the recent median, and slow enough
        (>= 50 ms) that scheduler jitter can't explain it."""
        if not tps or generated < 4 or generated / tps < 0.05:
            return None
        baseline = self.stats.decode_baseline()
        if baseline is not None and tps < baseline / 3:
            return {"kind": "slowdown", "phase": "decode", "decode_tps": round(tps, 2),
                    "baseline_tps": round(baseline, 2)}
        return None

    def _forward_stopped(self, i: int, tps: float | None, generated: int, found: list[dict],
                         cl_calls: int) -> dict | None:
        """A decode that runs FORWARD_STOPPED_RATIO x faster than the run's baseline right after a GPU
        error (a CL ERROR line, a failed CL call) is the forward having stopped computing (MNN only logs
        a failed enqueue or setArg, so the kernels it skips return at once: alibaba/MNN#4653), not a
        speed-up.  The baseline is the one before the error; the FORWARD_STOPPED_WINDOW iterations after
        it are judged, on calls of at least 8 tokens; one fault per error."""
        out = None
        after = self._after_gpu_error
        if after is not None:
            if tps and generated >= 8:
                if tps >= FORWARD_STOPPED_RATIO * after["baseline"]:
                    out = {"kind": "forward_stopped", "phase": "decode", "decode_tps": round(tps, 2),
                           "baseline_tps": round(after["baseline"], 2), "speedup": round(tps / after["baseline"], 2),
                           "after_iteration": after["iteration"], "after_error": after["error"]}
                    self._after_gpu_error = None
            if after is self._after_gpu_error and i - after["iteration"] >= FORWARD_STOPPED_WINDOW:
                self._after_gpu_error = None
        logged = [f for f in found if f["kind"] == "cl_error"]
        if logged or cl_calls:
            baseline = self.stats.decode_baseline()   # this call's tok/s is not in it yet
            if baseline:
                what = (f"cl_error {logged[0].get('name') or logged[0].get('code')} {logged[0].get('info') or ''}"
                        if logged else f"{cl_calls} failed CL call(s)")
                self._after_gpu_error = {"iteration": i, "baseline": baseline, "error": what.strip()}
        return out

    def _poll_cl_trace(self, iteration: int | None) -> int:
        """Write the interposer's new records as events; returns how many CL calls failed."""
        if self.cl_trace is None:
            return 0
        from soak.cl.trace_events import trace_events

        try:
            records = self.cl_trace.poll()
        except Exception as exc:
            self.events.emit("warning", message=f"interposer trace unreadable: {exc}")
            return 0
        failed = 0
        for name, fields in trace_events(records, iteration):
            self.events.emit(name, **fields)
            if name == "cl_call_error":
                failed += fields["count"]  # one event per kind of error, with its exact count
        return failed

    def _record_faults(self, found: list[dict], iteration: int | None) -> None:
        for f in found:
            self.events.emit("fault", iteration=iteration, **f)

    def _on_event(self, event: str, fields: dict) -> None:
        """Every event written: faults are counted here and only here (soak.fault_kinds.fault_kind_of),
        whoever emitted them (the loop, the session, the recovery ladder, a target)."""
        kind = fault_kind_of(event, fields)
        if kind is None:
            return
        self.stats.add_fault(kind)
        self.progress.fault(iteration=fields.get("iteration"), kind=kind, detail=fault_detail(kind, fields))

    def _progress(self, progress: Progress, i: int, started: float, force: bool = False) -> None:
        if progress.quiet:
            return
        progress.update(iteration=i, total=self.cfg.iterations, elapsed=time.monotonic() - started,
                        duration=self.cfg.duration_s, force=force, **self.stats.progress())

    # -- memory (also called from the timer thread) ----------------------------
    def sample_memory(self, source: str, iteration: int | None = None) -> dict | None:
        session = self.session
        pid = session.sup.pid if session else None
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
        self.stats.add_memory(sample)
        self.events.emit("memory", source=source, iteration=iteration, pid=pid,
                         generation=session.sup.generation, **sample)
        return sample

    # -- the end ---------------------------------------------------------------
    def summary(self, run_id: str, run_dir: Path, elapsed: float) -> dict:
        session = self.session
        return {
            "schema": 1,
            "run_id": run_id,
            "run_dir": str(run_dir),
            "seed": self.cfg.seed,
            "end_reason": self.stop_reason,
            "iterations": self.iterations_done,
            "elapsed_s": round(elapsed, 3),
            "engine": self.cfg.engine,
            "engine_name": session.engine_name if session else None,
            "backend_requested": self.cfg.backend,
            "backend_actual": self.backend_actual_overall(),
            "worker_restarts": max(0, session.sup.generation) if session else 0,
            **self.stats.summary(),
            **({"oracle": {"mode": self.oracle.mode, "checked": self.oracle.checked, "wrong": self.oracle.wrong,
                           "nonfinite": self.oracle.nonfinite}} if self.oracle else {}),
        }

    def backend_actual_overall(self) -> str | None:
        """cpu if any load fell back: a run that was partly on the CPU is not an OpenCL run."""
        if not self.session:
            return None
        if self.stats.faults_by_kind.get("cpu_fallback"):
            return "cpu"
        return self.session.backend_actual

    def _exit_code(self) -> errors.ExitCode:
        return ends.exit_code(self.stop_reason)


class _RunnerSink:
    """The runner as a target sees it (soak.targets.base.TargetSink)."""

    def __init__(self, runner: Runner):
        self._runner = runner

    def emit_fault(self, fault: dict) -> None:
        session = self._runner.session
        self._runner._record_faults([fault], session.iteration if session else None)

    def emit_event(self, event: str, **fields) -> None:
        self._runner.events.emit(event, **fields)


class _MemoryTimer(threading.Thread):
    def __init__(self, runner: Runner, interval: float):
        super().__init__(daemon=True, name="soak-memory")
        self.runner = runner
        self.interval = interval
        self.stop_event = threading.Event()
        self.error: OSError | None = None  # the disk filled up: the main thread ends the run

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                self.runner.sample_memory("timer")
            except OSError as exc:
                if not is_disk_full(exc):
                    raise
                self.error = exc
                return


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")

