#!/usr/bin/env python3
"""Pack, unpack (hash-verified) and probe a model folder made by tools/make_qwen2_model.py.

    python3 tools/model_pack.py pack   MODEL_DIR OUT.tar.zst     # + OUT.tar.zst.manifest.json
    python3 tools/model_pack.py unpack OUT.tar.zst DEST_DIR      # checks every file's sha256
    python3 tools/model_pack.py probe  MODEL_DIR [--prompts N]   # pip MNN (CPU): random-model checks

Packing is tar (sorted names, zeroed owners and times) through `zstd -19 --long=31`: the
window of 2 GiB spans the whole weight file, so the repeated bands of a `--weights tiled`
model (a real-shape Qwen: 300 MB-1 GB of 4-bit weights) are found wherever they recur.
Unpacking needs the same window (`zstd -d --long=31`, or the `zstandard` wheel where the
command is missing; about 0.9 GiB of memory for the 1.5B model)
and checks, before anything is kept, the packed file's sha256 and then each extracted
file's bytes and sha256 against the manifest written at packing time.

probe loads the model in pip MNN (CPU), feeds each of N fixed prompts, reads the logits
of the first step (all finite?), generates greedily, and reports how many distinct outputs
and tokens came out and the share of the most common token.  It fails (exit 3) on a
non-finite logit, fewer distinct outputs than half the prompts, one token over half of
all output tokens, or an output token past the tokenizer (a zeroed row won).

Exit codes: 0 ok; 2 bad input (missing file, no zstd, unreadable manifest);
3 verification failed (hash/size mismatch, or probe checks failed).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ZSTD_PACK = ["zstd", "-19", "--long=31", "-T1", "-q", "-c"]
ZSTD_UNPACK = ["zstd", "-d", "--long=31", "-q", "-c"]
MANIFEST_SUFFIX = ".manifest.json"
EXIT_BAD_INPUT, EXIT_MISMATCH = 2, 3

PROMPTS = [
    "Hello there", "What is the capital of France?", "1 2 3 4 5", "Write a poem about the sea",
    "The quick brown fox jumps over the lazy dog", "Explain how a GPU works",
    "List three colours", "Tell me a story about a robot", "How do I bake bread?",
    "Translate 'good morning' into German", "Why is the sky blue?", "Summarise the news",
    "What is 17 times 23?", "Describe a cat", "Give me a recipe for soup",
    "What time is it in Tokyo?", "Name a famous painter", "How far is the moon?",
    "Write a haiku about autumn", "What does a compiler do?",
]


class Fail(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code = code


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _need_zstd() -> None:
    if shutil.which("zstd") is None:
        raise Fail(EXIT_BAD_INPUT, "zstd not found on PATH; install it (apt-get install zstd)")


class _PyZstdReader:
    """Decompress with the `zstandard` wheel where the zstd command is missing (same window)."""

    def __init__(self, src):
        import zstandard
        self._r = zstandard.ZstdDecompressor(max_window_size=1 << 31).stream_reader(src)
        self.returncode = 0

    def read(self, n=-1):
        return self._r.read(n)

    def wait(self):
        return 0


def _decompressor(src):
    """(process-like object, readable stream) for the packed file: zstd CLI, else `zstandard`."""
    if shutil.which("zstd") is not None:
        proc = subprocess.Popen(ZSTD_UNPACK, stdin=src, stdout=subprocess.PIPE)
        return proc, proc.stdout
    try:
        reader = _PyZstdReader(src)
    except ImportError:
        raise Fail(EXIT_BAD_INPUT, "neither the zstd command nor the zstandard module is here; "
                                   "apt-get install zstd, or pip install zstandard") from None
    return reader, reader


def _files(model_dir: Path) -> list[Path]:
    if not (model_dir / "config.json").is_file():
        raise Fail(EXIT_BAD_INPUT, f"{model_dir} is not a model folder (no config.json)")
    files = sorted(p for p in model_dir.iterdir() if p.is_file())
    odd = [p.name for p in model_dir.iterdir() if not p.is_file()]
    if odd:
        raise Fail(EXIT_BAD_INPUT, f"{model_dir} holds non-files {odd}: a model folder is flat")
    return files


def pack(model_dir: Path, out: Path) -> dict:
    _need_zstd()
    files = _files(model_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    with open(tmp, "wb") as dst:
        zstd = subprocess.Popen(ZSTD_PACK, stdin=subprocess.PIPE, stdout=dst)
        with tarfile.open(fileobj=zstd.stdin, mode="w|", format=tarfile.GNU_FORMAT) as tar:
            for p in files:
                info = tarfile.TarInfo(p.name)
                info.size, info.mode, info.mtime = p.stat().st_size, 0o644, 0
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                with open(p, "rb") as f:
                    tar.addfile(info, f)
        zstd.stdin.close()
        if zstd.wait() != 0:
            raise Fail(EXIT_BAD_INPUT, f"zstd failed (exit {zstd.returncode})")
    tmp.replace(out)
    manifest = {
        "format": "tar | zstd -19 --long=31",
        "unpack": f"python3 tools/model_pack.py unpack {out.name} DEST_DIR",
        "packed": {"name": out.name, "bytes": out.stat().st_size, "sha256": sha256(out)},
        "files": {p.name: {"bytes": p.stat().st_size, "sha256": sha256(p)} for p in files},
    }
    made = model_dir / "soak_model.json"
    if made.is_file():
        info = json.loads(made.read_text())
        manifest["model"] = {k: info.get(k) for k in ("preset", "shape_source", "parameters",
                                                       "hidden_size", "num_hidden_layers",
                                                       "num_key_value_heads", "vocab_size",
                                                       "weights", "seed")}
    Path(str(out) + MANIFEST_SUFFIX).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _manifest(packed: Path, manifest_path: Path | None) -> dict:
    path = manifest_path or Path(str(packed) + MANIFEST_SUFFIX)
    try:
        m = json.loads(path.read_text())
    except FileNotFoundError:
        raise Fail(EXIT_BAD_INPUT, f"manifest not found: {path} (written by `pack` next to the "
                                   "packed file; pass --manifest)") from None
    except (OSError, ValueError) as exc:
        raise Fail(EXIT_BAD_INPUT, f"manifest {path} unreadable: {exc}") from None
    if not isinstance(m, dict) or not isinstance(m.get("files"), dict) or "packed" not in m:
        raise Fail(EXIT_BAD_INPUT, f"manifest {path} lacks 'packed' and 'files'")
    return m


def unpack(packed: Path, dest: Path, manifest_path: Path | None = None) -> dict:
    if not packed.is_file():
        raise Fail(EXIT_BAD_INPUT, f"packed file not found: {packed}")
    m = _manifest(packed, manifest_path)
    got = sha256(packed)
    if got != m["packed"]["sha256"]:
        raise Fail(EXIT_MISMATCH, f"{packed.name}: sha256 {got} != manifest {m['packed']['sha256']}"
                                  " (copy it again)")
    dest.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".unpack-", dir=dest))
    try:
        with open(packed, "rb") as src:
            zstd, stream = _decompressor(src)
            seen = []
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                for member in tar:
                    name = member.name
                    if not member.isfile() or "/" in name or name.startswith(".") or name not in m["files"]:
                        raise Fail(EXIT_MISMATCH, f"unexpected entry {name!r} in {packed.name}")
                    h, size = hashlib.sha256(), 0
                    with tar.extractfile(member) as f, open(stage / name, "wb") as out:
                        for chunk in iter(lambda: f.read(1 << 20), b""):
                            h.update(chunk)
                            size += len(chunk)
                            out.write(chunk)
                    want = m["files"][name]
                    if size != want["bytes"] or h.hexdigest() != want["sha256"]:
                        raise Fail(EXIT_MISMATCH, f"{name}: {size} bytes sha256 {h.hexdigest()}, "
                                                  f"manifest {want['bytes']} bytes {want['sha256']}")
                    seen.append(name)
            if zstd.wait() != 0:
                raise Fail(EXIT_MISMATCH, f"zstd could not decompress {packed.name} "
                                          f"(exit {zstd.returncode})")
        missing = sorted(set(m["files"]) - set(seen))
        if missing:
            raise Fail(EXIT_MISMATCH, f"{packed.name} lacks {missing}")
        for name in seen:
            (stage / name).replace(dest / name)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return {"dest": str(dest), "files": len(seen),
            "bytes": sum(v["bytes"] for v in m["files"].values()), "verified": "sha256"}


def probe(model_dir: Path, n_prompts: int, max_new: int) -> dict:
    import numpy as np
    try:
        import MNN.llm as mnn_llm
    except ImportError:
        raise Fail(EXIT_BAD_INPUT, "pip MNN is not installed (pip install mnn==3.6.1)") from None
    config = model_dir / "config.json"
    if not config.is_file():
        raise Fail(EXIT_BAD_INPUT, f"model config not found: {config}")
    made = json.loads((model_dir / "soak_model.json").read_text()) \
        if (model_dir / "soak_model.json").is_file() else {}
    tok_vocab = made.get("tokenizer_vocab_size") or made.get("vocab_size")
    llm = mnn_llm.create(str(config))
    llm.load()
    c = llm._c_obj           # the binding's generate(ids, n) (as soak.engine.pymnn uses it)
    outputs, tokens, nonfinite, first = [], [], 0, []
    for prompt in (PROMPTS * (n_prompts // len(PROMPTS) + 1))[:n_prompts]:
        ids = llm.tokenizer_encode(llm.apply_chat_template(prompt))
        c.generate_init(None, None)
        logits = np.array(llm.forward(ids).read(), dtype=np.float32).ravel()
        nonfinite += int((~np.isfinite(logits)).sum())
        first.append(int(np.nanargmax(logits)) if np.isfinite(logits).any() else -1)
        c.generate_init(None, None)
        out = [int(t) for t in c.generate(ids, max_new)]
        outputs.append(tuple(out))
        tokens.extend(out)
    counts: dict[int, int] = {}
    for t in tokens:
        counts[t] = counts.get(t, 0) + 1
    top, top_n = max(counts.items(), key=lambda kv: kv[1]) if counts else (None, 0)
    report = {
        "model": str(model_dir), "prompts": n_prompts, "max_new_tokens": max_new,
        "nonfinite_logits": nonfinite, "logits_per_step": int(logits.size),
        "distinct_outputs": len(set(outputs)), "distinct_first_tokens": len(set(first)),
        "output_tokens": len(tokens), "distinct_tokens": len(counts),
        "top_token": top, "top_token_share": round(top_n / len(tokens), 3) if tokens else None,
        "tokens_past_tokenizer": sum(1 for t in tokens if tok_vocab and t >= tok_vocab),
        "sample": [list(o[:8]) for o in outputs[:3]],
    }
    problems = []
    if nonfinite:
        problems.append(f"{nonfinite} non-finite logits")
    if len(set(outputs)) < max(2, n_prompts // 2):
        problems.append(f"only {len(set(outputs))} distinct outputs for {n_prompts} prompts")
    if tokens and top_n / len(tokens) > 0.5:
        problems.append(f"token {top} is {top_n}/{len(tokens)} of the output (collapse)")
    if report["tokens_past_tokenizer"]:
        problems.append(f"{report['tokens_past_tokenizer']} output tokens past the tokenizer")
    report["problems"] = problems
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="tar | zstd --long=31 a model folder, with a hash manifest")
    p.add_argument("model_dir", type=Path)
    p.add_argument("out", type=Path)
    u = sub.add_parser("unpack", help="unpack and verify every file's sha256")
    u.add_argument("packed", type=Path)
    u.add_argument("dest", type=Path)
    u.add_argument("--manifest", type=Path, default=None, help="default: PACKED.manifest.json")
    r = sub.add_parser("probe", help="load in pip MNN (CPU) and check random-model behaviour")
    r.add_argument("model_dir", type=Path)
    r.add_argument("--prompts", type=int, default=20)
    r.add_argument("--max-new-tokens", type=int, default=16)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "pack":
            result = pack(args.model_dir, args.out)
        elif args.cmd == "unpack":
            result = unpack(args.packed, args.dest, args.manifest)
        else:
            result = probe(args.model_dir, args.prompts, args.max_new_tokens)
    except Fail as exc:
        print(f"model_pack: {exc}", file=sys.stderr)
        return exc.code
    print(json.dumps(result, indent=2))
    if args.cmd == "probe" and result["problems"]:
        print("model_pack: probe failed: " + "; ".join(result["problems"]), file=sys.stderr)
        return EXIT_MISMATCH
    return 0


if __name__ == "__main__":
    sys.exit(main())
