"""What a model is, for the run manifest and the fault catalog.

    describe_model("soak/models/qwen2-tiny/config.json") -> dict

Reads only files (no MNN import): config.json, llm_config.json, the weight and
embedding files, and soak_model.json when tools/make_qwen2_model.py made the
model (it records the true parameter count and shape). For other MNN-LLM
exports the parameter count is estimated from the weight bytes and the
quantization layout llmexport uses (b-bit weights plus a float scale and zero
point per block of 64), which is within a few percent (fine for the catalog's
size ranges such as 0.4B..0.8B).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from soak.errors import BadInput
from soak.manifest import sha256_file

_FIX = "pass the model's config.json (or its folder) with --model"
_EMBED_FILES = {"embeddings_bf16.bin": 16, "embeddings_int8.bin": 8, "embeddings_int4.bin": 4}
_NAME_SIZE = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*([BbMm])(?![a-zA-Z])")


PACKAGED_MODELS = {"qwen2-tiny": "qwen2-tiny", "tiny": "qwen2-tiny"}


def builtin_model(name: str | os.PathLike) -> Path | None:
    """config.json of a model shipped inside the soak package ("tiny", "qwen2-tiny"), else None.
    Works from a source tree and from an installed wheel (package data soak/models/**)."""
    folder = PACKAGED_MODELS.get(str(name))
    if folder is None:
        return None
    path = Path(__file__).resolve().parent.parent / "models" / folder / "config.json"
    return path if path.is_file() else None




def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path} is not valid JSON: {exc}", _FIX) from None
    return data if isinstance(data, dict) else {}


def _params_from_name(name: str) -> int | None:
    """'Qwen2.5-1.5B-Instruct-MNN' -> 1_500_000_000 (a hint only)."""
    m = _NAME_SIZE.search(name)
    if not m:
        return None
    return int(float(m.group(1)) * (1e9 if m.group(2) in "Bb" else 1e6))


def human_params(n: int | None) -> str | None:
    if n is None:
        return None
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return str(n)


def estimate_params(weight_bytes: int, bits: int, block: int = 64, symmetric: bool = False) -> int:
    """Parameters stored in an llmexport weight file of this size."""
    per_param = bits / 8 + (4 if symmetric else 8) / block
    return int(round(weight_bytes / per_param))


_GPU_BACKENDS = ("opencl", "vulkan", "metal", "cuda")


def kv_values_per_token(layers, kv_heads, head_dim) -> int | None:
    """K and V values one context token adds: 2 x layers x KV heads x head dim (GQA-aware:
    KV heads, not attention heads)."""
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0
               for v in (layers, kv_heads, head_dim)):
        return None
    return 2 * layers * kv_heads * head_dim


def kv_cache_theory(model: dict | None, backend: str | None) -> dict | None:
    """Theoretical KV-cache bytes per context token of a described model on a backend.

    dtype: MNN keeps the KV cache in fp16 on GPU backends unless precision is
    "high", and in fp32 on x86 CPUs; the assumption is stated in the result."""
    if not isinstance(model, dict):
        return None
    layers, kv_heads, head_dim = model.get("layers"), model.get("kv_heads"), model.get("head_dim")
    values = kv_values_per_token(layers, kv_heads, head_dim)
    if values is None:
        return None
    precision = (model.get("config") or {}).get("precision")
    gpu = backend in _GPU_BACKENDS
    dtype = 4 if (not gpu or precision == "high") else 2
    return {"bytes_per_token": values * dtype, "layers": layers, "kv_heads": kv_heads,
            "head_dim": head_dim, "dtype_bytes": dtype,
            "dtype_assumed": f"{'fp32' if dtype == 4 else 'fp16'} ({backend or '?'} backend, "
                             f"precision {precision or '?'})"}


def describe_model(config_path: str | os.PathLike) -> dict:
    path = builtin_model(config_path) or Path(config_path).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise BadInput(f"model config not found: {path}", _FIX)
    config = _json(path)
    base = path.parent
    llm_config = _json(base / config.get("llm_config", "llm_config.json"))
    made = _json(base / "soak_model.json")

    files = {}
    for key, default in (("llm_model", "llm.mnn"), ("llm_weight", "llm.mnn.weight")):
        f = base / config.get(key, default)
        if f.is_file():
            files[f.name] = {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
    weight_file = base / config.get("llm_weight", "llm.mnn.weight")
    weight_bytes = weight_file.stat().st_size if weight_file.is_file() else None
    embed = next(((base / n, b) for n, b in _EMBED_FILES.items() if (base / n).is_file()), None)
    if embed:
        files[embed[0].name] = {"bytes": embed[0].stat().st_size, "sha256": sha256_file(embed[0])}

    hidden = made.get("hidden_size") or llm_config.get("hidden_size")
    layers = made.get("num_hidden_layers") or llm_config.get("layer_nums")
    tie = llm_config.get("tie_embeddings")
    bits = made.get("quant_bit") or (tie[3] if isinstance(tie, list) and len(tie) >= 5 else None)
    block = made.get("quant_block") or (tie[4] if isinstance(tie, list) and len(tie) >= 5 else 64)

    heads = made.get("num_attention_heads")
    kv_heads = made.get("num_key_value_heads")
    kv_shape = llm_config.get("key_value_shape")      # older exports: [2, 1, 0, kv_heads, head_dim]
    head_dim = None
    if isinstance(kv_shape, list) and len(kv_shape) == 5:
        kv_heads, head_dim = kv_heads or kv_shape[3], kv_shape[4]
    elif isinstance(llm_config.get("attn_scale"), (int, float)) and llm_config["attn_scale"] > 0:
        head_dim = round(1 / llm_config["attn_scale"] ** 2)
    if heads is None and hidden and head_dim:
        heads = hidden // head_dim

    vocab = made.get("vocab_size")
    if vocab is None and hidden:
        if isinstance(tie, list) and len(tie) >= 5 and tie[1] > tie[0]:
            vocab = (tie[1] - tie[0]) * 8 // (tie[3] * hidden)
        elif embed:
            vocab = embed[0].stat().st_size * 8 // (embed[1] * hidden)

    name_hint = _params_from_name(base.name)
    if made.get("parameters"):
        params, source = int(made["parameters"]), "soak_model.json (exact, counted at generation)"
    elif weight_bytes:
        assumed = bits or 4
        params = estimate_params(weight_bytes, assumed, block or 64)
        if embed and not tie:                 # untied: the input embedding is a separate file
            params += embed[0].stat().st_size * 8 // embed[1]
        source = (f"estimated from weight bytes ({assumed}-bit, block {block or 64}"
                  f"{', bits assumed' if not bits else ''})")
    else:
        params, source = name_hint, "model folder name" if name_hint else None

    context = made.get("max_position_embeddings") or llm_config.get("max_position_embeddings")
    head_dim = head_dim or (hidden // heads if hidden and heads else None)
    kv_values = kv_values_per_token(layers, kv_heads, head_dim)
    return {
        "name": base.name,
        "config_path": str(path.resolve()),
        "family": made.get("family") or llm_config.get("model_type"),
        "params": params,
        "params_human": human_params(params),
        "params_source": source,
        "params_name_hint": name_hint,
        "random_weights": bool(made.get("random_weights", False)),
        "hidden_size": hidden,
        "layers": layers,
        "heads": heads,
        "kv_heads": kv_heads,
        "head_dim": head_dim,
        # 2 x layers x KV heads x head dim, and that in bytes at fp16 (MNN's GPU KV cache) and
        # fp32 (its x86 CPU cache): what each context token costs (soak.engine.model_info)
        "kv_values_per_token": kv_values,
        "kv_bytes_per_token": {"fp16": kv_values * 2, "fp32": kv_values * 4} if kv_values else None,
        "intermediate_size": made.get("intermediate_size"),
        "vocab_size": vocab,
        "tokenizer_vocab_size": made.get("tokenizer_vocab_size"),
        "preset": made.get("preset"),
        "weights": made.get("weights"),
        "max_position_embeddings": context,
        "context_length": context,
        "quant_bits": bits,
        "quant_block": block,
        "tie_embeddings": bool(tie) if tie is not None else made.get("tie_word_embeddings"),
        "weight_bytes": weight_bytes,
        "model_bytes": sum(f["bytes"] for f in files.values()),
        "files": files,
        "sha256": {n: f["sha256"] for n, f in files.items()},
        "config": {k: config[k] for k in ("backend_type", "thread_num", "precision", "memory",
                                          "sampler_type", "max_new_tokens", "reuse_kv")
                   if k in config},
    }
