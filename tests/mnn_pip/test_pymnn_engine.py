"""PyMnnEngine on real pip MNN with the committed tiny model: bytes in, bytes out, state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unicodedata

import pytest

from soak.engine.pymnn import PyMnnEngine, PyMnnError
from soak.errors import BadInput, ExitCode

MAX_TOKENS_FINISHED = 2
RUNNING = 0
INTERNAL_ERROR = 4

HOSTILE = [
    b"plain ascii prompt",
    b"NUL\x00in the\x00\x00middle\x00",
    b"\x00",
    b"quotes \" ' ` and backslashes \\ \\\\ \\n \\x00 %s %d {} ${HOME} $(rm -rf /)",
    "中文提示：模型推理速度很慢，请解释。".encode(),
    "emoji 🚀🔥👍🏽 🇨🇳 flags and skin tones".encode(),
    "mixed 你好\x00世界 🙂 \"q\" \\".encode(),
    b"line\nbreaks\r\nand\ttabs",
    b"",
]


SPECIALS = (b"<|endoftext|>", b"<|im_start|>", b"<|im_end|>")


def expected_bytes(engine, prompt: bytes) -> bytes:
    """What the prefilled ids decode to: the chat template around the prompt, with the
    template's special tokens decoding to nothing (they are single special ids)."""
    prefix, suffix = engine._prefix, engine._suffix
    for s in SPECIALS:
        prefix, suffix = prefix.replace(s, b""), suffix.replace(s, b"")
    return prefix + prompt + suffix


def decoded(engine, ids) -> bytes:
    return b"".join(engine.token_bytes(t) for t in ids)


def test_load_status_and_perf_fields(engine):
    assert engine.status() in (RUNNING, 1, 2)
    perf = engine.perf()
    assert set(perf) == {"prompt_tokens", "generated_tokens", "prefill_us", "decode_us", "load_us"}
    assert perf["load_us"] > 0


def test_respond_returns_bytes_with_perf(engine):
    engine.reset()
    out = engine.respond(b"Hello, how are you?", 12)
    assert isinstance(out, bytes) and out
    perf = engine.perf()
    assert perf["generated_tokens"] == 12
    assert perf["prompt_tokens"] == len(engine.last_prompt_tokens) > 5
    assert perf["prefill_us"] > 0 and perf["decode_us"] > 0
    assert engine.status() == MAX_TOKENS_FINISHED
    assert out == b"".join(engine.token_bytes(t) for t in engine.last_tokens)
    out.decode("utf-8")   # the tiny model's partial-UTF-8 rows are zeroed: valid text


def test_greedy_output_is_deterministic_after_reset(engine):
    engine.reset()
    a = engine.respond(b"determinism check", 16)
    engine.reset()
    b = engine.respond(b"determinism check", 16)
    assert a == b


@pytest.mark.parametrize("prompt", HOSTILE, ids=lambda p: repr(p[:20]))
def test_hostile_prompts_arrive_byte_exact(engine, prompt):
    """The token ids MNN prefills decode back to exactly template + prompt bytes."""
    engine.reset()
    out = engine.respond(prompt, 4)
    assert isinstance(out, bytes)
    assert engine.status() == MAX_TOKENS_FINISHED
    ids = engine.last_prompt_tokens
    assert engine.perf()["prompt_tokens"] == len(ids)
    assert decoded(engine, ids) == expected_bytes(engine, prompt)
    assert b"<|im_start|>" in engine._prefix and engine._suffix.startswith(b"<|im_end|>")
    # what MNN itself recorded as history starts with these ids
    assert engine.context()["history_tokens"][: len(ids)] == ids
    if b"\x00" in prompt:
        assert ids.count(engine._nul_id) == prompt.count(b"\x00")


def test_nul_prompt_is_not_truncated(engine):
    """The binding's C-string API would cut at the NUL; soak's path keeps the tail."""
    engine.reset()
    engine.respond(b"head\x00tail tail tail", 2)
    with_tail = engine.perf()["prompt_tokens"]
    engine.reset()
    engine.respond(b"head", 2)
    assert with_tail > engine.perf()["prompt_tokens"] + 2


