"""describe_model on the committed models: the parameter count the catalog keys on."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from soak.engine.model_info import describe_model, estimate_params
from soak.errors import BadInput


def qwen2_params(hidden, layers, intermediate, vocab, heads, kv_heads, tied=True):
    """Qwen2's parameter count from its shape (q/k/v have biases; RMSNorm weights)."""
    head_dim = hidden // heads
    kv = kv_heads * head_dim
    attn = hidden * hidden + hidden + 2 * (hidden * kv + kv) + hidden * hidden
    mlp = 3 * hidden * intermediate
    per_layer = attn + mlp + 2 * hidden
    embed = vocab * hidden
    return layers * per_layer + hidden + embed + (0 if tied else embed)


def test_tiny_model_description(tiny_model):
    d = describe_model(tiny_model)
    assert d["family"] == "qwen2"
    assert (d["hidden_size"], d["layers"], d["heads"], d["vocab_size"]) == (128, 2, 2, 2048)
    assert d["params"] == qwen2_params(128, 2, d["intermediate_size"], 2048, 2, 2) == 640384
    assert d["max_position_embeddings"] == d["context_length"] == 4096
    assert d["quant_bits"] == 4 and d["quant_block"] == 64 and d["tie_embeddings"] is True
    weight = tiny_model.parent / "llm.mnn.weight"
    assert d["weight_bytes"] == weight.stat().st_size
    assert d["sha256"]["llm.mnn.weight"] == hashlib.sha256(weight.read_bytes()).hexdigest()
    assert d["sha256"]["llm.mnn"] == hashlib.sha256((tiny_model.parent / "llm.mnn").read_bytes()).hexdigest()
    assert 400_000 < d["model_bytes"] < 600_000          # "about 0.5 MB"


def test_folder_path_works_too(tiny_model):
    assert describe_model(tiny_model.parent)["params"] == 640384


def test_estimate_without_generator_record_is_close(tiny_model, tmp_path):
    """A foreign MNN export has no soak_model.json: the weight-byte estimate is within 3%,
    and shape facts still come from llm_config.json."""
    for f in tiny_model.parent.iterdir():
        if f.name != "soak_model.json":
            os.symlink(f, tmp_path / f.name)
    d = describe_model(tmp_path / "config.json")
    assert d["params"] == pytest.approx(640384, rel=0.03)
    assert "estimated" in d["params_source"]
    assert d["vocab_size"] == 2048 and d["hidden_size"] == 128 and d["layers"] == 2
    assert d["quant_bits"] == 4


def test_committed_model_files_match_their_record(tiny_model, raw_model):
    for cfg in (tiny_model, raw_model):
        record = json.loads((cfg.parent / "soak_model.json").read_text())
        for name, info in record["files"].items():
            data = (cfg.parent / name).read_bytes()
            assert len(data) == info["bytes"] and hashlib.sha256(data).hexdigest() == info["sha256"], name
    tiny = json.loads((tiny_model.parent / "soak_model.json").read_text())
    raw = json.loads((raw_model.parent / "soak_model.json").read_text())
    assert tiny["partial_utf8_rows_zeroed"] is True and raw["partial_utf8_rows_zeroed"] is False
    assert tiny["partial_utf8_token_ids"] == raw["partial_utf8_token_ids"] and tiny["partial_utf8_token_ids"]
    assert tiny["files"]["tokenizer.mtok"] == raw["files"]["tokenizer.mtok"]
    assert tiny["files"]["llm.mnn.weight"] != raw["files"]["llm.mnn.weight"]


def test_estimate_params_layout():
    assert estimate_params(625, 4, 64) == 1000          # 0.5 B + 8 B per 64 weights
    assert estimate_params(1125, 8, 64) == 1000
    assert estimate_params(562.5, 4, 64, symmetric=True) == 1000


def test_missing_model_is_bad_input(tmp_path):
    with pytest.raises(BadInput, match="not found") as info:
        describe_model(tmp_path / "none" / "config.json")
    assert "--model" in info.value.hint
    (tmp_path / "config.json").write_text("[1, 2")
    with pytest.raises(BadInput, match="not valid JSON"):
        describe_model(tmp_path)


def test_name_hint_for_real_model_folders(tmp_path):
    folder = tmp_path / "Qwen2.5-1.5B-Instruct-MNN"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    d = describe_model(folder)
    assert d["params_name_hint"] == 1_500_000_000 and d["params"] == 1_500_000_000
    assert d["params_source"] == "model folder name"


def test_packaged_model_by_name(tiny_model):
    from soak.engine.model_info import builtin_model
    from soak.engine.pymnn import check_model

    assert builtin_model("tiny") == builtin_model("qwen2-tiny") == tiny_model.resolve()
    assert builtin_model("nonesuch") is None
    assert describe_model("tiny")["params"] == 640384
    assert check_model("tiny")[0] == tiny_model.resolve()


@pytest.mark.parametrize("preset,shape,params,kv_values", [
    # published: Qwen2-0.5B-Instruct and Qwen2.5-1.5B-Instruct config.json; 0.49B and 1.54B parameters
    ("qwen2-0.5b", (896, 24, 14, 2, 4864), 494_032_768, 2 * 24 * 2 * 64),
    ("qwen2.5-1.5b", (1536, 28, 12, 2, 8960), 1_543_714_304, 2 * 28 * 2 * 128),
])
def test_real_shape_facts_are_gqa_aware(tmp_path, preset, shape, params, kv_values):
    """A real-shape model's record gives the parameter count and the KV cost per token from
    the KV heads (2), not the attention heads (14 / 12): 6x / 7x less than an MHA formula."""
    hidden, layers, heads, kv_heads, inter = shape
    assert qwen2_params(hidden, layers, inter, 151936, heads, kv_heads) == params
    (tmp_path / "config.json").write_text(json.dumps({"llm_model": "llm.mnn", "llm_weight": "llm.mnn.weight",
                                                      "precision": "low"}))
    (tmp_path / "soak_model.json").write_text(json.dumps({
        "family": "qwen2", "random_weights": True, "hidden_size": hidden, "num_hidden_layers": layers,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "intermediate_size": inter,
        "vocab_size": 151936, "tokenizer_vocab_size": 2048, "parameters": params, "quant_bit": 4,
        "quant_block": 128, "preset": preset, "weights": "tiled", "max_position_embeddings": 32768}))
    d = describe_model(tmp_path)
    assert d["params"] == params and d["preset"] == preset and d["tokenizer_vocab_size"] == 2048
    assert d["kv_heads"] == 2 and d["head_dim"] == hidden // heads
    assert d["kv_values_per_token"] == kv_values
    assert d["kv_bytes_per_token"] == {"fp16": kv_values * 2, "fp32": kv_values * 4}
    from soak.engine.model_info import kv_cache_theory
    assert kv_cache_theory(d, "opencl")["bytes_per_token"] == kv_values * 2
    assert kv_cache_theory(d, "cpu")["bytes_per_token"] == kv_values * 4
