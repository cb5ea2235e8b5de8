"""One memory judgment (issue 22): `soak classify`, `soak gate` and `soak status` read the memory
verdicts of soak.analysis.memory_verdict, so they cannot disagree.

Before: the classifier had its own quartile test (or read a recorded verdicts.json), status a
least-squares slope, the gate the verdicts.  On a hand-built MNN run on PoCL (a few iterations,
minutes of cold kernel build inside the first respond, memory sampled by the timer) classify
listed soak-host-memory-leak over "iterations 0-239" (timer-sample numbers) while the gate judged
the same RSS `growth_stopped`."""

from __future__ import annotations

import ast
import random
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import soak.events
from soak.analysis.memory_verdict import LeakCriteria, memory_verdicts, warmup_iterations
from soak.analysis.loaded_run import RunFolder
from soak.catalog.classify import classify_run
from soak.catalog.loader import load_catalog
from soak.commands.status import status
from soak.outputs.gate import evaluate

from _catalog_runs import ctx, iteration, make_run

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT / "tests" / "data" / "real"
# real runs of a few iterations whose memory is mostly timer samples taken during a cold PoCL kernel build
FEW_ITERATIONS_COLD_BUILD = ["pocl-enqueue-transient", "pocl-mode68-cold-build"]
KEPT = ("ratchet", "retained")
RESOURCES = {"host": ("rss", "pss", "uss"), "gpu": ("gpu_live_bytes",)}


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def _expected_memory_findings(verdicts: dict) -> dict:
    """What the classifier must list for these verdicts: per resource, memory_growth for a leak
    (first in rss, pss, uss order), else memory_kept for a ratchet, else for retained."""
    out = {}
    for res, names in RESOURCES.items():
        got = [verdicts.get(n) for n in names]
        if "leak" in got:
            out[f"memory_growth/?: {res}"] = "leak"
        else:
            for shape in KEPT:
                if shape in got:
                    out[f"memory_kept/reset: {res}"] = shape
                    break
    return out


def assert_one_answer(run_dir: Path, catalog) -> dict:
    """classify, gate and status give the memory verdicts of memory_verdicts(run), and a memory
    finding's iterations lie inside the run's iterations.  Returns the verdicts."""
    verdicts = {k: v["verdict"] for k, v in memory_verdicts(RunFolder(run_dir))["series"].items()}
    results, gated = evaluate(run_dir)
    assert {k: v["verdict"] for k, v in gated["memory"]["series"].items()} == verdicts
    for r in results:
        if r.name.startswith("memory.leak."):
            name = r.name[len("memory.leak."):]
            assert r.skipped == (verdicts[name] in ("insufficient", "no_data"))
            assert r.message.startswith(f"{name}: {verdicts[name]}") or verdicts[name] in r.message, r.message
    result = classify_run(run_dir, catalog, write=False)
    found = {}
    its = [i for f in result["findings"] for i in (f["first_iteration"], f["last_iteration"])
           if f["kind"] not in ("memory_growth", "memory_kept") and i is not None]
    n = RunFolder(run_dir).iteration_count
    for f in result["findings"]:
        if f["kind"] in ("memory_growth", "memory_kept"):
            found[f["signature_text"]] = f["figures"].get("verdict", "leak")
            assert 0 <= f["first_iteration"] <= f["last_iteration"] <= max([n - 1, *its]), \
                (f["signature_text"], f["first_iteration"], f["last_iteration"], n)
    assert found == _expected_memory_findings(verdicts)
    assert status(run_dir)["memory"]["verdicts"] == {k: v for k, v in verdicts.items() if v != "no_data"}
    return verdicts


@pytest.mark.parametrize("case", FEW_ITERATIONS_COLD_BUILD)
def test_real_few_iteration_run_has_one_memory_answer(case, catalog):
    """Before: pocl-enqueue-transient's classify read the recorded verdicts.json (rss growth_stopped:
    no finding) while the gate judged rss `retained` and failed it; without verdicts.json classify
    listed soak-host-memory-leak over iterations 0-347 of a 2-iteration run.  Now all three say
    `insufficient`: every sample falls in the warm-up (at least 3 iterations), which the timer
    samples of the first respond's cold kernel build no longer escape."""
    if not (REAL / case).is_dir():
        pytest.skip(f"{case} not in tests/data/real")
    verdicts = assert_one_answer(REAL / case, catalog)
    assert set(verdicts.values()) <= {"insufficient", "no_data"}, verdicts


