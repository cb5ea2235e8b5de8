"""Memory and speed verdicts that understand an LLM workload (issue 12).

Each memory shape (tests/outputs/_shapes.py) is judged as what it is, the
real failures of issue 12 are reproduced as data, and the recorded pip MNN
series (tests/data/series/, made with tests/outputs/_series.py from real
`soak run --engine mnn-pip` runs) are judged from what they show.
"""

from __future__ import annotations

from pathlib import Path

import _series as series  # tests/outputs/conftest.py puts this folder on sys.path
import _shapes as shapes
import pytest

from soak.analysis.context_model import expected_kv_bytes_per_token
from soak.analysis.verdicts import compute_verdicts, summary_lines


def _v(run, field="rss"):
    v = compute_verdicts(run, write=False)
    return v, v["memory"]["series"][field]


def test_expected_kv_bytes_per_token():
    m = {"layers": 24, "kv_heads": 2, "head_dim": 64, "config": {"precision": "low"}}
    assert expected_kv_bytes_per_token(m, "opencl")["bytes_per_token"] == 24 * 2 * 64 * 2 * 2
    assert expected_kv_bytes_per_token(m, "cpu")["bytes_per_token"] == 24 * 2 * 64 * 2 * 4
    assert expected_kv_bytes_per_token({"layers": 24}, "cpu") is None


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_clean_sawtooth_is_stable_and_its_kv_growth_measured(tmp_path, seed):
    run = shapes.write_shape(tmp_path / "clean", "clean", seed=seed)
    v, rss = _v(run)
    assert rss["verdict"] == "stable"
    w = rss["workload"]
    assert w["model"] == "context"
    kv = w["fit"]["kv_ratio"]
    assert kv["lo"] <= 1.1 <= kv["hi"] and kv["value"] == pytest.approx(1.1, rel=0.1)
    line = summary_lines(v)[0]
    assert line.startswith("RSS: stable, grows with the context and comes back at reset") and "1.1x expected" in line


@pytest.mark.parametrize("seed", [5037, 5063])
def test_noise_wander_is_not_a_leak(tmp_path, seed):
    """Two noisy clean sawtooth runs whose AR(1) residual wanders up 2-5 MB (the benchmark's former false
    positives): growth under 4 noise sd of the residual is no leak."""
    run = shapes.write_shape(tmp_path / "clean", "clean", seed=seed)
    rss = _v(run)[1]
    assert rss["verdict"] == "stable"
    assert rss["workload"]["residual"]["growth_bytes"] > 0


def test_h200_gpu_ratchet_is_named(tmp_path):
    """Issue 12: GPU live bytes 43 MB -> 3.1 GB over 60-turn conversations, at the high-water mark after every
    reset.  The one-series test called it stable; the workload model names the ratchet."""
    run = shapes.write_shape(tmp_path / "h200", "ratchet", seed=1, field="gpu_live_bytes", floor=43e6,
                             kv_per_token=235e3, max_turns=60, iterations=600, noise=5e6)
    v, g = _v(run, "gpu_live_bytes")
    assert g["verdict_one_series"] in ("stable", "growth_stopped")   # the old verdict, kept for comparison
    assert g["verdict"] == "ratchet" and g["workload"]["model"] == "high_water"
    b = g["workload"]["fit"]["bytes_per_token"]
    assert b["lo"] <= 235e3 <= b["hi"]
    assert g["kept_after_reset"]["bytes"] > 2e9
    line = summary_lines(v)[0]
    assert line.startswith("GPU bytes: ratchet, +") and " GB kept after reset, follows the longest context" in line
    assert "x expected" in line


def test_leak_on_top_of_a_ratchet_is_a_leak(tmp_path):
    hits = 0
    for seed in range(4):
        run = shapes.write_shape(tmp_path / f"rl{seed}", "ratchet_leak", seed=seed, leak_per_iteration=300e3)
        hits += _v(run)[1]["verdict"] == "leak"
    assert hits == 4


def test_leak_with_context_growth_is_a_leak(tmp_path):
    run = shapes.write_shape(tmp_path / "leak", "leak", seed=3, leak_per_iteration=200e3)
    v, rss = _v(run)
    assert rss["verdict"] == "leak"
    assert any(line.startswith("RSS: leak, +") for line in summary_lines(v))


def test_lasting_step_of_30_percent_is_never_stable(tmp_path):
    run = shapes.write_shape(tmp_path / "step", "step", seed=0, step_fraction=0.3)
    v, rss = _v(run)
    assert rss["verdict"] in ("retained", "leak")
    assert rss["kept_after_reset"]["fraction"] >= 0.2


