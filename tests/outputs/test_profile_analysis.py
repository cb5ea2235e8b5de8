"""soak profile / soak trace / the report's GPU profile section, on run folders written here with
the fields the interposer (cl_profile) and the loop (iteration perf, load) write."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from soak.analysis.profile import explain, profile_run, render, same_workload
from soak.analysis.loaded_run import RunFolder

MS = 1_000_000
T0 = 5_000 * 10**9  # the run's t=0 on CLOCK_MONOTONIC


def _window(phase, begin_ns, kernels, transfers=(), idle_ns=0, host_extra_ns=0, epoch=0):
    """A cl_profile event: kernels [(name, count, total_ns)], transfers [(api, count, ns, bytes)];
    the device span = their sum + idle; the host span = span + host_extra."""
    cmds = [{"api": "clEnqueueNDRangeKernel", "kernel": k, "gws": [64], "count": n, "total_ns": ns,
             "p50_ns": ns // n, "p99_ns": ns // n, "max_ns": ns // n} for k, n, ns in kernels]
    cmds += [{"api": a, "count": n, "total_ns": ns, "p50_ns": ns // n, "p99_ns": ns // n, "max_ns": ns // n,
              "bytes": b} for a, n, ns, b in transfers]
    busy = sum(c["total_ns"] for c in cmds)
    span = busy + idle_ns
    return {"phase": phase, "epoch": epoch, "pid": 42, "commands": cmds, "busy_ns": busy, "idle_ns": idle_ns,
            "span_ns": span, "untimed": 0, "failed_commands": 0,
            "host_ns": {"clEnqueueNDRangeKernel": sum(n for _, n, _ in kernels) * 2000, "clFinish": 100_000},
            "host_first_ns": T0 + begin_ns, "host_last_ns": T0 + begin_ns + span + host_extra_ns}


def write_profile_run(path: Path, *, backend="opencl", iterations=4, decode_ms=10.0, prefill_ms=4.0,
                      tokens=16, windows=True, seed=1, max_new=16) -> Path:
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"run_id": path.name, "seed": seed, "backend": backend}))
    evs = [{"event": "run_start", "t": 0.0, "seed": seed, "backend": backend, "monotonic_t0": T0 / 1e9},
           {"event": "load", "t": 1.0, "ok": True, "duration_s": 0.9, "load_us": 800_000,
            "backend_actual": backend, "cache": "cold"}]
    if windows:
        # load: 20 ms of uploads, 700 ms of host work between them (builds), measured 800 ms
        evs.append({"event": "cl_profile", "t": 1.0, "iteration": None, "cl_start": True,
                    **_window(0, 100 * MS, [], [("clEnqueueWriteBuffer", 10, 20 * MS, 40_000_000)],
                              idle_ns=60 * MS, host_extra_ns=700 * MS)})
    t = 1.0
    for i in range(iterations):
        begin = int((t + 0.01) * 1e9)
        wall = (prefill_ms + decode_ms) / 1e3 + 0.002
        t += wall + 0.01
        evs.append({"event": "iteration", "t": round(t, 6), "i": i, "conversation": i // 2, "turn": i % 2,
                    "max_new_tokens": max_new, "status_name": "MAX_TOKENS_FINISHED", "prompt_tokens": 20,
                    "generated_tokens": tokens, "prefill_us": int(prefill_ms * 1000),
                    "decode_us": int(decode_ms * 1000), "decode_tps": tokens / decode_ms * 1e3,
                    "prefill_tps": 20 / prefill_ms * 1e3, "wall_s": wall, "cl_call_errors": 0})
        if windows:
            # prefill: 3 ms kernels + 0.5 ms write + 0.3 ms idle + 0.1 ms host-only = 3.9 of 4 ms
            evs.append({"event": "cl_profile", "t": t, "iteration": i, **_window(
                2, begin, [("matmul", 40, 2 * MS), ("attn", 20, 1 * MS)],
                [("clEnqueueWriteBuffer", 1, MS // 2, 1_000_000)], idle_ns=3 * MS // 10,
                host_extra_ns=MS // 10, epoch=i)})
            # decode: 16 tokens x 100 kernels of 2 us = 3.2 ms, 6.3 ms idle, 0.3 ms host-only = 9.8 of 10 ms
            evs.append({"event": "cl_profile", "t": t, "iteration": i, **_window(
                3, begin + int(prefill_ms * MS), [("matmul", 1200, 2_400_000), ("attn", 400, 800_000)],
                [("clEnqueueReadBuffer", 16, 100_000, 16 * 4096)], idle_ns=6_300_000 - 100_000,
                host_extra_ns=300_000, epoch=i)})
    evs.append({"event": "cl_call_error", "t": t, "api": "clEnqueueNDRangeKernel", "code_name": "CL_OUT_OF_RESOURCES",
                "count": 3, "injected": True, "iteration": iterations - 1})
    evs.append({"event": "fault", "t": t, "kind": "cl_error", "iteration": iterations - 1})
    evs.append({"event": "memory", "t": t, "rss": 300 << 20, "gpu_live_bytes": 40 << 20, "iteration": None})
    evs.append({"event": "run_end", "t": t + 0.1, "iterations": iterations, "reason": "iterations"})
    with (path / "events.jsonl").open("w") as f:
        for k, e in enumerate(evs):
            f.write(json.dumps({"event": e["event"], "seq": k, "t": e.get("t", 0.0), "ts": "2026-12-01T00:00:00+00:00",
                                "run_id": path.name, **e}) + "\n")
    return path


def test_phases_sum_and_close_against_the_engine_times(tmp_path):
    prof = profile_run(write_profile_run(tmp_path / "gpu"))
    ph = prof["phases"]
    assert list(ph) == ["load", "prefill", "decode"]
    d = ph["decode"]
    assert d["windows"] == 4 and d["kernel_count"] == 4 * 1600 and d["kernels_ns"] == 4 * 3_200_000
    assert d["kernels_per_token"] == 100.0 and d["mean_kernel_ns"] == 2000
    assert d["transfers_ns"] == 4 * 100_000 and d["transfer_bytes"] == 4 * 16 * 4096
    assert d["idle_ns"] == 4 * 6_200_000 and d["host_only_ns"] == 4 * 300_000
    assert d["closure"] == pytest.approx(9.8 / 10, abs=1e-3) and d["closes"]
    assert d["idle_fraction"] == pytest.approx(6.2 / 9.5, abs=1e-3)
    assert [k["kernel"] for k in d["top_kernels"]] == ["matmul", "attn"]
    p = ph["prefill"]
    assert p["closure"] == pytest.approx(3.9 / 4, abs=1e-3) and p["closes"]
    assert p["transfer_gb_s"] == pytest.approx(1_000_000 / (MS // 2), rel=1e-3)  # bytes per ns = GB/s
    load = ph["load"]  # 20 ms uploads + 60 ms idle + 700 ms host-only of 800 ms
    assert load["closure"] == pytest.approx(780 / 800, abs=1e-3) and load["closes"]
    text = render(prof)
    assert "closure" in text and "97.5% of measured (within" in text


def test_missing_windows_do_not_close(tmp_path):
    """Windows lost (here: only half the iterations profiled) show as a closure far below 100 %."""
    run = write_profile_run(tmp_path / "gpu")
    lines = (run / "events.jsonl").read_text().splitlines()
    kept, drop = [], 0
    for line in lines:
        e = json.loads(line)
        if e["event"] == "cl_profile" and e.get("phase") == 3 and e.get("iteration") in (0, 1):
            drop += 1
            continue
        kept.append(line)
    (run / "events.jsonl").write_text("\n".join(kept) + "\n")
    d = profile_run(run)["phases"]["decode"]
    assert drop == 2 and d["closure"] == pytest.approx(0.49, abs=1e-3) and not d["closes"]
    assert "OUTSIDE" in render(profile_run(run))


def test_explain_launch_bound_decode(tmp_path):
    """GPU decode 0.625 ms/token against a CPU at 0.5: kernels are 0.2 ms/token, idle gaps 0.39:
    without the idle the GPU would win, so idle (launch-bound) is named."""
    gpu = profile_run(write_profile_run(tmp_path / "gpu"))
    cpu = RunFolder(write_profile_run(tmp_path / "cpu", backend="cpu", decode_ms=8.0, prefill_ms=16.0, windows=False))
    lines = explain(gpu, cpu)
    decode = next(line for line in lines if line.startswith("decode"))
    why = decode.split("->")[1]
    assert why.startswith(" the largest part is device idle") and "at or under the CPU" in why
    assert "launch-bound" in decode and "100.0 kernels/token" in decode and "kernels alone" not in decode
    prefill = next(line for line in lines if line.startswith("prefill"))
    assert "GPU is faster in prefill" in prefill


def test_explain_kernels_slower_than_the_cpu(tmp_path):
    """CPU at 0.125 ms/token: idle still dominates, but even the kernels (0.2 ms/token) lose."""
    gpu = profile_run(write_profile_run(tmp_path / "gpu"))
    cpu = RunFolder(write_profile_run(tmp_path / "cpu", backend="cpu", decode_ms=2.0, windows=False))
    decode = next(line for line in explain(gpu, cpu) if line.startswith("decode"))
    assert "kernels alone" in decode and "also take longer" in decode


def test_explain_kernel_bound_decode(tmp_path):
    """Decode where kernels are the largest part (the H200 with sampled profiling): the sentence
    gives kernels per token, their mean and the top kernels' shares."""
    gpu = profile_run(write_profile_run(tmp_path / "gpu", decode_ms=4.0))
    for w in gpu["phases"].values():  # no idle: 3.2 ms of kernels in a 4 ms token budget x 16
        w["idle_ns"] = 0
    cpu = RunFolder(write_profile_run(tmp_path / "cpu", backend="cpu", decode_ms=1.0, windows=False))
    decode = next(line for line in explain(gpu, cpu) if line.startswith("decode"))
    assert "the largest part is kernels" in decode
    assert "100.0 kernels/token x 0.002 ms mean (top: matmul 75%, attn 25%)" in decode
    assert "the kernels alone take longer than the CPU's whole token" in decode


