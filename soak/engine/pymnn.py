"""pip MNN (`MNN.llm`, CPU only) behind soak's Python engine interface.

    engine = PyMnnEngine("soak/models/qwen2-tiny/config.json")
    engine.set_config('{"thread_num": 2}')
    engine.load()
    out: bytes = engine.respond(b"hello", 32)

How it drives the binding, and why (all measured on mnn 3.6.1):
- `set_config` does nothing in the wheel, so runtime keys are merged into a copy
  of config.json, written with symlinks to the model files into a private folder
  under tmp_path (or the worker's cwd, which is the run folder), and the Llm is
  created from that copy at load().
- The binding takes prompts as C strings: `response("a\\0b")` silently drops
  everything after the NUL, and a str with a lone surrogate segfaults it. Its
  `response()` also echoes the prompt and output to stdout (which would put
  prompt text into engine.log, where the log parser looks for MNN error lines),
  raises UnicodeDecodeError when the output is not valid UTF-8, and after such
  an output `get_context()` segfaults.
  So soak does what `Llm::response(std::string)` does, step by step, with MNN's
  own parts: MNN's chat template (`apply_chat_template`), MNN's tokenizer on the
  prompt *bytes* (`tokenizer_encode` accepts bytes, invalid UTF-8 included),
  NUL bytes mapped to the tokenizer's own byte token for 0x00 (and back, in the
  output), then
  `generate_init()` + `generate(ids, max_new_tokens)` (which is what
  `response(ids)` runs in C++). Output bytes are the exact bytes of the output
  tokens (`tokenizer_decode`; for a partial UTF-8 token the raw bytes come from
  the UnicodeDecodeError), so invalid UTF-8 reaches soak's checks unchanged.
- Like `response(std::string)`, a respond in a sticky error state (USER_CANCEL,
  INTERNAL_ERROR, TIMEOUT) generates nothing and leaves the status alone:
  reinit() (`generate_init`) is the way out, as with the native shim.
- `generate()` after `response()` segfaults unless `generate_init()` comes
  first: every respond calls `generate_init()` first.
- `reuse_kv` is forced true (multi-turn needs it; soak's runner sets it too).
- Before every `get_context()` the context's `generate_str` is cleared with
  `set_context`, so a non-UTF-8 string can never reach the binding's converter.
Special-token text in a prompt (e.g. "<|im_end|>") is tokenized as the special
token, exactly as MNN's own response() does.

The logits oracle (soak_engine.h's optional functions, the same methods as
soak.engine.loader.NativeEngine): tokenize() is encode(); forward(ids, prefill)
runs the binding's `forward(ids)` (`Llm::forward`, which keeps the KV cache in
3.6.1), after `generate_init()` and the history update of `Llm::generate` on a
prefill, and after the decode loop's history/output update on a step; it hands
back the last position's logits as a float32 memoryview (a copy the engine
keeps until the next forward). The binding crashes on anything but one list of
ints, so ids are checked here first.  is_stop() asks MNN (`stoped()` on the
token as current_token).
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import sys
import shutil
import time
import weakref
from pathlib import Path

from soak.engine.abi import ERROR_STATUSES, NOT_LOADED, zero_perf
from soak.errors import HAND_BUILT_MNN_HINT, BadInput, SoakError

CPU_BACKENDS = ("cpu", 0, "0")
# Private-use characters: no tokenizer merges them with the template around them.
_MARK = "\ue000soak-prompt\ue001"
_FIX_MODEL = ("pass the model's config.json (or its folder) with --model, e.g. "
              "soak/models/qwen2-tiny/config.json")
_FIX_BACKEND = "pip MNN is built for the CPU only: use --backend cpu, or " + HAND_BUILT_MNN_HINT


class PyMnnError(SoakError):
    """pip MNN refused a call (wrong order, load failed, ...)."""


def _binding_call(method):
    """A Python exception from the binding becomes a PyMnnError the worker records
    (instead of a traceback that ends the worker)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except SoakError:
            raise
        except Exception as exc:
            raise PyMnnError(f"pip MNN {method.__name__} failed: {type(exc).__name__}: {exc}") from None
    return wrapper


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(f"{what} not found: {path}", _FIX_MODEL) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{what} {path} is not valid JSON: {exc}",
                       "regenerate the model (tools/make_qwen2_model.py) or fix the file") from None
    if not isinstance(data, dict):
        raise BadInput(f"{what} {path} is not a JSON object", _FIX_MODEL)
    return data


