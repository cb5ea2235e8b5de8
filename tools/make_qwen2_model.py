#!/usr/bin/env python3
"""Make a random-weight Qwen2 model in MNN's LLM format, fully offline.

    python tools/make_qwen2_model.py --hidden 128 --layers 2 --out soak/models/qwen2-tiny

Steps (all local, no network):
  1. train a byte-level BPE tokenizer (Qwen2's pre-tokenizer regex, NFC, byte-level
     decoder) on a local corpus (default tools/data/tokenizer_corpus.txt), add Qwen's
     special tokens <|endoftext|>, <|im_start|>, <|im_end|> and Qwen2's chat template;
  2. build a transformers Qwen2ForCausalLM with random weights (torch seed = --seed,
     tied embeddings like the small Qwen2 models, init std 1.13/sqrt(hidden) so greedy
     output varies instead of repeating the last input token);
  3. zero the embedding rows of tokens whose bytes are not valid UTF-8 on their own
     ("partial UTF-8", e.g. a lone 0xE4). The embedding is tied to lm_head, so their
     logit is exactly 0, and greedy decoding would pick one only if every other logit
     were negative (0 invalid outputs in 100 measured prompts): text output stays valid
     UTF-8. --keep-partial-utf8 skips this, for testing raw-bytes handling;
  4. export through llmexport 0.0.5 (4-bit, block 64 or --quant-block) using pip MNN's converter.

Needs: torch 2.13.0 CPU (install it first, from /opt/wheels or the CPU index), then
transformers<5 and llmexport==0.0.5. llmexport's package imports are broken, so its
package folder is put on sys.path and its main module is loaded by file.

No network: the HF libraries are forced offline, every socket connect to a
non-loopback address raises, os.system/os.popen are refused, and the telemetry of
MNN.tools (MNN/tools/utils/log.py: on import it runs `pip install -U
aliyun-log-python-sdk` through os.system, fetches credentials from an aliyuncs.com
URL and posts usage logs after each mnnconvert call) is replaced by a stub module
with `mnn_logger = None` before MNN.tools is imported, which is the "no logger"
branch MNN's own code already has.

Real shapes: --preset qwen2-0.5b / --preset qwen2.5-1.5b set the published shape
(PRESETS below, with the config.json each figure comes from) and --weights tiled: the
model's vocabulary is Qwen's 151,936 rows while the tokenizer stays small (--vocab); the
rows past the tokenizer are zero, like the partial-UTF-8 rows, so they are never produced.
Tiled weights: every linear weight is a stack of 16-row bands, each band one of a few
seeded random bands of its input width times one of 4 scales (TILE_*). Identical bands
quantize to identical bytes (codes and per-block alpha), so the 4-bit llm.mnn.weight is
one long run of repeats that `zstd --long=31` packs to a few MB (tools/model_pack.py).

Deterministic given the seed, the corpus and the library versions (recorded in
soak_model.json): the random uuid4 MNN's converter stamps into llm.mnn is replaced by a
uuid5 of the arguments, and tests/mnn_pip/test_make_model.py rebuilds the committed tiny
model and compares it byte for byte.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import json
import os
import shutil
import socket
import sys
import tempfile
import types
from contextlib import redirect_stdout
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CORPUS = REPO / "tools" / "data" / "tokenizer_corpus.txt"

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# Qwen2's pre-tokenizer split pattern (tokenizer.json of Qwen2-0.5B-Instruct).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2-Instruct's chat template.
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# Runtime keys written into the exported config.json (MNN reads them at load).
RUNTIME_CONFIG = {
    "backend_type": "cpu",
    "thread_num": 4,
    "precision": "low",
    "memory": "low",
    "sampler_type": "greedy",
    "max_new_tokens": 64,
    "reuse_kv": True,
}
# Files MNN needs at runtime; everything else llmexport leaves is dropped.
KEEP = ("config.json", "llm_config.json", "llm.mnn", "llm.mnn.weight", "tokenizer.mtok",
        "tokenizer.txt", "embeddings_bf16.bin", "embeddings_int8.bin", "embeddings_int4.bin")


# Published shapes. Sources (config.json of the Hugging Face model repositories):
#   qwen2-0.5b:   Qwen/Qwen2-0.5B-Instruct config.json (hidden_size 896, intermediate_size 4864,
#                 num_hidden_layers 24, num_attention_heads 14, num_key_value_heads 2,
#                 vocab_size 151936, rope_theta 1000000.0, rms_norm_eps 1e-06,
#                 max_position_embeddings 32768, tie_word_embeddings true); the same figures
#                 in Qwen/Qwen2-0.5B (max_position_embeddings 131072 there).
#   qwen2.5-1.5b: Qwen/Qwen2.5-1.5B-Instruct config.json (hidden_size 1536, intermediate_size
#                 8960, num_hidden_layers 28, num_attention_heads 12, num_key_value_heads 2,
#                 vocab_size 151936, rope_theta 1000000.0, rms_norm_eps 1e-06,
#                 max_position_embeddings 32768, tie_word_embeddings true); model card: 1.54B
#                 parameters, 1.31B non-embedding.
PRESETS = {
    "qwen2-0.5b": {"hidden": 896, "layers": 24, "heads": 14, "kv_heads": 2, "intermediate": 4864,
                   "model_vocab": 151936, "rope_theta": 1000000.0, "context": 32768,
                   "quant_block": 128, "source": "Qwen/Qwen2-0.5B-Instruct config.json"},
    "qwen2.5-1.5b": {"hidden": 1536, "layers": 28, "heads": 12, "kv_heads": 2, "intermediate": 8960,
                     "model_vocab": 151936, "rope_theta": 1000000.0, "context": 32768,
                     "quant_block": 128, "source": "Qwen/Qwen2.5-1.5B-Instruct config.json"},
}
# quant_block 128: the published 4-bit MNN exports (taobao-mnn/Qwen2-0.5B-Instruct-MNN on Hugging
# Face: llm.mnn.weight 278 MB, llm.mnn 733 kB, embeddings_bf16.bin 272 MB) hold 0.5625 bytes per
# parameter, 4 bits plus 8 bytes (scale, zero point) per block of 128: 494.0M x 0.5625 = 277.9 MB;
# taobao-mnn/Qwen2.5-Coder-1.5B-Instruct-MNN (the Qwen2.5-1.5B shape): llm.mnn.weight 868 MB. Those
# folders also hold an older layout's embeddings_bf16.bin (272 MB / 467 MB); a tied llmexport 0.0.5
# export reads the embedding from lm_head's 4-bit rows instead (llm_config.json tie_embeddings).
# Tiled weights: band height (rows), the scales a band is multiplied by, and the number of
# distinct rows per input width (about 1 MiB of float32 per width, 64..1024 rows).
TILE_ROWS = 16
TILE_SCALES = (0.8, 0.9, 1.1, 1.25)


def tile_pool_rows(ic: int) -> int:
    rows = max(64, min(1024, (1 << 18) // ic))
    return rows - rows % TILE_ROWS


# ---------------------------------------------------------------- no network
class NetworkBlocked(OSError):
    pass


def _is_loopback(address) -> bool:
    host = address[0] if isinstance(address, tuple) else address
    return host in ("localhost", "::1") or str(host).startswith("127.")


def block_network() -> None:
    """Make any attempt to leave the machine fail loudly, and stub MNN's telemetry."""
    for key, value in {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "HF_DATASETS_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
                       "DO_NOT_TRACK": "1", "PIP_NO_INDEX": "1",
                       "TOKENIZERS_PARALLELISM": "false", "RAYON_NUM_THREADS": "1"}.items():
        os.environ[key] = value

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def connect(self, address):
        if self.family != socket.AF_UNIX and not _is_loopback(address):
            raise NetworkBlocked(f"make_qwen2_model: network use blocked (connect to {address!r})")
        return real_connect(self, address)

    def connect_ex(self, address):
        if self.family != socket.AF_UNIX and not _is_loopback(address):
            raise NetworkBlocked(f"make_qwen2_model: network use blocked (connect to {address!r})")
        return real_connect_ex(self, address)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex

    def refuse(cmd, *a, **k):
        raise RuntimeError(f"make_qwen2_model: refusing to run a shell command: {cmd!r}")

    os.system = refuse
    os.popen = refuse

    # MNN.tools.mnnconvert does `from MNN.tools.utils.log import mnn_logger` inside a
    # try/except and skips logging when it is None. Pre-seed that module.
    stub = types.ModuleType("MNN.tools.utils.log")
    stub.mnn_logger = None
    stub.__doc__ = "soak: MNN telemetry disabled (no pip install, no usage logs)"
    sys.modules["MNN.tools.utils.log"] = stub


