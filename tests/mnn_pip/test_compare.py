"""soak compare on pip MNN (two CPU runs), its bad inputs, and its agreement arithmetic."""

from __future__ import annotations

import json

import pytest

from soak.commands.compare import agreement, first_divergence, stats


def test_compare_two_cpu_runs(tmp_path, tiny_model, cli):
    proc = cli("compare", "--backends", "cpu,cpu", "--thread-nums", "1,2", "--engine", "mnn-pip",
               "--model", tiny_model, "--iterations", 12, "--seed", 3, "--out", tmp_path, "--run-id", "cmp")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    folder = tmp_path / "cmp"
    result = json.loads((folder / "compare.json").read_text())
    assert result["reference"] == "cpu-t1"
    assert [r["label"] for r in result["runs"]] == ["cpu-t1", "cpu-t2"]
    assert len(json.loads((folder / "workload.json").read_text())) == 12
    for r in result["runs"]:
        assert (folder / r["label"] / "events.jsonl").exists()
        assert r["iterations"] == 12 and r["backend_actual"] == "cpu"
        assert r["prefill_tps"]["n"] == 12 and r["prefill_tps"]["mean"] > 0
        assert r["decode_tps"]["n"] > 0 and r["decode_tps"]["stdev"] >= 0
        assert r["load_s"]["n"] == 1 and r["load_s"]["mean"] > 0
        ag = r["agreement"]
        assert ag["iterations_compared"] == 12 and ag["prompt_mismatches"] == 0
        assert 0.0 <= ag["agreement_rate"] <= 1.0
    ref = result["runs"][0]
    assert ref["agreement"]["identical_rate"] == 1.0 and ref["vs_reference"]["decode_tps"] == 1.0
    assert result["runs"][1]["vs_reference"]["decode_tps"] > 0
    assert "prefill tok/s" in proc.stderr and "cpu-t2" in proc.stderr      # the table (people text: stderr)


def test_same_settings_twice_agree_fully(tmp_path, tiny_model, cli):
    """Greedy decoding on the same CPU settings is deterministic: every output matches."""
    proc = cli("compare", "--backends", "cpu,cpu", "--thread-nums", "1,1", "--engine", "mnn-pip",
               "--model", tiny_model, "--iterations", 10, "--seed", 5, "--out", tmp_path, "--run-id", "same",
               "--quiet")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "same" / "compare.json").read_text())
    other = result["runs"][1]
    assert other["label"] == "1-cpu-t1"
    assert other["agreement"]["identical_rate"] == 1.0
    assert other["agreement"]["first_divergence"] is None


@pytest.mark.parametrize("args, needle", [
    (["--backends", "cpu,opencl"], "--engine mnn"),
    (["--backends", "cpu"], "at least two"),
    (["--backends", "cpu,cpu", "--thread-nums", "1,2,3"], "one --thread-nums item per backend"),
    (["--backends", "cpu,gpu"], "unknown backend"),
    (["--backends", "cpu,cpu", "--backend", "cpu"], "--backends LIST"),
])
def test_compare_bad_input_is_exit_3_before_running(tmp_path, tiny_model, cli, args, needle):
    proc = cli("compare", *args, "--engine", "mnn-pip", "--model", tiny_model, "--iterations", 2,
               "--out", tmp_path, "--run-id", "bad")
    assert proc.returncode == 3, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "bad" / "compare.json").exists()
    assert not list(tmp_path.glob("bad/*/events.jsonl"))


def test_first_divergence():
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 9, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2
    assert first_divergence([], [5]) == 0


def _it(i, out=None, tokens=None, prompt="p"):
    ev = {"i": i, "prompt": prompt, "max_new_tokens": 8, "output": out or "", "conversation": i, "turn": 0}
    if tokens is not None:
        ev["output_tokens"] = tokens
    return ev


def test_agreement_on_tokens_and_on_text():
    ref = {0: _it(0, tokens=[1, 2, 3, 4]), 1: _it(1, tokens=[5, 6]), 2: _it(2, tokens=[7])}
    other = {0: _it(0, tokens=[1, 2, 3, 4]), 1: _it(1, tokens=[5, 9]), 2: _it(2, tokens=[7])}
    ag = agreement(ref, other)
    assert ag["unit"] == "tokens"
    assert ag["identical_iterations"] == 2 and ag["iterations_compared"] == 3
    assert ag["first_divergence"] == {"iteration": 1, "index": 1, "conversation": 1, "turn": 0}
    assert ag["agreement_rate"] == pytest.approx(6 / 7, abs=1e-4)

    text = agreement({0: _it(0, "hello")}, {0: _it(0, "help!")})
    assert text["unit"] == "chars" and text["first_divergence"]["index"] == 3

    mismatch = agreement({0: _it(0, "a", prompt="x")}, {0: _it(0, "a", prompt="y")})
    assert mismatch["prompt_mismatches"] == 1 and mismatch["iterations_compared"] == 0


def test_stats():
    s = stats([1.0, 2.0, 3.0, None])
    assert s == {"n": 3, "mean": 2.0, "stdev": 1.0, "min": 1.0, "max": 3.0}
    assert stats([])["mean"] is None
    assert stats([4.0])["stdev"] == 0.0
