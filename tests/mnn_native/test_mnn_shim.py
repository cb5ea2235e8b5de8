"""The MNN shim (native/mnn_shim) driven through soak's ctypes loader on a real MNN.

Needs SOAK_MNN_BUILD (a hand-built MNN with LLM, OpenCL, separate backend
library) and the committed tiny model; skipped without SOAK_MNN_BUILD.
Every engine runs in its own process (tests/mnn_native/_drive.py), so a
crash is a failed test with MNN's last lines, not a dead pytest.
"""

from __future__ import annotations

import json
import os
import random

import pytest

pytestmark = [
    pytest.mark.mnn_native,
    pytest.mark.skipif(not os.environ.get("SOAK_MNN_BUILD"),
                       reason="needs a hand-built MNN: set SOAK_MNN_BUILD (and SOAK_MNN_SOURCE)"),
]

GREEDY = json.dumps({"sampler_type": "greedy", "backend_type": "cpu", "thread_num": 2, "reuse_kv": False})

# soak_engine.h
OK, ERR_INVALID_ARG, ERR_STATE = 0, -1, -2
RUNNING, NORMAL_FINISHED, MAX_TOKENS, USER_CANCEL, INTERNAL_ERROR, TIMEOUT = 0, 1, 2, 3, 4, 5


def load_steps(model, config=GREEDY):
    return [{"op": "create", "config": str(model)}, {"op": "set_config", "json": config}, {"op": "load"}]


def explain(res) -> str:
    return f"exit {res.returncode}; steps {json.dumps(res.steps)[:2000]}; log tail:\n{res.log[-3000:]}"


def test_abi_name_and_bad_inputs(shim, tiny_model, run_steps, enc, tmp_path, mnn_build):
    bad_json = tmp_path / "bad" / "config.json"
    bad_json.parent.mkdir()
    bad_json.write_text('{"llm_model": "llm.mnn",')
    res = run_steps(shim, [
        {"op": "create", "config": str(tmp_path / "missing" / "config.json")},
        {"op": "create", "config": str(bad_json)},
        {"op": "create", "config": str(tiny_model)},
        {"op": "respond", "prompt_b64": enc("before load"), "max": 4},
        {"op": "reinit"},
        {"op": "set_config", "json": "{not json"},
        {"op": "set_config", "json": "[1, 2]"},
        {"op": "set_config", "json": GREEDY},
        {"op": "load"},
    ])
    assert res.returncode == 0, explain(res)
    missing, corrupt, good, early, early_reinit, bad_cfg, not_obj, cfg, load = res.steps
    assert not missing["ok"] and "cannot open model config" in missing["error"]
    assert not corrupt["ok"] and "not a JSON object" in corrupt["error"]
    assert good["ok"] and good["name"] == f"soak-mnn-shim 1.0 (MNN {mnn_build.version})"
    assert early["rc"] == ERR_STATE and early["status"] == -1
    assert early_reinit["rc"] == ERR_STATE
    assert bad_cfg["rc"] == ERR_INVALID_ARG and not_obj["rc"] == ERR_INVALID_ARG
    assert cfg["rc"] == OK
    assert load["rc"] == OK and load["status"] == RUNNING
    assert load["perf"]["load_us"] > 0


def test_load_failure_is_reported_not_fatal(shim, tmp_path, run_steps):
    # A config whose model files are missing: MNN says which, load returns an error.
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"llm_model": "nope.mnn", "llm_weight": "nope.mnn.weight"}))
    res = run_steps(shim, [{"op": "create", "config": str(cfg)}, {"op": "load"}])
    assert res.returncode == 0, explain(res)
    assert res.steps[1]["rc"] == -3 and res.steps[1]["status"] == -1
    assert "not found" in res.step_log(1)


