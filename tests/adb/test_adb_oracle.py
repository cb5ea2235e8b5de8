"""The wrong-answer oracle on a phone: `soak run --target adb:SERIAL --reference REF`, with the reference
made on the host (the issue's "for a phone run, the reference is made on the host").  The reference file
stays on the host; each checked turn's payload travels to soak-runner on the device, which feeds it
through the engine's forward and sends back only the turn's summary."""

from __future__ import annotations

import json

from fakedevice.runs import events

TEST = ["--engine", "test", "--seed", "3", "--max-new-tokens", "16", "--iterations", "14"]
PLAN = [{"kind": "logits_noise", "at": [5], "sigma": 4, "step": 3},
        {"kind": "logits_nonfinite", "at": [9], "step": 2},
        {"kind": "logits_noise", "at": [11], "sigma": 0.01}]
TIMES = ("prefill_us", "decode_us", "ts", "t", "wall_us", "engine_us", "run_id", "seq")  # not measures


def _measures(run) -> dict[int, dict]:
    return {e["i"]: {k: v for k, v in e.items() if k not in TIMES} for e in events(run, {"oracle_turn"})}


def test_a_phone_run_is_checked_against_a_host_reference(soak, phone, tmp_path):
    out = tmp_path / "logs"
    made = soak("reference", *TEST, "--out", str(out), "--run-id", "ref", "--quiet")
    assert made.returncode == 0, made.stderr
    assert events(out / "ref", {"worker_start"})[0]["runner"] == "python"     # made on the host
    plan = soak.plan("logits", PLAN)
    res = soak("run", "--target", f"adb:{phone.serial}", *TEST, "--reference", str(out / "ref"),
               "--fault-plan", plan, "--out", str(out), "--run-id", "phone", "--quiet")
    assert res.returncode == 0, res.stderr
    run = out / "phone"
    assert events(run, {"worker_start"})[0]["runner"] == "native"
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["host"]["kind"] == "adb" and manifest["oracle"]["mode"] == "check"

    turns = _measures(run)
    assert sorted(turns) == list(range(14)) and sum(t["steps"] for t in turns.values()) > 60
    found = {(f["iteration"], f["kind"]): f for f in events(run, {"fault"})
             if f["kind"] in ("wrong_output", "nonfinite_logits")}
    assert set(found) == {(5, "wrong_output"), (9, "nonfinite_logits")}
    assert found[(5, "wrong_output")]["first_step"] == 3 and found[(9, "nonfinite_logits")]["first_step"] == 2
    clean = [t for i, t in turns.items() if i not in (5, 9, 11)]
    assert all(t["flips"] == 0 and t["abs_max"] < 1e-5 and not t["wrong"] for t in clean)
    assert 0 < turns[11]["abs_max"] < 1.0 and not turns[11]["wrong"]      # small noise: within what GPUs differ
    assert turns[9]["nonfinite_steps"] >= 1
    summary = json.loads((run / "summary.json").read_text())
    assert summary["oracle"] == {"mode": "check", "checked": 14, "wrong": 1, "nonfinite": 1}

    # the same turns checked by the Python worker on the host give the same numbers
    host = soak("run", *TEST, "--reference", str(out / "ref"), "--fault-plan", plan, "--out", str(out),
                "--run-id", "host", "--quiet")
    assert host.returncode == 0, host.stderr
    on_host = _measures(out / "host")
    assert on_host.keys() == turns.keys()
    for i, t in turns.items():
        assert on_host[i] == t, {k: (v, on_host[i].get(k)) for k, v in t.items() if on_host[i].get(k) != v}


def test_a_reference_made_on_the_phone_is_the_hosts(soak, phone, tmp_path):
    """soak-runner's `reference` (made on the device, as a phone can be its own oracle) writes the same
    reference, line for line, as the Python worker on the host: the same ids, top-k and float32 values."""
    out = tmp_path / "logs"
    for where, run_id in ((["--target", f"adb:{phone.serial}"], "phone"), ([], "host")):
        res = soak("reference", *where, *TEST, "--out", str(out), "--run-id", run_id, "--quiet")
        assert res.returncode == 0, res.stderr
    phone_ref = (out / "phone" / "reference.jsonl").read_text().splitlines()
    host_ref = (out / "host" / "reference.jsonl").read_text().splitlines()
    assert len(host_ref) == 14 + 2 and json.loads(host_ref[-1]) == {"done": True, "turns": 14,
                                                                  "steps": json.loads(host_ref[-1])["steps"]}
    assert phone_ref == host_ref
    assert events(out / "phone", {"worker_start"})[0]["runner"] == "native"