# ---------------------------------------------------------------- tokenizer
def byte_decoder() -> dict[str, int]:
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode
    return {u: b for b, u in bytes_to_unicode().items()}


def train_tokenizer(corpus_files: list[Path], vocab: int):
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers
    from tokenizers import pre_tokenizers, trainers

    text = "\n".join(p.read_text(encoding="utf-8") for p in corpus_files)
    lines = [line for line in text.splitlines() if line.strip()]
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    n_regular = vocab - len(SPECIAL_TOKENS)
    trainer = trainers.BpeTrainer(vocab_size=n_regular, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=[])
    tok.train_from_iterator(lines, trainer)
    got = tok.get_vocab_size()
    if got != n_regular:
        raise SystemExit(f"error: the corpus gives only {got} BPE tokens, {n_regular} needed for "
                         f"--vocab {vocab}; use a smaller --vocab or add --corpus FILE")
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    assert tok.get_vocab_size() == vocab
    return tok


def partial_utf8_ids(tok) -> list[int]:
    """Ids of regular tokens whose bytes are not a complete UTF-8 string."""
    dec = byte_decoder()
    ids = []
    for piece, idx in tok.get_vocab().items():
        if piece in SPECIAL_TOKENS:
            continue
        raw = bytes(dec[c] for c in piece)
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            ids.append(idx)
    return sorted(ids)


