"""soak repro: from one root cause to the smallest workload and configuration that still show it.

syzkaller's pkg/repro, on soak's runs (issue 24):

  1. window   the iteration of the cause's first occurrence, its conversation up to it, and the
              conversations before it on the same engine (since the last worker start or restart);
  2. alone    the iteration alone on a fresh engine, then its conversation alone, then the earlier
              conversations bisected (ddmin: chunks removed while the cause still comes back);
  3. shrink   fewer turns, shorter prompts (the text simplified to plain letters, then cut, as
              hypothesis shrinks a string), fewer new tokens;
  4. config   engine options dropped or reset one at a time (GPU mode bits of thread_num on OpenCL,
              precision, memory, power, mmap, thread count), faults of a test-engine plan that are
              not needed dropped, and each --cl-fault rule dropped or narrowed to the one call it
              failed (`nth:N`);
  5. measure  the result run `runs` times: reliability k of n.

A step is kept only when the same cause comes back (its catalog key among the candidate's causes,
or its signature among its findings); each candidate runs up to k times (k from the window's
reliability, so a flaky cause is not rejected by bad luck), with escalating timeouts; below the
reliability floor (0.15, as syzkaller) the reduction stops.  A memory cause (leak, ratchet,
retained) is kept when the candidate still grows `memory_share` of the window's bytes.

Every candidate is a `soak run` of a script (RunConfig.script): the same worker, interposer and
recovery, judged like any run (soak.judges), in REPRO/work/ (removed at the end); the last
reliability runs stay in REPRO/runs/.  What it writes is soak.outputs.repro_files' job.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from soak import errors, run_folder
from soak.loop.config import RunConfig, validate
from soak.loop.replay import config_from_manifest, load_run, stranger_config
from soak.run_folder import read_events

FLOOR = 0.15            # below this reliability the reduction gives up (syzkaller's)
MAX_ATTEMPTS = 10       # runs of one candidate at most
RELIABILITY_RUNS = 10   # runs of the result that measure its reliability
MEMORY_SHARE = 0.5      # a memory cause: the share of the window's bytes a candidate must keep
MEMORY_KINDS = ("memory_growth", "memory_kept")
HANG_KINDS = ("hang", "stall", "timeout")
# MNN's GPU mode (thread_num on OpenCL): MNN_GPU_TUNING_* bits 0..4, MNN_GPU_MEMORY_BUFFER 64,
# MNN_GPU_MEMORY_IMAGE 128, MNN_GPU_RECORD_OP 256, MNN_GPU_RECORD_BATCH 512
GPU_TUNING_BITS = {1: "none", 2: "heavy", 4: "wide", 8: "normal", 16: "fast"}
GPU_MEMORY_BITS = {64: "buffer", 128: "image"}
GPU_RECORD_BITS = {256: "record op", 512: "record batch"}
TIMEOUT_STEPS = (1, 1, 2, 2, 4)
# options that say where MNN keeps its files (kernel cache), not how it computes: never dropped
KEEP_OPTIONS = ("tmp_path",)  # attempt k's timeouts: the recorded ones times this


class OutOfBudget(Exception):
    """The budget is spent: the reduction keeps what it has."""


# -- what is reduced -------------------------------------------------------------
@dataclass
class Candidate:
    """A workload (conversations of turns) and what it runs on."""
    convs: list[list[dict]]                 # each turn: {"prompt", "max_new_tokens", "i"}
    engine_options: dict = field(default_factory=dict)
    fault_plan: list | None = None          # the test engine's
    cl_faults: str | None = None            # the interposer's SOAK_CL_FAULTS (None: no interposer)

    def copy(self, **changes) -> "Candidate":
        return replace(copy.deepcopy(self), **changes)

    def script(self) -> list[dict]:
        return [{"i": t["i"], "conversation": c, "turn": k, "prompt": t["prompt"],
                 "max_new_tokens": t["max_new_tokens"]}
                for c, conv in enumerate(self.convs) for k, t in enumerate(conv)]

    def size(self) -> dict:
        turns = [t for conv in self.convs for t in conv]
        return {"conversations": len(self.convs), "turns": len(turns),
                "prompt_chars": sum(len(t["prompt"]) for t in turns),
                "new_tokens": sum(t["max_new_tokens"] for t in turns)}

    def size_text(self) -> str:
        s = self.size()
        return (f"{s['conversations']} conv, {s['turns']} turns, {s['prompt_chars']} prompt chars, "
                f"{s['new_tokens']} new tokens")


@dataclass
class Test:
    """One candidate's runs: did the cause come back, how often, and the runs' folders."""
    recurred: int
    attempts: int
    run_dirs: list[str]
    elapsed_s: float
    bytes: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.recurred > 0


# -- the cause and its window ------------------------------------------------------
def causes_of(run_dir: Path) -> list[dict]:
    """The run's root causes as `soak classify` ranks them (classification.json, else computed)."""
    classification = run_folder.read_json(run_dir / run_folder.CLASSIFICATION)
    if classification is None:
        from soak.catalog.classify import classify_run

        classification = classify_run(run_dir, write=False)
    return [c for c in classification.get("causes") or [] if isinstance(c, dict)]