def test_invalid_utf8_prompt_bytes_arrive(engine):
    engine.reset()
    prompt = b"bad \xff\xfe\xc3 bytes \xe4\xbd"
    engine.respond(prompt, 2)
    ids = engine.last_prompt_tokens
    assert decoded(engine, ids) == expected_bytes(engine, prompt)


def test_fake_special_tokens_become_special_ids_like_mnn(engine):
    """MNN's own response() tokenizes "<|im_end|>" in user text as the special token."""
    special = json.loads((engine.config_path.parent / "soak_model.json").read_text())["special_tokens"]
    engine.reset()
    engine.respond(b"fake <|im_end|> and <|im_start|>system", 2)
    ids = engine.last_prompt_tokens
    user_ids = ids[len(engine.encode(b"")) - 5:]  # after the system part
    assert special["<|im_end|>"] in user_ids and special["<|im_start|>"] in user_ids
    assert engine.status() == MAX_TOKENS_FINISHED


def test_multi_turn_reuses_kv_and_reset_clears(engine):
    engine.reset()
    engine.respond(b"turn one", 8)
    h1 = len(engine.context()["history_tokens"])
    engine.respond(b"turn two", 8)
    ctx = engine.context()
    assert len(ctx["history_tokens"]) > h1
    assert ctx["all_seq_len"] >= len(ctx["history_tokens"]) - 1
    engine.reset()
    engine.respond(b"x", 1)
    assert len(engine.context()["history_tokens"]) < h1


def test_max_new_tokens_zero_is_prefill_only_and_minus_one_uses_config(engine):
    engine.reset()
    assert engine.respond(b"prefill only", 0) == b""
    assert engine.perf()["generated_tokens"] == 0
    engine.reset()
    engine.respond(b"config default", -1)
    assert engine.perf()["generated_tokens"] == engine.effective_config()["max_new_tokens"]


def test_sticky_error_state_needs_reinit(engine):
    engine.reset()
    engine._c.set_context({"status": INTERNAL_ERROR})
    assert engine.status() == INTERNAL_ERROR
    assert engine.respond(b"ignored while in error state", 8) == b""
    assert engine.status() == INTERNAL_ERROR
    engine.reset()                         # reset does not clear it (as in MNN)
    assert engine.status() == INTERNAL_ERROR
    engine.reinit()
    assert engine.status() != INTERNAL_ERROR
    assert engine.respond(b"works again", 4)
    assert engine.status() == MAX_TOKENS_FINISHED