def save_hf_tokenizer(tok, hf_dir: Path) -> None:
    from transformers import PreTrainedTokenizerFast
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", model_max_length=32768,
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = QWEN2_CHAT_TEMPLATE
    fast.save_pretrained(str(hf_dir))


# ---------------------------------------------------------------- model
def default_intermediate(hidden: int) -> int:
    return max(64, round(hidden * 8 / 3 / 64) * 64)   # 128 -> 384, 768 -> 2048


def default_init_std(hidden: int) -> float:
    # With Qwen's 0.02 a random tied-embedding model just repeats its last input token
    # under greedy decoding (the embedding dominates the residual stream). About
    # 1.13/sqrt(hidden) (0.1 at 128, 0.041 at 768) gives varied greedy output.
    return round(1.13 / hidden ** 0.5, 4)


def default_thread_num(hidden: int) -> int:
    # Measured on 2 cores: the 128-wide model decodes ~4x faster on 1 thread than on 2 or 4
    # (thread sync costs more than the tiny matmuls); 768-wide is the same on 1, 2 or 4.
    return 1 if hidden <= 256 else 4


def default_heads(hidden: int) -> int:
    return max(1, hidden // 64)           # head_dim 64, like Qwen2-0.5B


def build_model(args, tok, hf_dir: Path, zero_ids: list[int]) -> int:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    args.heads = args.heads or default_heads(args.hidden)
    if args.hidden % args.heads or (args.hidden // args.heads) % 2:
        raise SystemExit(f"error: --hidden {args.hidden} / --heads {args.heads} must give an even "
                         "head size (rotary embedding); e.g. --hidden 128 --heads 2")
    kv_heads = args.kv_heads or args.heads
    if args.heads % kv_heads:
        raise SystemExit(f"error: --heads {args.heads} is not a multiple of --kv-heads {kv_heads}")
    tok_vocab = tok.get_vocab_size()
    vocab = args.model_vocab or tok_vocab
    if vocab < tok_vocab:
        raise SystemExit(f"error: --model-vocab {vocab} is smaller than the tokenizer's {tok_vocab}")
    ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
    config = Qwen2Config(
        vocab_size=vocab, hidden_size=args.hidden,
        intermediate_size=args.intermediate or default_intermediate(args.hidden),
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=kv_heads, max_position_embeddings=args.context,
        rope_theta=args.rope_theta, rms_norm_eps=1e-6, tie_word_embeddings=True,
        bos_token_id=ids["<|endoftext|>"], eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"], use_sliding_window=False, sliding_window=None,
        initializer_range=args.init_std or default_init_std(args.hidden),
        torch_dtype="float32",
    )
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    model = Qwen2ForCausalLM(config).eval()
    if args.weights == "tiled":
        tile_weights(model, args.seed, config.initializer_range)
    with torch.no_grad():
        if zero_ids:
            model.model.embed_tokens.weight[torch.tensor(zero_ids)] = 0.0
        if vocab > tok_vocab:     # rows no token has: never an input, logit exactly 0
            model.model.embed_tokens.weight[tok_vocab:] = 0.0
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    n_params = sum(p.numel() for p in model.parameters())   # tied weight counted once
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<|endoftext|>"], pad_token_id=ids["<|endoftext|>"],
        eos_token_id=[ids["<|im_end|>"], ids["<|endoftext|>"]], do_sample=False)
    model.save_pretrained(str(hf_dir), safe_serialization=True)
    return n_params


def tile_weights(model, seed: int, std: float) -> None:
    """Fill every linear weight (and the tied embedding) from a few seeded random bands.

    For each input width a pool of tile_pool_rows(ic) rows ~ N(0, std) is drawn; a weight of
    shape [oc, ic] is oc/TILE_ROWS bands, band b = pool band k_b times TILE_SCALES[j_b], with
    (k_b, j_b) drawn from a generator seeded by (seed, the weight's name). Each (k, j) band is
    computed once, so equal bands have equal float bits, and quantization (per row, per block
    of --quant-block) turns them into equal bytes. Biases stay 0 and norms 1 (transformers' init)."""
    import torch
    import zlib
    pools: dict[int, "torch.Tensor"] = {}
    scales = torch.tensor(TILE_SCALES, dtype=torch.float32).view(-1, 1, 1, 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if param.dim() != 2:
                continue
            if name == "lm_head.weight" and param.data_ptr() == model.model.embed_tokens.weight.data_ptr():
                continue                          # tied: filled through embed_tokens
            oc, ic = param.shape
            if oc % TILE_ROWS:
                raise SystemExit(f"error: {name} has {oc} rows, not a multiple of {TILE_ROWS}")
            if ic not in pools:
                g = torch.Generator().manual_seed(seed * 1000003 + ic)
                rows = tile_pool_rows(ic)
                base = torch.randn(rows // TILE_ROWS, TILE_ROWS, ic, generator=g) * std
                pools[ic] = (base.unsqueeze(0) * scales).contiguous()   # [scales, bands, rows, ic]
            pool = pools[ic]
            g = torch.Generator().manual_seed(seed * 1000003 + zlib.crc32(name.encode()))
            nb = oc // TILE_ROWS
            k = torch.randint(pool.shape[1], (nb,), generator=g)
            j = torch.randint(pool.shape[0], (nb,), generator=g)
            param.copy_(pool[j, k].reshape(oc, ic))


# ---------------------------------------------------------------- export
def load_llmexport():
    spec = importlib.util.find_spec("llmexport")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("error: llmexport is not installed; run: pip install llmexport==0.0.5 "
                         "(after the CPU torch wheel)")
    pkg = Path(list(spec.submodule_search_locations)[0])
    if str(pkg) not in sys.path:
        sys.path.insert(0, str(pkg))          # its modules import `utils.*` absolutely
    mod_spec = importlib.util.spec_from_file_location("_soak_llmexport_main", pkg / "llmexport.py")
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


def export_mnn(hf_dir: Path, dst: Path, args) -> str:
    llmexport = load_llmexport()
    log = io.StringIO()
    cwd = os.getcwd()
    os.chdir(dst.parent)        # llmexport appends the converter's output to ./.export.log
    try:
        with redirect_stdout(log):
            llmexport.export(str(hf_dir), export="mnn", dst_path=str(dst),
                             mnnconvert="",          # not a file: use pip MNN's converter
                             quant_bit=args.quant_bit, quant_block=args.quant_block)
    finally:
        os.chdir(cwd)
    return log.getvalue()


UUID_RE = rb"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


def pin_model_uuid(path: Path, args) -> None:
    """The MNN converter stamps a random uuid4 into llm.mnn; replace it (same length)
    with a uuid5 of the model's parameters so the file is byte-for-byte reproducible."""
    import re
    import uuid
    data = path.read_bytes()
    found = re.findall(UUID_RE, data)
    if len(found) != 1:
        raise SystemExit(f"error: expected one model uuid in {path.name}, found {len(found)}")
    name = (f"soak-qwen2 h{args.hidden} l{args.layers} heads{args.heads} kv{args.kv_heads} "
            f"i{args.intermediate} v{args.vocab} c{args.context} s{args.seed} q{args.quant_bit} "
            f"std{args.init_std} keep{int(args.keep_partial_utf8)}")
    if args.preset or args.weights != "random" or args.model_vocab or args.rope_theta != 1000000.0:
        name += f" preset{args.preset} w{args.weights} mv{args.model_vocab} rt{args.rope_theta}"
    if args.quant_block != 64:
        name += f" qb{args.quant_block}"
    pinned = str(uuid.uuid5(uuid.NAMESPACE_URL, name)).encode()
    path.write_bytes(data.replace(found[0], pinned))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make(args) -> dict:
    corpus = [Path(p) for p in (args.corpus or [DEFAULT_CORPUS])]
    for p in corpus:
        if not p.is_file():
            raise SystemExit(f"error: corpus file not found: {p}")
    tok = train_tokenizer(corpus, args.vocab)
    partial = partial_utf8_ids(tok)
    zero_ids = [] if args.keep_partial_utf8 else partial

    out = Path(args.out).resolve()
    with tempfile.TemporaryDirectory(prefix="make_qwen2_") as tmp:
        tmp = Path(tmp)
        hf_dir, dst = tmp / "hf", tmp / "mnn"
        hf_dir.mkdir()
        save_hf_tokenizer(tok, hf_dir)
        n_params = build_model(args, tok, hf_dir, zero_ids)
        export_log = export_mnn(hf_dir, dst, args)
        if not (dst / "llm.mnn").is_file() or not (dst / "llm.mnn.weight").is_file():
            sys.stderr.write(export_log[-4000:])
            raise SystemExit("error: llmexport did not produce llm.mnn / llm.mnn.weight")

        pin_model_uuid(dst / "llm.mnn", args)
        cfg = json.loads((dst / "config.json").read_text())
        cfg.update(RUNTIME_CONFIG)
        cfg["thread_num"] = args.thread_num or default_thread_num(args.hidden)
        (dst / "config.json").write_text(json.dumps(cfg, indent=4, ensure_ascii=False) + "\n")

        if out.exists():
            shutil.rmtree(out)
        out.mkdir(parents=True)
        for name in KEEP:
            if (dst / name).is_file():
                shutil.copyfile(dst / name, out / name)

    import MNN, onnx, tokenizers, torch, transformers  # noqa: E401  (versions for provenance)
    info = {
        "generator": "tools/make_qwen2_model.py",
        "family": "qwen2",
        "random_weights": True,
        "seed": args.seed,
        "hidden_size": args.hidden,
        "num_hidden_layers": args.layers,
        "num_attention_heads": args.heads,
        "num_key_value_heads": args.kv_heads or args.heads,
        "intermediate_size": args.intermediate or default_intermediate(args.hidden),
        "init_std": args.init_std or default_init_std(args.hidden),
        "vocab_size": args.model_vocab or args.vocab,
        "tokenizer_vocab_size": args.vocab,
        "rope_theta": args.rope_theta,
        "max_position_embeddings": args.context,
        "tie_word_embeddings": True,
        "parameters": n_params,
        "weights": args.weights,
        **({"tiling": {"band_rows": TILE_ROWS, "scales": list(TILE_SCALES),
                       "pool_rows": {str(ic): tile_pool_rows(ic) for ic in
                                     sorted({args.hidden, args.intermediate or
                                             default_intermediate(args.hidden)})}}}
           if args.weights == "tiled" else {}),
        **({"preset": args.preset, "shape_source": PRESETS[args.preset]["source"]}
           if args.preset else {}),
        "quant_bit": args.quant_bit,
        "quant_block": args.quant_block,
        "partial_utf8_token_ids": partial,
        "partial_utf8_rows_zeroed": not args.keep_partial_utf8,
        "special_tokens": {t: tok.token_to_id(t) for t in SPECIAL_TOKENS},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "tokenizers": tokenizers.__version__, "onnx": onnx.__version__,
                     "mnn": _version("mnn"), "llmexport": _version("llmexport")},
        "files": {p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)}
                  for p in sorted(out.iterdir())},
    }
    (out / "soak_model.json").write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return info


