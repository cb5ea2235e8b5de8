"""The gate passes and fails for the right reasons, rule by rule; CLI exit codes."""

from __future__ import annotations

import argparse
import textwrap

import pytest

from soak.cli import main
from soak.errors import BadInput, ExitCode
from soak.outputs.gate import add_run_arguments, evaluate, gate_run
from soak.outputs.policy import load_policy, parse_size, policy_from_dict
import tomllib

MIB = 1 << 20


def rules(run, toml: str, baseline=None) -> dict:
    policy = policy_from_dict(tomllib.loads(textwrap.dedent(toml)), "<test>")
    results, _ = evaluate(run, policy, baseline)
    return {r.name: r for r in results}


@pytest.fixture
def clean(make_run):
    return make_run("clean", iterations=100)


@pytest.fixture
def faulty(make_run):
    # 3 CL errors (high, known), 1 KV map error (critical, known), recovered by reset
    return make_run("faulty", iterations=100, faults={10: "cl_error", 20: "cl_error", 30: "cl_error", 40: "error_line"},
                    recover={i: ("reset", ["reset"]) for i in (10, 20, 30, 40)})


def test_clean_run_passes_every_rule(clean):
    r = rules(clean, """
        [gate]
        required_backend = "opencl"
        min_iterations = 100
        [errors]
        max_count = 0
        [errors.severity]
        critical = { max_count = 0 }
        [memory]
        max_leak_slope = 0
        require_return = true
        [recovery]
        min_rate = 1.0
        [perf]
        max_drift_pct = 5
    """)
    assert all(x.passed for x in r.values()), [x.message for x in r.values() if not x.passed]
    assert {"backend.required", "run.min_iterations", "errors.total", "errors.severity.critical",
            "memory.leak.rss", "memory.return_after_recovery", "recovery.rate", "perf.drift"} <= set(r)


def test_min_iterations(clean):
    r = rules(clean, "[gate]\nmin_iterations = 101\n")["run.min_iterations"]
    assert not r.passed and "100 iterations < 101" in r.message


def test_error_count_and_rate(faulty):
    r = rules(faulty, "[errors]\nmax_count = 3\n")["errors.total"]
    assert not r.passed and "4 > max_count 3" in r.message
    assert rules(faulty, "[errors]\nmax_count = 4\n")["errors.total"].passed
    r = rules(faulty, "[errors]\nmax_rate = 0.03\n")["errors.total"]
    assert not r.passed and "rate 0.04" in r.message
    assert rules(faulty, "[errors]\nmax_rate = 0.05\n")["errors.total"].passed


def test_allowed_known_faults_are_not_counted(faulty):
    from soak.outputs._findings import findings_with_events
    from soak.analysis.loaded_run import RunFolder

    by_kind = {f["kind"]: f for f in findings_with_events(RunFolder(faulty))}
    cl_id = by_kind["cl_error"]["fault_id"] or by_kind["cl_error"]["signature"]
    r = rules(faulty, f'[errors]\nmax_count = 1\nallow = ["{cl_id}"]\n')["errors.total"]
    assert r.passed, r.message
    sig = by_kind["error_line"]["signature"]
    r = rules(faulty, f'[errors]\nmax_count = 0\nallow = ["{cl_id}", "{sig}"]\n')["errors.total"]
    assert r.passed, r.message
    assert rules(faulty, "[errors]\nmax_count = 0\nallow_all_known = true\n")["errors.total"].passed == \
        all(f["known"] for f in by_kind.values())


