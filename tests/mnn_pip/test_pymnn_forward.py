"""The logits oracle's forward on pip MNN (`MNN.llm` forward) with the committed tiny model.

Greedy decode through forward() must be MNN's own generate: the same tokens,
turn after turn on the live KV cache, so a reference made by pip MNN agrees
with itself exactly when the oracle teacher-forces it.
"""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from soak.engine.pymnn import PyMnnEngine, PyMnnError
from soak.errors import BadInput

PROMPTS = [b"Hello, how are you?", "中文 and NUL\x00 🙂".encode(), b"third turn: the KV cache carries over", b""]
MAX_NEW = 24


@pytest.fixture
def greedy_engine(tiny_model, tmp_path):
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        e = PyMnnEngine(str(tiny_model))
        e.set_config(json.dumps({"thread_num": 1, "sampler_type": "greedy"}))
        assert e.load()
        yield e
        e.close()
    finally:
        os.chdir(cwd)


def greedy_turn(engine, prompt: bytes, max_new: int = MAX_NEW, keep=None):
    """Greedy decode through forward, fed as MNN's decode loop feeds: every generated
    token but a stop token goes through the model. Returns (ids, logits rows)."""
    logits = engine.forward(engine.tokenize(prompt), True)
    out, rows = [], []
    while True:
        row = np.frombuffer(logits, dtype=np.float32)
        rows.append(row.copy() if keep is None else keep(row))
        token = int(row.argmax())
        out.append(token)
        if engine.is_stop(token):
            break
        logits = engine.forward([token], False)
        if len(out) == max_new:
            break
    return out, rows


def test_forward_gives_finite_logits_of_the_vocabulary(greedy_engine):
    e = greedy_engine
    assert e.oracle_available and e.vocab == 0
    ids = e.tokenize(PROMPTS[0])
    assert ids == e.encode(PROMPTS[0])
    view = e.forward(ids, True)
    assert isinstance(view, memoryview) and view.format == "f" and view.itemsize == 4
    assert len(view) == e.vocab == 2048          # the tiny model's vocabulary
    row = np.frombuffer(view, dtype=np.float32)
    assert np.isfinite(row).all() and row.std() > 0
    perf = e.perf()
    assert perf["prompt_tokens"] == len(ids) and perf["prefill_us"] > 0 and perf["generated_tokens"] == 0
    step = np.frombuffer(e.forward([int(row.argmax())], False), dtype=np.float32)
    assert np.isfinite(step).all() and not np.array_equal(step, row)
    assert e.perf()["generated_tokens"] == 1 and e.perf()["decode_us"] > 0
    # MNN's own stop token (the tiny model's <|im_end|>)
    stops = [t for t in range(e.vocab) if e.is_stop(t)]
    assert stops and all(e.token_bytes(t) == b"" for t in stops)


def test_greedy_forward_is_mnns_own_generate_turn_after_turn(greedy_engine):
    e = greedy_engine
    free = []
    for prompt in PROMPTS:
        e.respond(prompt, MAX_NEW)
        free.append((list(e.last_tokens), e.context()["all_seq_len"]))
    e.reset()
    for prompt, (tokens, seq_len) in zip(PROMPTS, free):
        out, rows = greedy_turn(e, prompt)
        assert out == tokens, prompt
        assert e.context()["all_seq_len"] == seq_len      # the KV cache as respond left it
        assert e.perf()["generated_tokens"] == len(tokens) - (1 if e.is_stop(tokens[-1]) else 0)


def test_teacher_forced_against_its_own_reference_agrees_exactly(greedy_engine, tiny_model, tmp_path):
    e = greedy_engine
    reference = [greedy_turn(e, p) for p in PROMPTS]
    other = PyMnnEngine(str(tiny_model))
    other.set_config(json.dumps({"thread_num": 1, "sampler_type": "greedy"}))
    other.load()
    try:
        for prompt, (ids, rows) in zip(PROMPTS, reference):
            got = np.frombuffer(other.forward(other.tokenize(prompt), True), dtype=np.float32)
            for step, token in enumerate(ids):
                assert np.array_equal(got, rows[step]), (prompt, step)
                if other.is_stop(token):
                    break
                got = np.frombuffer(other.forward([token], False), dtype=np.float32)
    finally:
        other.close()


def test_bad_ids_and_sticky_state_are_refused_not_crashed(greedy_engine):
    e = greedy_engine
    for bad in ([], [-1], ["5"], [1.0], [True]):
        with pytest.raises(BadInput):
            e.forward(bad, True)
    e.forward(e.tokenize(b"x"), True)
    with pytest.raises(BadInput, match="2048"):
        e.forward([e.vocab], False)
    e._c.set_context({"status": 4})                  # INTERNAL_ERROR, as a failed forward leaves it
    with pytest.raises(PyMnnError, match="sticky"):
        e.forward([1], False)                        # MNN refuses; its null result is never touched
    with pytest.raises(PyMnnError, match="sticky"):
        e.forward([1], True)                         # refused before generate_init could clear it
    e.reinit()
    assert math.isfinite(e.forward([1], True)[0])


def test_the_oracle_teacher_on_pip_mnn_agrees_with_itself(greedy_engine, tiny_model):
    from soak.oracle import native, teacher

    lib = native.load()
    refs = [teacher.reference_turn(greedy_engine, lib, greedy_engine.tokenize(p), MAX_NEW, 8) for p in PROMPTS]
    other = PyMnnEngine(str(tiny_model))
    other.set_config(json.dumps({"thread_num": 1, "sampler_type": "greedy"}))
    other.load()
    try:
        for ref in refs:
            summary = teacher.check_turn(other, lib, ref)
            assert summary["steps"] == len(ref.steps) and summary["flips"] == 0, summary
            assert summary["nonfinite_steps"] == 0 and summary["kl_max"] < 1e-9 and summary["abs_max"] < 1e-4
    finally:
        other.close()
