"""The fault-kind registry: one row per kind of `fault`, read by every layer.

The loop reads `hard` (does it start the recovery ladder), the catalog reads
the kinds an entry may match, `severity` (of a finding no entry matched) and
`key` (what tells two faults of a kind apart: the signature), replay compares
signatures, outputs read `source`.  A kind is one row here plus, where soak
can make it happen, its injection in the test engine (`inject`: the kind in a
test-engine fault plan, native/test_engine/FAULTS.md).  A kind the test engine
cannot produce says why in `no_injection`.
tests/core/test_fault_kinds.py fails when code emits or matches a kind this
table lacks, or a row has neither an injection nor a reason it cannot have one.
"""

from __future__ import annotations

from dataclasses import dataclass

# how the signature tells two faults of one kind apart (soak.catalog.signature.fault_key)
KEYS = {
    "cl": "CL code name and info tag",
    "call": "OpenCL API, code name, injected or not",
    "line": "the normalized log line",
    "death": "signal (or exit code), first CL error and first error lines before it",
    "stall": "first CL error and first error lines before the timeout",
    "error": "the worker's error_kind and normalized error text",
    "status": "the LLM status name",
    "symptoms": "the output symptoms",
    "resource": "the memory resource (host, gpu)",
    "symptom": "the performance symptom",
    "none": "nothing: one finding per kind and phase",
}

# where a kind comes from
SOURCES = {
    "engine": "the engine call's outcome or its log lines (soak.loop.outcomes)",
    "loop": "the loop's own measurement (soak.loop.runner)",
    "target": "the target's health checks (soak.targets.adb)",
    "interposer": "OpenCL call records of the interposer (event cl_call_error)",
    "derived": "the classifier, from series over the run (soak.catalog._derived)",
    "oracle": "the logits oracle: teacher-forced turns compared with a reference (soak_engine.h, forward)",
}


# how bad a finding is, worst first: every severity soak knows (the catalog's, the policy's)
SEVERITIES = ("critical", "high", "medium", "low", "info")
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}  # 0 = worst


@dataclass(frozen=True)
class FaultKind:
    name: str
    hard: bool                  # the engine is unhealthy: run the recovery ladder
    severity: str               # of a finding no catalog entry matched
    source: str                 # one of SOURCES
    key: str                    # one of KEYS
    fields: tuple[str, ...]     # kind fields of the fault event (besides kind, iteration, phase)
    phases: tuple[str, ...]     # where it is seen (a hint, not a rule)
    description: str
    inject: tuple[str, ...] = ()  # test-engine fault-plan kinds that produce it (FAULTS.md)
    no_injection: str = ""      # else: why the test engine cannot produce it
    parent: str | None = None   # a refinement of that kind: catalog entries for the parent match it too
    death_signal: str | None = None  # a worker death by this signal is this kind (not a crash)
    own_verdict: bool = False   # judged by its own verdict (memory trend, perf), not the errors gate
    hard_when: tuple[str, str] | None = None  # hard only when event[field] == value
    event: bool = True          # False: a recovery trigger only, never a fault event
    follows_state: bool = False  # an effect of the engine's state: after a GPU error it is in that error's
    #                              cascade however many clean iterations lie between (until the model is loaded again)