def test_same_workload(tmp_path):
    a = RunFolder(write_profile_run(tmp_path / "a"))
    assert same_workload(a, RunFolder(write_profile_run(tmp_path / "b", backend="cpu", windows=False))) is None
    assert "seeds differ" in same_workload(a, RunFolder(write_profile_run(tmp_path / "c", seed=2)))
    assert "iteration 0 differs" in same_workload(a, RunFolder(write_profile_run(tmp_path / "d", max_new=32)))


def _soak(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "soak", *args], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])


def test_profile_command(tmp_path):
    gpu = write_profile_run(tmp_path / "gpu")
    cpu = write_profile_run(tmp_path / "cpu", backend="cpu", decode_ms=8.0, windows=False)
    r = _soak("profile", str(gpu), "--vs", str(cpu))
    assert r.returncode == 0, r.stderr
    assert "== decode" in r.stdout and "GPU vs CPU" in r.stdout and "launch-bound" in r.stdout
    other = write_profile_run(tmp_path / "other", backend="cpu", seed=9, windows=False)
    r = _soak("profile", str(gpu), "--vs", str(other))
    assert r.returncode == 3 and "not the same seeded workload" in r.stderr and "Traceback" not in r.stderr
    r = _soak("profile", str(cpu))  # no cl_profile events
    assert r.returncode == 3 and "--cl-profile" in r.stderr and "Traceback" not in r.stderr