def test_per_severity_and_per_fault(faulty):
    from soak.outputs._findings import findings_with_events
    from soak.analysis.loaded_run import RunFolder

    findings = findings_with_events(RunFolder(faulty))
    cl = next(f for f in findings if f["kind"] == "cl_error")
    sev = cl["severity"]
    r = rules(faulty, f"[errors.severity]\n{sev} = {{ max_count = 2 }}\n")[f"errors.severity.{sev}"]
    assert not r.passed and "> max_count 2" in r.message
    assert any(cl["signature"] in d or (cl["fault_id"] or "") in d for d in r.details)
    key = cl["fault_id"] or cl["signature"]
    r = rules(faulty, f'[errors.fault]\n"{key}" = {{ max_count = 2 }}\n')[f"errors.fault.{key}"]
    assert not r.passed
    assert rules(faulty, f'[errors.fault]\n"{key}" = {{ max_count = 3 }}\n')[f"errors.fault.{key}"].passed
    assert rules(faulty, '[errors.fault]\n"no-such-fault" = { max_count = 0 }\n')["errors.fault.no-such-fault"].passed


def test_required_backend_catches_silent_cpu_fallback(make_run):
    fell = make_run("fell", iterations=30, backend="opencl", backend_actual="cpu")
    r = rules(fell, '[gate]\nrequired_backend = "opencl"\n')["backend.required"]
    assert not r.passed and "actually ran on cpu" in r.message
    logged = make_run("logged", iterations=30, backend="opencl", cpu_fallback_at=5)
    r = rules(logged, '[gate]\nrequired_backend = "opencl"\n')["backend.required"]
    assert not r.passed and "CPU fallback" in r.message
    asked_cpu = make_run("cpu", iterations=30, backend="cpu")
    r = rules(asked_cpu, '[gate]\nrequired_backend = "opencl"\n')["backend.required"]
    assert not r.passed and "asked for backend cpu" in r.message


def test_leak_slope_limit(make_run):
    leaky = make_run("leaky", iterations=150, rss=lambda i, r: 300 * MIB + i * 512 * 1024 + r.gauss(0, MIB))
    r = rules(leaky, '[memory]\nmax_leak_slope = "256KiB"\n')
    assert not r["memory.leak.rss"].passed and "/iteration > max 256.00 KiB" in r["memory.leak.rss"].message
    assert r["memory.leak.gpu_live_bytes"].passed  # not sampled: not judged
    assert rules(leaky, '[memory]\nmax_leak_slope = "1MiB"\n')["memory.leak.rss"].passed
    r = rules(leaky, '[memory]\nmax_leak_slope_per_hour = "100MiB"\nseries = ["rss"]\n')
    assert set(k for k in r if k.startswith("memory")) == {"memory.leak.rss"} and not r["memory.leak.rss"].passed


def test_memory_must_come_back(make_run):
    run = make_run("noreturn", iterations=120, faults={60: "cl_error"}, recover={60: ("reset", ["reset"])},
                   rss=lambda i, r: 300 * MIB + (200 * MIB if i >= 60 else 0))
    r = rules(run, "[memory]\nrequire_return = true\n")["memory.return_after_recovery"]
    assert not r.passed and "iteration 60" in r.message


def test_recovery_rate_and_score(make_run):
    run = make_run("unrec", iterations=60, faults={10: "crash", 20: "cl_error"},
                   recover={10: (None, ["reset", "reinit", "reload", "restart"]), 20: ("reload", ["reset", "reinit", "reload"])})
    r = rules(run, "[recovery]\nmin_rate = 0.9\nmin_score = 20\n")
    assert not r["recovery.rate"].passed and "1/2" in r["recovery.rate"].message
    assert not r["recovery.score"].passed  # (0 + 0.25) / 2 = 12.5
    r = rules(run, "[recovery]\nmin_rate = 0.5\nmin_score = 12\n")
    assert r["recovery.rate"].passed and r["recovery.score"].passed


def test_tps_regression_against_baseline(make_run):
    base = make_run("base", iterations=80, tps=lambda i, r: 20 + r.gauss(0, 0.2))
    slow = make_run("slow", iterations=80, tps=lambda i, r: 16 + r.gauss(0, 0.2))
    r = rules(slow, "[perf]\nmax_tps_regression_pct = 10\n", baseline=base)["perf.tps_regression"]
    assert not r.passed and "20" in r.message
    assert rules(slow, "[perf]\nmax_tps_regression_pct = 25\n", baseline=base)["perf.tps_regression"].passed
    r = rules(slow, "[perf]\nmax_tps_regression_pct = 25\n")["perf.tps_regression"]
    assert not r.passed and "--baseline" in r.message