@pytest.mark.parametrize("case", sorted(p.name for p in REAL.iterdir() if (p / "events.jsonl").is_file()))
def test_every_real_run_has_one_memory_answer(case, catalog):
    assert_one_answer(REAL / case, catalog)


def _timer_run(root: Path, name: str, iterations: int, per_iteration: int, rise: float) -> Path:
    """A run whose memory is sampled by the timer only (no iteration samples), `per_iteration`
    samples inside each respond, one a second (the writer's clock made to tick so), RSS rising
    by `rise` bytes a sample."""
    ev, k = [], 0
    for i in range(iterations):
        for _ in range(per_iteration):
            ev.append(("memory", {"source": "timer", "iteration": None, "generation": 0,
                                  "rss": int(300e6 + rise * k), "gpu_live_bytes": 1_000_000}))
            k += 1
        ev.append(iteration(i, turn=i, context_tokens=10 * i))
    clock = iter(range(10**6))
    with pytest.MonkeyPatch.context() as m:
        m.setattr(soak.events.time, "monotonic", lambda: float(next(clock)))
        return make_run(root, name, ctx(), ev)


def test_timer_samples_span_iterations_not_sample_numbers(tmp_path, catalog):
    """Before: 30 iterations x 40 timer samples of a steady leak were memory_growth over
    'iterations 0-1199' (the scan numbered samples without an iteration by their count), and the
    verdict called the same ramp `growth_stopped` (then `retained`): its 'sustained' check fitted
    the late half per second against the whole per hour."""
    run = _timer_run(tmp_path, "timer-leak", 30, 40, 200_000)
    verdicts = assert_one_answer(run, catalog)
    assert verdicts["rss"] == "leak"
    (f,) = [f for f in classify_run(run, catalog, write=False)["findings"] if f["kind"] == "memory_growth"]
    assert (f["first_iteration"], f["last_iteration"]) == (warmup_iterations(30, LeakCriteria()), 29)
    assert list(f["ranges"]["turn"]) == [3, 29]


def test_timer_samples_of_a_short_run_are_warm_up(tmp_path, catalog):
    """3 iterations, each a long cold build sampled 200 times by the timer: all warm-up."""
    run = _timer_run(tmp_path, "cold", 3, 200, 400_000)
    v = memory_verdicts(RunFolder(run))["series"]["rss"]
    assert v["verdict"] == "insufficient" and v["samples"] == 0 and v["warmup_excluded"] == 600
    assert_one_answer(run, catalog)


def test_iteration_in_progress():
    from soak.analysis.memory_verdict import in_progress

    at = in_progress([{"seq": 10, "i": 0}, {"seq": 20, "i": 1}, {"seq": 40, "i": 3}, {"seq": 50}])
    assert [at(s) for s in (0, 9, 11, 20, 21, 39, 41, None)] == [0, 0, 1, 1, 2, 2, 4, 4]
    assert in_progress([])(5) == 0


SHAPES = ("flat", "ramp", "step", "saw", "late")