def pick_cause(run_dir: Path, which: str | int | None) -> dict:
    """--cause N (a row of `soak classify`, from 1) or a catalog id / signature; default the first row."""
    causes = causes_of(run_dir)
    if not causes:
        raise errors.BadInput(f"{run_dir} has no root cause to reproduce (soak classify finds none)",
                              "soak repro reduces a failure: pick a run whose classification has one")
    if which is None:
        return causes[0]
    text = str(which)
    if text.isdigit():
        n = int(text)
        if not 1 <= n <= len(causes):
            raise errors.BadInput(f"--cause {n}: the run has {len(causes)} root cause(s), rows 1..{len(causes)}",
                                  "see `soak classify RUN`")
        return causes[n - 1]
    for c in causes:
        if text in (c.get("fault_id"), c.get("signature")) or text in (c.get("findings") or []):
            return c
    keys = ", ".join(str(c.get("fault_id") or c.get("signature")) for c in causes)
    raise errors.BadInput(f"--cause {text!r} is not a root cause of {run_dir} (its causes: {keys})",
                          "pass a row number, catalog id or signature from `soak classify RUN`")


def cause_key(cause: dict) -> str:
    return cause.get("fault_id") or cause.get("signature") or "?"


def is_memory(cause: dict) -> bool:
    return cause.get("kind") in MEMORY_KINDS or any(k in MEMORY_KINDS for k in cause.get("kinds") or [])


def memory_series(cause: dict) -> str:
    """The memory series a memory cause is about: GPU live bytes or the host's RSS."""
    text = json.dumps([cause.get("fault_id"), cause.get("tags"), cause.get("signature_text")]).lower()
    return "gpu_live_bytes" if "gpu" in text else "rss"


def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def window_of(run_dir: Path, cause: dict, max_new_tokens: int) -> tuple[list[list[dict]], int | None]:
    """The conversations that led to the cause's first occurrence, on the engine it happened on
    (one worker generation), and the target iteration (None: the cause is not at an iteration,
    e.g. at load: the generation's first turn is the window)."""
    its = sorted((ev for ev in read_events(run_dir, {"iteration"})
                  if _int(ev.get("i")) and isinstance(ev.get("prompt"), str)), key=lambda ev: ev["i"])
    if not its:
        raise errors.BadInput(f"{run_dir} recorded no iteration to replay", "soak repro needs a run with iterations")
    first = cause.get("first_iteration") if _int(cause.get("first_iteration")) else None
    last = cause.get("last_iteration") if _int(cause.get("last_iteration")) else first
    by_i = {ev["i"]: ev for ev in its}
    if first is None or first not in by_i:
        target = its[0]["i"]
        end = target
        if is_memory(cause):
            end = its[-1]["i"]
    else:
        target = first
        end = (last if last in by_i else first) if is_memory(cause) else first
    gen = by_i[target].get("worker_generation")
    if is_memory(cause):  # the generation that held the most iterations of the span
        gen = by_i[end].get("worker_generation")
    chosen = [ev for ev in its if ev.get("worker_generation") == gen and ev["i"] <= end]
    convs: list[list[dict]] = []
    current = object()
    for ev in chosen:
        if ev.get("conversation") != current:
            convs.append([])
            current = ev.get("conversation")
        mnt = ev.get("max_new_tokens") if _int(ev.get("max_new_tokens")) else max_new_tokens
        convs[-1].append({"i": ev["i"], "prompt": ev["prompt"], "max_new_tokens": mnt})
    return convs, (first if first in by_i else None)


