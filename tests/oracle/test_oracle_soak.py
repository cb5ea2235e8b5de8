"""The oracle end to end through `soak reference` and `soak run --reference` (test engine, pip MNN)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from soak.run_folder import read_events

REPO = Path(__file__).resolve().parents[2]


def soak(tmp_path, *args, check=True):
    proc = subprocess.run([sys.executable, "-m", "soak", *args, "--out", str(tmp_path), "--quiet"],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)
    if check and proc.returncode != 0:
        raise AssertionError(f"soak {' '.join(args)} -> {proc.returncode}\n{proc.stderr[-3000:]}")
    return proc


def oracle_turns(run: Path) -> list[dict]:
    return list(read_events(run, kinds={"oracle_turn"}))


def faults(run: Path, kinds=("wrong_output", "nonfinite_logits")) -> list[dict]:
    return [e for e in read_events(run, kinds={"fault"}) if e["kind"] in kinds]


TEST = ["--engine", "test", "--seed", "3", "--max-new-tokens", "24"]


@pytest.fixture(scope="module")
def test_reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    soak(tmp, "reference", *TEST, "--iterations", "30", "--run-id", "ref")
    return tmp / "ref"


def test_a_clean_run_agrees_with_its_reference_on_every_step(test_reference, tmp_path):
    soak(tmp_path, "run", *TEST, "--iterations", "30", "--run-id", "cand", "--reference", str(test_reference))
    turns = oracle_turns(tmp_path / "cand")
    assert len(turns) == 30 and sum(t["steps"] for t in turns) > 200
    assert all(t["flips"] == 0 and t["abs_max"] < 1e-5 and not t["wrong"] for t in turns)
    assert faults(tmp_path / "cand") == []
    summary = json.loads((tmp_path / "cand" / "summary.json").read_text())
    assert summary["oracle"] == {"mode": "check", "checked": 30, "wrong": 0, "nonfinite": 0}
    manifest = json.loads((tmp_path / "cand" / "manifest.json").read_text())
    assert manifest["oracle"]["reference"].endswith("reference.jsonl")


def test_injected_logit_faults_are_found_at_their_iteration_and_step(test_reference, tmp_path):
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([{"kind": "logits_noise", "at": [5], "sigma": 4, "step": 3},
                                {"kind": "logits_nonfinite", "at": [9], "step": 2},
                                {"kind": "logits_stale", "at": [11], "step": 4, "steps": 1},
                                {"kind": "logits_noise", "at": [13], "sigma": 0.01}]))
    soak(tmp_path, "run", *TEST, "--iterations", "30", "--run-id", "bad", "--reference", str(test_reference),
         "--fault-plan", str(plan))
    found = {(f["iteration"], f["kind"]): f for f in faults(tmp_path / "bad")}
    assert set(found) == {(5, "wrong_output"), (9, "nonfinite_logits"), (11, "wrong_output")}
    assert found[(5, "wrong_output")]["first_step"] == 3
    assert found[(9, "nonfinite_logits")]["first_step"] == 2
    assert found[(11, "wrong_output")]["first_step"] == 4      # step 4 handed back step 3's logits
    by_i = {t["i"]: t for t in oracle_turns(tmp_path / "bad")}
    assert 0 < by_i[13]["abs_max"] < 1.0 and not by_i[13]["wrong"]   # small noise: within what a GPU may differ


def test_one_conversation_in_n_is_checked(test_reference, tmp_path):
    soak(tmp_path, "run", *TEST, "--iterations", "30", "--run-id", "every", "--reference", str(test_reference),
         "--oracle-every", "3")
    iterations = {e["i"]: e["conversation"] for e in read_events(tmp_path / "every", kinds={"iteration"})}
    checked = {t["i"] for t in oracle_turns(tmp_path / "every")}
    assert checked == {i for i, conv in iterations.items() if conv % 3 == 0} and checked


def test_a_reference_for_another_workload_or_model_is_refused(test_reference, tmp_path):
    proc = soak(tmp_path, "run", *TEST[:2], "--seed", "4", "--max-new-tokens", "24", "--iterations", "3",
                "--reference", str(test_reference), check=False)
    assert proc.returncode == 3 and "seed" in proc.stderr and "soak reference" in proc.stderr
    assert not any(tmp_path.iterdir()) or all(not (p / "events.jsonl").exists() for p in tmp_path.iterdir())
    proc = soak(tmp_path, "run", *TEST, "--iterations", "3", "--reference", str(tmp_path / "nope"), check=False)
    assert proc.returncode == 3 and "cannot read the reference" in proc.stderr
    proc = soak(tmp_path, "run", *TEST, "--iterations", "3", "--reference", str(test_reference),
                "--oracle-every", "0", check=False)
    assert proc.returncode == 3 and "--oracle-every" in proc.stderr


def test_an_engine_without_forward_says_the_oracle_is_unavailable(test_reference, tmp_path):
    names = ["set_config", "load", "respond", "reset", "reinit", "status", "perf", "destroy"]
    src = tmp_path / "old.c"
    src.write_text("#include <stdint.h>\nstatic int dummy;\n"
                   "uint32_t soak_engine_abi_version(void){return 1;}\n"
                   "const char *soak_engine_name(void){return \"old\";}\n"
                   "void *soak_engine_create(const char *c, char *e, unsigned long n){return &dummy;}\n"
                   + "".join(f"int soak_engine_{n}(void){{return 0;}}\n" for n in names))
    lib = tmp_path / "libold.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    proc = soak(tmp_path, "reference", "--engine", "lib", "--engine-lib", str(lib), "--iterations", "2",
                "--model", str(REPO / "soak" / "models" / "qwen2-tiny"), check=False)
    assert proc.returncode == 5 and "oracle" in proc.stderr and "ABI v1" in proc.stderr


def test_pip_mnn_against_a_reference_from_itself_agrees_exactly(tmp_path):
    common = ["--engine", "mnn-pip", "--seed", "1", "--max-new-tokens", "16"]
    soak(tmp_path, "reference", *common, "--iterations", "12", "--run-id", "ref")
    soak(tmp_path, "run", *common, "--precision", "high", "--iterations", "12", "--run-id", "same",
         "--reference", str(tmp_path / "ref"))
    turns = oracle_turns(tmp_path / "same")
    assert len(turns) == 12 and sum(t["steps"] for t in turns) > 50
    manifest = json.loads((tmp_path / "same" / "manifest.json").read_text())
    assert manifest["oracle"]["thresholds"]["class"] == "self"
    # the same logits: every argmax agrees, and the log-probabilities to the float32 the reference keeps
    assert all(t["flips"] == 0 and t["rank_max"] == 0 and t["abs_max"] < 1e-5 and t["kl_max"] < 1e-9
               for t in turns), turns[:2]
    assert faults(tmp_path / "same") == []


def test_after_a_crash_and_recovery_the_next_conversation_starts_clean(test_reference, tmp_path):
    """The recovery ladder's probe turn must not stay in the engine's history: a teacher-forced
    conversation after it needs exactly the reference's history (found on PoCL: a crash, a restart,
    and the next conversation judged wrong)."""
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps([{"kind": "crash", "at": [6], "signal": "segv"},
                                {"kind": "sticky_error", "at": [14]}]))
    soak(tmp_path, "run", *TEST, "--iterations", "30", "--run-id", "crashy", "--reference", str(test_reference),
         "--fault-plan", str(plan))
    run = tmp_path / "crashy"
    assert [e for e in read_events(run, kinds={"recovery"})], "the faults were recovered from"
    assert faults(run) == []
    turns = oracle_turns(run)
    assert len(turns) >= 25 and all(t["abs_max"] < 1e-5 for t in turns)


def test_a_reference_from_another_build_of_the_test_engine_is_refused(test_reference, tmp_path):
    """The test engine's model is its library: a reference made by another build would judge every turn
    wrong, so its key differs (the model_sha256 covers the library's hash)."""
    ref = json.loads((test_reference / "reference.jsonl").read_text().splitlines()[0])
    stale = tmp_path / "stale.jsonl"
    head = dict(ref, key=dict(ref["key"], model_sha256="0" * 64))
    stale.write_text(json.dumps(head) + "\n" + "\n".join((test_reference / "reference.jsonl").read_text()
                                                          .splitlines()[1:]) + "\n")
    proc = soak(tmp_path, "run", *TEST, "--iterations", "3", "--reference", str(stale), check=False)
    assert proc.returncode == 3 and "model_sha256" in proc.stderr
    from soak.loop.oracle_turns import run_key
    from soak.loop.config import RunConfig

    cfg = RunConfig(engine="test")
    a = run_key({"libraries": {"libsoak_test_engine.so": "aa"}}, cfg)
    b = run_key({"libraries": {"libsoak_test_engine.so": "bb"}}, cfg)
    assert a["model_sha256"] != b["model_sha256"]
