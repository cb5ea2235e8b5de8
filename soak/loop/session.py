"""An engine session: one worker process with one loaded engine.

It knows how to start, load, reset, re-init, reload and restart, and it
writes the events of those steps (worker_start, worker_exit, load, and the
faults seen while doing them).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

from soak import errors
from soak.loop import outcomes as faultlib
from soak.events import EventLog
from soak.run_folder import ENGINE_LOG
from soak.targets.base import Target
from soak.worker import protocol
from soak.worker.supervisor import CallOutcome, Supervisor, WorkerDead

PROBE_PROMPT = b"Hello"


@dataclass
class Timeouts:
    start: float = 60.0
    load: float = 600.0
    respond: float = 300.0
    # a streaming respond with no new text for this long is a hang (scaled up for slow
    # engines, see supervisor.StallPolicy); None: only the whole-call timeout
    stall: float | None = 3.0
    reset: float = 60.0
    # the engine's destructor: MNN writes its OpenCL kernel cache (mnn_cachefile.bin) there,
    # which took 44 s on PoCL; killed sooner, the next run starts cold again
    teardown: float = 120.0


@dataclass
class EngineSetup:
    spec: dict                      # worker protocol "open" spec
    config: dict                    # JSON merged with set_config before load
    backend: str = "cpu"
    per_iteration_config: bool = False  # the test engine takes {"soak_iteration": i}
    env: dict = field(default_factory=dict)


class Session:
    def __init__(self, target: Target, setup: EngineSetup, events: EventLog, run_dir: Path,
                 timeouts: Timeouts, on_line=None):
        self.target = target
        self.setup = setup
        self.spec: dict | None = None  # setup.spec as the target sees it (device paths on a phone)
        self.events = events
        self.run_dir = run_dir
        self.timeouts = timeouts
        self.sup = Supervisor(target, run_dir / ENGINE_LOG, cwd=run_dir, env=setup.env, on_line=on_line,
                              stall_s=timeouts.stall)
        self.backend_actual: str | None = None
        self.engine_name: str | None = None
        self.oracle_unavailable: str | None = None   # why the open engine cannot serve the oracle (None: it can)
        self.phase = "init"
        self.iteration = -1
        self.load_count = 0

    # -- worker lifecycle -------------------------------------------------
    def _record_exit(self, outcome: CallOutcome, phase: str) -> None:
        if outcome.died or outcome.hung:
            self.events.emit("worker_exit", pid=self.sup.last_pid, generation=self.sup.generation,
                             exit_code=outcome.exit_code, signal=outcome.signal, phase=phase,
                             iteration=self.iteration, reason="hang" if outcome.hung else "crash")

    def _emit_faults(self, found: list[dict], iteration: int | None = None) -> None:
        for f in found:
            self.events.emit("fault", iteration=self.iteration if iteration is None else iteration, **f)

    def start(self, next_iteration: int) -> tuple[bool, list[dict]]:
        """Start a worker and load the engine.  Returns (loaded, faults).

        Errors that no retry can fix are raised as SoakError: a missing library or an
        ABI mismatch, and a worker that does not start at all (HarnessError: soak's
        problem, never recorded as an engine fault).
        """
        self.phase = "init"
        self.iteration = next_iteration
        if self.spec is None:  # push files to a device, rewrite paths (once)
            self.spec = self.target.prepare(self.setup.spec, self.run_dir)
        try:
            hello = self.sup.start(timeout_s=self.timeouts.start)
        except WorkerDead as exc:  # a device went away: its target records the device fault
            self.events.emit("warning", message=str(exc))
            return False, []
        self.events.emit("worker_start", pid=hello.get("pid"), generation=self.sup.generation,
                         runner=hello.get("runner"), version=hello.get("version"), log_offset=self.sup.log_offset)
        return self.open_and_load(next_iteration)

    def open_and_load(self, next_iteration: int) -> tuple[bool, list[dict]]:
        found: list[dict] = []
        out = self.sup.call("open", self.spec, timeout_s=self.timeouts.load)
        if out.result and not out.ok:
            kind = out.result.get("error_kind")
            row = protocol.WORKER_ERROR_KINDS.get(kind)
            if row is not None and row.error is not None:
                raise row.error(out.result.get("error") or kind, out.result.get("hint"))
        found += faultlib.from_outcome(out, "init", self.timeouts.load)
        if not out.ok:
            self._record_exit(out, "init")
            self._emit_faults(found)
            return False, found
        self.engine_name = out.result.get("engine_name")
        self.oracle_unavailable = out.result.get(   # no key: a soak-runner older than its oracle
            "oracle_unavailable", "the worker does not run the oracle (rebuild soak-runner from this soak's native/runner)")
        config = dict(self.setup.config)
        if self.setup.per_iteration_config:
            config["soak_iteration"] = next_iteration
        out = self.sup.call("set_config", json.dumps(config), timeout_s=self.timeouts.reset)
        found += faultlib.from_outcome(out, "init", self.timeouts.reset)
        if not (out.died or out.hung):
            self.phase = "load"
            started = time.monotonic()
            out = self.sup.call("load", timeout_s=self.timeouts.load)
            duration = time.monotonic() - started
            load_faults = faultlib.from_outcome(out, "load", self.timeouts.load)
            found += load_faults
            fallback = any(f["kind"] == "cpu_fallback" for f in load_faults)
            self.backend_actual = "cpu" if fallback else self.setup.backend
            self.load_count += 1
            self.events.emit(
                "load", ok=out.ok, duration_s=round(duration, 6), backend_requested=self.setup.backend,
                backend_actual=self.backend_actual if out.ok else None, cache=self.cache_state(),
                status=(out.result or {}).get("status"), error=(out.result or {}).get("error"),
                generation=self.sup.generation, log_span=list(out.span),
                log_lines=len(out.lines), load_us=((out.result or {}).get("perf") or {}).get("load_us"))
        self._record_exit(out, self.phase)
        self._emit_faults(found)
        return out.ok, found

    def cache_state(self) -> str:
        tmp = self.setup.config.get("tmp_path")
        if self.setup.backend != "opencl":
            return "n/a"
        folder = Path(tmp) if tmp else self.sup.cwd
        state = "warm" if (folder / "mnn_cachefile.bin").exists() else "cold"
        return state if self.load_count == 0 else ("warm" if state == "warm" else "cold")

    # -- calls --------------------------------------------------------------
    def respond(self, prompt: bytes, max_new_tokens: int, iteration: int) -> CallOutcome:
        self.iteration = iteration
        self.phase = "decode"
        out = self.sup.call("respond", max_new_tokens, prompt, *self._iteration_config(iteration),
                            timeout_s=self.timeouts.respond)
        self._record_exit(out, "decode")
        return out

    def oracle(self, op: str, request: dict, iteration: int) -> CallOutcome:
        """A teacher-forced turn (`check`) or a reference turn (`reference`): soak.oracle.wire."""
        self.iteration = iteration
        self.phase = "decode"
        if self.setup.per_iteration_config:
            request = dict(request, config={"soak_iteration": iteration})
        out = self.sup.call(op, request, timeout_s=self.timeouts.respond)
        self._record_exit(out, "decode")
        return out

    def _iteration_config(self, iteration: int) -> tuple[str, ...]:
        """The test engine's iteration (its fault plan counts them), as the config a respond sets
        first: in the respond's own command, no round trip of its own."""
        return (f'{{"soak_iteration": {iteration}}}',) if self.setup.per_iteration_config else ()

    def simple(self, op: str, phase: str) -> CallOutcome:
        self.phase = phase
        out = self.sup.call(op, timeout_s=self.timeouts.reset)
        self._record_exit(out, phase)
        return out

    def probe(self) -> tuple[bool, list[dict]]:
        """A short fixed prompt: is the engine healthy again?"""
        out = self.sup.call("respond", 4, PROBE_PROMPT, *self._iteration_config(-1), timeout_s=self.timeouts.respond)
        self._record_exit(out, "decode")
        found = faultlib.from_outcome(out, "decode", self.timeouts.respond)
        healthy = out.ok and not any(faultlib.is_hard(f) for f in found)
        if healthy:
            # the probe's turn must not stay in the engine's history: the next conversation starts clean,
            # as after any other conversation (a teacher-forced one needs exactly the reference's history)
            out = self.simple("reset", "reset")
            seen = faultlib.from_outcome(out, "reset", self.timeouts.reset)
            found += seen
            healthy = out.ok and not any(faultlib.is_hard(f) for f in seen)
        return healthy, found

    @property
    def alive(self) -> bool:
        return self.sup.proc is not None and self.sup.proc.poll() is None

    def restart(self, next_iteration: int) -> tuple[bool, list[dict]]:
        self.stop(kill=True)
        return self.start(next_iteration)

    def reload(self, next_iteration: int) -> tuple[bool, list[dict]]:
        out = self.simple("close", "teardown")
        if out.died or out.hung:
            return False, faultlib.from_outcome(out, "teardown", self.timeouts.reset)
        return self.open_and_load(next_iteration)

    def stop(self, kill: bool = False, grace_s: float | None = None) -> None:
        """End the worker.  grace_s: how long it gets to quit before it is killed
        (default: the teardown timeout, time for MNN to save its kernel cache)."""
        if self.sup.proc is not None:
            pid, gen = self.sup.pid, self.sup.generation
            code = self.sup.stop(kill=kill, timeout_s=self.timeouts.teardown if grace_s is None else grace_s)
            self.events.emit("worker_exit", pid=pid, generation=gen, exit_code=code, signal=None,
                             phase="teardown", iteration=self.iteration,
                             reason="killed" if kill else "stopped")

    def close(self, grace_s: float | None = None) -> None:
        """The end of the run: stop the worker (see stop) and close engine.log."""
        self.stop(grace_s=grace_s)
        self.sup.close()