def test_drift_over_the_run(make_run):
    hot = make_run("hot", iterations=120, tps=lambda i, r: 20 - 0.08 * i + r.gauss(0, 0.2))
    r = rules(hot, "[perf]\nmax_drift_pct = 20\n")["perf.drift"]
    assert not r.passed and "degrading" in r.message


@pytest.mark.parametrize("text, fragment", [
    ("[memory]\nmax_leak = 1\n", "unknown key"),
    ("[errors.severity]\nfatal = { max_count = 0 }\n", "unknown severity"),
    ("[errors]\nmax_count = -1\n", "outside"),
    ("[memory]\nmax_leak_slope = \"12 parsecs\"\n", "not a size"),
    ("[gate]\nrequired_backend = \"metal\"\n", "required_backend"),
    ("[recovery]\nmin_rate = 2\n", "outside"),
    ("[[errors]]\n", "must be a table"),
    ("version = 2\n", "version"),
    ("[errors\n", "not valid TOML"),
])
def test_bad_policy_is_bad_input(tmp_path, text, fragment):
    p = tmp_path / "policy.toml"
    p.write_text(text)
    with pytest.raises(BadInput) as exc:
        load_policy(p)
    assert fragment in str(exc.value)


def test_sizes():
    assert parse_size("256KiB", "x") == 262144 and parse_size(1.5, "x") == 1.5 and parse_size("1 MB", "x") == 1e6


def test_cli_exit_codes(tmp_path, clean, faulty, capsys):
    strict = tmp_path / "strict.toml"
    strict.write_text("[errors]\nmax_count = 0\n")
    junit = tmp_path / "out.xml"
    assert main(["gate", str(clean), "--policy", str(strict), "--junit", str(junit)]) == ExitCode.OK
    assert junit.is_file()
    assert main(["gate", str(faulty), "--policy", str(strict)]) == ExitCode.FAILED
    out = capsys.readouterr().out
    assert "FAIL  errors.total" in out
    assert main(["gate", str(tmp_path / "nope")]) == ExitCode.BAD_INPUT
    assert main(["gate", str(clean), "--policy", str(tmp_path / "nope.toml")]) == ExitCode.BAD_INPUT
    assert main(["gate", str(clean), "--baseline", str(tmp_path / "nope")]) == ExitCode.BAD_INPUT
    err = capsys.readouterr().err
    assert "Traceback" not in err and "hint:" in err


def test_run_integration_hooks(tmp_path, clean, faulty):
    p = argparse.ArgumentParser()
    add_run_arguments(p)
    args = p.parse_args(["--gate", "policy.toml", "--baseline", "logs/x"])
    assert args.gate == "policy.toml" and args.baseline == "logs/x"
    policy = tmp_path / "p.toml"
    policy.write_text("[errors]\nmax_count = 0\n")
    passed, results = gate_run(clean, policy)
    assert passed and (clean / "gate-junit.xml").is_file()
    passed, results = gate_run(faulty, policy)
    assert not passed and any(not r.passed for r in results)


def test_default_policy_fails_a_leak_and_a_crash(make_run):
    from soak.outputs.gate import evaluate

    leaky = make_run("leaky", iterations=100, rss=lambda i, r: 300 * MIB + i * MIB)
    results, _ = evaluate(leaky)
    assert any(r.name == "memory.leak.rss" and not r.passed for r in results)
    crashed = make_run("crashed", iterations=50, faults={20: "crash"}, recover={20: ("restart", ["restart"])})
    results, _ = evaluate(crashed)
    assert any(r.name == "errors.severity.critical" and not r.passed for r in results)


