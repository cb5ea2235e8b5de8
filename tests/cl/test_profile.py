"""--cl-profile on PoCL: the interposer turns profiling on for the queues the engine creates,
counts every enqueue, gives the timed ones an event (every command with --cl-profile-sample 1;
else each kernel name's and other entry point's first in a window and 1 in N of the rest), reads device
start/end when complete, and writes one `profile` record per poll window: per kernel name and
sizes, per transfer, busy/idle device time, host time per entry point.  The engine's own object
counts stay as they were."""

from __future__ import annotations

import os
import subprocess


from soak.cl import interposer
from soak.cl.trace import PHASES, PhaseMarker, TraceReader
from soak.cl.trace_events import trace_events


def profiles(run) -> list[dict]:
    return run.of("profile")


def kernel_counts(rec: dict) -> dict[tuple, int]:
    return {(c.get("kernel"), tuple(c.get("gws", ()))): c["count"] for c in rec["commands"]
            if c["api"] == "clEnqueueNDRangeKernel"}


def test_kernels_and_transfers_timed_per_name_and_size(run_workload):
    r = run_workload("--iterations", "3", "--steps", "2", "--step-calls", "30", "--step-kernels", "3",
                     options={"profile": True, "profile_sample": 1})
    assert r.rc == 0, r.stderr
    (p,) = profiles(r)  # one window (no reader polled): written at exit
    counts = kernel_counts(p)
    # 60 step enqueues over k0, k1, k2 with sizes 1024/512 alternating, plus vadd x3
    assert counts[("vadd", (1024,))] == 3
    assert sum(n for (k, _), n in counts.items() if k.startswith("k")) == 60
    assert counts[("k0", (1024,))] == 10 and counts[("k1", (512,))] == 10
    for c in p["commands"]:
        assert c["total_ns"] > 0 and c["p50_ns"] <= c["p99_ns"] <= c["max_ns"] <= c["total_ns"]
    (read,) = [c for c in p["commands"] if c["api"] == "clEnqueueReadBuffer"]
    assert read["bytes"] == 4096 and read["count"] == 1
    assert p["busy_ns"] + p["idle_ns"] == p["span_ns"] and p["busy_ns"] > 0
    assert p["untimed"] == 0 and p["failed_commands"] == 0
    assert p["sample"] == 1 and p["estimated_ns"] == 0 and p["unestimated"] == 0
    assert all("timed" not in c for c in p["commands"])  # every launch timed: no `timed` field
    assert p["host_ns"]["clEnqueueNDRangeKernel"] > 0 and p["host_ns"]["clFinish"] > 0
    assert r.stats["api"]["clFinish"]["host_ns"] > 0
    # the engine's events (vadd iterations) are its own: 3 made, 3 released; ours are not counted
    assert r.stats["objects"]["event"]["created"] == 3 == r.stats["objects"]["event"]["released"]


def test_queue_with_properties_gets_profiling(run_workload):
    r = run_workload("--queue-props", "--steps", "1", "--step-calls", "20",
                     options={"profile": True, "profile_sample": 1})
    assert r.rc == 0 and "check=1" in r.stdout, r.stderr  # results unchanged
    (p,) = profiles(r)
    assert sum(kernel_counts(p).values()) == 21 and p["untimed"] == 0


def test_sampling_times_one_launch_in_n_and_estimates_the_rest(run_workload):
    """The default: 1 kernel launch in 16 gets an event; counts stay exact, each shape's untimed
    launches get its timed launches' mean, busy holds both and idle is what the span leaves."""
    r = run_workload("--steps", "4", "--step-calls", "400", "--step-kernels", "3", options={"profile": True})
    assert r.rc == 0, r.stderr
    (p,) = profiles(r)
    counts = kernel_counts(p)
    assert sum(n for (k, _), n in counts.items() if k.startswith("k")) == 1600  # every launch counted
    for k in range(3):
        for size in (1024, 512):
            want = 4 * sum(1 for i in range(400) if i % 3 == k and (512 if i & 1 else 1024) == size)
            assert counts[(f"k{k}", (size,))] == want
    kernels = [c for c in p["commands"] if c["api"] == "clEnqueueNDRangeKernel" and c["kernel"] != "vadd"]
    timed = sum(c.get("timed", c["count"]) for c in kernels)
    assert 50 <= timed <= 200, timed  # about 1600 / 16
    for c in kernels:
        assert 0 < c["timed"] < c["count"]
        assert c["total_ns"] > 0 and c["p50_ns"] <= c["p99_ns"] <= c["max_ns"]
    (read,) = [c for c in p["commands"] if c["api"] == "clEnqueueReadBuffer"]
    assert "timed" not in read and read["total_ns"] > 0  # transfers are always timed
    assert p["sample"] == 16 and p["estimated_ns"] > 0 and p["unestimated"] == 0
    assert p["idle_ns"] == max(0, p["span_ns"] - p["busy_ns"])


