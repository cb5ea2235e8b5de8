"""tools/make_qwen2_model.py: offline, deterministic, and it reproduces the committed model.

Needs torch 2.13.0 CPU, transformers<5 and llmexport==0.0.5 (.ci/run installs them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_generator_reproduces_the_committed_tiny_model_offline(tmp_path, tiny_model, net_guard, netns_prefix):
    env, netlog = net_guard
    out = tmp_path / "qwen2-tiny"
    proc = subprocess.run([*netns_prefix, sys.executable, str(REPO / "tools" / "make_qwen2_model.py"),
                           "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, **env})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    made = json.loads((out / "soak_model.json").read_text())
    committed = json.loads((tiny_model.parent / "soak_model.json").read_text())
    assert made["files"] == committed["files"], (      # byte-for-byte the same model
        f"the generator no longer reproduces soak/models/qwen2-tiny: made with {made['versions']}, "
        f"committed with {committed['versions']} (pin these versions, or regenerate and commit)")
    assert made["parameters"] == committed["parameters"] == 640384
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in tiny_model.parent.iterdir())
    # the chat template and special tokens MNN reads
    llm_config = json.loads((out / "llm_config.json").read_text())
    assert "<|im_start|>" in llm_config["jinja"]["chat_template"]
    assert made["special_tokens"] == {"<|endoftext|>": 2045, "<|im_start|>": 2046, "<|im_end|>": 2047}
    assert netlog() == [], netlog()


def _tool(name):
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"_soak_{name}", REPO / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_presets_set_the_published_shapes():
    tool = _tool("make_qwen2_model")
    a = tool.parse_args(["--preset", "qwen2-0.5b", "--out", "x"])
    assert (a.hidden, a.layers, a.heads, a.kv_heads, a.intermediate) == (896, 24, 14, 2, 4864)
    assert (a.model_vocab, a.rope_theta, a.context, a.quant_block) == (151936, 1e6, 32768, 128)
    assert a.weights == "tiled" and a.vocab == 2048          # the tokenizer stays small
    b = tool.parse_args(["--preset", "qwen2.5-1.5b", "--layers", "2", "--weights", "random", "--out", "x"])
    assert (b.hidden, b.layers, b.heads, b.kv_heads, b.intermediate) == (1536, 2, 12, 2, 8960)
    assert b.weights == "random"                             # explicit options win over the preset
    c = tool.parse_args(["--out", "x"])                      # no preset: today's tiny defaults
    assert (c.hidden, c.layers, c.model_vocab, c.quant_block, c.weights) == (128, 2, None, 64, "random")


def _export(tmp_path, name, *extra):
    out = tmp_path / name
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "make_qwen2_model.py"), "--out", str(out),
                           "--model-vocab", "151936", "--quant-block", "128", *extra],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.mark.slow
def test_tiled_weights_pack_small_unpack_exactly_and_behave_randomly(tmp_path):
    """A 151,936-row vocabulary over the 2,048-token tokenizer, tiled weights: the 4-bit export packs
    to a small fraction of its size (i.i.d. random weights of the same shape do not), unpacks
    byte for byte, refuses a corrupted pack, and still answers like a random model in pip MNN."""
    pack = [sys.executable, str(REPO / "tools" / "model_pack.py")]
    tiled = _export(tmp_path, "tiled", "--weights", "tiled")
    rnd = _export(tmp_path, "random", "--weights", "random")
    sizes = {}
    for model in (tiled, rnd):
        proc = subprocess.run([*pack, "pack", str(model), str(tmp_path / f"{model.name}.tar.zst")],
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr
        m = json.loads(proc.stdout)
        sizes[model.name] = (m["packed"]["bytes"], sum(f["bytes"] for f in m["files"].values()))
    packed, raw = sizes["tiled"]
    assert raw > 10e6 and packed < raw / 20, sizes
    # the construction is what compresses: i.i.d. weights of the same shape pack 2.3x larger here
    # (both share the 149,888 zero rows past the tokenizer; at the real shapes it is 300 MB vs 1 MB)
    assert sizes["random"][0] > 2 * packed, sizes
    made = json.loads((tiled / "soak_model.json").read_text())
    assert made["vocab_size"] == 151936 and made["tokenizer_vocab_size"] == 2048 and made["weights"] == "tiled"

    dest = tmp_path / "unpacked"
    proc = subprocess.run([*pack, "unpack", str(tmp_path / "tiled.tar.zst"), str(dest)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for f in tiled.iterdir():
        assert (dest / f.name).read_bytes() == f.read_bytes(), f.name

    bad = tmp_path / "bad.tar.zst"
    data = bytearray((tmp_path / "tiled.tar.zst").read_bytes())
    data[len(data) // 2] ^= 0xFF
    bad.write_bytes(bytes(data))
    (tmp_path / "bad.tar.zst.manifest.json").write_text((tmp_path / "tiled.tar.zst.manifest.json").read_text())
    proc = subprocess.run([*pack, "unpack", str(bad), str(tmp_path / "bad")], capture_output=True, text=True)
    assert proc.returncode == 3 and "sha256" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([*pack, "unpack", str(tmp_path / "none.tar.zst"), str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "not found" in proc.stderr

    proc = subprocess.run([*pack, "probe", str(dest), "--prompts", "10", "--max-new-tokens", "8"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(proc.stdout[proc.stdout.index("{"):])
    assert report["nonfinite_logits"] == 0 and report["logits_per_step"] == 151936
    assert report["distinct_outputs"] >= 5 and report["top_token_share"] <= 0.5
    assert report["tokens_past_tokenizer"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("name,params,weight_bytes,published", [
    # llm.mnn.weight of the published 4-bit MNN exports (Hugging Face listings): taobao-mnn/
    # Qwen2-0.5B-Instruct-MNN 278 MB; taobao-mnn/Qwen2.5-Coder-1.5B-Instruct-MNN (same shape) 868 MB
    ("qwen2-0.5b", 494_032_768, 278_318_730, 278e6),
    ("qwen2.5-1.5b", 1_543_714_304, 869_191_922, 868e6),
])
def test_committed_packed_models_unpack_bit_exactly(tmp_path, name, params, weight_bytes, published):
    """tools/models/*.tar.zst (under 1 MB each) unpack to the full-size exports, every file's sha256
    checked; describe_model reads the real shape from them."""
    from soak.engine.model_info import describe_model
    packed = REPO / "tools" / "models" / f"{name}.tar.zst"
    assert packed.stat().st_size < 16 * 2**20
    proc = subprocess.run([sys.executable, str(REPO / "tools" / "model_pack.py"), "unpack", str(packed),
                           str(tmp_path / name)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["verified"] == "sha256"
    d = describe_model(tmp_path / name)
    assert d["params"] == params and d["weight_bytes"] == weight_bytes and d["vocab_size"] == 151936
    assert d["kv_heads"] == 2 and d["quant_block"] == 128
    assert abs(weight_bytes - published) / published < 0.05       # the bar; measured +0.1 %