def test_soak_run_with_gate(tmp_path, capsys):
    """`soak run ... --gate POLICY` runs, then gates: a leaking test engine fails a leak policy."""
    plan = tmp_path / "leak.json"
    plan.write_text('[{"kind": "leak", "bytes": 262144, "every": 1}]')
    policy = tmp_path / "gate.toml"
    policy.write_text('[memory]\nmax_leak_slope = "64KiB"\nseries = ["rss"]\n')
    common = ["run", "--engine", "test", "--iterations", "30", "--max-new-tokens", "8",
              "--out", str(tmp_path / "logs"), "--gate", str(policy)]
    assert main(common + ["--fault-plan", str(plan), "--run-id", "leaky"]) == ExitCode.FAILED
    out = capsys.readouterr()
    assert "FAIL  memory.leak.rss" in out.err and out.out == ""  # the gate table is people text: stderr
    assert (tmp_path / "logs/leaky/gate-junit.xml").is_file()
    assert main(common + ["--run-id", "clean", "--quiet"]) == ExitCode.OK
    assert capsys.readouterr() == ("", "")  # --quiet: nothing, the gate table included


def test_test_engine_cpu_fallback_fails_an_opencl_gate(engine_runs, tmp_path):
    run = engine_runs("fallback", [{"kind": "cpu_fallback"}], iterations=6, backend="opencl")
    ok = engine_runs("opencl-ok", [], iterations=6, backend="opencl")
    policy = '[gate]\nrequired_backend = "opencl"\n'
    r = rules(run, policy)["backend.required"]
    assert not r.passed and "actually ran on cpu" in r.message and "Can't Find type=3 backend" in r.message
    assert rules(ok, policy)["backend.required"].passed


# --- run.complete: an empty, killed or cut-short run never passes -------------------

def _cut(run, keep):
    """Rewrite events.jsonl keeping only the lines for which keep(event) is true."""
    import json as _json

    path = run / "events.jsonl"
    lines = [ln for ln in path.read_text().splitlines() if keep(_json.loads(ln))]
    path.write_text("\n".join(lines) + ("\n" if lines else ""))


def _complete(run, policy="[errors]\nmax_count = 0\n"):
    results, _ = evaluate(run, policy_from_dict(tomllib.loads(policy), "<test>"))
    return {r.name: r for r in results}


def test_complete_run_passes_run_complete(clean):
    r = _complete(clean)["run.complete"]
    assert r.passed and not r.skipped and "ended by iterations after 100" in r.message


def test_killed_run_fails_run_complete(make_run, capsys):
    run = make_run("killed", iterations=60)
    _cut(run, lambda e: e["event"] != "run_end")
    r = _complete(run)
    assert not r["run.complete"].passed and "no run_end" in r["run.complete"].message
    assert "errors.total" in r  # the rest is still judged on what there is
    assert main(["gate", str(run)]) == ExitCode.FAILED
    assert "FAIL  run.complete: no run_end" in capsys.readouterr().out


@pytest.mark.parametrize("reason, fragment", [("interrupted", "interrupted"), ("unrecoverable", "could not be recovered"),
                                              ("fail_fast", "--fail-fast")])
def test_run_ended_early_fails(make_run, reason, fragment):
    import json as _json

    run = make_run(f"early-{reason}", iterations=40)
    path = run / "events.jsonl"
    lines = path.read_text().splitlines()
    end = _json.loads(lines[-1])
    end["reason"] = reason
    path.write_text("\n".join(lines[:-1] + [_json.dumps(end)]) + "\n")
    r = _complete(run)["run.complete"]
    assert not r.passed and fragment in r.message


def test_fewer_iterations_than_asked_fails(make_run):
    import json as _json

    run = make_run("short", iterations=40)
    m = _json.loads((run / "manifest.json").read_text())
    m["config"] = {"iterations": 200}
    (run / "manifest.json").write_text(_json.dumps(m))
    r = _complete(run)["run.complete"]
    assert not r.passed and "40 of the 200 iterations" in r.message