def check_model(config_path: str | os.PathLike) -> tuple[Path, dict]:
    """Resolve and validate an MNN-LLM model config; returns (path, config).
    A packaged model name ("tiny", "qwen2-tiny") works too."""
    from soak.engine.model_info import builtin_model

    path = builtin_model(config_path) or Path(config_path).expanduser()
    if path.is_dir():
        path = path / "config.json"
    if not path.is_file():
        raise BadInput(f"model config not found: {path}", _FIX_MODEL)
    config = _read_json(path, "model config")
    base = path.parent
    needed = {
        "llm_model": config.get("llm_model", "llm.mnn"),
        "llm_weight": config.get("llm_weight", "llm.mnn.weight"),
        "tokenizer_file": config.get("tokenizer_file", "tokenizer.txt"),
        "llm_config": config.get("llm_config", "llm_config.json"),
    }
    missing = [f"{key}={name}" for key, name in needed.items() if not (base / name).is_file()]
    if missing:
        raise BadInput(f"model folder {base} lacks {', '.join(missing)}",
                       "is this an MNN-LLM export (llmexport)? " + _FIX_MODEL)
    check_model_files(base, needed)
    return path.resolve(), config


def check_model_files(base: Path, needed: dict) -> None:
    """Cheap truncation checks (MNN itself loads a truncated weight file "fine" and then
    fails every forward with INTERNAL_ERROR)."""
    sizes = {name: (base / name).stat().st_size for name in needed.values()}
    empty = [name for name, size in sizes.items() if size == 0]
    if empty:
        raise BadInput(f"model file(s) {', '.join(empty)} in {base} are empty",
                       "copy or regenerate the model (tools/make_qwen2_model.py for the test models)")
    weight = needed["llm_weight"]
    tie = _read_json(base / needed["llm_config"], "llm_config.json").get("tie_embeddings")
    if isinstance(tie, list) and len(tie) >= 3 and all(isinstance(v, int) for v in tie[:3]):
        if tie[1] + tie[2] > sizes[weight]:
            raise BadInput(f"{base / weight} is {sizes[weight]} bytes, but llm_config.json places "
                           f"the embedding up to byte {tie[1] + tie[2]}: the weight file is truncated",
                           "copy the model again (or regenerate it)")
    record = base / "soak_model.json"
    if record.is_file():
        files = _read_json(record, "soak_model.json").get("files", {})
        for name, info in files.items():
            if name in sizes and isinstance(info, dict) and info.get("bytes") not in (None, sizes[name]):
                raise BadInput(f"{base / name} is {sizes[name]} bytes, soak_model.json says "
                               f"{info['bytes']}: truncated or replaced",
                               "regenerate it: python tools/make_qwen2_model.py --out " + str(base))


def check_backend(config: dict) -> None:
    backend = config.get("backend_type", "cpu")
    if backend not in CPU_BACKENDS:
        raise BadInput(f"pip MNN cannot run backend {backend!r}", _FIX_BACKEND)