# -- running candidates ---------------------------------------------------------------
class Tester:
    """Runs candidates as soak runs and says whether the cause came back."""

    def __init__(self, base: RunConfig, cause: dict, work_dir: Path, deadline: float, display=None,
                 memory_target: int | None = None):
        self.base = base
        self.cause = cause
        self.key = cause_key(cause)
        self.signature = cause.get("signature")
        self.work_dir = work_dir
        self.deadline = deadline
        self.display = display
        self.memory = is_memory(cause)
        self.series = memory_series(cause)
        self.memory_target = memory_target   # bytes a memory candidate must grow
        self.hang = cause.get("kind") in HANG_KINDS
        self.runs = 0
        self.candidates = 0

    def config(self, cand: Candidate, attempt: int, out_dir: Path) -> RunConfig:
        cfg = copy.deepcopy(self.base)
        cfg.script = cand.script()
        cfg.engine_options = dict(cand.engine_options)
        cfg.iterations = None
        cfg.duration_s = None
        cfg.fail_fast = False
        cfg.quiet = True
        cfg.run_id = None
        cfg.out_dir = str(out_dir)
        cfg.oracle = None
        cfg.argv = ["repro", "candidate"]
        if cfg.engine == "test":
            cfg.fault_plan = copy.deepcopy(cand.fault_plan)
            # injected randomness is drawn anew on every run, as a flaky fault's is on a real device
            cfg.test_engine = dict(cfg.test_engine, seed=_seed_for(self.base.seed, self.runs))
        if cfg.intercept is not None:
            cfg.intercept = dict(cfg.intercept, faults=_reseed_rules(cand.cl_faults or "", self.runs))
        if not self.hang:  # a slow candidate is not a hang: later attempts wait longer
            factor = TIMEOUT_STEPS[min(attempt, len(TIMEOUT_STEPS) - 1)]
            for name, value in vars(cfg.timeouts).items():
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    setattr(cfg.timeouts, name, value * factor)
        validate(cfg)
        return cfg

    def run_once(self, cand: Candidate, attempt: int, out_dir: Path, judged: bool = False
                 ) -> tuple[bool, str, int | None]:
        """One run of a candidate.  judged: all of `soak run`'s judges (the reliability runs stay);
        else only what the verdict needs (a memory cause reads the memory events, the others the
        classification)."""
        from soak.catalog.classify import classify_run
        from soak.judges import judge_run

        cfg = self.config(cand, attempt, out_dir)
        self.runs += 1
        result = _run(cfg)
        run_dir = Path(result.run_dir)
        if judged:
            judge_run(result, True)
        elif not self.memory:
            classify_run(run_dir)
        if self.memory:
            grown = memory_growth(run_dir, self.series, None)
            return (grown is not None and self.memory_target is not None and grown >= self.memory_target,
                    str(run_dir), grown)
        return recurred_in(run_dir, self.key, self.signature), str(run_dir), None

    def test(self, cand: Candidate, attempts: int, stop_on_recur: bool = True, keep: bool = False,
             out_dir: Path | None = None) -> Test:
        """Up to `attempts` runs (stopping at the first recurrence unless told not to)."""
        t0 = time.monotonic()
        self.candidates += 1
        recurred, dirs, sizes = 0, [], []
        for a in range(attempts):
            if time.monotonic() > self.deadline and not keep:
                raise OutOfBudget()
            ok, run_dir, grown = self.run_once(cand, a, out_dir or self.work_dir, judged=keep)
            dirs.append(run_dir)
            if grown is not None:
                sizes.append(grown)
            recurred += ok
            if not keep:
                shutil.rmtree(run_dir, ignore_errors=True)
            if ok and stop_on_recur:
                break
        return Test(recurred, len(dirs), dirs, time.monotonic() - t0, sizes)


def _run(cfg: RunConfig):
    from soak.loop.runner import run_soak

    return run_soak(cfg)


def _seed_for(seed: int, n: int) -> int:
    return (seed * 1000003 + 7919 * (n + 1)) % (2 ** 31)


def _reseed_rules(spec: str, n: int) -> str:
    """A probabilistic rule (`p:`) draws anew on every run: its seed moves with the run."""
    if not spec:
        return spec
    from soak.cl.fault_rules import join_spec, parse_spec

    rules = parse_spec(spec)
    for r in rules:
        if "p" in r.triggers:
            r.triggers["seed"] = _seed_for(int(r.triggers.get("seed", 1)), n)
    return join_spec(rules)


def recurred_in(run_dir: Path, key: str, signature: str | None) -> bool:
    """The same cause: its key among the run's causes, or its signature among its findings."""
    cls = run_folder.read_json(Path(run_dir) / run_folder.CLASSIFICATION) or {}
    for c in cls.get("causes") or []:
        if isinstance(c, dict) and key in (c.get("fault_id"), c.get("signature")):
            return True
    sigs = {f.get("signature") for f in cls.get("findings") or [] if isinstance(f, dict)}
    return bool(signature) and signature in sigs


def memory_growth(run_dir: Path, series: str, iterations: set[int] | None,
                  generation: int | None = 0) -> int | None:
    """Bytes the series grew on one engine: the peak over the iterations' samples minus the
    engine's first sample (None: no samples)."""
    first = None
    peak = None
    for ev in read_events(run_dir, {"memory"}):
        if generation is not None and ev.get("generation") != generation:
            continue
        v = ev.get(series)
        if not _int(v):
            continue
        if first is None:
            first = v
            continue
        it = ev.get("iteration")
        if ev.get("source") == "iteration" and (iterations is None or it in iterations):
            peak = v if peak is None else max(peak, v)
    if first is None or peak is None:
        return None
    return peak - first