def test_report_has_the_profile_section(tmp_path):
    from soak.outputs.report import render_report

    gpu = write_profile_run(tmp_path / "gpu")
    cpu = write_profile_run(tmp_path / "cpu", backend="cpu", decode_ms=8.0, windows=False)
    html = render_report([str(cpu), str(gpu)])
    assert "GPU profile: gpu" in html and "GPU profile: cpu" not in html
    assert "Top kernels: decode" in html and "launch-bound" in html and "<code>matmul</code>" in html


# ---- Perfetto export ------------------------------------------------------------------------
def _parse(data: bytes):
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace

    trace = Trace()
    trace.ParseFromString(data)
    return trace


def test_trace_parses_back_with_the_tracks(tmp_path):
    from soak.outputs.perfetto_trace import build_trace

    data, counts = build_trace(write_profile_run(tmp_path / "gpu"))
    trace = _parse(data)
    tracks = {p.track_descriptor.uuid: p.track_descriptor.name for p in trace.packet if p.HasField("track_descriptor")}
    assert {"soak: iterations", "OpenCL: phases", "GPU queue: kernels", "GPU queue: transfers", "events",
            "RSS (bytes)", "GPU live bytes (interposer)", "decode tok/s"} <= set(tracks.values())
    begins: dict[str, list] = {}
    depth: dict[int, int] = {}
    instants, counters = [], []
    for p in trace.packet:
        if not p.HasField("track_event"):
            continue
        e, name = p.track_event, tracks[p.track_event.track_uuid]
        if e.type == 1:
            begins.setdefault(name, []).append((p.timestamp, e.name))
            depth[e.track_uuid] = depth.get(e.track_uuid, 0) + 1
        elif e.type == 2:
            depth[e.track_uuid] -= 1
            assert depth[e.track_uuid] >= 0
        elif e.type == 3:
            instants.append(e.name)
        elif e.type == 4:
            counters.append((name, e.double_counter_value))
    assert all(v == 0 for v in depth.values())  # every slice ends
    assert [n for _, n in begins["OpenCL: phases"]] == ["load"] + ["prefill", "decode"] * 4
    assert sum(1 for _, n in begins["soak: iterations"] if n.startswith("iteration")) == 4
    assert "decode (engine)" in {n for _, n in begins["soak: iterations"]}
    assert {n for _, n in begins["GPU queue: kernels"]} == {"matmul x40", "attn x20", "matmul x1200", "attn x400"}
    # the decode window of iteration 0 begins where the engine's prefill ended: both on the run's clock
    pre0 = next(ts for ts, n in begins["OpenCL: phases"] if n == "prefill")
    dec0 = next(ts for ts, n in begins["OpenCL: phases"] if n == "decode")
    assert dec0 - pre0 == 4 * MS
    assert any(n.startswith("CL error clEnqueueNDRangeKernel CL_OUT_OF_RESOURCES x3") for n in instants)
    assert any(n.startswith("fault") for n in instants)
    assert ("RSS (bytes)", float(300 << 20)) in counters and any(n == "decode tok/s" for n, _ in counters)
    assert counts["windows"] == 9 and counts["iterations"] == 4