def _version(dist: str) -> str:
    from importlib.metadata import version
    return version(dist)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hidden", type=int, default=128, help="hidden size (default 128)")
    ap.add_argument("--layers", type=int, default=2, help="decoder layers (default 2)")
    ap.add_argument("--heads", type=int, default=None, help="attention heads (default hidden/64)")
    ap.add_argument("--kv-heads", type=int, default=None, help="KV heads (default = --heads)")
    ap.add_argument("--intermediate", type=int, default=None,
                    help="MLP size (default 8/3*hidden rounded to 64)")
    ap.add_argument("--vocab", type=int, default=2048,
                    help="vocabulary incl. 3 special tokens (default 2048)")
    ap.add_argument("--thread-num", type=int, default=None,
                    help="thread_num written to config.json (default 1 up to hidden 256, else 4)")
    ap.add_argument("--context", type=int, default=4096, help="max_position_embeddings")
    ap.add_argument("--seed", type=int, default=0, help="torch seed for the weights (default 0)")
    ap.add_argument("--quant-bit", type=int, default=4, choices=(4, 8))
    ap.add_argument("--quant-block", type=int, default=64, choices=(32, 64, 128, 256),
                    help="weights per quantization block (default 64; 128 with --preset, as the "
                         "published MNN exports)")
    ap.add_argument("--init-std", type=float, default=None,
                    help="weight init std (default 1.13/sqrt(hidden))")
    ap.add_argument("--corpus", action="append", help="tokenizer training text (repeatable; "
                    f"default {DEFAULT_CORPUS.relative_to(REPO)})")
    ap.add_argument("--keep-partial-utf8", action="store_true",
                    help="do not zero the partial-UTF-8 token rows (output may be invalid UTF-8)")
    ap.add_argument("--preset", choices=sorted(PRESETS),
                    help="a published Qwen shape (sets hidden, layers, heads, KV heads, "
                         "intermediate, model vocabulary, rope theta, context; --weights tiled)")
    ap.add_argument("--model-vocab", type=int, default=None,
                    help="embedding/lm_head rows (default: the tokenizer's --vocab); rows past "
                         "the tokenizer are zero")
    ap.add_argument("--rope-theta", type=float, default=1000000.0)
    ap.add_argument("--weights", choices=("random", "tiled"), default=None,
                    help="random: i.i.d. init (default); tiled: bands of a few seeded random "
                         "bands, so the 4-bit export compresses (default with --preset)")
    ap.add_argument("--out", required=True, help="output folder (replaced)")
    args = ap.parse_args(argv)
    if args.preset:
        p = PRESETS[args.preset]
        explicit = {a.split("=")[0] for a in (argv if argv is not None else sys.argv[1:])
                    if a.startswith("--")}
        for key in ("hidden", "layers", "heads", "kv_heads", "intermediate", "model_vocab",
                    "rope_theta", "context", "quant_block"):
            if "--" + key.replace("_", "-") not in explicit:
                setattr(args, key, p[key])
        if args.weights is None:
            args.weights = "tiled"
    args.weights = args.weights or "random"
    return args


INSTALL = ("pip install /opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl  "
           "(or torch==2.13.0 from the CPU index) FIRST, then: pip install 'transformers==4.57.6' "
           "llmexport==0.0.5 mnn==3.6.1")


def check_deps() -> None:
    missing = [m for m in ("torch", "transformers", "tokenizers", "MNN", "llmexport", "onnx")
               if importlib.util.find_spec(m) is None]
    if missing:
        raise SystemExit(f"error: missing {', '.join(missing)}; install: {INSTALL}")


def main(argv=None) -> int:
    args = parse_args(argv)
    check_deps()
    block_network()
    info = make(args)
    size = sum(f["bytes"] for f in info["files"].values())
    print(f"{args.out}: qwen2 hidden={args.hidden} layers={args.layers} vocab={args.vocab} "
          f"params={info['parameters']} files={size} bytes "
          f"partial_utf8_tokens={len(info['partial_utf8_token_ids'])} "
          f"zeroed={info['partial_utf8_rows_zeroed']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