# -- shrinking ------------------------------------------------------------------------------
def ddmin(items: list, test, allow_empty: bool = False) -> list:
    """The smallest sublist (order kept) that passes `test`, by removing chunks (ddmin, syzkaller's
    bisection of a log): halves first, then finer, each accepted removal kept."""
    if allow_empty and items and test([]):
        return []
    n = 2
    while len(items) >= 2:
        size = math.ceil(len(items) / n)
        chunks = [items[k:k + size] for k in range(0, len(items), size)]
        for k in range(len(chunks)):
            rest = [x for j, c in enumerate(chunks) if j != k for x in c]
            if test(rest):
                items = rest
                n = max(n - 1, 2)
                break
        else:
            if n >= len(items):
                break
            n = min(len(items), n * 2)
    return items


def simpler_text(text: str) -> str:
    """The same length in plain ASCII letters: what hypothesis shrinks characters toward."""
    return "".join(c if c in " \n" or ("a" <= c <= "z") else "a" for c in text.lower())


def shrink_length(n: int, test) -> int:
    """The smallest m in 1..n with test(m), assuming monotone (a binary search; n passes)."""
    if n <= 1:
        return n
    if test(1):
        return 1
    lo, hi = 1, n  # lo fails, hi passes
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if test(mid):
            hi = mid
        else:
            lo = mid
    return hi


def gpu_mode_variants(mode: int) -> list[tuple[int, str]]:
    """Simpler GPU modes (thread_num on OpenCL): no record bits, no tuning, the other memory kind."""
    out = []
    for bit, name in GPU_RECORD_BITS.items():
        if mode & bit:
            out.append((mode & ~bit, f"without {name}"))
    tuning = mode & 31
    if tuning and tuning != 1:
        out.append(((mode & ~31) | 1, f"tuning none instead of {GPU_TUNING_BITS.get(tuning, tuning)}"))
    memory = mode & 192
    if memory in GPU_MEMORY_BITS:
        other = 192 ^ memory
        out.append(((mode & ~192) | other, f"{GPU_MEMORY_BITS[other]} memory instead of {GPU_MEMORY_BITS[memory]}"))
    return out


