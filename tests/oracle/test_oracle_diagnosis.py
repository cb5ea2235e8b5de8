"""Diagnosis of the oracle's findings (issue 23): the causal grouping puts a preceding GPU error first
with the wrong turns in its cascade, however many clean or unchecked iterations lie between (until the
model is loaded again); the report entries of alibaba/MNN#4653, #3370, #3560, #4836 and #4676 match on
the oracle's findings (wrong_output, nonfinite_logits: no bad_output event at all), in their report's
context, and are near misses when the context is moved; `soak classify` names the oracle's causes.
Runs are written with soak's EventLog in the runner's order (an iteration's event, its oracle_turn, its
faults)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "catalog"))

from _catalog_runs import cl_fault, ctx, iteration, make_run  # noqa: E402

from soak.catalog.classify import classify_run  # noqa: E402
from soak.catalog.loader import load_catalog  # noqa: E402
from soak.cli import main  # noqa: E402


@pytest.fixture(scope="module")
def catalog():
    return load_catalog()


def dev(name, vendor="", driver=None):
    return {"device": {"name": name, "vendor": vendor, "driver_version": driver}}


def merge(base: dict, change: dict) -> dict:
    out = dict(base)
    for k, v in change.items():
        out[k] = merge(out.get(k) or {}, v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return {k: v for k, v in out.items() if v is not None}


def checked(i, turn=0, wrong=False, nonfinite_from=None, first_over=0, conversation=None):
    """A checked turn as the runner writes it: its iteration, its oracle_turn, its fault."""
    steps = 20
    nf = steps - nonfinite_from if nonfinite_from is not None else 0
    out = [iteration(i, turn=turn, failures=["wrong_output"] if wrong or nf else []),
           ("oracle_turn", {"i": i, "conversation": i if conversation is None else conversation, "turn": turn,
                            "steps": steps, "flips": 15 if wrong else 0, "first_flip": 0 if wrong else None,
                            "nonfinite_steps": nf, "first_nonfinite": nonfinite_from,
                            "first_over": first_over if wrong else None, "kl_mean": 2.0 if wrong else 1e-4,
                            "kl_max": 4.0 if wrong else 3e-4, "kl_max_step": 3, "nmse_max": 1.0,
                            "abs_max": 9.0 if wrong else 0.05, "abs_max_step": 3, "rank_max": 40 if wrong else 0,
                            "nll": 3.0, "prefill_us": 100, "decode_us": 900, "input_tokens": 10,
                            "wrong": bool(wrong or nf)})]
    if nf:
        out.append(("fault", {"iteration": i, "kind": "nonfinite_logits", "phase": "decode",
                              "first_step": nonfinite_from, "steps": nf, "of_steps": steps}))
    elif wrong:
        out.append(("fault", {"iteration": i, "kind": "wrong_output", "phase": "decode", "over": ["abs", "kl"],
                              "abs_max": 9.0, "kl_max": 4.0, "first_step": first_over, "worst_step": 3,
                              "first_flip": 0, "flips": 15, "of_steps": steps,
                              "thresholds": {"class": "cross", "abs_max": 1.0, "kl_max": 0.05}}))
    return out


def setarg_call(i, seq=500):
    return ("cl_call_error", {"api": "clSetKernelArg", "code": -49, "code_name": "CL_INVALID_ARG_INDEX",
                              "injected": True, "call_seq": seq, "first_seq": seq, "last_seq": seq, "count": 1,
                              "iteration": i, "why": "nth:400"})


# -- causal grouping -------------------------------------------------------------------------------

def test_wrong_turns_after_a_setarg_error_are_its_cascade_across_clean_and_unchecked_iterations(tmp_path, catalog):
    """`clSetKernelArg=-49@nth:N`: one failed call, then (with --oracle-every 2) a wrong checked turn
    every other iteration; the unchecked iterations in between are clean.  Today each wrong turn after a
    clean iteration starts a cause of its own."""
    ev = [("load", {"ok": True, "backend_requested": "opencl", "backend_actual": "opencl"})]
    ev += checked(0) + [iteration(1)] + checked(2)
    ev += [setarg_call(3), iteration(3, failures=["cl_call_error"])]
    for i in range(4, 12):
        ev += checked(i, wrong=True) if i % 2 == 0 else [iteration(i)]
    result = classify_run(make_run(tmp_path, "setarg", ctx(), ev), catalog)
    causes = result["causes"]
    assert len(causes) == 1, [(c["kind"], c["first_iteration"]) for c in causes]
    root = causes[0]
    assert root["kind"] == "cl_call_error" and root["injected"] and root["rank"] == 1
    assert [(k["kind"], k["count"]) for k in root["cascade"]] == [("wrong_output", 4)]
    assert (root["first_iteration"], root["last_iteration"]) == (3, 10)
    roles = {d["kind"]: d["role"] for d in result["findings"]}
    assert roles == {"cl_call_error": "root", "wrong_output": "cascade"}


def test_a_reload_ends_the_errors_state_and_wrong_turns_with_no_error_are_their_own_cause(tmp_path, catalog):
    ev = [("load", {"ok": True, "backend_requested": "opencl", "backend_actual": "opencl"})]
    ev += [cl_fault(0, "CL ERROR CODE : -49, info:setArg "), iteration(0, failures=["cl_error"])]
    ev += checked(1, wrong=True) + [iteration(2)] + checked(3, wrong=True)
    ev += [("load", {"ok": True, "backend_requested": "opencl", "backend_actual": "opencl"})]  # a reload
    ev += [iteration(4)] + checked(5, wrong=True)
    result = classify_run(make_run(tmp_path, "reload", ctx(), ev), catalog)
    causes = result["causes"]
    assert [c["kind"] for c in causes] == ["cl_error", "wrong_output"]
    assert [(k["kind"], k["count"]) for k in causes[0]["cascade"]] == [("wrong_output", 2)]
    assert causes[1]["first_iteration"] == 5 and not causes[1]["cascade"]


def test_classify_names_the_oracles_causes(tmp_path, catalog, capsys):
    """A wrong turn no report explains is titled as a wrong answer with its figures, not as a bare
    signature; a cascade line says what the oracle saw."""
    ev = [iteration(0)] + checked(1, wrong=True, first_over=4) + checked(2, wrong=True, first_over=2)
    run = make_run(tmp_path, "alone", ctx(), ev)
    assert main(["classify", str(run)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "wrong_output" in line)
    assert "wrong answer" in row and "2 checked turns" in row and "first diverging step 2" in row, out
    ev = [cl_fault(0, "CL ERROR CODE : -5, info:BinaryOp "), iteration(0, failures=["cl_error"])]
    ev += checked(1, nonfinite_from=1)
    run = make_run(tmp_path, "casc", ctx(), ev)
    assert main(["classify", str(run)]) == 0
    out = capsys.readouterr().out
    assert "-> 1 x nonfinite_logits" in out and "(NaN/inf logits in 1 checked turn from step 1)" in out, out


# -- report entries on the oracle's findings ---------------------------------------------------------

ADRENO_830 = {"os": "android", "mnn_version": "3.6.0", "opencl": dev("QUALCOMM Adreno(TM) 830", "QUALCOMM")}
ORACLE_WITNESSES = {
    # id: (manifest changes, events (oracle findings only: no bad_output), a context change -> near miss)
    "mnn-4653-adreno830-setarg-49-inf-logits": (
        ADRENO_830,
        [setarg_call(0), iteration(0, failures=["cl_call_error"])] + checked(1, nonfinite_from=2),
        {"mnn_version": "3.6.1"}),
    "mnn-3370-vl-exclamation-second-run": (
        {"model": {"family": "qwen2_vl", "params": 2.2e9}},
        checked(0) + checked(1, turn=1, wrong=True, conversation=0) + checked(2, turn=2, wrong=True, conversation=0),
        {"model": {"family": "qwen2", "params": 2.2e9}}),
    "mnn-3560-dimensity8100-fp16-garbage": (
        {"os": "android", "model": {"family": "qwen3", "params": 4e9}, "opencl": dev("Mali-G610 MC6", "ARM"),
         "config": {"engine_options": {"precision": "low"}}},
        checked(0, wrong=True, first_over=3) + checked(1, turn=1, wrong=True, conversation=0),
        {"config": {"engine_options": {"precision": "high"}}}),
    "mnn-4836-intel-irisxe-garbage": (
        {"os": "windows", "opencl": dev("Intel(R) Iris(R) Xe Graphics", "Intel(R) Corporation", "32.0.101.7088")},
        checked(0, wrong=True) + checked(1, wrong=True),
        {"os": "linux"}),
    "mnn-4676-fastvlm-dual-opencl-repeat": (
        {"model": {"family": "fastvlm", "params": 1.5e9}},
        checked(0, wrong=True, first_over=0),
        {"model": {"family": "fastvlm", "params": 7e9}}),
}


def _ids(result):
    return ({m["id"] for d in result["findings"] for m in d["matches"]},
            {m["id"] for d in result["findings"] for m in d["near_misses"]})


@pytest.mark.parametrize("entry_id", sorted(ORACLE_WITNESSES))
def test_report_entry_matches_the_oracles_findings_and_moved_context_is_a_near_miss(tmp_path, catalog, entry_id):
    changes, events, moved = ORACLE_WITNESSES[entry_id]
    assert not [e for e in events if e[0] == "fault" and e[1]["kind"] == "bad_output"]
    manifest = merge(ctx(), changes)
    result = classify_run(make_run(tmp_path, "w", manifest, events), catalog)
    matched, _ = _ids(result)
    assert entry_id in matched, [(d["kind"], [m["id"] for m in d["matches"]],
                                  [(n["id"], n["mismatch"]) for n in d["near_misses"]]) for d in result["findings"]]
    best = [d for d in result["findings"] if d["fault_id"] == entry_id]
    assert best and best[0]["kind"] in ("wrong_output", "nonfinite_logits")
    result = classify_run(make_run(tmp_path, "m", merge(manifest, moved), events), catalog)
    matched, near = _ids(result)
    assert entry_id not in matched and entry_id in near


def test_the_oracle_conditions_tell_the_reports_apart(tmp_path, catalog):
    """#3370 wants the first checked turn right; #4836 wants no GPU error; #4653 wants the setArg error."""
    ctx3370 = merge(ctx(), {"model": {"family": "qwen2_vl", "params": 2.2e9}})
    wrong_from_0 = checked(0, wrong=True) + checked(1, turn=1, wrong=True, conversation=0)
    matched, _ = _ids(classify_run(make_run(tmp_path, "a", ctx3370, wrong_from_0), catalog))
    assert "mnn-3370-vl-exclamation-second-run" not in matched
    intel = merge(ctx(), ORACLE_WITNESSES["mnn-4836-intel-irisxe-garbage"][0])
    with_error = [cl_fault(0, "CL ERROR CODE : -5, info:BinaryOp "), iteration(0, failures=["cl_error"])] + \
        checked(1, wrong=True)
    matched, _ = _ids(classify_run(make_run(tmp_path, "b", intel, with_error), catalog))
    assert "mnn-4836-intel-irisxe-garbage" not in matched
    adreno = merge(ctx(), ADRENO_830)
    matched, _ = _ids(classify_run(make_run(tmp_path, "c", adreno, checked(0, nonfinite_from=2)), catalog))
    assert "mnn-4653-adreno830-setarg-49-inf-logits" not in matched
    late = [setarg_call(0), iteration(0, failures=["cl_call_error"])] + checked(1, nonfinite_from=9)
    matched, _ = _ids(classify_run(make_run(tmp_path, "d", adreno, late), catalog))
    assert "mnn-4653-adreno830-setarg-49-inf-logits" not in matched   # inf only at step 9: first_step {max: 2}