KINDS: dict[str, FaultKind] = {k.name: k for k in (
    FaultKind("cl_error", True, "medium", "engine", "cl", ("code", "name", "info", "line", "count"),
              ("init", "load", "prefill", "decode"),
              "MNN printed `CL ERROR CODE : <code>, info:<tag>` (count: lines of one code+info in a phase)",
              inject=("cl_error",)),
    FaultKind("error_line", True, "medium", "engine", "line", ("line", "pattern", "severity", "count", "code"),
              ("load", "prefill", "decode", "reset"),
              "an MNN error line other than a CL ERROR CODE line (soak.logparse pattern); hard when its "
              "severity is error", inject=("kv_map_error", "log", "alloc_fail"), hard_when=("severity", "error")),
    FaultKind("crash", True, "critical", "engine", "death", ("signal", "exit_code", "last_lines", "backtrace"),
              ("init", "load", "prefill", "decode", "reset"), "the worker died during a call",
              inject=("crash", "signal_handler")),  # signal_handler: a library's handler over soak's
    FaultKind("oom_kill", True, "critical", "engine", "death", ("signal", "exit_code", "last_lines"),
              ("load", "prefill", "decode"), "the worker got a SIGKILL soak did not send: the kernel OOM "
              "killer or Android's low-memory killer (wangzhaode/mnn-llm#100, alibaba/MNN#4782)",
              inject=("oom_kill",), parent="crash", death_signal="SIGKILL"),
    FaultKind("hang", True, "critical", "engine", "stall",
              ("timeout_s", "last_lines", "stalled", "stall_s", "tokens_before", "elapsed_s"),
              ("load", "prefill", "decode", "reset"), "a call made no progress within its timeout, or a "
              "streaming respond sent no text for the stall allowance (stalled); the worker was killed",
              inject=("hang",)),
    FaultKind("status_error", True, "high", "engine", "status", ("status", "status_name"),
              ("prefill", "decode"), "the engine's LLM status became USER_CANCEL, INTERNAL_ERROR or TIMEOUT "
              "(sticky in MNN until reinit)", inject=("sticky_error", "kv_map_error")),
    FaultKind("engine_error", True, "high", "engine", "error", ("error", "error_kind"),
              ("init", "load", "prefill", "decode"), "the worker answered a call with ok=false",
              inject=("fail_load",)),
    FaultKind("bad_output", False, "high", "engine", "symptoms", ("symptoms",), ("decode",),
              "the output failed a check: invalid_utf8, empty, repetition, garbage",
              inject=("repeat", "garbage", "invalid_utf8", "empty")),
    FaultKind("cpu_fallback", False, "high", "engine", "line",
              ("line", "requested_type", "used_type", "reason", "backend_requested"), ("load",),
              "MNN silently ran on the CPU (`Can't Find type=3 backend, use 0 instead`)",
              inject=("cpu_fallback",)),
    FaultKind("slowdown", False, "medium", "loop", "none", ("decode_tps", "baseline_tps"), ("decode",),
              "decode tok/s fell well below the run's own baseline", inject=("slow",)),
    FaultKind("forward_stopped", False, "high", "loop", "none",
              ("decode_tps", "baseline_tps", "speedup", "after_iteration", "after_error"), ("decode",),
              "decode tok/s jumped (>= 1.5x the run's baseline) right after a GPU error: the forward stopped "
              "computing (failed kernels return at once, alibaba/MNN#4653), not a speed-up",
              inject=("cl_error", "slow"), follows_state=True),
    FaultKind("cl_call_error", False, "medium", "interposer", "call",
              ("api", "code", "code_name", "injected", "call_seq"), ("load", "prefill", "decode"),
              "an OpenCL call failed (interposer record)",
              no_injection="made by the interposer (--intercept with fault rules), not the test engine"),
    FaultKind("memory_growth", False, "high", "derived", "resource", ("resource",), ("decode",),
              "host or GPU memory grew over the run", inject=("leak", "gpu_leak"), own_verdict=True),
    FaultKind("memory_kept", False, "high", "derived", "resource", ("resource", "symptom"), ("reset",),
              "host or GPU memory not given back at reset: a ratchet (follows the longest context) or retained",
              no_injection="needs memory that follows the conversation's context, which the test engine's does not "
                           "(shapes: tests/outputs/_shapes.py; real series: tests/data/series/)",
              own_verdict=True),
    FaultKind("perf_anomaly", False, "high", "derived", "symptom", ("symptom",), ("decode",),
              "tok/s rose while kernels failed (a dead GPU looks fast)",
              no_injection="needs kernels that fail and so run faster on a real OpenCL device (interposer)",
              own_verdict=True),
    FaultKind("context_overflow", False, "medium", "derived", "none", (), ("prefill",),
              "the conversation history passed the model's context length",
              no_injection="derived from the model's context length in the manifest, which the test engine lacks"),
    FaultKind("device_offline", False, "medium", "target", "none", ("serial", "state"), ("init",),
              "adb: the device went absent, offline, unauthorized, unresponsive or the stream broke",
              no_injection="adb only (tests/adb fake device)"),
    FaultKind("device_reboot", False, "medium", "target", "none",
              ("serial", "boot_id_before", "boot_id_after", "uptime_s"), ("init",),
              "adb: the device rebooted during the run", no_injection="adb only (tests/adb fake device)"),
    FaultKind("wrong_output", False, "high", "oracle", "none",
              ("over", "abs_max", "kl_max", "first_step", "worst_step", "first_flip", "flips", "of_steps",
               "thresholds"), ("decode",),
              "a teacher-forced turn's logits left what a healthy run of the configuration shows against the "
              "reference (a wrong answer with no error)", inject=("logits_noise", "logits_stale"), follows_state=True),
    FaultKind("nonfinite_logits", False, "critical", "oracle", "none", ("first_step", "steps", "of_steps"),
              ("prefill", "decode"),
              "a teacher-forced turn's logits held NaN or inf", inject=("logits_nonfinite",), follows_state=True),
    FaultKind("worker_lost", True, "medium", "loop", "none", (), ("decode",),
              "the worker is gone without a fault of its own (its target recorded why, e.g. device_offline)",
              no_injection="follows a target fault (adb)", event=False),
)}

# kinds a fault event (or a finding) can have: the kinds a catalog entry may match
FAULT_KINDS = tuple(k.name for k in KINDS.values() if k.event)
DEFAULT_SEVERITY = "medium"   # a kind this soak does not know (a newer run)