# -- the reduction ---------------------------------------------------------------------------
class Reducer:
    def __init__(self, tester: Tester, window: Candidate, target: int | None):
        self.t = tester
        self.best = window
        self.target = target
        self.k = MAX_ATTEMPTS
        self.steps: list[dict] = []
        self.facts: list[str] = []     # what the configuration steps learnt (also from rejections)
        self.step = "window"
        self.tried: dict[str, bool] = {}   # a candidate tried before is not run again
        self.hits = 0   # recurrences and runs of the accepted candidates (k follows them)
        self.tries = 0

    def note(self, what: str, cand: Candidate, test: Test | None, accepted: bool) -> None:
        rec = {"step": self.step, "what": what, "size": cand.size(), "accepted": accepted,
               "recurred": test.recurred if test else None, "attempts": test.attempts if test else None,
               "elapsed_s": round(test.elapsed_s, 3) if test else None}
        self.steps.append(rec)
        if self.t.display:
            self.t.display.candidate(self.step, what, cand.size_text(), test, accepted)

    def attempt(self, what: str, cand: Candidate) -> bool:
        seen = json.dumps([cand.convs, cand.engine_options, cand.fault_plan, cand.cl_faults], sort_keys=True)
        if seen in self.tried:
            return self.tried[seen]
        if self.t.display:
            self.t.display.status(step=self.step, size=cand.size_text(), what=what)
        test = self.t.test(cand, self.k)
        if test.ok:
            self.best = cand
            self._learn(test)
        self.tried[seen] = test.ok
        self.note(what, cand, test, test.ok)
        return test.ok

    # 1 and the reliability that sets k
    def check_window(self) -> Test:
        self.step = "window"
        if self.t.display:
            self.t.display.status(step=self.step, size=self.best.size_text(), what="the window as recorded")
        test = Test(0, 0, [], 0.0)
        t0 = time.monotonic()
        for a in range(MAX_ATTEMPTS):   # up to 10 runs; 5 of 5 is taken as reliable
            one = self.t.test(self.best, 1)
            test.recurred += one.recurred
            test.attempts += 1
            test.bytes += one.bytes
            if test.recurred == test.attempts == 5:
                break
        test.elapsed_s = time.monotonic() - t0
        self.note("the window as recorded", self.best, test, test.ok)
        self._learn(test)
        return test

    def _learn(self, test: Test) -> None:
        """k from the runs of the accepted candidates so far: the lower Wilson bound of their
        reliability, so a flaky cause gets enough runs before a candidate is rejected."""
        self.hits += test.recurred
        self.tries += test.attempts
        self.k = attempts_for(wilson_low(self.hits, self.tries))

    # 2
    def alone(self) -> None:
        self.step = "alone"
        if self.t.memory:   # no one iteration: the fewest conversations that keep the bytes
            convs = self.best.convs
            if len(convs) > 1:
                kept = ddmin(list(range(len(convs))), lambda keep: self.attempt(
                    f"{len(keep)} of {len(convs)} conversations", self.best.copy(convs=[convs[k] for k in keep])))
                self.best = self.best.copy(convs=[convs[k] for k in kept])
            return
        convs = self.best.convs
        target_conv = convs[-1]
        if len(convs) == 1 and len(target_conv) == 1:
            return
        if len(target_conv) > 1 and self.attempt("the iteration alone on a fresh engine",
                                                 self.best.copy(convs=[[target_conv[-1]]])):
            return
        if len(convs) > 1 and self.attempt("its conversation alone on a fresh engine",
                                           self.best.copy(convs=[target_conv])):
            return
        if len(convs) > 1:
            earlier = ddmin(list(range(len(convs) - 1)),
                            lambda keep: self.attempt(f"{len(keep)} of {len(convs) - 1} earlier conversations",
                                                      self.best.copy(convs=[convs[k] for k in keep] + [target_conv])),
                            allow_empty=False)
            self.best = self.best.copy(convs=[convs[k] for k in earlier] + [target_conv])

    # 3
    def shrink(self) -> None:
        self.step = "turns"
        for c in range(len(self.best.convs)):
            conv = self.best.convs[c]
            last = c == len(self.best.convs) - 1 and not self.t.memory   # the target's conversation
            head = conv[:-1] if last else conv   # the target turn stays
            if not head:
                continue

            def with_turns(keep, c=c, last=last, conv=conv):
                convs = copy.deepcopy(self.best.convs)
                convs[c] = [conv[k] for k in keep] + ([conv[-1]] if last else [])
                return self.best.copy(convs=convs)

            kept = ddmin(list(range(len(head))),
                         lambda keep, c=c: self.attempt(f"conversation {c + 1}: {len(keep)} of {len(head)} "
                                                        f"{'earlier ' if last else ''}turns", with_turns(keep)),
                         allow_empty=last)
            self.best = with_turns(kept)
        self.step = "prompts"
        for c, conv in enumerate(self.best.convs):
            for k in range(len(conv)):
                self._shrink_prompt(c, k)
        self.step = "tokens"
        for c, conv in enumerate(self.best.convs):
            for k in range(len(conv)):
                self._shrink_tokens(c, k)

    def _with_turn(self, c: int, k: int, **change) -> Candidate:
        convs = copy.deepcopy(self.best.convs)
        convs[c][k] = dict(convs[c][k], **change)
        return self.best.copy(convs=convs)

    def _shrink_prompt(self, c: int, k: int) -> None:
        text = self.best.convs[c][k]["prompt"]
        where = f"conversation {c + 1} turn {k + 1}"
        # the simplest text of the same length first (hypothesis shrinks characters toward 'a'),
        # then plain lowercase letters with the words kept
        plain = "a" * len(text)
        if plain != text and not self.attempt(f"{where}: prompt as {len(text)} x 'a'",
                                              self._with_turn(c, k, prompt=plain)):
            simple = simpler_text(text)
            if simple != text:
                self.attempt(f"{where}: prompt in plain letters", self._with_turn(c, k, prompt=simple))
        text = self.best.convs[c][k]["prompt"]
        if len(text) <= 1:
            return
        shrink_length(len(text), lambda n: n == len(text) or self.attempt(
            f"{where}: prompt cut to {n} of {len(text)} chars", self._with_turn(c, k, prompt=text[:n])))

    def _shrink_tokens(self, c: int, k: int) -> None:
        n = self.best.convs[c][k]["max_new_tokens"]
        where = f"conversation {c + 1} turn {k + 1}"
        shrink_length(n, lambda m: m == n or self.attempt(f"{where}: max_new_tokens {m} (was {n})",
                                                          self._with_turn(c, k, max_new_tokens=m)))

    # 4
    def configuration(self, backend: str) -> None:
        self.step = "config"
        for key in list(self.best.engine_options):
            value = self.best.engine_options.get(key)
            if value is None or key in KEEP_OPTIONS:
                continue
            if key == "thread_num" and backend == "opencl" and _int(value):
                self._gpu_mode(value)
                continue
            options = {k: v for k, v in self.best.engine_options.items() if k != key}
            ok = self.attempt(f"{key}={value!r} dropped (engine default)", self.best.copy(engine_options=options))
            if not ok and key == "thread_num" and _int(value) and value > 1:
                ok = self.attempt(f"thread_num {value} -> 1", self.best.copy(
                    engine_options=dict(self.best.engine_options, thread_num=1)))
            self.facts.append(f"{key}={value!r}: " + ("not needed" if ok else "needed (dropping it: no failure)"))
        plan = self.best.fault_plan
        if plan and len(plan) > 1:
            for f in list(plan):
                rest = [x for x in self.best.fault_plan if x is not f]
                if rest and self.attempt(f"test-engine fault {f.get('kind')} dropped", self.best.copy(fault_plan=rest)):
                    self.facts.append(f"test-engine fault {json.dumps(f)}: not needed")
        if self.best.cl_faults:
            self._cl_rules()

    def _gpu_mode(self, mode: int) -> None:
        """Each simpler GPU mode, one bit change from the recorded one at a time (68 -> 65: no
        tuning; 68 -> 132: image memory), each recorded as a fact; the first that fails the
        same way is kept."""
        start = self.best
        adopted = None
        for variant, why in gpu_mode_variants(mode):
            trial = start.copy(engine_options=dict(start.engine_options, thread_num=variant))
            keep_best = self.best
            ok = self.attempt(f"GPU mode {mode} -> {variant} ({why})", trial)
            self.facts.append(f"GPU mode {variant} ({why}): " + ("fails the same way" if ok else "does not fail"))
            if ok and adopted is None:
                adopted = trial
            self.best = keep_best
        if adopted is not None:
            self.best = adopted

    def _cl_rules(self) -> None:
        from soak.cl.fault_rules import join_spec, parse_spec

        rules = parse_spec(self.best.cl_faults)
        if len(rules) > 1:
            for r in list(rules):
                rest = [x for x in parse_spec(self.best.cl_faults) if x.text != r.text]
                if rest and self.attempt(f"OpenCL rule {r.text} dropped", self.best.copy(cl_faults=join_spec(rest))):
                    self.facts.append(f"OpenCL rule {r.text}: not needed")
        rules = parse_spec(self.best.cl_faults)
        for n, r in enumerate(rules):
            if set(r.triggers) <= {"nth"} and "nth" in r.triggers or "kernel" in r.triggers:
                continue
            first = self._first_injected_call(r)
            if first is None:
                continue
            narrowed = copy.deepcopy(rules)
            narrowed[n].triggers = {"nth": first}
            spec = join_spec(narrowed)
            if self.attempt(f"OpenCL rule {r.text} narrowed to call {first} ({spec.split(';')[n]})",
                            self.best.copy(cl_faults=spec)):
                self.facts.append(f"OpenCL rule {r.text}: only call {first} of {r.api} needs to fail")
                rules = parse_spec(spec)
            else:
                self.facts.append(f"OpenCL rule {r.text}: one failing call ({r.api} #{first}) is not enough")

    def _first_injected_call(self, rule) -> int | None:
        """The first call the rule failed, in one run of the best candidate."""
        test = self.t.test(self.best, 1, keep=True)
        try:
            for run_dir in test.run_dirs:
                for ev in read_events(Path(run_dir), {"cl_call_error"}):
                    if ev.get("injected") and ev.get("api") == rule.api and _int(ev.get("call_index")):
                        return ev["call_index"]
                    samples = ev.get("samples") if isinstance(ev.get("samples"), list) else []
                    if ev.get("injected") and ev.get("api") == rule.api:
                        idx = [s.get("index") for s in samples if isinstance(s, dict) and _int(s.get("index"))]
                        if idx:
                            return min(idx)
        finally:
            for d in test.run_dirs:
                shutil.rmtree(d, ignore_errors=True)
        return None