@pytest.mark.parametrize("content, fragment", [
    ("", "holds no event"),
    ("\x00\x01garbage", "holds no event"),                     # one cut-off line: dropped
    ("garbage\nmore garbage\n{{{\n", "cannot be read"),
    ('{"event": "hello"}\n{"x": 1}\n', "no soak run event"),
])
def test_empty_or_garbage_events_fail_the_gate(make_run, tmp_path, content, fragment, capsys):
    run = make_run("garbage", iterations=10)
    (run / "events.jsonl").write_text(content)
    results, verdicts = evaluate(run, load_policy_text("[errors]\nmax_count = 0\n", tmp_path))
    assert [r.name for r in results] == ["run.complete"] and verdicts is None
    assert not results[0].passed and fragment in results[0].message
    junit = tmp_path / "j.xml"
    assert main(["gate", str(run), "--junit", str(junit)]) == ExitCode.FAILED
    assert "run.complete" in junit.read_text()


def load_policy_text(text, tmp_path):
    p = tmp_path / "policy.toml"
    p.write_text(text)
    return load_policy(p)


@pytest.mark.parametrize("text, fragment", [
    ("", "no rule"),
    ("# nothing\n[gate]\nname = \"x\"\n", "no rule"),
    ("[errors]\nmax_rate = nan\n", "not a finite number"),
    ("[errors]\nmax_rate = inf\n", "not a finite number"),
    ("[memory]\nmax_leak_slope = nan\n", "not a size"),
    ("[memory]\nrequire_return = \"yes\"\n", "expected true or false"),
    ("[errors]\nallow_all_known = 1\nmax_count = 0\n", "expected true or false"),
    ("[memory]\nseries = []\nmax_leak_slope = 0\n", "empty"),
    ("[memory]\nmax_kept_after_reset = \"lots\"\n", "not a size"),
])
def test_more_bad_policies(tmp_path, text, fragment):
    with pytest.raises(BadInput) as exc:
        load_policy_text(text, tmp_path)
    assert fragment in str(exc.value)


def test_soak_run_checks_the_policy_before_the_soak(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[memory]\nrequire_return = \"yes\"\n")
    out = tmp_path / "logs"
    code = main(["run", "--engine", "test", "--iterations", "3", "--quiet", "--out", str(out), "--run-id", "x",
                 "--gate", str(bad)])
    assert code == ExitCode.BAD_INPUT
    assert not (out / "x").exists()          # nothing ran
    assert "require_return" in capsys.readouterr().err
    assert main(["run", "--engine", "test", "--iterations", "3", "--quiet", "--out", str(out), "--run-id", "y",
                 "--gate", str(bad.with_name("nope.toml"))]) == ExitCode.BAD_INPUT
    assert not (out / "y").exists()


def test_gate_does_not_rewrite_verdicts_json(clean):
    from soak.analysis.verdicts import compute_verdicts

    compute_verdicts(clean)
    path = clean / "verdicts.json"
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    _complete(clean)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_ratchet_fails_unless_allowed(tmp_path):
    import _shapes as shapes  # tests/outputs/conftest.py puts this folder on sys.path

    run = shapes.write_shape(tmp_path / "ratchet", "ratchet", seed=1, field="gpu_live_bytes", floor=43e6,
                             kv_per_token=235e3, max_turns=60, iterations=600, noise=5e6)
    r = _complete(run, "[memory]\nmax_leak_slope = 0\nseries = [\"gpu_live_bytes\"]\n")["memory.leak.gpu_live_bytes"]
    assert not r.passed and "ratchet" in r.message and "follows the longest context" in r.message
    r = _complete(run, "[memory]\nmax_leak_slope = 0\nmax_kept_after_reset = \"8GiB\"\nseries = [\"gpu_live_bytes\"]\n")
    assert r["memory.leak.gpu_live_bytes"].passed
    r = _complete(run, "[memory]\nmax_kept_after_reset = \"1GiB\"\nseries = [\"gpu_live_bytes\"]\n")
    assert not r["memory.leak.gpu_live_bytes"].passed and "> max_kept_after_reset" in r["memory.leak.gpu_live_bytes"].message