def _step_through(proc, steps: int, between) -> None:
    """Drive a cl_workload --step-sync: after each step's result line call between(i), then let the
    next step go; the workload must exit cleanly."""
    try:
        for i in range(steps):
            for line in proc.stdout:
                if line.split()[:2] == ["result", "step"]:
                    break
            between(i)
            proc.stdin.write("\n")
            proc.stdin.flush()
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()


def _polled_profiles(cl_build, tmp_path, options: dict, steps: int, *args: str) -> list[dict]:
    """cl_workload --steps STEPS --step-sync ARGS with a reader poll after each step (one epoch a
    step): every cl_profile event, in order, the last ones written at exit."""
    env = dict(os.environ)
    env.update(interposer.prepare(options, tmp_path, interposer_dir=cl_build.lib_dir, mnn_paths=()))
    proc = subprocess.Popen([str(cl_build.workload), "--steps", str(steps), "--step-sync", *args], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    reader = TraceReader(tmp_path)
    events = []

    def poll(i):
        events.extend(f for name, f in trace_events(reader.poll(), i) if name == "cl_profile")

    _step_through(proc, steps, poll)
    return events + [f for name, f in trace_events(reader.poll(), steps) if name == "cl_profile"]


def _step_windows(cl_build, tmp_path, sample: int, *args: str) -> list[dict]:
    """3 rotated steps of 20 launches, profiled 1 launch in `sample`: the records holding step
    kernels (k0, k1, ...), one per step."""
    events = _polled_profiles(cl_build, tmp_path, {"profile": True, "profile_sample": sample}, 3,
                              "--step-calls", "20", "--step-rotate", *args)
    steps = [e for e in events if any(c.get("kernel", "").startswith("k") for c in e["commands"])]
    assert len(steps) == 3
    return steps


def _shapes(e: dict) -> dict:
    return {(c["kernel"], c["gws"][0]): c for c in e["commands"] if c.get("kernel", "").startswith("k")}


def test_sampling_estimates_a_shape_from_earlier_windows(cl_build, tmp_path):
    """A shape launched in a window where none of its launches was timed gets its mean from earlier
    windows.  Sampling 1 in 10^6: only each kernel name's first launch in a window is timed (two
    sizes close enough that the second is not timed as a new size); --step-rotate starts each
    step at the other size."""
    steps = _step_windows(cl_build, tmp_path, 1_000_000, "--step-kernels", "1", "--step-sizes", "1024,960")
    first, second, _ = (_shapes(e) for e in steps)
    assert first[("k0", 1024)]["timed"] == 1 and first[("k0", 960)]["timed"] == 0
    assert second[("k0", 960)]["timed"] == 1 and second[("k0", 1024)]["timed"] == 0
    # window 2's 1024s: window 1's mean (10 x its one timed launch, as window 1 counted them)
    assert second[("k0", 1024)]["total_ns"] == first[("k0", 1024)]["total_ns"] == 10 * first[("k0", 1024)]["max_ns"]
    assert all(e["unestimated"] == 0 for e in steps)


def test_a_size_far_from_any_timed_one_is_timed_at_its_first_launch(cl_build, tmp_path):
    """Prefill sizes follow the prompt: a kernel's launch at a size (work-items) more than a step
    or two away from every size it was timed at is timed, whatever the sampler says, so no
    estimate is stretched across sizes; once known, the size goes back to the sampler."""
    steps = _step_windows(cl_build, tmp_path, 1_000_000, "--step-kernels", "1", "--step-sizes", "1024,512")
    first, second, third = (_shapes(e) for e in steps)
    assert first[("k0", 1024)]["timed"] == 1 and first[("k0", 512)]["timed"] == 1
    # window 2 starts at 512 (its first launch, timed); 1024 is known: its mean from window 1
    assert second[("k0", 512)]["timed"] == 1 and second[("k0", 1024)]["timed"] == 0
    assert third[("k0", 1024)]["timed"] == 1 and third[("k0", 512)]["timed"] == 0
    assert all(e["unestimated"] == 0 for e in steps)


def test_sampling_interpolates_an_untimed_size_between_timed_ones(cl_build, tmp_path):
    """A size never timed (decode: attention over a context one token longer) lies between sizes
    that were: its launches get the line between the nearest timed size below and above in
    work-items.  Window 1 times 1024, window 2 times 896 (each its first launch); 960 is never
    timed and gets the line between 896 (window 2) and 1024 (window 1)."""
    steps = _step_windows(cl_build, tmp_path, 1_000_000, "--step-kernels", "1", "--step-sizes", "1024,896,960")
    first, second = _shapes(steps[0]), _shapes(steps[1])
    assert first[("k0", 1024)]["timed"] == 1 and second[("k0", 896)]["timed"] == 1
    mid = second[("k0", 960)]
    assert mid["timed"] == 0 and steps[1]["unestimated"] == 0
    m1024, m896 = first[("k0", 1024)]["max_ns"], second[("k0", 896)]["max_ns"]
    want = m896 + (960 - 896) / (1024 - 896) * (m1024 - m896)
    assert abs(mid["total_ns"] - mid["count"] * want) <= 1


def test_sampling_times_each_kernels_first_launch_in_a_window(cl_build, tmp_path):
    """Every kernel name is timed at its first launch in each window, whatever the sampler says:
    no kernel goes unmeasured in a window (the sampler picks among the rest)."""
    steps = _step_windows(cl_build, tmp_path, 1_000_000, "--step-kernels", "3", "--step-sizes", "1024,960")
    for e in steps:
        timed = {c["kernel"]: c.get("timed", c["count"]) for c in e["commands"] if c.get("kernel", "").startswith("k")}
        per_kernel = {k: sum(n for (name, _), n in ((key, c.get("timed", c["count"])) for key, c in _shapes(e).items())
                             if name == k) for k in ("k0", "k1", "k2")}
        assert per_kernel == {"k0": 1, "k1": 1, "k2": 1}, timed
        assert e["unestimated"] == 0


def test_off_by_default(run_workload):
    r = run_workload("--steps", "1", "--step-calls", "20")
    assert profiles(r) == [] and "host_ns" not in r.stats["api"]["clFinish"]
    assert r.of("start")[0]["profile"] is False


def test_one_record_per_poll_window(cl_build, tmp_path):
    steps, calls = 4, 50
    events = _polled_profiles(cl_build, tmp_path, {"profile": True, "profile_sample": 1}, steps,
                              "--step-calls", str(calls), "--step-kernels", "2")
    # window 0: the workload's first vadd + step 1; then one window per step; the last one (the
    # final read, after the last poll) is written at exit
    assert [e["epoch"] for e in events] == list(range(steps + 1))
    per_window = [sum(n for (k, _), n in kernel_counts(e).items() if k != "vadd") for e in events]
    assert per_window == [calls] * steps + [0]
    assert [c["api"] for c in events[-1]["commands"]] == ["clEnqueueReadBuffer"]


def test_phase_marks_cut_windows(cl_build, tmp_path):
    """The worker's PhaseMarker writes the phase into the stats file: each change ends the profile
    window, so one poll window splits into prefill and decode records, each with its host span."""
    env = dict(os.environ)
    env.update(interposer.prepare({"profile": True}, tmp_path, interposer_dir=cl_build.lib_dir, mnn_paths=()))
    proc = subprocess.Popen([str(cl_build.workload), "--steps", "3", "--step-calls", "20",
                             "--step-kernels", "2", "--step-sync"], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    marker = PhaseMarker(env["SOAK_CL_STATS"], proc.pid)
    reader = TraceReader(tmp_path)
    events = []

    def mark(i):
        assert marker.mark(("prefill", "decode", "idle")[i])  # the next step's calls are in this phase

    try:
        _step_through(proc, 3, mark)
    finally:
        marker.close()
    events += [f for name, f in trace_events(reader.poll(), 0) if name == "cl_profile"]
    phases = [PHASES[e["phase"]] for e in events]
    assert phases == ["load", "prefill", "decode", "idle"]  # one epoch (no poll), four windows
    steps = [sum(n for (k, _), n in kernel_counts(e).items() if k != "vadd") for e in events]
    assert steps == [20, 20, 20, 0]
    for e in events:
        assert 0 < e["host_first_ns"] <= e["host_last_ns"]
    for a, b in zip(events, events[1:]):
        assert a["host_last_ns"] <= b["host_first_ns"]


def test_phase_marker_without_stats_file(tmp_path):
    m = PhaseMarker(str(tmp_path / "cl_trace.%p.stats"), 123)
    assert m.mark("decode") is False  # no file (no interposer loaded yet): nothing happens
    assert PhaseMarker("", 1).mark("load") is False


def test_soak_run_profile_windows_follow_the_worker_phases(tmp_path):
    """`soak run --cl-profile` with the test engine's OpenCL path (one 4 KiB write + clFinish per
    respond, after its prefill and before its first text): the worker's marks put every write in
    a prefill window of its own iteration, none in decode (no CL calls there), queue creation in
    load; `soak profile` places every window in its iteration."""
    import json
    import sys

    from soak.analysis.profile import profile_run
    from soak.run_folder import read_events

    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"opencl": True, "faults": []}))
    proc = subprocess.run([sys.executable, "-m", "soak", "run", "--fault-plan", str(plan), "--backend", "opencl",
                           "--cl-gpu-override", "--cl-profile", "--iterations", "5", "--seed", "3",
                           "--out", str(tmp_path), "--run-id", "prof", "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    events = list(read_events(tmp_path / "prof"))
    windows = [e for e in events if e["event"] == "cl_profile"]
    writes = [(PHASES[w["phase"]], c["count"], c.get("bytes")) for w in windows for c in w["commands"]
              if c["api"] == "clEnqueueWriteBuffer"]
    assert writes == [("prefill", 1, 4096)] * 5
    assert {PHASES[w["phase"]] for w in windows} <= {"load", "prefill", "idle"}
    # the idle mark acts at once (soak_interposer_phase_now): each prefill window is ended and
    # written while the engine waits, the cost of that in an idle record of the same epoch, not
    # in the next iteration's first CL call
    keyed = [(w["epoch"], PHASES[w["phase"]]) for w in windows]
    for i, (epoch, phase) in enumerate(keyed):
        if phase == "prefill":
            assert keyed[i + 1] == (epoch, "idle"), keyed
            assert windows[i + 1]["cost_ns"] > 0 and windows[i + 1]["commands"] == []
            assert windows[i]["host_last_ns"] <= windows[i + 1]["host_first_ns"]
    prof = profile_run(tmp_path / "prof")
    assert prof["iterations_profiled"] == 5 and prof["phases"]["prefill"]["windows"] == 5
    assert prof["phases"]["prefill"]["host_api_ns"] > 0 and "decode" not in prof["phases"]
    # the same real run as a Perfetto trace: phases and the GPU queue track, parsed back with the
    # perfetto package's own protos (its trace processor binary is downloaded at run time: not here)
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace

    from soak.outputs.perfetto_trace import build_trace

    data, counts = build_trace(tmp_path / "prof")
    trace = Trace()
    trace.ParseFromString(data)
    tracks = {p.track_descriptor.uuid: p.track_descriptor.name for p in trace.packet if p.HasField("track_descriptor")}
    slices = [(tracks[p.track_event.track_uuid], p.track_event.name) for p in trace.packet
              if p.HasField("track_event") and p.track_event.type == 1]
    assert [n for t, n in slices if t == "OpenCL: phases"].count("prefill") == 5
    assert [n for t, n in slices if t == "GPU queue: transfers"].count("WriteBuffer x1") == 5
    assert counts["iterations"] == 5 and counts["windows_unplaced"] == 0


def test_budget_on_pocl_many_tiny_kernels(cl_build, tmp_path):
    """cl_workload on PoCL: 12 steps (one window each) of 12000 launches over 12 tiny kernels.
    Counts stay exact, every window records its rate and cost, and once adapted the profiler's
    own cost stays within the 5 % budget.  (A PoCL event costs about 12 us of host time here, as
    NVIDIA's does; each kernel's first launch per window is timed whatever the budget, so windows
    of a few ms could not keep within it: these are ~20 ms, a decode window is longer.)"""
    events = _polled_profiles(cl_build, tmp_path, {"profile": True}, 12, "--step-calls", "12000",
                              "--step-kernels", "12")
    steps = [e for e in events if any(c.get("kernel", "").startswith("k") for c in e["commands"])]
    assert len(steps) == 12
    for e in steps:
        assert sum(c["count"] for c in e["commands"] if c.get("kernel", "").startswith("k")) == 12000
        assert e["budget_pct"] == 5 and e["rate"] >= 1 and e["cost_ns"] > 0
        # reading events and ending windows by the wall clock: never less than the thread's CPU time
        assert e["cost_wall_ns"] >= e["cost_ns"] - 50_000, (e["cost_wall_ns"], e["cost_ns"])
    later = steps[3:]
    frac = sum(e["cost_ns"] for e in later) / sum(e["host_last_ns"] - e["host_first_ns"] for e in later)
    assert frac <= 0.05, [(e["rate"], e["cost_ns"], e["host_last_ns"] - e["host_first_ns"]) for e in steps]


def verified_profile(r, rounds: int) -> tuple[dict, dict[str, list[dict]]]:
    """cl_workload --verify's run: every write, copy, fill, map and launch did what it should in
    each of `rounds` rounds; its one profile record and that record's commands by entry point."""
    assert r.rc == 0, r.stderr
    checks = [(w[1], dict(x.split("=") for x in w[2:])) for w in r.result("verify") if w[0].isdigit()]
    assert len(checks) == rounds * 7
    for what, fields in checks:
        if what in ("vadd", "vscale"):
            assert fields["ok"] == "1024" and fields["sentinel"] == "0", (what, fields)
        else:
            assert fields["diff"] == "0" and fields["nan"] == "0", (what, fields)
    (p,) = profiles(r)
    by_api: dict[str, list[dict]] = {}
    for c in p["commands"]:
        by_api.setdefault(c["api"], []).append(c)
    return p, by_api


def test_other_commands_are_sampled_per_entry_point_and_results_stay(run_workload):
    """Transfers, maps and markers get an event each as launches do, and the event costs the same
    (a 61M Qwen2's decode makes 24 a token): each entry point's first in a window is timed, then 1 in
    its rate; counts stay exact, the untimed get the entry point's mean, and what each command did
    is unchanged (cl_workload --verify checks every write, copy, fill, map and launch)."""
    r = run_workload("--verify", "6", options={"profile": True, "profile_sample": 3, "profile_budget": 0})
    p, by_api = verified_profile(r, rounds=6)
    writes = by_api["clEnqueueWriteBuffer"]
    (unmap,) = by_api["clEnqueueUnmapMemObject"]
    assert sum(c["count"] for c in writes) == 6 and unmap["count"] == 6  # one a round, all counted
    timed = sum(c.get("timed", c["count"]) for api in by_api.values() for c in api if c["api"] != "clEnqueueNDRangeKernel")
    total = sum(c["count"] for api in by_api.values() for c in api if c["api"] != "clEnqueueNDRangeKernel")
    assert 0 < timed < total / 2, (timed, total)  # each entry point's first, then 1 in 3
    assert all(c["total_ns"] > 0 for c in writes + [unmap])  # the untimed: their entry point's mean
    assert p["unestimated"] == 0
    assert p["queue"] == "engine"


def test_twin_queues_keep_the_engines_order_and_results(run_workload, cl_build, tmp_path):
    """--cl-profile-queue twin: timed commands run on a profiling twin of the engine's queue
    (native/interposer/twin.c), kept in the engine's order by a marker and a barrier.  queue_cost
    chains 32 kernels (x = x * 3 + k, in integers: any launch out of order changes the result, read
    back after each step), with half the launches timed; cl_workload --verify checks what each write, copy, fill, map and launch did."""
    from soak import native_build

    build_dir = next(d for d in [cl_build.lib.parent, *cl_build.lib.parents] if (d / "CMakeCache.txt").exists())
    qc = native_build.cmake_build(native_build.NATIVE_DIR / "interposer", build_dir, "testprog/queue_cost", [],
                                  "queue_cost", "the launch-timing cost program")
    run_dir = tmp_path / "qc"
    run_dir.mkdir()
    opts = {"profile": True, "profile_sample": 2, "profile_budget": 0, "profile_queue": "twin"}
    env = {**os.environ, **interposer.prepare(opts, run_dir, interposer_dir=cl_build.lib_dir, mnn_paths=())}
    proc = subprocess.run([str(qc), "--launches", "2000", "--steps", "2", "--rounds", "2", "--every", "3"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    res = {ln.split()[1]: dict(w.split("=") for w in ln.split()[2:]) for ln in proc.stdout.splitlines()
           if ln.startswith("result ")}
    assert set(res) == {"plain", "profq", "event", "twin"}
    assert all(r["order_errors"] == "0" for r in res.values()), res
    recs = [r for r in TraceReader(run_dir).poll_raw() if r.get("type") == "profile"]
    assert {r["queue"] for r in recs} == {"twin"}
    launches = [c for r in recs for c in r["commands"] if c["api"] == "clEnqueueNDRangeKernel"]
    assert sum(c["count"] for c in launches) == 4 * 2 * 2 * 2000
    assert sum(c.get("timed", c["count"]) for c in launches) > 2000  # about half: on the twin

    r = run_workload("--verify", "3", options=opts)
    p, by_api = verified_profile(r, rounds=3)
    assert p["queue"] == "twin"
    # transfers are sampled on twins (each entry point's first in the window, then 1 in 2); a map or
    # unmap stays on the engine's queue, counted, untimed and not "unestimated"
    assert sum(c.get("timed", c["count"]) for c in by_api["clEnqueueWriteBuffer"]) >= 1
    assert all(c.get("timed") == 0 for c in by_api["clEnqueueUnmapMemObject"])
    assert p["unestimated"] == 0


def test_untimed_commands_outside_the_timed_span_are_not_idle_or_host_only_twice(cl_build, tmp_path):
    """Sampled 1 in 64 (fixed): the launches a window enqueued after its last timed one (and any
    before its first) ran outside the device span of the timed ones.  Their estimate is
    `outside_ns`: busy time, so not in idle (span less the busy time inside it) nor in host-only
    (`soak profile`: host span less the device span and that).  Timing every launch: none."""
    from soak.analysis.profile import _add_window, _new_phase

    def windows(options):
        events = _polled_profiles(cl_build, tmp_path / str(len(list(tmp_path.iterdir()))), options, 4,
                                  "--step-calls", "3000", "--step-kernels", "2")
        return [e for e in events if any(c.get("kernel", "").startswith("k") for c in e["commands"])]

    sampled = windows({"profile": True, "profile_sample": 64, "profile_budget": 0})
    assert len(sampled) == 4
    for e in sampled:
        inside = e["busy_ns"] - e["outside_ns"]
        assert 0 < e["outside_ns"] <= e["estimated_ns"]
        assert e["idle_ns"] == max(e["span_ns"] - inside, 0)
        ph = _new_phase()
        _add_window(ph, e)
        host_span = e["host_last_ns"] - e["host_first_ns"]
        assert ph["host_only_ns"] == max(0, host_span - e["span_ns"] - e["outside_ns"])
    every = windows({"profile": True, "profile_sample": 1})
    assert len(every) == 4 and all(e["outside_ns"] == 0 and e["estimated_ns"] == 0 for e in every)