def wilson_low(hits: int, n: int, z: float = 1.0) -> float:
    """The lower Wilson score bound of a proportion (z = 1: one sigma)."""
    if n <= 0:
        return 0.0
    p = hits / n
    centre = p + z * z / (2 * n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, (centre - spread) / (1 + z * z / n))


def attempts_for(reliability: float) -> int:
    """Runs of a candidate so that a cause this reliable is missed by bad luck < 3 % of the time."""
    if reliability >= 1.0:
        return 1
    if reliability <= 0:
        return MAX_ATTEMPTS
    return max(1, min(MAX_ATTEMPTS, math.ceil(math.log(0.03) / math.log(1 - reliability))))


# -- one cause, end to end -------------------------------------------------------------------
@dataclass
class ReproResult:
    cause: dict
    key: str
    window: Candidate
    best: Candidate
    base: RunConfig
    target: int | None
    window_test: Test | None
    final: Test | None
    steps: list[dict]
    facts: list[str]
    elapsed_s: float
    runs: int
    stopped: str            # done | budget | not reproduced | below floor
    memory: dict | None = None

    @property
    def reliability(self) -> float | None:
        t = self.final or self.window_test
        return t.recurred / t.attempts if t and t.attempts else None


def base_config(run_dir: Path, from_stranger: bool = False, **names) -> RunConfig:
    manifest, _ = load_run(run_dir)
    if from_stranger:
        cfg, _ = stranger_config(manifest, names.get("engine_lib"), names.get("model"), names.get("plugins"),
                                 names.get("mnn_build"))
    else:
        cfg = config_from_manifest(manifest)
        for k in ("engine_lib", "model", "mnn_build"):
            if names.get(k):
                setattr(cfg, k, names[k])
        if names.get("plugins"):
            cfg.plugins = list(names["plugins"])
    return cfg


