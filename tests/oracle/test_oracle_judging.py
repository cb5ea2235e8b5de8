"""The oracle's judging and outputs end to end on the test engine (issue 23): the run's oracle verdict
(counts, firsts, distributions, KL drift), the gate's [oracle] rules and the default gate, JUnit,
forward_stopped (tok/s up right after a GPU error), the causal grouping of a real run, the report's
oracle section, `soak status`, `soak merge` and `soak bundle`.

One reference (30 iterations) and a few runs against it, made once for the module (a few seconds)."""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from soak.run_folder import read_events

TEST = ["--engine", "test", "--seed", "3", "--max-new-tokens", "24", "--iterations", "30"]


def soak(cwd: Path, *args, check=True):
    proc = subprocess.run([sys.executable, "-m", "soak", *args], capture_output=True, text=True, timeout=600,
                          cwd=cwd)
    if check and proc.returncode != 0:
        raise AssertionError(f"soak {' '.join(args)} -> {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


PLANS = {
    # MNN#4653's shape: one logged setArg error, then every checked turn wrong, one of them inf
    "bad": [{"kind": "cl_error", "at": [8], "code": -49, "info": "setArg"},
            {"kind": "logits_noise", "from": 9, "sigma": 4},
            {"kind": "logits_nonfinite", "at": [21], "step": 2}],
    # corruption building up: small noise growing over the night, never over the per-step thresholds
    "grow": [{"kind": "logits_noise", "from": 0, "sigma": 0.005, "growth": 0.5}],
    # a GPU error, then decode 2.5x faster: the forward stopped
    "stop": [{"kind": "cl_error", "at": [12], "code": -49, "info": "setArg"},
             {"kind": "slow", "from": 13, "factor": 0.4}],
    # the same speed-up with no error before it
    "fast": [{"kind": "slow", "from": 13, "factor": 0.4}],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("oracle")
    soak(tmp, "reference", *TEST, "--run-id", "ref", "--out", str(tmp), "--quiet")
    out = {"ref": tmp / "ref"}
    for name in ("clean", "bad", "grow"):
        args = ["run", *TEST, "--run-id", name, "--out", str(tmp), "--quiet", "--reference", str(tmp / "ref")]
        if name in PLANS:
            (tmp / f"{name}.json").write_text(json.dumps(PLANS[name]))
            args += ["--fault-plan", str(tmp / f"{name}.json")]
        soak(tmp, *args)
        out[name] = tmp / name
    for name in ("stop", "fast"):   # no reference: the oracle is no part of forward_stopped
        (tmp / f"{name}.json").write_text(json.dumps(PLANS[name]))
        soak(tmp, "run", *TEST, "--run-id", name, "--out", str(tmp), "--quiet", "--fault-plan", str(tmp / f"{name}.json"))
        out[name] = tmp / name
    out["tmp"] = tmp
    return out


def checked(run: Path) -> int:
    return sum(1 for _ in read_events(run, kinds={"oracle_turn"}))


def verdicts(run: Path) -> dict:
    return json.loads((run / "verdicts.json").read_text())


def faults(run: Path, kind: str) -> list[dict]:
    return [e for e in read_events(run, kinds={"fault"}) if e["kind"] == kind]


def gate(run: Path, *args) -> tuple[subprocess.CompletedProcess, dict]:
    junit = run.parent / f"{run.name}-{len(args)}-junit.xml"
    proc = soak(run.parent, "gate", str(run), "--junit", str(junit), *args, check=False)
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")} if junit.is_file() else {}
    return proc, cases


def status_of(case) -> str:
    return "failed" if case.find("failure") is not None else "skipped" if case.find("skipped") is not None else "passed"


# -- the verdict ------------------------------------------------------------------------------------

def test_the_oracle_verdict_counts_the_wrong_and_non_finite_turns_and_their_firsts(runs):
    v = verdicts(runs["bad"])["oracle"]
    wrong = {f["iteration"] for f in faults(runs["bad"], "wrong_output")}
    n = checked(runs["bad"])
    assert n >= 28 and v["checked"] == n and v["wrong"] == len(wrong) >= 15 and v["nonfinite"] == 1
    assert v["first_wrong_iteration"] == min(wrong) == 9 and v["first_nonfinite_iteration"] == 21
    assert v["wrong_rate"] == pytest.approx((v["wrong"] + 1) / n)
    assert v["kl_max"]["p99"] > 1 and v["abs_max"]["median"] > 1      # sigma 4 noise
    assert {t["i"] for t in v["wrong_turns"]} == wrong | {21}
    assert v["by_turn"]["first"]["checked"] + v["by_turn"]["later"]["checked"] == n
    clean = verdicts(runs["clean"])["oracle"]
    assert (clean["checked"], clean["wrong"], clean["nonfinite"]) == (checked(runs["clean"]), 0, 0)
    assert clean["kl_max"]["max"] < 1e-10 and clean["abs_max"]["max"] < 1e-5 and not clean["wrong_turns"]
    summary = json.loads((runs["bad"] / "summary.json").read_text())
    assert any(line.startswith(f"oracle: {n} turns checked") and "first wrong at iteration 9" in line
               for line in summary["analysis"]["verdicts"]["lines"])
    assert verdicts(runs["stop"])["oracle"] is None and verdicts(runs["ref"])["oracle"] is None


def test_a_kl_that_grows_over_the_run_is_a_drift_before_any_turn_is_wrong(runs):
    grow = verdicts(runs["grow"])["oracle"]
    assert grow["wrong"] == 0 and grow["nonfinite"] == 0
    d = grow["drift"]
    assert d["verdict"] == "growing" and d["end"] > 10 * d["start"] and d["growth"] > d["material"]
    assert verdicts(runs["clean"])["oracle"]["drift"]["verdict"] == "stable"
    assert verdicts(runs["grow"])["overall"]["oracle_drift"] == "growing"


# -- the gate ---------------------------------------------------------------------------------------

def test_the_default_gate_fails_a_checked_run_with_a_wrong_or_non_finite_turn(runs):
    proc, cases = gate(runs["bad"])
    assert proc.returncode == 1, proc.stderr
    assert status_of(cases["oracle.wrong"]) == "failed" and status_of(cases["oracle.nonfinite"]) == "failed"
    assert cases["oracle.wrong"].get("classname") == "soak.gate.oracle"
    msg = cases["oracle.wrong"].find("failure").get("message")
    assert f"wrong turn(s) of {checked(runs['bad'])} checked, first at iteration 9" in msg and "max_wrong 0" in msg
    assert "iteration 9 (conversation" in cases["oracle.wrong"].find("failure").text
    _, cases = gate(runs["clean"])
    assert status_of(cases["oracle.wrong"]) == "passed" and status_of(cases["oracle.nonfinite"]) == "passed"
    _, cases = gate(runs["stop"])           # not checked: the oracle's rules are skipped, never passed
    assert status_of(cases["oracle.checked"]) == "skipped" and "oracle.wrong" not in cases


def _policy(tmp: Path, name: str, text: str) -> Path:
    p = tmp / f"{name}.toml"
    p.write_text(text)
    return p


def test_an_oracle_section_judges_the_oracles_faults_and_errors_does_not(runs):
    tmp = runs["tmp"]
    errors_only = _policy(tmp, "errors", "[errors.severity]\ncritical = { max_count = 0 }\n")
    proc, cases = gate(runs["bad"], "--policy", str(errors_only))     # nonfinite_logits is critical
    assert proc.returncode == 1 and status_of(cases["errors.severity.critical"]) == "failed"
    both = _policy(tmp, "both", "[errors.severity]\ncritical = { max_count = 0 }\n"
                                "[oracle]\nmax_wrong = 100\nmax_nonfinite = 1\nmax_wrong_rate = 1.0\n")
    proc, cases = gate(runs["bad"], "--policy", str(both))
    assert proc.returncode == 0, proc.stderr
    assert {n: status_of(c) for n, c in cases.items() if n.startswith(("oracle", "errors"))} == {
        "errors.severity.critical": "passed", "oracle.wrong": "passed", "oracle.nonfinite": "passed",
        "oracle.wrong_rate": "passed"}
    rate = _policy(tmp, "rate", "[oracle]\nmax_wrong_rate = 0.1\n")
    proc, cases = gate(runs["bad"], "--policy", str(rate))
    assert proc.returncode == 1 and "> max_wrong_rate 0.1" in cases["oracle.wrong_rate"].find("failure").get("message")


def test_required_fails_a_run_with_no_checked_turn_and_kl_drift_is_a_rule(runs):
    tmp = runs["tmp"]
    required = _policy(tmp, "required", "[oracle]\nrequired = true\n")
    proc, cases = gate(runs["stop"], "--policy", str(required))
    assert proc.returncode == 1 and status_of(cases["oracle.checked"]) == "failed"
    assert "--reference" in cases["oracle.checked"].find("failure").get("message")
    proc, cases = gate(runs["clean"], "--policy", str(required))
    assert status_of(cases["oracle.checked"]) == "passed"
    drift = _policy(tmp, "drift", "[oracle]\nmax_kl_drift = 0.0001\n")
    proc, cases = gate(runs["grow"], "--policy", str(drift))
    assert proc.returncode == 1 and status_of(cases["oracle.kl_drift"]) == "failed"
    assert "growing" in cases["oracle.kl_drift"].find("failure").get("message")
    proc, cases = gate(runs["clean"], "--policy", str(drift))
    assert status_of(cases["oracle.kl_drift"]) == "passed"


@pytest.mark.parametrize("text, says", [
    ("[oracle]\n", "[oracle] has no rule"),
    ("[oracle]\nmax_wrong = -1\n", "[oracle].max_wrong"),
    ("[oracle]\nmax_wrong = 1.5\n", "[oracle].max_wrong"),
    ("[oracle]\nmax_wrong_rate = 2\n", "[oracle].max_wrong_rate"),
    ("[oracle]\nmax_kl_drift = nan\n", "[oracle].max_kl_drift"),
    ("[oracle]\nrequired = \"yes\"\n", "[oracle].required"),
    ("[oracle]\nmax_wrongs = 0\n", "unknown key(s) ['max_wrongs']"),
])
def test_a_bad_oracle_section_is_refused_with_exit_3(runs, text, says):
    policy = _policy(runs["tmp"], "bad-policy", text)
    proc = soak(runs["tmp"], "gate", str(runs["clean"]), "--policy", str(policy), check=False)
    assert proc.returncode == 3 and says in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


# -- forward_stopped --------------------------------------------------------------------------------

def test_a_tok_s_jump_right_after_a_gpu_error_is_the_forward_stopped_not_a_speed_up(runs):
    found = faults(runs["stop"], "forward_stopped")
    assert len(found) == 1
    f = found[0]
    assert f["iteration"] == 13 and f["after_iteration"] == 12 and f["speedup"] >= 1.5
    assert "setArg" in f["after_error"] and f["decode_tps"] > f["baseline_tps"]
    v = verdicts(runs["stop"])
    assert v["perf"]["drift"]["decode_tps"]["verdict"] == "forward_stopped"
    assert v["perf"]["forward_stopped"][0]["after_iteration"] == 12
    lines = json.loads((runs["stop"] / "summary.json").read_text())["analysis"]["verdicts"]["lines"]
    speed = [line for line in lines if line.startswith("decode:")]
    assert speed and "FORWARD STOPPED" in speed[0] and "not a speed-up" in speed[0] and "improving" not in speed[0]
    # the same speed-up with no GPU error before it is no forward_stopped
    assert faults(runs["fast"], "forward_stopped") == []
    assert verdicts(runs["fast"])["perf"]["drift"]["decode_tps"]["verdict"] != "forward_stopped"
    cls = json.loads((runs["stop"] / "classification.json").read_text())
    assert [c["kind"] for c in cls["causes"]] == ["cl_error"]
    assert [k["kind"] for k in cls["causes"][0]["cascade"]] == ["forward_stopped"]


# -- diagnosis of a real run -------------------------------------------------------------------------

def test_the_setarg_error_is_the_one_cause_with_every_wrong_turn_in_its_cascade(runs):
    cls = json.loads((runs["bad"] / "classification.json").read_text())
    assert len(cls["causes"]) == 1
    root = cls["causes"][0]
    assert root["kind"] == "cl_error" and root["first_iteration"] == 8
    cascade = {k["kind"]: k["count"] for k in root["cascade"]}
    assert cascade == {"wrong_output": verdicts(runs["bad"])["oracle"]["wrong"], "nonfinite_logits": 1}
    out = soak(runs["tmp"], "classify", str(runs["bad"])).stdout
    assert "x wrong_output (teacher-forced logits off the reference in" in out
    assert "x nonfinite_logits (NaN/inf logits in 1 checked turn from step 2)" in out


# -- outputs ----------------------------------------------------------------------------------------

def test_the_report_has_an_oracle_section_with_the_wrong_turns_and_a_kl_chart(runs):
    out = runs["tmp"] / "report.html"
    soak(runs["tmp"], "report", str(runs["bad"]), str(runs["stop"]), "-o", str(out))
    html = out.read_text()
    assert html.count("Wrong-answer oracle:") == 1 and "Wrong-answer oracle: bad" in html
    section = html.split("Wrong-answer oracle: bad", 1)[1].split("<h2>", 1)[0]
    assert "<svg" in section and "per-step KL threshold 0.05" in section
    rows = section.split("<tbody>", 1)[1].split("</tbody>", 1)[0].count("<tr")
    assert rows == verdicts(runs["bad"])["oracle"]["wrong"] + 1
    assert "<td class=num>9</td>" in section and "first step over" in section
    assert f"{checked(runs['bad'])} checked, " in html and "not checked (no --reference)" in html  # the summary row


def test_status_merge_and_bundle_show_the_oracle(runs):
    tmp = runs["tmp"]
    st = json.loads(soak(tmp, "status", str(runs["bad"]), "--json").stdout)
    o = verdicts(runs["bad"])["oracle"]
    n, nc = checked(runs["bad"]), checked(runs["clean"])
    assert st["oracle"] == {"checked": n, "wrong": o["wrong"], "nonfinite": 1, "first_wrong_iteration": 9,
                            "first_nonfinite_iteration": 21, "every": 1}
    assert f"answers  {n} turns checked against the reference, {o['wrong']} wrong, 1 non-finite" in \
        soak(tmp, "status", str(runs["bad"])).stdout
    assert json.loads(soak(tmp, "status", str(runs["stop"]), "--json").stdout)["oracle"] is None
    merged = tmp / "merged"
    text = soak(tmp, "merge", str(runs["bad"]), str(runs["clean"]), str(runs["stop"]), "-o", str(merged)).stdout
    assert f"answers checked in 2 runs: {n + nc} turns, {o['wrong'] + 1} wrong" in text
    table = json.loads((merged / "merge.json").read_text())
    assert table["totals"]["oracle_checked"] == n + nc
    assert {r["run_id"]: r["oracle"] for r in table["runs"]} == {
        "bad": {"checked": n, "wrong": o["wrong"], "nonfinite": 1},
        "clean": {"checked": nc, "wrong": 0, "nonfinite": 0}, "stop": None}
    archive = tmp / "b.tar.gz"
    soak(tmp, "bundle", str(runs["bad"]), "-o", str(archive))
    with tarfile.open(archive) as tar:
        meta = json.load(tar.extractfile("soak-bundle-bad/bundle.json"))
        readme = tar.extractfile("soak-bundle-bad/README.md").read().decode()
        ref = tar.extractfile("soak-bundle-bad/oracle/reference.jsonl").read()
    assert meta["oracle"]["reference"] == str(runs["ref"] / "reference.jsonl")
    assert meta["oracle"]["key"]["seed"] == 3 and meta["oracle"]["included"] == "oracle/reference.jsonl"
    assert ref == (runs["ref"] / "reference.jsonl").read_bytes() and meta["oracle"]["bytes"] == len(ref)
    assert "## Wrong answers" in readme and f"{n} turns checked" in readme