@pytest.mark.parametrize("seed", range(4))
def test_step_ratchet_is_named(tmp_path, seed):
    """The level steps up each time the longest context passes a threshold (1k, 2k tokens) and stays: a ratchet,
    with the steps where they are."""
    run = shapes.write_shape(tmp_path / "sr", "step_ratchet", seed=seed, step_bytes=60e6)
    v, rss = _v(run)
    assert rss["verdict"] == "ratchet" and rss["workload"]["model"] == "steps"
    at = [s["at_tokens"] for s in rss["workload"]["steps"]["significant"]]
    # a step shows at the first floor after the longest context passed its threshold (both at once when the
    # first conversation already went past 2k)
    assert 1 <= len(at) <= 2 and all(a >= 1000 for a in at) and any(a >= 2000 for a in at)
    assert rss["workload"]["steps"]["significant_bytes"] == pytest.approx(120e6, rel=0.1)
    assert "follows the longest context (steps at ~" in summary_lines(v)[0]


@pytest.mark.parametrize("seed", range(6))
def test_step_in_time_is_not_a_ratchet(tmp_path, seed):
    """A lasting step at a fixed iteration (a pool grown once, not by the context) is retained, not a ratchet,
    even when the longest context happens to rise near it."""
    run = shapes.write_shape(tmp_path / "st", "step", seed=6000 + seed, step_fraction=0.3)
    assert _v(run)[1]["verdict"] in ("retained", "leak")


def test_small_step_is_not_called_retained(tmp_path):
    run = shapes.write_shape(tmp_path / "step", "step", seed=0, step_fraction=0.05)
    assert _v(run)[1]["verdict"] in ("stable", "growth_stopped")


@pytest.mark.parametrize("name", ["pip-tiny-200", "pip-tiny-multiturn", "pip-tiny-longctx"])
def test_recorded_pip_mnn_ratchet(tmp_path, name):
    """Real pip MNN 3.6.1 runs: RSS 41 -> 66 MiB (200 iterations) was called stable next to a 21 GiB/hour slope.
    The memory follows the longest context seen and stays there after reset: a ratchet, with its growth
    per token measured against the tiny model's KV bytes per token (2 layers x 2 heads x 64 x 2 x fp32)."""
    run = series.rebuild(name, tmp_path / name)
    v = compute_verdicts(run, write=False)
    assert v["memory"]["expected_kv"]["bytes_per_token"] == 2048
    for field in ("rss", "uss"):
        s = v["memory"]["series"][field]
        assert s["verdict"] == "ratchet", (field, s.get("workload"))
        assert s["workload"]["model"] == "high_water"
        assert s["kept_after_reset"]["bytes"] > 15 * (1 << 20)
        kv = s["workload"]["fit"]["kv_ratio"]
        assert 1.5 < kv["value"] < 4 and kv["lo"] > 1
    lines = summary_lines(v)
    assert lines[0].startswith("RSS: ratchet, +") and "follows the longest context" in lines[0]


def test_recorded_pip_mnn_decode_speed_follows_context(tmp_path):
    run = series.rebuild("pip-tiny-multiturn", tmp_path / "mt")
    d = compute_verdicts(run, write=False)["perf"]["drift"]["decode_tps"]
    ctx = d["context"]
    assert ctx["context_effect"] and ctx["per_1k_tokens"]["lo"] > 0   # slower per token as the context grows
    pred = list(ctx["predicted"].values())
    assert pred[0] > pred[-1]


def test_speed_cliff_past_max_position_embeddings(make_run, tmp_path):
    import json

    run = shapes.write_shape(tmp_path / "cliff", "clean", seed=0, max_turns=12, iterations=200)
    m = json.loads((run / "manifest.json").read_text())
    m["model"]["max_position_embeddings"] = 2500
    (run / "manifest.json").write_text(json.dumps(m))
    lines = []
    for ln in (run / "events.jsonl").read_text().splitlines():
        e = json.loads(ln)
        if e["event"] == "iteration":
            ctx = e["context_tokens"]
            per_token = 0.01 + ctx * 2e-6 + (0.05 if ctx > 2500 else 0.0)   # the cliff past the model's context
            e["decode_tps"] = 1 / per_token
        lines.append(json.dumps(e))
    (run / "events.jsonl").write_text("\n".join(lines) + "\n")
    v = compute_verdicts(run, write=False)
    d = v["perf"]["drift"]["decode_tps"]
    past = d["context"]["past_context_limit"]
    assert past["max_position_embeddings"] == 2500 and past["iterations"] > 0 and past["slowdown"] > 3
    assert d["verdict"] == "stable"     # the context explains the slope inside the window
    assert "PAST max_position_embeddings 2500" in summary_lines(v)[-1]