def test_cpu_soak_many_prompts(shim, tiny_model, run_steps, enc):
    rng = random.Random(7)
    alphabet = "abcdefghij klmnopqrstuvwxyz \"'\\\n\t{}<>|é中文🙂"
    prompts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 60))) for _ in range(40)]
    prompts[3] = "nul\x00inside\x00prompt"
    steps = load_steps(tiny_model) + [{"op": "respond", "prompt_b64": enc(p), "max": rng.randint(1, 24)}
                                      for p in prompts]
    res = run_steps(shim, steps)
    assert res.returncode == 0, explain(res)
    turns = res.steps[3:]
    assert len(turns) == len(prompts)
    for step, spec in zip(turns, steps[3:]):
        assert step["rc"] == OK, explain(res)
        assert step["status"] in (NORMAL_FINISHED, MAX_TOKENS), step
        perf = step["perf"]
        assert perf["prompt_tokens"] > 0
        # gen_seq_len counts a sampled stop token too
        assert 1 <= perf["generated_tokens"] <= spec["max"] + 1, (perf, spec)
        assert perf["prefill_us"] > 0
        if step["status"] == MAX_TOKENS:
            assert perf["generated_tokens"] == spec["max"]
            assert perf["decode_us"] > 0
    # The NUL prompt reached the tokenizer whole: more tokens than its first part.
    nul = turns[3]["perf"]["prompt_tokens"]
    first = run_steps(shim, load_steps(tiny_model) + [{"op": "respond", "prompt_b64": enc("nul"), "max": 1}])
    assert nul > first.steps[3]["perf"]["prompt_tokens"]
    # No per-turn leak: RSS after the last turn within 32 MiB of after turn 10.
    growth = turns[-1]["rss"] - turns[9]["rss"]
    assert growth < 32 << 20, f"RSS grew {growth} bytes over 30 turns"


def test_greedy_is_repeatable_and_reset_clears_history(shim, tiny_model, run_steps, enc):
    cfg = json.dumps({"sampler_type": "greedy", "backend_type": "cpu", "thread_num": 2, "reuse_kv": True})
    a, b = enc("tell me about rivers"), enc("and mountains?")
    res = run_steps(shim, load_steps(tiny_model, cfg) + [
        {"op": "respond", "prompt_b64": a, "max": 12},   # 3
        {"op": "respond", "prompt_b64": b, "max": 12},   # 4: sees turn 3
        {"op": "reset"},                                 # 5
        {"op": "respond", "prompt_b64": a, "max": 12},   # 6: fresh again
        {"op": "respond", "prompt_b64": b, "max": 12},   # 7
    ])
    assert res.returncode == 0, explain(res)
    assert all(s.get("rc", 0) == OK for s in res.steps[1:]), explain(res)
    assert res.output(3) == res.output(6)
    assert res.output(4) == res.output(7)
    assert len(res.output(3)) > 0


def test_stop_from_the_callback_cancels_and_is_sticky(shim, tiny_model, run_steps, enc):
    res = run_steps(shim, load_steps(tiny_model) + [
        {"op": "respond", "prompt_b64": enc("count to a hundred"), "max": 40, "stop_after": 2},  # 3
        {"op": "respond", "prompt_b64": enc("again"), "max": 4},                                 # 4: refused
        {"op": "reinit"},                                                                        # 5
        {"op": "respond", "prompt_b64": enc("again"), "max": 4},                                 # 6
    ])
    assert res.returncode == 0, explain(res)
    cancelled, refused, reinit, after = res.steps[3:]
    assert cancelled["rc"] == OK and cancelled["status"] == USER_CANCEL
    assert cancelled["chunks"] == 2
    assert cancelled["perf"]["generated_tokens"] < 40
    assert refused["rc"] == ERR_STATE and refused["status"] == USER_CANCEL
    assert "LLM in error state. Status: 3" in res.step_log(4)
    assert refused["perf"]["generated_tokens"] == 0
    assert reinit["rc"] == OK and reinit["status"] == RUNNING
    assert after["rc"] == OK and after["status"] in (NORMAL_FINISHED, MAX_TOKENS)