def test_trace_command_and_trace_processor(tmp_path):
    """soak trace writes the file; a trace_processor_shell found offline (PATH or
    $SOAK_TRACE_PROCESSOR) loads it and sees the slices (the package would download one)."""
    out = tmp_path / "run.pftrace"
    r = _soak("trace", str(write_profile_run(tmp_path / "gpu")), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert "9 profile windows" in r.stdout and out.stat().st_size > 1000
    assert len(_parse(out.read_bytes()).packet) > 50
    shell = os.environ.get("SOAK_TRACE_PROCESSOR") or shutil.which("trace_processor_shell")
    if not shell:
        return  # parsed back above with the package's protos; no binary to load it here
    from perfetto.trace_processor import TraceProcessor, TraceProcessorConfig

    tp = TraceProcessor(trace=str(out), config=TraceProcessorConfig(bin_path=shell))
    try:
        names = {row.name for row in tp.query("select distinct t.name as name from slice s join track t on s.track_id = t.id")}
        assert {"OpenCL: phases", "GPU queue: kernels", "soak: iterations"} <= names
    finally:
        tp.close()


def test_sampled_windows_say_how_much_was_estimated(tmp_path):
    """--cl-profile times 1 kernel launch in N: the windows carry `timed` per command and the
    estimate; profile, its text and the report say how many launches were timed and how much
    device time is an estimate (and how many launches had no estimate at all)."""
    run = write_profile_run(tmp_path / "gpu")
    lines = []
    for line in (run / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e["event"] == "cl_profile" and e["phase"] == 3:
            for c in e["commands"]:
                if c["api"] == "clEnqueueNDRangeKernel":
                    c["timed"] = c["count"] // 16
            e.update(sample=16, estimated_ns=2_000_000, unestimated=5, rate=16.0, cost_ns=500_000, budget_pct=5,
                     coverage_every=1 + e["epoch"] % 4)
        lines.append(json.dumps(e))
    (run / "events.jsonl").write_text("\n".join(lines) + "\n")
    d = profile_run(run)["phases"]["decode"]
    assert d["kernel_timed"] == 4 * (1200 // 16 + 400 // 16) and d["kernel_count"] == 4 * 1600
    assert d["sample"] == 16 and d["estimated_ns"] == 4 * 2_000_000 and d["unestimated"] == 20
    assert profile_run(run)["phases"]["prefill"]["kernel_timed"] == 4 * 60  # no `timed`: all timed
    text = render(profile_run(run))
    assert "sampling   400 of 6400 launches timed (1 in 16); the others' 8.000 ms is their kernel's mean, " \
           "20 launches of kernels never timed (not counted)" in text
    assert "sampling   " not in text.split("== decode")[0]  # prefill and load: every launch timed
    # windows too short to time every kernel's first launch within the budget: said, with the sparsest
    assert d["coverage_every"] == max(1 + e % 4 for e in range(4))
    assert f"coverage   each kernel's first launch timed in 1 window in up to {d['coverage_every']} " in text
    assert "coverage   " not in text.split("== decode")[0]
    # the cost budget: the profiler's own host time against the phase's wall time (host spans)
    assert d["rate"] == 16 and d["cost_ns"] == 4 * 500_000 and d["budget_pct"] == 5
    assert d["cost_fraction"] == round(d["cost_ns"] / d["host_span_ns"], 4) > 0
    verdict = "within" if d["cost_fraction"] <= 0.05 else "OVER"
    assert (f"profiler   2.000 ms of its own host time = {d['cost_fraction']:.1%} of the phase's wall time "
            f"(budget 5 %: {verdict})") in text
    assert "profiler   " not in text.split("== decode")[0]  # records without the fields (older interposers)

    from soak.outputs.report import render_report
    html = render_report([str(run)])
    assert "sampling: decode 400 of 6400 launches timed (1 in 16)" in html
    assert f"profiler cost (its own host time against the phase's wall time): decode 2.00 ms = {d['cost_fraction']:.1%} (budget 5 %: {verdict})" in html


def test_windows_placed_streaming_before_or_after_their_iteration(tmp_path):
    """profile_run reads the events once, holding only the last iteration ends: windows written
    before their iteration's event (a prefill window, flushed when decode begins) and after it
    (a decode window, flushed when the next iteration's calls come) land on the same iteration,
    over more iterations than it keeps (256)."""
    base = profile_run(write_profile_run(tmp_path / "a", iterations=300))
    moved = write_profile_run(tmp_path / "b", iterations=300)
    lines = (moved / "events.jsonl").read_text().splitlines()
    out: list[str] = []
    for line in lines:  # each prefill window goes before the iteration event just written
        e = json.loads(line)
        if e["event"] == "cl_profile" and e["phase"] == 2 and out and json.loads(out[-1])["event"] == "iteration":
            out.insert(len(out) - 1, line)
        else:
            out.append(line)
    assert out != lines
    (moved / "events.jsonl").write_text("\n".join(out) + "\n")
    prof = profile_run(moved)
    assert prof["iterations_profiled"] == base["iterations_profiled"] == 300
    assert prof["windows_unplaced"] == base["windows_unplaced"] == 0
    for name in ("prefill", "decode"):
        assert prof["phases"][name]["closure"] == base["phases"][name]["closure"]
    assert prof["phases"]["decode"]["measured_ns"] == 300 * 10 * MS  # every iteration's 10 ms, once


def test_real_pocl_run_closes_with_untimed_commands_outside_the_span():
    """tests/data/real/pocl-44m-profile-readfault: hand-built MNN on PoCL, the 44M 768x6 model,
    --cl-profile at the 5 % budget.  Its decode windows had untimed commands outside their timed
    span (outside_ns), and every phase closes within 10 %; each prefill and decode window is
    followed by an idle record of its iteration (the worker's idle mark wrote it at once)."""
    from soak.phases import profile_phase
    from soak.run_folder import read_events

    case = Path(__file__).resolve().parents[1] / "data" / "real" / "pocl-44m-profile-readfault"
    prof = profile_run(case)
    for name in ("load", "prefill", "decode"):
        assert abs(prof["phases"][name]["closure"] - 1) <= 0.10, (name, prof["phases"][name]["closure"])
    assert prof["phases"]["decode"]["outside_ns"] > 0
    windows = [(e["epoch"], profile_phase(e["phase"])) for e in read_events(case) if e["event"] == "cl_profile"]
    idle = {epoch for epoch, phase in windows if phase == "idle"}
    assert {epoch for epoch, phase in windows if phase in ("prefill", "decode")} <= idle, windows


def test_real_pocl_run_timed_on_twin_queues_closes_and_says_so():
    """tests/data/real/pocl-61m-twin-writefault: hand-built MNN on PoCL, the 61M 896x4 GQA model,
    --cl-profile --cl-profile-queue twin.  Every record says twin, launches were timed there, every
    phase closes within 10 %, and `soak profile` names where the timed commands ran."""
    from soak.run_folder import read_events

    case = Path(__file__).resolve().parents[1] / "data" / "real" / "pocl-61m-twin-writefault"
    records = [e for e in read_events(case) if e["event"] == "cl_profile"]
    assert records and {r["queue"] for r in records} == {"twin"}
    assert sum(c.get("timed", c["count"]) for r in records for c in r["commands"]
               if c["api"] == "clEnqueueNDRangeKernel") > 0
    # by the wall clock never less than by the thread's CPU clock, but for reading the clocks (us)
    assert all(r["cost_wall_ns"] >= r["cost_ns"] - 50_000 for r in records)
    prof = profile_run(case)
    for name in ("load", "prefill", "decode"):
        assert abs(prof["phases"][name]["closure"] - 1) <= 0.10, (name, prof["phases"][name]["closure"])
    assert "timed commands on twin queues" in render(prof)