def test_drift_the_context_does_not_explain(tmp_path):
    import json

    run = shapes.write_shape(tmp_path / "throttle", "clean", seed=2, iterations=300)
    lines = []
    for ln in (run / "events.jsonl").read_text().splitlines():
        e = json.loads(ln)
        if e["event"] == "iteration":
            e["decode_tps"] = 1 / ((0.01 + e["context_tokens"] * 2e-6) * (1 + e["i"] / 300))  # throttles 2x
        lines.append(json.dumps(e))
    (run / "events.jsonl").write_text("\n".join(lines) + "\n")
    d = compute_verdicts(run, write=False)["perf"]["drift"]["decode_tps"]
    assert d["verdict"] == "degrading" and d["drift_pct"] < -30


def test_run_summary_prints_the_verdict_lines():
    from soak.loop.console import summary_table

    summary = {"run_id": "r", "run_dir": "/tmp/r", "end_reason": "iterations", "iterations": 600, "elapsed_s": 60,
               "backend_requested": "opencl", "backend_actual": "opencl", "worker_restarts": 0, "rss": {},
               "analysis": {"verdicts": {"ok": True, "lines": [
                   "GPU bytes: ratchet, +3.0 GB kept after reset, follows the longest context (235 kB/token)",
                   "decode: stable, 40 tok/s median"]}}}
    text = summary_table(summary)
    assert "\nGPU bytes: ratchet, +3.0 GB kept after reset, follows the longest context" in text
    assert "\ndecode: stable" in text
    summary["analysis"]["verdicts"] = {"error": "ValueError: boom"}
    assert "verdicts failed: ValueError: boom" in summary_table(summary)


def test_accumulator_is_bounded_and_keeps_the_shape():
    """A night of iterations fits in a fixed number of rows; the fits on them still name the shape."""
    import random

    from soak.analysis.context_model import Accumulator, fit_context

    rnd = random.Random(0)
    acc = Accumulator(cap=2000)
    i = conv = hw = 0
    while i < 200_000:
        ctx = 0
        for _turn in range(rnd.randint(1, 8)):
            ctx += rnd.randint(40, 500)
            hw = max(hw, ctx)
            acc.add(float(i), None, conv, float(ctx), 0, 200e6 + 12e3 * hw + rnd.gauss(0, 1e6))
            i += 1
        conv += 1
    rows = acc.rows()
    assert len(rows) <= 2000 and acc.stride > 1
    assert rows[-1].iteration > 190_000 and rows[0].iteration == 0      # the whole run, thinned
    assert max(r.high_water for r in rows) == hw                         # exact whatever was dropped
    fit = fit_context(rows, {"bytes_per_token": 12e3})
    assert fit["model"] == "high_water" and fit["kv_ratio"]["lo"] <= 1.0 <= fit["kv_ratio"]["hi"]


def test_recorded_long_context_run_flags_the_context_limit(tmp_path):
    """Real pip MNN run past the tiny model's 4096 positions (contexts to 11688): the ratchet holds RSS at the
    longest context's level (40.8 -> 100.4 MiB), and the tok/s past max_position_embeddings is reported."""
    run = series.rebuild("pip-tiny-longctx", tmp_path / "long")
    v = compute_verdicts(run, write=False)
    rss = v["memory"]["series"]["rss"]
    assert rss["verdict"] == "ratchet" and rss["kept_after_reset"]["bytes"] > 40e6
    past = v["perf"]["drift"]["decode_tps"]["context"]["past_context_limit"]
    assert past["max_position_embeddings"] == 4096 and past["iterations"] > 50
    assert "PAST max_position_embeddings 4096" in summary_lines(v)[-1]


