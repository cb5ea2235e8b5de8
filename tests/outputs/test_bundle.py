"""Bug-report bundles: contents, selection, redaction, and the round trip through replay."""

from __future__ import annotations

import json
import tarfile

import pytest

from soak.cli import main
from soak.errors import BadInput, ExitCode
from soak.outputs.bundle import make_bundle

SERIAL = "R58M123ABC"


def _members(path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar if m.isfile()}


@pytest.fixture
def faulty(make_run):
    return make_run("faulty", iterations=40, faults={9: "cl_error", 22: "error_line", 30: "cl_error"},
                    recover={9: ("reset", ["reset"]), 22: ("reload", ["reset", "reinit", "reload"]),
                             30: ("reset", ["reset"])})


def test_bundle_contents(faulty, tmp_path):
    out = make_bundle(faulty, out=tmp_path / "b.tar.gz")
    files = _members(out)
    for name in ("README.md", "bundle.json", "manifest.json", "environment.json", "classification.json",
                 "verdicts.json", "events.jsonl", "series/memory.csv", "series/perf.csv", "prompts.jsonl"):
        assert name in files, name
    with tarfile.open(out) as tar:
        tops = {m.name.split("/", 1)[0] for m in tar}
        assert tops == {"soak-bundle-faulty"} and all(m.isfile() or m.isdir() for m in tar)
    readme = files["README.md"].decode()
    assert "CL_OUT_OF_RESOURCES" in readme and "2 occurrence(s) in 40 iterations" in readme
    assert "soak replay b.tar.gz --iteration 9" in readme
    assert "Adreno (TM) 740" in readme and "seed: 7" in readme
    env = json.loads(files["environment.json"])
    assert env["opencl"]["extensions"] == ["cl_khr_fp16", "cl_qcom_large_buffer"] and env["seed"] == 7
    assert env["libraries"][0]["sha256"] == "ab" * 32
    meta = json.loads(files["bundle.json"])
    assert meta["replay_iteration"] == 9
    windows = [k for k in files if k.startswith("engine_log/")]
    assert len(windows) == 3
    win9 = files[next(k for k in windows if k.endswith("iter-9.log"))].decode()
    assert "CL ERROR CODE : -5, info:mapBuffer" in win9 and "iteration 6 prefill" in win9  # 3 iterations before
    prompts = [json.loads(line) for line in files["prompts.jsonl"].decode().splitlines()]
    failing = {p["i"]: p for p in prompts if p["failing"]}
    assert set(failing) == {9, 22, 30}
    assert failing[9]["prompt"] == 'prompt number 9 "quoted"'
    assert {8, 7, 6} <= {p["i"] for p in prompts}  # the turns before (same conversation) and a few more
    mem = files["series/memory.csv"].decode().splitlines()
    assert mem[0].startswith("seq,t,iteration") and len(mem) == 41


def test_select_by_fault_id_and_signature(faulty, tmp_path):
    cls = json.loads(_members(make_bundle(faulty, out=tmp_path / "all.tar.gz"))["classification.json"])
    cl = next(f for f in cls["findings"] if f["kind"] == "cl_error")
    by_sig = json.loads(_members(make_bundle(faulty, fault=cl["signature"], out=tmp_path / "s.tar.gz"))["bundle.json"])
    assert [f["signature"] for f in by_sig["findings"]] == [cl["signature"]]
    assert {o["iteration"] for o in by_sig["occurrences"]} == {9, 30}
    if cl["fault_id"]:
        by_id = json.loads(_members(make_bundle(faulty, fault=cl["fault_id"], out=tmp_path / "i.tar.gz"))["bundle.json"])
        assert {o["iteration"] for o in by_id["occurrences"]} == {9, 30}
    with pytest.raises(BadInput) as exc:
        make_bundle(faulty, fault="no-such-fault", out=tmp_path / "x.tar.gz")
    assert cl["signature"] in exc.value.hint


def test_redaction(faulty, tmp_path):
    files = _members(make_bundle(faulty, out=tmp_path / "r.tar.gz", redact_prompts=True, redact_serials=True))
    blob = b"\n".join(files.values())
    assert b"prompt number" not in blob and SERIAL.encode() not in blob
    assert b"<redacted" in files["prompts.jsonl"] and b"SERIAL-" in files["manifest.json"]
    assert json.loads(files["bundle.json"])["replay_iteration"] is None
    plain = b"\n".join(_members(make_bundle(faulty, out=tmp_path / "p.tar.gz")).values())
    assert SERIAL.encode() in plain and b"prompt number 9" in plain


def test_bundle_cli(faulty, tmp_path, capsys):
    out = tmp_path / "cli.tar.gz"
    assert main(["bundle", str(faulty), "-o", str(out), "--redact-serials"]) == ExitCode.OK
    assert out.is_file() and "bundle written" in capsys.readouterr().out
    assert main(["bundle", str(faulty), "--fault", "nope", "-o", str(out)]) == ExitCode.BAD_INPUT
    assert main(["bundle", str(tmp_path / "missing")]) == ExitCode.BAD_INPUT


def _json_verdict(text: str) -> dict:
    """The replay verdict: the last top-level JSON object printed."""
    return json.loads(text[text.rindex("\n{\n") + 1:] if not text.startswith("{\n") else text)


PLAN = [{"kind": "cl_error", "at": [7], "code": -5, "info": "run3d"},
        {"kind": "kv_map_error", "at": [13]}]


def test_round_trip_through_replay_reproduces_the_signature(engine_runs, tmp_path, capsys):
    run = engine_runs("bundle-e2e", PLAN, iterations=16)
    bundle = tmp_path / "e2e.tar.gz"
    assert main(["bundle", str(run), "-o", str(bundle)]) == ExitCode.OK
    capsys.readouterr()
    # default iteration: the bundle's first failing one (7, the CL error)
    assert main(["replay", str(bundle), "--out", str(tmp_path / "replays"), "--json"]) == ExitCode.OK
    first = _json_verdict(capsys.readouterr().out)
    assert first["iteration"] == 7 and first["reproduced"]
    assert any("CL_OUT_OF_RESOURCES" in t for t in first["replayed_faults"].values())
    assert main(["replay", str(bundle), "--iteration", "13", "--out", str(tmp_path / "replays"), "--json"]) == ExitCode.OK
    verdict = _json_verdict(capsys.readouterr().out)
    assert verdict["reproduced"]
    assert verdict["original_faults"] and set(verdict["original_faults"]) <= set(verdict["replayed_faults"])
    assert any("Map error" in t for t in verdict["original_faults"].values())
    # control: an iteration without a fault has no signature to reproduce
    assert main(["replay", str(bundle), "--iteration", "12", "--out", str(tmp_path / "replays"), "--json"]) == ExitCode.OK
    control = _json_verdict(capsys.readouterr().out)
    assert control["reproduced"] is False and control["clean_both"]


def test_redacted_bundle_cannot_replay(engine_runs, tmp_path, capsys):
    run = engine_runs("bundle-e2e", PLAN, iterations=16)
    bundle = tmp_path / "red.tar.gz"
    assert main(["bundle", str(run), "--redact-prompts", "-o", str(bundle)]) == ExitCode.OK
    assert main(["replay", str(bundle)]) == ExitCode.BAD_INPUT
    assert "--redact-prompts" in capsys.readouterr().err