class PyMnnEngine:
    """One `MNN.llm` instance, created at load() from the merged config."""

    streams = False  # the binding returns the whole answer at once: no per-token progress

    def __init__(self, config_path: str | os.PathLike):
        self.config_path, self.model_config = check_model(config_path)
        check_backend(self.model_config)
        self.overrides: dict = {}
        self.name = f"pip mnn {_mnn_version()} (MNN.llm, CPU)"
        self._llm = None
        self._c = None
        self._dir: Path | None = None
        self._bytes: dict[int, bytes] = {}
        self._nul_id: int | None = None
        self._prefix = self._suffix = b""
        self.last_tokens: list[int] = []     # output token ids of the last respond
        self.last_prompt_tokens: list[int] = []
        self._load_us_before = 0     # MNN's load_us of earlier instances (load() recreates)
        self.vocab = 0               # known after the first forward
        self._logits = None          # the last forward's logits (numpy float32), kept for the memoryview
        self._turn_perf = zero_perf()
        self._forward_turn = False   # perf() reports the last forward turn, not MNN's counters
        self._pending: list[int] = []  # ids forward steps fed, not yet in MNN's context
        self._stops: dict[int, bool] = {}
        self._mnn_llm = _import_mnn_llm()  # at open, so load time is the model's, not the import's

    # -- config -------------------------------------------------------------
    def set_config(self, text: str) -> None:
        try:
            update = json.loads(text)
        except json.JSONDecodeError as exc:
            raise BadInput(f"engine config is not valid JSON: {exc}: {text!r}") from None
        if not isinstance(update, dict):
            raise BadInput(f"engine config must be a JSON object, got {text!r}")
        merged = {**self.model_config, **self.overrides, **update}
        check_backend(merged)
        self.overrides.update(update)

    def effective_config(self) -> dict:
        config = {**self.model_config, **self.overrides}
        config["reuse_kv"] = True
        config.pop("soak_iteration", None)
        return config

    def _write_config(self) -> Path:
        config = self.effective_config()
        base = Path(config.get("tmp_path") or os.getcwd())
        folder = base / f"soak-pymnn-{os.getpid()}-{id(self):x}"
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        for item in self.config_path.parent.iterdir():
            if item.name != "config.json":
                os.symlink(item, folder / item.name)
        (folder / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        weakref.finalize(self, shutil.rmtree, str(folder), True)   # also if close() never runs
        return folder

    # -- lifecycle ----------------------------------------------------------
    def load(self) -> bool:
        if self._llm is not None:
            self._load_us_before += self.perf()["load_us"] - self._load_us_before
            self._drop()
        mnn_llm = self._mnn_llm
        self._dir = self._write_config()
        try:
            self._llm = mnn_llm.create(str(self._dir / "config.json"))
            self._c = self._llm._c_obj
            self._c.load()
        except Exception as exc:  # the binding raises plain exceptions
            self._drop()
            raise PyMnnError(f"pip MNN could not load {self.config_path}: {exc}") from None
        self._bytes.clear()
        self.vocab = 0
        self._pending = []
        self._stops.clear()
        self._nul_id = self._find_nul_token()
        self._prefix, self._suffix = self._template()
        return self.status() != NOT_LOADED

    def _template(self) -> tuple[bytes, bytes]:
        config = self.effective_config()
        if config.get("use_template") is False:
            return b"", b""
        text = self._c.apply_chat_template(_MARK)
        if not isinstance(text, str) or text.count(_MARK) != 1:
            return b"", b""
        prefix, suffix = text.split(_MARK)
        return prefix.encode("utf-8"), suffix.encode("utf-8")

    def _drop(self) -> None:
        self._c = None
        self._llm = None          # the binding destroys the Llm when the last reference goes
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def close(self) -> None:
        self._drop()

    def _loaded(self):
        if self._c is None:
            raise PyMnnError("engine not loaded: call load first")
        return self._c

    # -- calls --------------------------------------------------------------
    @_binding_call
    def encode(self, prompt: bytes) -> list[int]:
        """Token ids MNN's response() would feed for this user turn."""
        c = self._loaded()
        text = self._prefix + prompt + self._suffix
        ids: list[int] = []
        for i, piece in enumerate(text.split(b"\x00")):
            if i:
                ids.append(self._nul_token())
            if piece:
                ids.extend(int(t) for t in c.tokenizer_encode(piece))
        return ids

    def _nul_token(self) -> int:
        if self._nul_id is None:
            raise BadInput("the prompt contains NUL bytes, and this model's tokenizer has no byte "
                           "token for NUL that soak can find (pip MNN passes prompts as C strings)",
                           "use a byte-level BPE model, or --engine lib (the shim passes lengths)")
        return self._nul_id

    def _find_nul_token(self) -> int | None:
        """The byte-level token for 0x00. The binding decodes it to "" (C string), so it is
        the one id among the first 512 that decodes to nothing while its neighbours are
        single-byte tokens (GPT-2/Qwen byte order puts it at 188)."""
        empty = [t for t in range(512) if self.token_bytes(t) == b""]
        if len(empty) != 1 or empty[0] == 0:
            return None
        t = empty[0]
        if len(self.token_bytes(t - 1)) != 1 or len(self.token_bytes(t + 1)) != 1:
            return None
        self._bytes[t] = b"\x00"
        return t

    def token_bytes(self, token: int) -> bytes:
        """The exact bytes of one token (special tokens give b"")."""
        cached = self._bytes.get(token)
        if cached is None:
            try:
                cached = self._loaded().tokenizer_decode(int(token)).encode("utf-8")
            except UnicodeDecodeError as exc:     # a partial UTF-8 token
                cached = bytes(exc.object)
            self._bytes[token] = cached
        return cached

    @_binding_call
    def respond(self, prompt: bytes, max_new_tokens: int) -> bytes:
        c = self._loaded()
        if not isinstance(prompt, (bytes, bytearray)):
            raise BadInput(f"prompt must be bytes, got {type(prompt).__name__}")
        self.last_tokens = []
        self._forward_turn = False
        if self.status() in ERROR_STATUSES:
            return b""                       # as Llm::response(std::string): sticky error
        ids = self.encode(bytes(prompt))
        self.last_prompt_tokens = ids
        c.generate_init(None, None)
        self.last_tokens = [int(t) for t in c.generate(ids, int(max_new_tokens))]
        return b"".join(self.token_bytes(t) for t in self.last_tokens)

    # -- the logits oracle ---------------------------------------------------
    oracle_available = True
    oracle_unavailable = None

    def tokenize(self, prompt: bytes) -> list[int]:
        """The token ids respond(prompt) feeds (the chat template applied)."""
        return self.encode(bytes(prompt))

    @_binding_call
    def forward(self, ids, prefill: bool) -> memoryview:
        """Run ids through MNN's forward on the live KV cache (prefill: start a turn as
        respond does); the last position's logits as a float32 memoryview of `vocab`
        items, valid until the next forward."""
        import numpy as np

        c = self._loaded()
        ids = [t for t in ids]
        limit = self.vocab or None
        bad = [t for t in ids if not isinstance(t, int) or isinstance(t, bool) or t < 0 or (limit and t >= limit)]
        if not ids or bad:
            raise BadInput(f"forward needs token ids in [0, {self.vocab or '?'}), got "
                           f"{bad[0] if bad else 'none'!r}")
        self._logits = None
        t0 = time.perf_counter()
        if prefill:
            if self.status() in ERROR_STATUSES:              # generate_init would clear it
                raise PyMnnError(f"pip MNN is in a sticky error state (status {self.status()}): reinit first")
            c.generate_init(None, None)                       # Llm::response(ids)
            ctx = self._context()
            c.set_context({"prompt_len": len(ids), "history_tokens": ctx.get("history_tokens", []) + ids})
            self._turn_perf = zero_perf()
            self._forward_turn = True
        else:
            # the decode loop's history/output bookkeeping, written to MNN's context when
            # it is next read (a get/set_context per step would cost half a tiny model's step)
            self._pending.extend(ids)
        var = c.forward(ids)
        # A forward that fails (or is refused in a sticky state) hands back a Var around a
        # null VARP, and touching it (read, even .valid) segfaults: MNN's status says first.
        c.set_context({"generate_str": ""})
        status = int(get_context_without_leak(c).get("status", NOT_LOADED))
        if var is None or status in ERROR_STATUSES or status == NOT_LOADED:
            raise PyMnnError(f"pip MNN forward failed: status {status}"
                             + (" (a sticky error state: reinit first)" if status in ERROR_STATUSES else ""))
        logits = np.asarray(var.read(), dtype=np.float32)
        if logits.size == 0 or not logits.shape:
            raise PyMnnError(f"pip MNN forward returned empty logits (shape {logits.shape})")
        us = int((time.perf_counter() - t0) * 1e6) + 1
        if prefill:
            self._turn_perf.update(prompt_tokens=len(ids), prefill_us=us)
        else:
            self._turn_perf["generated_tokens"] += len(ids)
            self._turn_perf["decode_us"] += us
        self.vocab = int(logits.shape[-1])
        self._logits = np.ascontiguousarray(logits.reshape(-1, self.vocab)[-1])
        return memoryview(self._logits).cast("B").cast("f")

    @_binding_call
    def is_stop(self, token: int) -> bool:
        """MNN's is_stop(token): the binding has only stoped(), which asks it of current_token
        (answers are cached: the stop tokens are the tokenizer's, fixed at load)."""
        token = int(token)
        known = self._stops.get(token)
        if known is None:
            c = self._loaded()
            current = self._context().get("current_token", -1)
            c.set_context({"current_token": token})
            try:
                known = self._stops[token] = bool(c.stoped())
            finally:
                c.set_context({"current_token": int(current)})
        return known

    @_binding_call
    def reset(self) -> None:
        self._pending = []
        if self._c is not None:
            self._c.reset()

    @_binding_call
    def reinit(self) -> None:
        if self._c is not None:
            self._c.generate_init(None, None)

    @_binding_call
    def _context(self) -> dict:
        c = self._loaded()
        if self._pending:                     # forward steps not yet in MNN's context
            pending, self._pending = self._pending, []
            c.set_context({"generate_str": ""})
            ctx = get_context_without_leak(c)
            c.set_context({"history_tokens": ctx.get("history_tokens", []) + pending,
                           "output_tokens": ctx.get("output_tokens", []) + pending,
                           "current_token": pending[-1]})
        c.set_context({"generate_str": ""})    # never hand a non-UTF-8 string to the binding
        return get_context_without_leak(c)

    def status(self) -> int:
        if self._c is None:
            return NOT_LOADED
        return int(self._context().get("status", NOT_LOADED))

    def context(self) -> dict:
        """MNN's LlmContext as a dict (history/output tokens, counters)."""
        return self._context()

    def perf(self) -> dict:
        if self._c is None:
            return zero_perf(load_us=self._load_us_before)
        ctx = self._context()
        if self._forward_turn:    # a forward() turn: its own timings (soak_engine.h, forward)
            return dict(self._turn_perf, load_us=self._load_us_before + int(ctx.get("load_us", 0)))
        return zero_perf(prompt_tokens=ctx.get("prompt_len", 0), generated_tokens=ctx.get("gen_seq_len", 0),
                         prefill_us=ctx.get("prefill_us", 0), decode_us=ctx.get("decode_us", 0),
                         load_us=self._load_us_before + int(ctx.get("load_us", 0)))


_py_decref = ctypes.pythonapi.Py_DecRef
_py_decref.argtypes = [ctypes.py_object]
_py_decref.restype = None


def get_context_without_leak(c) -> dict:
    """`get_context()` of pip mnn 3.6.1 leaks one reference to every value it returns
    (pymnn/src/llm.h: `PyDict_SetItemString(dict, key, PyLong_FromLong(...))` never
    releases the new reference), so each call leaks its dict values, including the whole
    history_tokens list: ~40 bytes per context token per call, which would show up as a
    memory leak of the engine in every soak. Give back exactly that one reference per
    value, but only when the fresh history list proves the leak is there (held by the
    dict, the local name and getrefcount's argument = 3; leaked = 4), so a fixed binding
    is left alone."""
    d = c.get_context()
    if not isinstance(d, dict):
        return {}
    probe = d.get("history_tokens")
    if isinstance(probe, list) and sys.getrefcount(probe) == 4:
        del probe
        for value in d.values():
            _py_decref(value)
    return d


def _import_mnn_llm():
    from soak.engine._mnn_guard import import_mnn_llm

    try:
        return import_mnn_llm()
    except ImportError as exc:
        raise BadInput(f"pip MNN is not installed ({exc})",
                       "pip install mnn==3.6.1  (or: pip install 'soak[mnn]')") from None


def _mnn_version() -> str:
    try:
        from importlib.metadata import version

        return version("mnn")
    except Exception:
        return "?"