def test_sticky_internal_error_and_timeout_recover_through_reinit(shim, tiny_model, run_steps, enc):
    long_prompt = enc(" ".join(f"word{i}" for i in range(400)))
    res = run_steps(shim, load_steps(tiny_model) + [
        # An empty prompt with the chat template off tokenizes to nothing: MNN's INTERNAL_ERROR.
        {"op": "set_config", "json": '{"use_template": false}'},            # 3
        {"op": "respond", "prompt_b64": enc(""), "max": 4},                 # 4
        {"op": "respond", "prompt_b64": enc("hello"), "max": 4},            # 5: refused
        {"op": "reset"},                                                    # 6: does not clear it
        {"op": "respond", "prompt_b64": enc("hello"), "max": 4},            # 7: still refused
        {"op": "reinit"},                                                   # 8
        {"op": "respond", "prompt_b64": enc("hello"), "max": 4},            # 9
        # timeout_ms 1: prefill + decode of a 400-word prompt take longer; MNN sets TIMEOUT.
        {"op": "set_config", "json": '{"timeout_ms": 1}'},                  # 10
        {"op": "respond", "prompt_b64": long_prompt, "max": 64},            # 11
        {"op": "respond", "prompt_b64": enc("hello"), "max": 4},            # 12: refused
        {"op": "set_config", "json": '{"timeout_ms": -1}'},                 # 13
        {"op": "reinit"},                                                   # 14
        {"op": "respond", "prompt_b64": enc("hello"), "max": 4},            # 15
    ])
    assert res.returncode == 0, explain(res)
    s = res.steps
    assert s[4]["status"] == INTERNAL_ERROR, explain(res)
    assert "empty input_ids" in res.step_log(4)
    assert s[5]["rc"] == ERR_STATE and s[5]["status"] == INTERNAL_ERROR
    assert "LLM in error state. Status: 4" in res.step_log(5)
    assert s[6]["rc"] == OK and s[7]["rc"] == ERR_STATE and s[7]["status"] == INTERNAL_ERROR
    assert s[8]["rc"] == OK and s[8]["status"] == RUNNING
    assert s[9]["rc"] == OK and s[9]["status"] in (NORMAL_FINISHED, MAX_TOKENS)
    assert s[11]["status"] == TIMEOUT, explain(res)
    assert s[12]["rc"] == ERR_STATE and "Status: 5" in res.step_log(12)
    assert s[14]["rc"] == OK
    assert s[15]["rc"] == OK and s[15]["status"] in (NORMAL_FINISHED, MAX_TOKENS)


def test_stream_outlives_respond(shim, tiny_model, run_steps, enc):
    """MNN keeps LlmContext::os after response(); generate() writes to it.

    Regression: a shim that gives response() a stream on its stack leaves MNN
    a dangling pointer, and the generate() below then writes through it.  With
    max 3 the responses end MAX_TOKENS_FINISHED, so generate() goes on decoding.
    """
    steps = load_steps(tiny_model, json.dumps({"sampler_type": "greedy", "backend_type": "cpu",
                                                "thread_num": 2, "reuse_kv": True}))
    steps += [
        {"op": "respond", "prompt_b64": enc("first"), "max": 3},    # 3
        {"op": "respond", "prompt_b64": enc("second"), "max": 3},   # 4
        {"op": "generate", "max": 6},                               # 5
        {"op": "generate", "max": 6},                               # 6
        {"op": "respond", "prompt_b64": enc("third"), "max": 3},    # 7
        {"op": "destroy"},                                          # 8
    ]
    res = run_steps(shim, steps)
    assert res.returncode == 0, explain(res)
    assert [s.get("rc") for s in res.steps[3:8]] == [OK] * 5, explain(res)
    assert res.steps[4]["status"] == MAX_TOKENS, explain(res)
    # generate() went on decoding, and its text came back through the stream
    # MNN saved during respond 4, now bound to this call's callback.
    assert res.steps[5]["perf"]["generated_tokens"] > 3
    assert len(res.output(5)) > 0
    assert res.steps[7]["status"] in (NORMAL_FINISHED, MAX_TOKENS)
