"""The run's context (model size, backend, GPU, driver, versions, OS) from
manifest.json, and the check of an entry's `applies_to` against it.

Every field may be missing: an old manifest, a run that died early, a raw
log.  A missing field is *unknown*: it neither fits nor fails an entry.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from soak import run_folder
from soak.catalog.schema import (THREAD_NUM_BITS, AppliesTo, human_params,
                                 parse_param_count, parse_version)
from soak.engine.model_info import kv_cache_theory


@dataclass
class RunContext:
    run_id: str | None = None
    model_name: str | None = None
    model_params: float | None = None
    model_family: str | None = None
    max_context: int | None = None
    kv_bytes_per_token: int | None = None   # KV cache per context token, from the model's shape
    kv_dtype: str | None = None             # the KV precision that figure assumes (fp16/fp32)
    backend: str | None = None          # requested
    backend_actual: str | None = None
    precision: str | None = None
    memory: str | None = None
    thread_num: int | None = None
    gpu_vendor: str | None = None
    gpu_model: str | None = None
    driver_version: str | None = None
    mnn_version: str | None = None
    os: str | None = None
    gpu_platform: str | None = None     # OpenCL platform name (PoCL, NVIDIA CUDA, ...)
    manifest_problem: str | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        d["model_params_human"] = human_params(self.model_params) if self.model_params else None
        return d

    def unknown(self) -> list[str]:
        keys = ("model_params", "model_family", "backend", "backend_actual", "precision", "memory",
                "thread_num", "gpu_vendor", "gpu_model", "driver_version", "mnn_version", "os")
        return [k for k in keys if getattr(self, k) is None]


def _dict(v) -> dict:
    if isinstance(v, dict):
        return v
    if isinstance(v, list) and v and isinstance(v[0], dict):
        return v[0]
    return {}


def _first(d: dict, *keys):
    for k in keys:
        v = d.get(k)
        if v not in (None, ""):
            return v
    return None


def _lower(v) -> str | None:
    return v.strip().lower() if isinstance(v, str) and v.strip() else None


def _os_name(v) -> str | None:
    if isinstance(v, dict):
        v = _first(v, "name", "system", "os", "platform")
    s = _lower(v)
    if s is None:
        return None
    for key, name in (("android", "android"), ("linux", "linux"), ("windows", "windows"),
                      ("win32", "windows"), ("darwin", "macos"), ("mac", "macos")):
        if key in s:
            return name
    return s


def _int(v) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, str) and v.strip().isdigit():
        return int(v)
    return None


def load_context(run_dir: Path, scan=None) -> RunContext:
    ctx = RunContext()
    m: dict = {}
    try:
        found = run_folder.read_manifest(run_dir)  # a newer major schema: BadInput (exit 3)
        if found is None:
            ctx.manifest_problem = f"no {run_folder.MANIFEST}"
        else:
            m = found
    except run_folder.DamagedFile as exc:  # the classifier works without it
        ctx.manifest_problem = f"{run_folder.MANIFEST} {exc.problem}"
    ctx.run_id = _first(m, "run_id") or run_dir.name
    model = _dict(m.get("model"))
    cfg = _dict(_first(m, "config", "engine_config"))
    opts = _dict(cfg.get("engine_options"))
    model_cfg = _dict(model.get("config"))
    ctx.model_name = _first(model, "name", "path", "config_path")
    ctx.model_params = parse_param_count(_first(model, "params", "parameters", "n_params"))
    ctx.model_family = _first(model, "family", "model_type", "architecture")
    ctx.max_context = _int(_first(model, "max_position_embeddings", "context_length", "max_context")
                           or _first(model_cfg, "max_position_embeddings"))
    backend = m.get("backend")
    if isinstance(backend, dict):
        backend = _first(backend, "requested", "name", "type")
    ctx.backend = _lower(backend) or _lower(_first(cfg, "backend_type"))
    ctx.backend_actual = _lower(m.get("backend_actual"))
    ctx.precision = _lower(_first(opts, "precision") or _first(cfg, "precision") or m.get("precision"))
    ctx.memory = _lower(_first(opts, "memory") or _first(cfg, "memory") or m.get("memory"))
    ctx.thread_num = _int(_first(opts, "thread_num", "thread-num") if _first(opts, "thread_num") is not None
                          else _first(cfg, "thread_num") if _first(cfg, "thread_num") is not None
                          else m.get("thread_num"))
    cl = _dict(m.get("opencl"))
    plat_name = cl.get("platform")
    plat_name = _first(plat_name, "name", "vendor") if isinstance(plat_name, dict) else plat_name
    ctx.gpu_platform = _first(cl, "platform_name") or (plat_name if isinstance(plat_name, str) else None)
    if isinstance(cl.get("platforms"), list) and cl["platforms"]:  # [{name, vendor, devices: [...]}]
        plat = _dict(cl["platforms"])
        ctx.gpu_platform = ctx.gpu_platform or _first(plat, "name", "vendor")
        cl = {**plat, "devices": plat.get("devices")}
    if isinstance(cl.get("devices"), list) and cl["devices"]:
        dev = _dict(cl["devices"])
    elif isinstance(cl.get("device"), dict):
        dev = cl["device"]
    else:
        dev = cl
    ctx.gpu_vendor = _first(dev, "vendor", "device_vendor") or _first(cl, "vendor", "platform_vendor", "platform")
    if isinstance(ctx.gpu_vendor, dict):
        ctx.gpu_vendor = _first(ctx.gpu_vendor, "vendor", "name")
    name = cl.get("device") if isinstance(cl.get("device"), str) else _first(dev, "name", "device_name", "device")
    ctx.gpu_model = name if isinstance(name, str) else None
    ctx.driver_version = _str(_first(dev, "driver_version", "driver") or _first(cl, "driver_version", "driver"))
    versions = _dict(m.get("versions"))
    # an explicit null (the test engine) is not the pip MNN that happens to be installed
    ctx.mnn_version = _str(m["mnn_version"] if "mnn_version" in m else _first(versions, "mnn", "MNN"))
    ctx.os = _os_name(m.get("os") or _dict(m.get("host")).get("os") or _dict(m.get("host")).get("system"))
    if ctx.os is None:
        target = str(m.get("target") or "")
        if target.startswith("adb"):
            ctx.os = "android"
    if scan is not None:
        fill_from_events(ctx, scan)
    kv = kv_cache_theory(model, ctx.backend_actual or ctx.backend)
    if kv:
        ctx.kv_bytes_per_token = kv["bytes_per_token"]
        ctx.kv_dtype = "fp32" if kv["dtype_bytes"] == 4 else "fp16"
    return ctx


def fill_from_events(ctx: RunContext, scan) -> None:
    """Fill the backend gaps of the manifest from the events' run_start and load."""
    for ev in (scan.run_start, scan.load):
        if not ev:
            continue
        ctx.backend = ctx.backend or _lower(ev.get("backend") or ev.get("backend_requested"))
        ctx.backend_actual = ctx.backend_actual or _lower(ev.get("backend_actual"))