def reproduce(run_dir: Path, cause: dict, out_dir: Path, budget_s: float = 600.0, runs: int = RELIABILITY_RUNS,
              memory_share: float = MEMORY_SHARE, display=None, cfg: RunConfig | None = None) -> ReproResult:
    """Reduce one cause of a run (see the module's docstring); the folders of the result's
    reliability runs go to out_dir/runs."""
    t0 = time.monotonic()
    base = cfg or base_config(run_dir)
    convs, target = window_of(run_dir, cause, base.max_new_tokens)
    window = Candidate(convs, dict(base.engine_options), copy.deepcopy(base.fault_plan),
                       (base.intercept or {}).get("faults") if base.intercept is not None else None)
    work = out_dir / run_folder.REPRO_WORK
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    memory = None
    target_bytes = None
    if is_memory(cause):
        series = memory_series(cause)
        its = {t["i"] for conv in convs for t in conv}
        gen = _generation_of(run_dir, max(its))
        grown = memory_growth(run_dir, series, its, gen)
        if not grown or grown <= 0:
            raise errors.BadInput(f"cause {cause_key(cause)}: the run's {series} samples show no growth to reduce",
                                  "a memory cause needs memory samples over its iterations")
        target_bytes = int(grown * memory_share)
        memory = {"series": series, "window_bytes": grown, "share": memory_share, "target_bytes": target_bytes}
    tester = Tester(base, cause, work, t0 + budget_s, display, target_bytes)
    reducer = Reducer(tester, window, target)
    stopped = "done"
    window_test = None
    try:
        window_test = reducer.check_window()
        r = window_test.recurred / window_test.attempts
        if window_test.recurred == 0:
            stopped = "not reproduced"
        elif r < FLOOR:
            stopped = "below floor"
        else:
            reducer.alone()
            reducer.shrink()
            reducer.configuration(base.backend)
    except OutOfBudget:
        stopped = "budget"
    final = None
    if stopped in ("done", "budget"):
        runs_dir = out_dir / run_folder.REPRO_RUNS
        shutil.rmtree(runs_dir, ignore_errors=True)
        reducer.step = "reliability"
        if display:
            display.status(step="reliability", size=reducer.best.size_text(), what=f"{runs} runs")
        final = tester.test(reducer.best, runs, stop_on_recur=False, keep=True, out_dir=runs_dir)
        reducer.note(f"reliability over {runs} runs", reducer.best, final, final.ok)
        if memory is not None:
            memory["best_bytes"] = final.bytes
    shutil.rmtree(work, ignore_errors=True)
    return ReproResult(cause, cause_key(cause), window, reducer.best, base, target, window_test, final,
                       reducer.steps, reducer.facts, time.monotonic() - t0, tester.runs, stopped, memory)


def _generation_of(run_dir: Path, i: int) -> int | None:
    for ev in read_events(run_dir, {"iteration"}):
        if ev.get("i") == i:
            return ev.get("worker_generation")
    return None


def candidate_config(result: ReproResult) -> RunConfig:
    """The reproducer's run configuration: the run's, with the reduced options and faults, and
    the minimal script."""
    cfg = copy.deepcopy(result.base)
    cfg.engine_options = dict(result.best.engine_options)
    cfg.fault_plan = copy.deepcopy(result.best.fault_plan)
    if cfg.intercept is not None:
        cfg.intercept = dict(cfg.intercept, faults=result.best.cl_faults or "")
    cfg.script = result.best.script()
    cfg.oracle = None
    return cfg


# -- the seam soak.rerun uses (soak gate --rerun-unexpected) ---------------------------------
def replay_cause(run_dir: Path, cause: dict, out_dir: Path) -> dict:
    """One re-run of a cause (`soak gate --rerun-unexpected`): the reproducer `soak repro` wrote
    in RUN/repro when it has this cause (its minimal workload and configuration), else the
    iteration's conversation on a fresh engine, as `soak replay` does (the whole window is
    `soak repro`'s first step, not a gate's quick re-run).
    {"recurred": bool, "run_dir": the re-run's folder, "how": "repro" | "iteration replay"}."""
    from soak.judges import judge_run
    from soak.loop.replay import plan_replay, run_replay
    from soak.outputs.replay_source import signatures_at

    run_dir = Path(run_dir)
    key = cause_key(cause)
    cfg = load_repro_config(run_dir / run_folder.REPRO, key)
    if cfg is None:
        iteration = cause.get("first_iteration")
        if not _int(iteration):
            raise errors.BadInput(f"cause {key} of {run_dir} names no iteration to replay",
                                  "re-classify the run (soak classify RUN)")
        result, _ = run_replay(plan_replay(run_dir, iteration, str(out_dir), quiet=True))
        judge_run(result, True)
        replay_dir = Path(result.run_dir)
        recurred = recurred_in(replay_dir, key, cause.get("signature")) or \
            cause.get("signature") in signatures_at(replay_dir, iteration)
        return {"recurred": bool(recurred), "run_dir": str(replay_dir), "how": "iteration replay"}
    cfg.iterations = None
    cfg.duration_s = None
    cfg.quiet = True
    cfg.run_id = None
    cfg.out_dir = str(out_dir)
    cfg.argv = ["repro", "replay", str(run_dir), "--cause", key]
    result = judge_run(_run(cfg), True)
    if is_memory(cause):
        grown = memory_growth(Path(result.run_dir), memory_series(cause), None)
        meta = repro_meta_of(run_dir / run_folder.REPRO, key) or {}
        need = (meta.get("memory") or {}).get("target_bytes")
        recurred = grown is not None and (grown >= need if _int(need) else grown > 0)
    else:
        recurred = recurred_in(Path(result.run_dir), key, cause.get("signature"))
    return {"recurred": bool(recurred), "run_dir": str(result.run_dir), "how": "repro"}