def _shape(kind: str, k: int, n: int, rng: random.Random, size: float) -> float:
    noise = rng.gauss(0, 200_000)
    if kind == "ramp":
        return size * k / n + noise
    if kind == "step":
        return (size if k > n // 3 else 0.0) + noise
    if kind == "saw":
        return size * (k % 7) / 7 + noise
    if kind == "late":
        return max(0.0, size * (k - n // 2) / n) + noise
    return noise


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shape=st.sampled_from(SHAPES), iterations=st.integers(2, 60), timer=st.integers(0, 4),
       source=st.sampled_from(["iteration", "timer", "both"]), size=st.sampled_from([0.0, 2e6, 60e6]),
       restart=st.booleans(), seed=st.integers(0, 10_000))
def test_classify_gate_status_agree_on_random_series(tmp_path_factory, catalog, shape, iterations, timer, source,
                                                      size, restart, seed):
    rng = random.Random(seed)
    ev, k, gen = [], 0, 0
    total = iterations * (timer + 1)
    for i in range(iterations):
        if restart and i == iterations // 2:
            gen += 1
            ev.append(("worker_start", {"pid": 100 + gen, "generation": gen}))
        for _ in range(timer if source != "iteration" else 0):
            ev.append(("memory", {"source": "timer", "iteration": None, "generation": gen,
                                  "rss": int(2e8 + _shape(shape, k, total, rng, size)), "gpu_live_bytes": None}))
            k += 1
        ev.append(iteration(i, turn=i % 4, context_tokens=20 * (i % 4)))
        if source != "timer":
            ev.append(("memory", {"source": "iteration", "iteration": i, "generation": gen,
                                  "rss": int(2e8 + _shape(shape, k, total, rng, size)),
                                  "gpu_live_bytes": int(1e7 + _shape(shape, k, total, rng, size / 4))}))
            k += 1
    run = make_run(tmp_path_factory.mktemp("prop"), "r", ctx(), ev)
    assert_one_answer(run, catalog)


# -- no second memory trend ------------------------------------------------------------------
TREND_CALLERS = {  # the modules that fit soak.analysis.trend.trend(), and what they fit
    "soak/analysis/memory_verdict.py": "memory series (the one memory judgment)",
    "soak/analysis/context_model.py": "memory against the context (part of the memory judgment)",
    "soak/analysis/perf.py": "decode tok/s drift (not memory)",
    "soak/analysis/oracle_verdict.py": "the oracle's per-turn KL drift (not memory)",
}
MEMORY_JUDGES = ("soak/commands/status.py", "soak/catalog/classify.py", "soak/analysis/verdicts.py")


def _modules():
    for path in sorted((ROOT / "soak").rglob("*.py")):
        yield path.relative_to(ROOT).as_posix(), ast.parse(path.read_text(encoding="utf-8"))


def _squared_deviation_sums(tree) -> list[int]:
    """Lines of sum(... (a - b) ** 2 ...) or sum(... (a - b) * (c - d) ...): a hand-made least squares."""
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "sum":
            for sub in ast.walk(node):
                if isinstance(sub, ast.BinOp) and (
                        (isinstance(sub.op, ast.Pow) and isinstance(sub.left, ast.BinOp) and isinstance(sub.left.op, ast.Sub))
                        or (isinstance(sub.op, ast.Mult) and all(isinstance(s, ast.BinOp) and isinstance(s.op, ast.Sub)
                                                                 for s in (sub.left, sub.right)))):
                    hits.append(node.lineno)
                    break
    return hits


def test_no_second_memory_trend():
    callers, fits, regressions, judges = {}, {}, {}, {}
    for rel, tree in _modules():
        if rel == "soak/analysis/trend.py":
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "soak.analysis.trend":
                callers[rel] = [a.name for a in node.names]
            if isinstance(node, ast.Attribute) and node.attr in ("linear_regression", "polyfit", "lstsq",
                                                                  "covariance", "correlation", "theilslopes"):
                regressions.setdefault(rel, []).append(node.lineno)
            if isinstance(node, ast.Name) and node.id == "memory_verdicts":
                judges[rel] = True
        if _squared_deviation_sums(tree):
            fits[rel] = _squared_deviation_sums(tree)
    assert set(callers) == set(TREND_CALLERS), f"trend() fitted outside the judges that own it: {callers}"
    assert not fits, f"a hand-made slope (sum of squared deviations) outside soak/analysis/trend.py: {fits}"
    assert not regressions, f"a regression primitive outside soak/analysis/trend.py: {regressions}"
    assert all(j in judges for j in MEMORY_JUDGES), f"a memory judge without memory_verdicts: {judges}"


def test_the_scan_finds_a_hand_made_slope():
    """The scan above is not vacuous: status's old least-squares slope is found."""
    old = ast.parse("var = sum((t - mt) ** 2 for t, _ in samples)\n"
                    "slope = sum((t - mt) * (r - mr) for t, r in samples) / var\n")
    assert _squared_deviation_sums(old) == [1, 2]