def is_hard(fault: dict) -> bool:
    """Does this fault start the recovery ladder?"""
    kind = KINDS.get(fault.get("kind"))
    if kind is None or not kind.hard:
        return False
    return kind.hard_when is None or fault.get(kind.hard_when[0]) == kind.hard_when[1]


def severity(kind: str) -> str:
    row = KINDS.get(kind)
    return row.severity if row else DEFAULT_SEVERITY


def death_kind(signal: str | None) -> str:
    """The kind of a worker death by `signal` (a name, e.g. SIGSEGV)."""
    for row in KINDS.values():
        if row.death_signal is not None and row.death_signal == signal:
            return row.name
    return "crash"


def with_field(name: str) -> frozenset[str]:
    """The fault kinds whose events carry field `name`."""
    return frozenset(k.name for k in KINDS.values() if k.event and name in k.fields)


def and_refinements(kinds) -> frozenset[str]:
    """`kinds` plus every kind refining one of them (parent)."""
    return frozenset(kinds) | {k.name for k in KINDS.values() if k.parent in kinds}


def key_of(kind: str) -> str:
    row = KINDS.get(kind)
    return row.key if row else "none"


OWN_VERDICT_KINDS = frozenset(k.name for k in KINDS.values() if k.own_verdict)
# effects of the engine's state (_causal: they join the last GPU error's cascade), and the GPU errors
STATE_KINDS = frozenset(k.name for k in KINDS.values() if k.follows_state)
GPU_ERROR_KINDS = frozenset(k.name for k in KINDS.values() if k.key in ("cl", "call"))
# the oracle's verdicts on checked turns: a gate policy with an [oracle] section judges them there
ORACLE_KINDS = frozenset(k.name for k in KINDS.values() if k.source == "oracle")


# --- what counts as one fault -------------------------------------------------------
# The one definition every count uses (the live progress line, summary.json, the
# classifier's findings, the gate, the report): a `fault` event is one fault; an
# interposer `cl_call_error` event is one fault of kind cl_call_error however many calls
# it folds (its `count`); so is a `cl_error` fault folding several log lines.  Series
# verdicts (OWN_VERDICT_KINDS: memory trend, perf) are judged apart and never counted.
FAULT_EVENTS = {"fault": None, "cl_call_error": "cl_call_error"}


def fault_kind_of(event: str, fields: dict) -> str | None:
    """The kind an event counts as one fault of, or None when it is not a fault."""
    if event not in FAULT_EVENTS:
        return None
    kind = FAULT_EVENTS[event] or fields.get("kind")
    return kind if isinstance(kind, str) and kind not in OWN_VERDICT_KINDS else None


def count_faults(events) -> int:
    """Faults among events (dicts with an `event` name), by fault_kind_of."""
    return sum(1 for e in events if fault_kind_of(e.get("event"), e) is not None)


def fault_detail(kind: str, f: dict) -> str:
    """A fault in a few words (the live display's line above the bar)."""
    bits = [f.get("phase") or ""]
    if kind in ("cl_error", "cl_call_error"):
        bits += [f.get("api") or "", str(f.get("name") or f.get("code") or ""), f.get("info") or ""]
        if (f.get("count") or 1) > 1:
            bits.append(f"x{f['count']}")
    elif f.get("signal") or f.get("exit_code") is not None:
        bits.append(str(f.get("signal") or f"exit {f.get('exit_code')}"))
    elif kind == "hang":
        bits.append(f"no progress for {f.get('stall_s') or f.get('timeout_s')}s")
    elif f.get("line"):
        bits.append(str(f["line"]))
    elif f.get("symptoms"):
        bits.append(",".join(map(str, f["symptoms"])))
    elif f.get("status_name") or f.get("status") is not None:
        bits.append(str(f.get("status_name") or f.get("status")))
    elif kind == "wrong_output":
        g = (lambda v: f"{v:.3g}" if isinstance(v, (int, float)) else "?")
        bits.append(f"wrong from step {f.get('first_step')}: max |delta| {g(f.get('abs_max'))}, "
                    f"KL {g(f.get('kl_max'))}")
    elif kind == "nonfinite_logits":
        bits.append(f"NaN/inf logits from step {f.get('first_step')} ({f.get('steps')}/{f.get('of_steps')} steps)")
    elif kind == "forward_stopped":
        bits.append(f"{f.get('decode_tps')} tok/s, {f.get('speedup')}x the usual after {f.get('after_error')} "
                    f"at iteration {f.get('after_iteration')}")
    elif f.get("decode_tps"):
        bits.append(f"{f['decode_tps']} tok/s (usual {f.get('baseline_tps')})")
    return " ".join(b for b in bits if b).replace("\n", " ")