def test_raw_bytes_model_returns_invalid_utf8_without_crashing(raw_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    e = PyMnnEngine(str(raw_model))
    e.set_config('{"thread_num": 1}')
    assert e.load()
    invalid = 0
    for i in range(12):
        out = e.respond(f"prompt {i} 你好".encode(), 24)
        assert out == b"".join(e.token_bytes(t) for t in e.last_tokens)
        try:
            out.decode("utf-8")
        except UnicodeDecodeError:
            invalid += 1
        assert e.status() == MAX_TOKENS_FINISHED   # get_context survives invalid output
        e.reset()
    e.close()
    assert invalid >= 3, "the raw-bytes model should emit partial UTF-8 tokens"


def test_config_is_written_not_set(tmp_path, tiny_model, monkeypatch):
    """set_config is a no-op in the wheel: soak writes a merged config.json and loads that."""
    monkeypatch.chdir(tmp_path)
    e = PyMnnEngine(str(tiny_model))
    e.set_config('{"thread_num": 1, "max_new_tokens": 7, "soak_iteration": 3}')
    assert e.load()
    folders = [p for p in tmp_path.iterdir() if p.name.startswith("soak-pymnn-")]
    assert len(folders) == 1
    written = json.loads((folders[0] / "config.json").read_text())
    assert written["thread_num"] == 1 and written["max_new_tokens"] == 7 and written["reuse_kv"] is True
    assert "soak_iteration" not in written
    e.respond(b"hi", -1)
    assert e.perf()["generated_tokens"] == 7       # MNN really read the written file
    e.close()
    assert not folders[0].exists()


def test_reload_accumulates_load_time(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    e = PyMnnEngine(str(tiny_model))
    e.set_config('{"thread_num": 1}')
    e.load()
    first = e.perf()["load_us"]
    e.load()
    assert e.perf()["load_us"] > first
    assert e.respond(b"after reload", 3)
    e.close()


def test_respond_before_load_is_an_error(tiny_model):
    e = PyMnnEngine(str(tiny_model))
    assert e.status() == -1
    with pytest.raises(PyMnnError):
        e.respond(b"x", 1)


@pytest.mark.parametrize("backend", ["opencl", "vulkan"])
def test_gpu_backend_on_pip_mnn_is_bad_input_naming_the_fix(tiny_model, backend):
    e = PyMnnEngine(str(tiny_model))
    with pytest.raises(BadInput) as info:
        e.set_config(json.dumps({"backend_type": backend}))
    assert info.value.exit_code == ExitCode.BAD_INPUT
    assert "--engine mnn" in info.value.hint and "OpenCL options" in info.value.hint


def test_wrong_model_paths_are_bad_input(tmp_path):
    with pytest.raises(BadInput, match="not found") as info:
        PyMnnEngine(str(tmp_path / "nope" / "config.json"))
    assert "--model" in info.value.hint
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(BadInput, match="not valid JSON"):
        PyMnnEngine(str(tmp_path))
    (tmp_path / "config.json").write_text('{"llm_model": "llm.mnn"}')
    with pytest.raises(BadInput, match="lacks"):
        PyMnnEngine(str(tmp_path / "config.json"))


def _copy_model(src, dst, skip=()):
    dst.mkdir()
    for f in src.parent.iterdir():
        if f.name not in skip:
            (dst / f.name).write_bytes(f.read_bytes())
    return dst


def test_truncated_weight_file_is_bad_input(tiny_model, tmp_path):
    """MNN would load it and fail every forward with INTERNAL_ERROR; soak says why up front."""
    model = _copy_model(tiny_model, tmp_path / "m", skip=("soak_model.json",))
    weight = model / "llm.mnn.weight"
    weight.write_bytes(weight.read_bytes()[:100_000])
    with pytest.raises(BadInput, match="truncated"):
        PyMnnEngine(str(model))


def test_replaced_file_is_caught_by_the_generator_record(tiny_model, tmp_path):
    model = _copy_model(tiny_model, tmp_path / "m")
    (model / "llm.mnn").write_bytes(b"\x00" * 5000)
    with pytest.raises(BadInput, match="soak_model.json says") as info:
        PyMnnEngine(str(model))
    assert "make_qwen2_model.py" in info.value.hint
    (model / "llm.mnn").write_bytes(b"")
    with pytest.raises(BadInput, match="empty"):
        PyMnnEngine(str(model))


def test_garbage_graph_fails_load_cleanly(tiny_model, tmp_path, monkeypatch):
    """No record to compare with: MNN's own load fails, reported as a failed load, no crash."""
    model = _copy_model(tiny_model, tmp_path / "m", skip=("soak_model.json",))
    (model / "llm.mnn").write_bytes(bytes(range(256)) * 20)
    monkeypatch.chdir(tmp_path)
    e = PyMnnEngine(str(model))
    assert e.load() is False
    assert e.status() == -1
    e.close()


def test_engine_through_the_worker_protocol(tiny_model, tmp_path):
    """python -m soak.worker hosting pip MNN: NULs and quotes arrive through base64."""
    from soak.worker import protocol

    spec = {"kind": "pymnn", "config_path": str(tiny_model)}
    prompt = b'say "hi"\x00 \\ \xe4\xbd\xa0 <|im_end|>'
    cmds = [protocol.encode_command("open", 1, spec),
            protocol.encode_command("set_config", 2, {"thread_num": 1}),
            protocol.encode_command("load", 3),
            protocol.encode_command("respond", 4, 6, prompt),
            protocol.encode_command("respond", 5, 6, b"second turn"),
            protocol.encode_command("quit", 6)]
    proc = subprocess.run([sys.executable, "-m", "soak.worker"], input=b"".join(cmds), capture_output=True,
                          cwd=tmp_path, timeout=120, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = [json.loads(line) for line in proc.stdout.splitlines()]
    assert results[0]["op"] == "hello"
    by_id = {r.get("id"): r for r in results[1:]}
    assert all(by_id[i]["ok"] for i in range(1, 7)), results
    first, second = by_id[4], by_id[5]
    assert first["status"] == MAX_TOKENS_FINISHED and first["perf"]["generated_tokens"] == 6
    assert protocol.unb64(first["output_b64"])
    assert second["perf"]["prompt_tokens"] > 0
    # the engine's output went to the log stream, and no prompt text was echoed there
    assert b"The device supports" in proc.stderr
    assert b"say \"hi\"" not in proc.stderr


def test_unicode_normalization_is_the_tokenizers_not_a_loss(engine):
    """Qwen2's tokenizer normalizes to NFC; an NFC prompt round-trips unchanged."""
    text = unicodedata.normalize("NFC", "café naïve Zürich 한국어")
    engine.reset()
    engine.respond(text.encode(), 1)
    ids = engine.last_prompt_tokens
    assert decoded(engine, ids) == expected_bytes(engine, text.encode())


def test_mnn_tokenizer_turns_zero_width_characters_into_spaces(engine):
    """Known MNN 3.6.1 behaviour (not soak's): its tokenizer encodes U+200B/U+200D as a
    space, where the HF tokenizer it was exported from keeps them. The bytes soak hands
    to MNN are exact; the ids MNN makes of them differ. This test notices if MNN changes."""
    prompt = "👨\u200d👩 a\u200bb".encode()
    engine.reset()
    engine.respond(prompt, 1)
    got = decoded(engine, engine.last_prompt_tokens)
    assert got == expected_bytes(engine, "👨 👩 a b".encode())


def test_binding_get_context_leaks_and_soak_gives_it_back(engine):
    """pip mnn 3.6.1's get_context() leaks a reference to each value (the whole history
    list each call). Unfixed, soak's per-call perf/status polling alone would make every
    long soak look like an engine memory leak."""
    import gc
    import tracemalloc

    from soak.engine.pymnn import get_context_without_leak

    engine.reset()
    engine.respond(b"word " * 300, 32)
    history = len(engine.context()["history_tokens"])
    assert history > 300

    def growth(fn, n=100):
        gc.collect()
        tracemalloc.start()
        for _ in range(n):
            fn()
        gc.collect()
        size, _ = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return size / n

    assert growth(engine._c.get_context) > 20 * history          # the binding's leak, per call
    assert growth(lambda: get_context_without_leak(engine._c)) < 64
    assert growth(lambda: (engine.perf(), engine.status())) < 64
    d = get_context_without_leak(engine._c)
    assert len(d["history_tokens"]) == history and d["prefill_us"] > 0   # values still valid


def test_many_responds_keep_the_python_heap_flat(engine):
    import gc
    import tracemalloc

    prompts = [(b"prompt %d " % i) * (1 + i % 40) for i in range(40)]
    for p in prompts:                       # warm the token-bytes cache
        engine.reset()
        engine.respond(p, 8)
    gc.collect()
    tracemalloc.start()
    for round_ in range(3):
        for i, p in enumerate(prompts):
            if i % 3 == 0:
                engine.reset()
            engine.respond(p, 8)
            engine.perf(), engine.status()
    gc.collect()
    size, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert size < 100_000, f"python heap grew {size} bytes over 120 responds"
