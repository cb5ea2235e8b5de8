"""Silent faults of the interposer on PoCL: skip (a launch returns CL_SUCCESS and never runs),
corrupt (a write/copy/unmap succeeds, then its destination is perturbed in device memory),
and the kernel:GLOB trigger.  cl_workload --verify checks what each command really did."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from soak.cl.fault_rules import CORRUPT_APIS, KERNEL_APIS, SKIP_APIS, join_spec, parse_spec
from soak.cl.trace_events import trace_events
from soak.errors import BadInput
from soak.run_folder import read_events

STEPS = ("vadd", "vscale", "write", "copy", "wimage", "cimage", "unmap")
N = 1024        # floats per buffer
IMAGE_WORDS = 512  # 16x8 RGBA float


def verify(run) -> dict[tuple[int, str], dict[str, int]]:
    """{(round, step): {rc, ok, sentinel, nan, diff, bits, wait}} from the `verify` lines."""
    out = {}
    for words in run.result("verify"):
        if words[0] == "build":
            assert words[1] == "0"
            continue
        out[(int(words[0]), words[1])] = {k: int(v) for k, v in (w.split("=") for w in words[2:])}
    return out


def healthy(row: dict, step: str) -> bool:
    if step in ("vadd", "vscale"):
        return row["rc"] == 0 and row["ok"] == N and row["sentinel"] == 0 and row["nan"] == 0
    if step in ("copy", "cimage"):  # against its source as read back: a faithful copy of corrupted data is fine
        return row["rc"] == 0 and row["diff"] == 0 and row["bits"] == 0
    return row["rc"] == 0 and row["nan"] == 0 and row["diff"] == 0 and row["bits"] == 0


def only_broken(v: dict, broken: set[tuple[int, str]]) -> None:
    """Every step healthy but those in broken, which are not."""
    for key, row in v.items():
        assert healthy(row, key[1]) == (key not in broken), (key, row)


def silent_records(run) -> list[dict]:
    return [r for r in run.of("error") if r.get("action")]


def test_skip_leaves_output_unchanged_and_reports_success(run_workload):
    r = run_workload("--iterations", "0", "--verify", "3", options={"faults": "clEnqueueNDRangeKernel=skip@nth:3"})
    assert r.rc == 0, r.stderr
    v = verify(r)
    assert len(v) == 3 * len(STEPS)
    # the 3rd launch is round 2's vadd: CL_SUCCESS, its event completes, c still holds the fill
    assert v[(2, "vadd")] == {"rc": 0, "wait": 0, "ok": 0, "sentinel": N, "nan": 0}
    only_broken(v, {(2, "vadd")})
    (rec,) = r.of("error")  # the only record of the run: no CL error anywhere
    assert rec["code"] == 0 and rec["code_name"] == "CL_SUCCESS" and rec["injected"] is True
    assert rec["action"] == "skip" and rec["why"] == "clEnqueueNDRangeKernel=skip@nth:3"
    assert rec["index"] == 3 and rec["kernel"] == "vadd" and rec["gws"] == [N] and rec["event"] == "marker"
    assert rec["key"] == "kernel=vadd" and "kernel=vadd" in rec["detail"]
    api = r.stats["api"]["clEnqueueNDRangeKernel"]
    assert api == {"calls": 6, "errors": 0, "injected": 1}
    assert r.stats["errors"] == 0 and r.stats["injected"] == 1
    # the marker handed back is the caller's object: created and released like a launch's event
    assert r.stats["objects"]["event"]["created"] == 3 and r.stats["objects"]["event"]["live"] == 0
    # it reaches soak's events as an injected cl_call_error naming the rule
    (ev,) = [fields for name, fields in trace_events(r.folded, 4) if name == "cl_call_error"]
    assert ev["injected"] is True and ev["count"] == 1 and ev["call_index"] == 3
    assert ev["why"] == "clEnqueueNDRangeKernel=skip@nth:3" and ev["action"] == "skip" and ev["code"] == 0


def test_skip_of_a_launch_without_event(run_workload):
    r = run_workload("--iterations", "0", "--verify", "2", options={"faults": "clEnqueueNDRangeKernel=skip@nth:2"})
    only_broken(verify(r), {(1, "vscale")})
    (rec,) = silent_records(r)
    assert rec["kernel"] == "vscale" and rec["event"] == "none"


@pytest.mark.parametrize("rules, broken", [
    ("skip@kernel:vsc*", {(i, "vscale") for i in (1, 2, 3, 4)}),      # every launch of one family
    ("skip@kernel:vadd,nth:2", {(2, "vadd")}),                        # nth counts the matching launches
    ("skip@kernel:v*,from:2,count:2", {(1, "vscale"), (2, "vadd")}),  # matching launches 2 and 3
    ("skip@kernel:v[a-c]dd,every:2", {(2, "vadd"), (4, "vadd")}),
    ("skip@kernel:nothing*", set()),
    # a later rule counts the matches an earlier rule took
    ("skip@kernel:vadd,nth:1;clEnqueueNDRangeKernel=skip@kernel:vadd,nth:2", {(1, "vadd"), (2, "vadd")}),
])
def test_kernel_glob_fires_only_on_matching_kernels(run_workload, rules, broken):
    spec = "clEnqueueNDRangeKernel=" + rules
    r = run_workload("--iterations", "0", "--verify", "4", options={"faults": spec})
    assert r.rc == 0, r.stderr
    only_broken(verify(r), broken)
    assert r.stats["api"]["clEnqueueNDRangeKernel"] == {"calls": 8, "errors": 0, "injected": len(broken)}
    # exact count per kind in the folded records, though only 3 records per kind are written
    by_kernel: dict[str, int] = {}
    for e in r.errors():
        by_kernel[e["kernel"]] = by_kernel.get(e["kernel"], 0) + e["count"]
    want: dict[str, int] = {}
    for _, step in broken:
        want[step] = want.get(step, 0) + 1
    assert by_kernel == want
    written = [rec["kernel"] for rec in silent_records(r)]
    assert {k: written.count(k) for k in set(written)} == {k: min(n, 3) for k, n in want.items()}


def test_kernel_glob_on_an_injected_error_names_the_kernel(run_workload):
    r = run_workload("--iterations", "0", "--verify", "3",
                     options={"faults": "clEnqueueNDRangeKernel=-5@kernel:vscale,nth:3"})
    v = verify(r)
    assert v[(3, "vscale")]["rc"] == -5 and v[(3, "vscale")]["sentinel"] == N
    only_broken(v, {(3, "vscale")})
    (rec,) = r.of("error")
    assert rec["code"] == -5 and rec["kernel"] == "vscale" and rec["index"] == 6 and "action" not in rec


def test_corrupt_nan_on_a_buffer_write(run_workload):
    r = run_workload("--iterations", "0", "--verify", "3", options={"faults": "clEnqueueWriteBuffer=corrupt@nth:2"})
    v = verify(r)
    assert v[(2, "write")] == {"rc": 0, "nan": 1, "diff": 1, "bits": v[(2, "write")]["bits"]}
    only_broken(v, {(2, "write")})  # the copy copies the corrupted word faithfully
    (rec,) = silent_records(r)
    assert rec["action"] == "corrupt" and rec["mode"] == "nan" and rec["code"] == 0 and rec["injected"]
    assert (rec["offset"], rec["bytes"], rec["changed"]) == (0, 4 * N, 1)
    assert len(rec["at"]) == 1 and rec["at"][0] % 4 == 0 and 0 <= rec["at"][0] < 4 * N
    assert r.stats["api"]["clEnqueueWriteBuffer"] == {"calls": 3, "errors": 0, "injected": 1}


def test_corrupt_every_word_with_nan(run_workload):
    r = run_workload("--iterations", "0", "--verify", "1", options={"faults": "clEnqueueWriteBuffer=corrupt:nan:all"})
    assert verify(r)[(1, "write")]["nan"] == N
    assert silent_records(r)[0]["changed"] == N


def test_corrupt_bitflip_counts_are_exact(run_workload):
    r = run_workload("--iterations", "0", "--verify", "2",
                     options={"faults": "clEnqueueCopyBuffer=corrupt:bitflip:all@nth:1;"
                                        "clEnqueueCopyImage=corrupt:bitflip:3@nth:2"})
    v = verify(r)
    assert v[(1, "copy")] == {"rc": 0, "nan": v[(1, "copy")]["nan"], "diff": N, "bits": N}
    assert (v[(2, "cimage")]["diff"], v[(2, "cimage")]["bits"]) == (3, 3)
    only_broken(v, {(1, "copy"), (2, "cimage")})
    recs = {rec["api"]: rec for rec in silent_records(r)}
    assert recs["clEnqueueCopyImage"]["region"] == [16, 8, 1] and recs["clEnqueueCopyImage"]["changed"] == 3
    assert len(recs["clEnqueueCopyImage"]["bits"]) == 3 and all(0 <= b < 32 for b in recs["clEnqueueCopyImage"]["bits"])
    assert recs["clEnqueueCopyBuffer"]["changed"] == N and len(recs["clEnqueueCopyBuffer"]["at"]) == 8


def test_corrupt_is_deterministic_given_the_seed(run_workload):
    def where(seed):
        r = run_workload("--iterations", "0", "--verify", "1",
                         options={"faults": f"clEnqueueWriteBuffer=corrupt:bitflip:6@seed:{seed}"})
        (rec,) = silent_records(r)
        assert (verify(r)[(1, "write")]["diff"], verify(r)[(1, "write")]["bits"]) == (6, 6)
        return rec["at"], rec["bits"]

    first = where(5)
    assert where(5) == first
    assert where(6) != first
    at = first[0]
    assert len(set(at)) == 6 and at == sorted(at) and at[-1] < 4 * N  # distinct words, one per sixth


def test_corrupt_image_write_and_unmapped_region(run_workload):
    r = run_workload("--iterations", "0", "--verify", "2",
                     options={"faults": "clEnqueueWriteImage=corrupt:nan:all@nth:2;"
                                        "clEnqueueUnmapMemObject=corrupt:nan:5@nth:1"})
    v = verify(r)
    assert v[(2, "wimage")]["nan"] == IMAGE_WORDS and v[(2, "wimage")]["diff"] == IMAGE_WORDS
    assert v[(1, "unmap")]["nan"] == 5 and v[(1, "unmap")]["diff"] == 5
    assert v[(2, "cimage")]["nan"] == IMAGE_WORDS  # the copy carries the corruption on
    only_broken(v, {(2, "wimage"), (1, "unmap")})
    recs = {rec["api"]: rec for rec in silent_records(r)}
    assert recs["clEnqueueUnmapMemObject"]["bytes"] == 4 * N and recs["clEnqueueUnmapMemObject"]["changed"] == 5
    assert "corrupt_failed" not in recs["clEnqueueUnmapMemObject"]


def test_python_and_interposer_accept_the_same_rules(run_workload):
    """The interposer's own parser (SOAK_CL_FAULTS as given, no Python check before) rejects
    exactly the rules soak.cl.fault_rules rejects."""
    rules = [
        "clEnqueueNDRangeKernel=skip", "clEnqueueNDRangeKernel=skip@kernel:soft*,nth:3",
        "clEnqueueWriteBuffer=corrupt", "clEnqueueWriteBuffer=corrupt:bitflip", "clEnqueueCopyBuffer=corrupt:nan:7",
        "clEnqueueCopyImage=corrupt:bitflip:all@seed:9", "clEnqueueUnmapMemObject=corrupt@every:2",
        "clSetKernelArg=-49@kernel:*matmul*,nth:2", "clEnqueueNDRangeKernel=-5@kernel:[a-z]*,p:0.5",
        # bad
        "clFinish=skip", "clEnqueueWriteBuffer=skip", "clEnqueueNDRangeKernel=corrupt", "clFinish=corrupt",
        "clEnqueueWriteBuffer=corrupt:zero", "clEnqueueWriteBuffer=corrupt:nan:0", "clEnqueueWriteBuffer=corrupt:nan:x",
        "clEnqueueWriteBuffer=corrupt:", "clEnqueueWriteBuffer=corrupt:nan:2:3", "clEnqueueWriteBuffer=corruptx",
        "clEnqueueWriteBuffer=-5@kernel:vadd", "clEnqueueNDRangeKernel=skip@kernel:", "clFinish=-5@kernel:x",
        "clEnqueueNDRangeKernel=skip@kernel:" + "k" * 96, "clFinish=CL_SUCCESS", "clFinish=0",
    ]
    py_bad = set()
    for rule in rules:
        try:
            parse_spec(rule)
        except BadInput:
            py_bad.add(rule)
    assert 10 < len(py_bad) < len(rules)
    r = run_workload("--iterations", "0", env={"SOAK_CL_FAULTS": ";".join(rules)})
    assert r.rc == 0, r.stderr
    assert {c["rule"] for c in r.of("config_error")} == py_bad


def test_kernel_trigger_entry_points_match_the_headers(cl_build):
    """KERNEL_APIS (Python) against the wrappers the build generated from the headers: those that
    hand their cl_kernel to the fault rules."""
    src = (cl_build.lib_dir / "generated" / "cl_wrappers.c").read_text()
    listed = {line.split("\t", 1)[0] for line in (cl_build.lib_dir / "generated" / "cl_api.txt").read_text().splitlines()}
    generated, current = set(), None
    for line in src.splitlines():
        m = re.match(r"SOAK_EXPORT .*CL_API_CALL (cl\w+)\(", line)
        if m:
            current = m.group(1)
        elif "soak_fault_k(" in line:
            generated.add(current)
    assert "clEnqueueNDRangeKernel" in generated and "clSetKernelArg" in generated
    assert generated == KERNEL_APIS & listed
    assert SKIP_APIS | CORRUPT_APIS <= listed


def test_soak_run_records_a_silent_corruption_as_the_injected_rule(tmp_path):
    """soak run with the test engine's OpenCL path: a corrupted write is an injected cl_call_error
    with code 0, its action and the rule, in the iteration it happened in."""
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps({"opencl": True}))
    proc = subprocess.run([sys.executable, "-m", "soak", "run", "--fault-plan", str(plan), "--backend", "opencl",
                           "--out", str(tmp_path), "--run-id", "corrupt", "--quiet", "--iterations", "8",
                           "--cl-gpu-override", "--cl-fault", "clEnqueueWriteBuffer=corrupt:bitflip:2@nth:5"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    events = list(read_events(tmp_path / "corrupt"))
    (ev,) = [e for e in events if e["event"] == "cl_call_error"]
    assert (ev["api"], ev["code"], ev["injected"], ev["action"]) == ("clEnqueueWriteBuffer", 0, True, "corrupt")
    assert ev["why"] == "clEnqueueWriteBuffer=corrupt:bitflip:2@nth:5" and ev["call_index"] == 5
    assert ev["changed"] == 2 and ev["iteration"] is not None
    # the diagnosis names it: an injected root cause, by its action (it returned CL_SUCCESS)
    proc = subprocess.run([sys.executable, "-m", "soak", "classify", str(tmp_path / "corrupt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    (cause,) = json.loads((tmp_path / "corrupt" / "classification.json").read_text())["causes"]
    assert cause["injected"] is True and cause["kind"] == "cl_call_error"
    assert "clEnqueueWriteBuffer corrupt (injected)" in cause["signature_text"]


def test_bad_silent_rule_is_bad_input_with_exit_3(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "soak", "run", "--backend", "opencl", "--out", str(tmp_path),
                           "--iterations", "1", "--quiet", "--cl-fault", "clFinish=skip"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr
    assert "skip applies to clEnqueueNDRangeKernel only" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_join_spec_keeps_the_silent_actions():
    rules = parse_spec("clEnqueueNDRangeKernel=skip@kernel:soft*,nth:3; clEnqueueWriteBuffer=corrupt@seed:4;"
                       "clEnqueueCopyBuffer=corrupt:bitflip:all")
    assert join_spec(rules) == ("clEnqueueNDRangeKernel=skip@kernel:soft*,nth:3;"
                                "clEnqueueWriteBuffer=corrupt:nan:1@seed:4;clEnqueueCopyBuffer=corrupt:bitflip:all")
    assert [(r.action, r.mode, r.words, r.code) for r in rules] == [
        ("skip", None, None, 0), ("corrupt", "nan", 1, 0), ("corrupt", "bitflip", 0, 0)]


def test_a_record_field_named_like_the_event_envelope_is_renamed_not_a_crash():
    """A skipped launch's record says how its event was handed back (`event`): as an event field it
    would collide with the envelope's own `event` (a soak run with a skip rule died of it)."""
    from soak.cl.trace_events import trace_events

    rec = {"type": "error", "seq": 5, "t_ns": 1, "api": "clEnqueueNDRangeKernel", "code": 0, "injected": True,
           "action": "skip", "event": "marker", "t": 3, "ts": "x", "run_id": "r"}
    [(name, fields)] = trace_events([rec], 7)
    assert name == "cl_call_error" and fields["cl_event"] == "marker" and fields["call_seq"] == 5
    assert not {"event", "t", "ts", "run_id", "seq"} & set(fields)