def repro_meta_of(repro_dir: Path, key: str) -> dict | None:
    meta = _read_meta(repro_dir)
    for c in (meta or {}).get("causes") or []:
        if isinstance(c, dict) and c.get("key") == key:
            return c
    return None


def load_repro_config(repro_dir: Path, key: str | None = None) -> RunConfig | None:
    """The saved reproducer (REPRO/<cause>/run_config.json + script.json) as a RunConfig; with no
    key, the first cause of REPRO_META."""
    meta = _read_meta(repro_dir)
    causes = [c for c in (meta or {}).get("causes") or [] if isinstance(c, dict)]
    chosen = next((c for c in causes if key is None or c.get("key") == key), None)
    if chosen is None or not isinstance(chosen.get("dir"), str):
        return None
    folder = repro_dir / chosen["dir"]
    saved = run_folder.read_json(folder / run_folder.REPRO_CONFIG)
    script = run_folder.read_json(folder / run_folder.REPRO_SCRIPT)
    if not isinstance(saved, dict) or not isinstance(script, dict):
        return None
    cfg = config_from_manifest({"config": saved})
    cfg.script = script.get("turns")
    return cfg


# -- `soak replay REPRO/<cause>` ---------------------------------------------------------------
def is_repro_folder(path: Path) -> bool:
    path = Path(path)
    return path.is_dir() and ((path / run_folder.REPRO_SCRIPT).is_file() or (path / run_folder.REPRO_META).is_file())


def replay_repro(path: Path, out_dir: str | None = None, quiet: bool = False) -> dict:
    """Run a saved reproducer once, judged like any run: {"reproduced", "replay_run", "cause", ...}."""
    from soak.judges import judge_run

    path = Path(path)
    if (path / run_folder.REPRO_META).is_file() and not (path / run_folder.REPRO_SCRIPT).is_file():
        meta = run_folder.read_json(path / run_folder.REPRO_META) or {}
        dirs = [c.get("dir") for c in meta.get("causes") or [] if isinstance(c, dict) and isinstance(c.get("dir"), str)]
        if not dirs:
            raise errors.BadInput(f"{path} holds no reproducer", "run `soak repro RUN` first")
        path = path / dirs[0]
    script = run_folder.read_json(path / run_folder.REPRO_SCRIPT)
    saved = run_folder.read_json(path / run_folder.REPRO_CONFIG)
    if not isinstance(script, dict) or not isinstance(script.get("turns"), list) or not isinstance(saved, dict):
        raise errors.BadInput(f"{path} is not a reproducer written by `soak repro` (no readable "
                              f"{run_folder.REPRO_SCRIPT} and {run_folder.REPRO_CONFIG})")
    cfg = config_from_manifest({"config": saved})
    cfg.script = script["turns"]
    cfg.iterations = None
    cfg.duration_s = None
    cfg.quiet = quiet
    cfg.run_id = None
    cfg.out_dir = out_dir or str(path / run_folder.REPRO_REPLAYS)
    cfg.argv = ["replay", str(path)]
    validate(cfg)
    result = judge_run(_run(cfg), quiet)
    key = script.get("cause") or "?"
    reproduced = recurred_in(Path(result.run_dir), key, script.get("signature"))
    meta = repro_meta_of(path.parent, key) or {}
    memory = meta.get("memory") if isinstance(meta.get("memory"), dict) else None
    if memory:
        grown = memory_growth(Path(result.run_dir), memory.get("series") or "rss", None)
        reproduced = grown is not None and _int(memory.get("target_bytes")) and grown >= memory["target_bytes"]
    return {"reproduced": bool(reproduced), "replay_run": str(result.run_dir), "cause": key,
            "signature": script.get("signature"), "turns_replayed": len(cfg.script)}


def _read_meta(repro_dir: Path) -> dict | None:
    path = repro_dir / run_folder.REPRO_META
    return run_folder.read_json(path) if path.is_file() else None