def test_recorded_h200_opencl_60_turn_run(tmp_path):
    """Real H200 run (hand-built MNN 3.6.1, OpenCL through the interposer, 44M Qwen2, 60-turn conversations):
    RSS 220 -> 596 MB, held at the longest context's level after every reset; the old verdict said stable
    (p = 0.148).  GPU live bytes 51 MB -> 1.4 GB jump at context thresholds (not linear in the context: +1.04 GB
    once the context passed ~5.6k tokens, MNN's pool keeps it): the one-series verdict said leak
    (+1.3 MB/iteration); the step fit of the floors on the longest context names the ratchet."""
    run = series.rebuild("h200-opencl-60turn", tmp_path / "h200")
    v = compute_verdicts(run, write=False)
    assert v["memory"]["expected_kv"]["bytes_per_token"] == 6 * 12 * 64 * 2 * 2
    for field in ("rss", "uss", "pss"):
        s = v["memory"]["series"][field]
        assert s["verdict_one_series"] == "stable"            # what soak said before
        assert s["verdict"] == "ratchet" and s["kept_after_reset"]["bytes"] > 300e6
        kv = s["workload"]["fit"]["kv_ratio"]
        assert 1.5 < kv["lo"] <= kv["value"] <= kv["hi"] < 3
    g = v["memory"]["series"]["gpu_live_bytes"]
    assert g["verdict_one_series"] == "leak"                   # what soak said before the step fit
    assert g["verdict"] == "ratchet" and g["workload"]["model"] == "steps"
    steps = g["workload"]["steps"]["significant"]
    assert steps[0]["at_tokens"] == 5780 and steps[0]["bytes"] > 1e9        # 51 MB -> 1.09 GB
    assert 1.1e9 < g["kept_after_reset"]["bytes"] < 1.3e9
    assert summary_lines(v)[3] == ("GPU bytes: ratchet, +1.2 GB kept after reset, follows the longest context "
                                   "(steps at ~5.8k, ~6.8k tokens)")
    assert summary_lines(v)[0].startswith("RSS: ratchet, +360 MB kept after reset, follows the longest context")
    past = v["perf"]["drift"]["decode_tps"]
    assert past["context"]["context_effect"] and past["verdict"] == "stable"   # slower with context, no drift


def test_recorded_h200_cpu_run_is_not_stable(tmp_path):
    """Same seeded workload on MNN's CPU backend: RSS 83 -> 601 MB, given back after some resets and not after
    others; the old verdict said stable (p = 0.014), now growth that reset does not give back is flagged."""
    run = series.rebuild("h200-cpu-60turn", tmp_path / "cpu")
    v = compute_verdicts(run, write=False)
    rss = v["memory"]["series"]["rss"]
    assert rss["verdict_one_series"] == "stable"
    assert rss["verdict"] in ("retained", "ratchet", "leak") and rss["kept_after_reset"]["fraction"] > 1


REAL = Path(__file__).resolve().parents[1] / "data" / "real"


@pytest.mark.parametrize("case,kv_fp16", [("pip-qwen2-0.5b", 12_288), ("pip-qwen2.5-1.5b", 28_672)])
def test_memory_verdict_judges_growth_against_each_size(tmp_path, case, kv_fp16):
    """Issue 25: the model block of a real-size manifest (tests/data/real/, Qwen2-0.5B and Qwen2.5-1.5B
    shapes, GQA with 2 KV heads) is the theory the GPU memory growth per token is judged against: a
    series growing at exactly that rate reads 1.0x expected, and the same series judged with the other
    size's model reads 28,672/12,288 = 2.33x (or its inverse) off."""
    import json
    model = json.loads((REAL / case / "manifest.json").read_text())["model"]
    assert model["kv_bytes_per_token"]["fp16"] == kv_fp16
    run = shapes.write_shape(tmp_path / case, "clean", seed=3, field="gpu_live_bytes", kv_per_token=kv_fp16,
                             noise=kv_fp16 * 20, model=model)
    v, g = _v(run, "gpu_live_bytes")
    assert v["memory"]["expected_kv"]["bytes_per_token"] == kv_fp16
    assert v["memory"]["expected_kv"]["kv_heads"] == 2
    kv = g["workload"]["fit"]["kv_ratio"]
    assert kv["lo"] <= 1.0 <= kv["hi"] and kv["value"] == pytest.approx(1.0, rel=0.05)
    line = next(x for x in summary_lines(v) if x.startswith("GPU bytes"))
    layers, head_dim = (24, 64) if kv_fp16 == 12_288 else (28, 128)
    assert (f"1.0x expected ({kv_fp16 / 1000:.1f} kB/token: {layers} layers x 2 KV heads x {head_dim} dims "
            "x K+V x fp16)") in line, line
    other = "pip-qwen2.5-1.5b" if case == "pip-qwen2-0.5b" else "pip-qwen2-0.5b"
    other_model = json.loads((REAL / other / "manifest.json").read_text())["model"]
    run2 = shapes.write_shape(tmp_path / (case + "-as-" + other), "clean", seed=3, field="gpu_live_bytes",
                              kv_per_token=kv_fp16, noise=kv_fp16 * 20, model=other_model)
    ratio = _v(run2, "gpu_live_bytes")[1]["workload"]["fit"]["kv_ratio"]["value"]
    assert ratio == pytest.approx(kv_fp16 / other_model["kv_bytes_per_token"]["fp16"], rel=0.05)