def context_from_log(read: dict, name: str) -> RunContext:
    """The context of a raw log (soak.catalog._rawlog): only what it told."""
    return RunContext(run_id=name, model_name=read.get("model_name"), backend=read.get("backend"),
                      backend_actual=read.get("backend_actual"), gpu_vendor=read.get("gpu_vendor"),
                      gpu_model=read.get("gpu_model"), mnn_version=read.get("mnn_version"), os=read.get("os"))


def _str(v) -> str | None:
    if v is None:
        return None
    return str(v)


def check_applies(a: AppliesTo, ctx: RunContext) -> tuple[list[str], list[str], list[str]]:
    """(fits, mismatches, unknown) in words."""
    fits: list[str] = []
    bad: list[str] = []
    unknown: list[str] = []

    def judge(key, value, ok, want, have):
        if value is None:
            unknown.append(key)
        elif ok:
            fits.append(f"{key} {have}")
        else:
            bad.append(f"{key} is {have}, entry wants {want}")

    if a.model_params is not None:
        lo, hi = a.model_params
        v = ctx.model_params
        want = f"{human_params(lo) if lo else ''}..{human_params(hi) if hi else ''}"
        judge("model_params", v, v is not None and (lo is None or v >= lo) and (hi is None or v <= hi),
              want, human_params(v))
    for key in ("model_family", "gpu_vendor", "gpu_model"):
        rx = getattr(a, key)
        if rx is not None:
            v = getattr(ctx, key)
            judge(key, v, v is not None and rx.search(v) is not None, f"/{rx.pattern}/", repr(v))
    for key in ("backend", "backend_actual", "precision", "memory", "os"):
        allowed = getattr(a, key)
        if allowed is not None:
            v = getattr(ctx, key)
            judge(key, v, v in allowed, "|".join(sorted(allowed)), v)
    if a.thread_num is not None:
        v = ctx.thread_num
        judge("thread_num", v, v in a.thread_num, "|".join(map(str, sorted(a.thread_num))), v)
    if a.thread_num_mode is not None:
        v = ctx.thread_num
        have = None if v is None else "+".join(k for k, bit in THREAD_NUM_BITS.items() if v & bit) or "none"
        ok = v is not None and any(v & THREAD_NUM_BITS[k] for k in a.thread_num_mode)
        judge("thread_num_mode", v, ok, "|".join(sorted(a.thread_num_mode)), f"{v} ({have})")
    for key in ("driver_version", "mnn_version"):
        spec = getattr(a, key)
        if spec is not None:
            raw = getattr(ctx, key)
            ver = parse_version(raw)
            if ver is None:
                unknown.append(key)
            else:
                judge(key, ver, spec.contains(ver), spec.text, raw)
    return fits, bad, unknown
