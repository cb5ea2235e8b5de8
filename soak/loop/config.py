"""What a run is asked to do: RunConfig, its validation, and the CLI's value parsers.

Nothing here starts a process or writes a file.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import secrets
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from soak import errors
from soak.loop.ladder import STEPS as LADDER_STEPS
from soak.loop.oracle_turns import OracleConfig, validate as validate_oracle
from soak.loop.session import Timeouts

ENGINE_KINDS = ("test", "mnn-pip", "mnn", "lib")
BACKENDS = ("cpu", "opencl", "vulkan")
EMBEDDED_MODEL = Path(__file__).resolve().parent.parent / "models" / "qwen2-tiny" / "config.json"
# a run id is one folder name under --out: never a path, never too long for the file system
RUN_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RUN_ID_HINT = "a run id is one folder name: up to 128 letters, digits, '.', '_' and '-', starting with a letter or digit"
# the memory timer: faster than this measures soak, not the engine
MIN_MEMORY_INTERVAL_S = 0.05


@dataclass
class RunConfig:
    engine: str = "test"
    engine_lib: str | None = None
    mnn_build: str | None = None
    plugins: list[str] = field(default_factory=list)
    model: str | None = None
    backend: str = "cpu"
    engine_options: dict = field(default_factory=dict)
    iterations: int | None = None
    duration_s: float | None = None
    seed: int = 0
    fail_fast: bool = False
    out_dir: str = "logs"
    run_id: str | None = None
    fault_plan: list | None = None
    test_engine: dict = field(default_factory=dict)
    max_new_tokens: int = 64
    max_turns: int = 4
    context_tokens: int | None = None
    timeouts: Timeouts = field(default_factory=Timeouts)
    ladder: list[str] = field(default_factory=lambda: list(LADDER_STEPS))
    recover_on_output: bool = False
    memory_interval_s: float = 1.0
    max_unrecovered: int = 3
    target: str = "local"
    intercept: dict | None = None
    argv: list[str] = field(default_factory=list)
    script: list[dict] | None = None
    quiet: bool = False
    demo: bool = False
    oracle: OracleConfig | None = None   # the wrong-answer oracle: make a reference, or check against one


def validate(cfg: RunConfig) -> None:
    """BadInput for a config no run can start from.  The one check of a RunConfig: the CLI,
    replay and the Python API (run_soak) all come through here before anything is written."""
    if cfg.engine not in ENGINE_KINDS:
        raise errors.BadInput(f"unknown engine {cfg.engine!r}", f"use one of {', '.join(ENGINE_KINDS)}")
    if cfg.backend not in BACKENDS:
        raise errors.BadInput(f"unknown backend {cfg.backend!r}", f"use one of {', '.join(BACKENDS)}")
    if cfg.engine == "mnn-pip" and cfg.backend != "cpu":
        raise errors.BadInput(f"pip MNN runs on the CPU only; --backend {cfg.backend} needs a hand-built MNN",
                              errors.HAND_BUILT_MNN_HINT)
    validate_run_id(cfg.run_id)
    if cfg.oracle is not None:
        validate_oracle(cfg.oracle)
    _count("--iterations", cfg.iterations, minimum=0, optional=True)
    _count("--max-new-tokens", cfg.max_new_tokens, minimum=1)
    _count("--max-turns", cfg.max_turns, minimum=1)
    _count("--context", cfg.context_tokens, minimum=1, optional=True)
    _count("max_unrecovered", cfg.max_unrecovered, minimum=1)
    _count("--seed", cfg.seed, minimum=None)
    _seconds("--duration", cfg.duration_s, optional=True)
    _seconds("--memory-interval", cfg.memory_interval_s, minimum=MIN_MEMORY_INTERVAL_S)
    for f in fields(cfg.timeouts):
        value = getattr(cfg.timeouts, f.name)
        # a timer that may be off (None: the stall timer) says so in its type
        _seconds(f"--timeout-{f.name}", value, optional="None" in str(f.type))
    if cfg.engine in ("test", "mnn-pip"):
        engine = "the test engine" if cfg.engine == "test" else "pip MNN"
        if cfg.engine_lib:
            raise errors.BadInput(f"--engine-lib is not used by {engine}: {cfg.engine_lib} would be ignored",
                                  "drop --engine-lib, or pass --engine lib to load it")
        if cfg.plugins:
            raise errors.BadInput(f"--plugin is not used by {engine}: {', '.join(map(str, cfg.plugins))} "
                                  "would be ignored", "drop --plugin, or use --engine lib or --engine mnn")
    if cfg.fault_plan is not None:
        if cfg.engine != "test":
            raise errors.BadInput("--fault-plan works with the test engine only",
                                  "for real engines inject OpenCL faults with --cl-fault")
        if not isinstance(cfg.fault_plan, list) or not all(
                isinstance(f, dict) and isinstance(f.get("kind"), str) for f in cfg.fault_plan):
            raise errors.BadInput("a fault plan is a JSON list of objects, each with a \"kind\"",
                                  "see native/test_engine/FAULTS.md")


def validate_run_id(run_id: str | None) -> None:
    if run_id is None:
        return
    if not isinstance(run_id, str) or not RUN_ID_RE.fullmatch(run_id):
        shown = run_id if not isinstance(run_id, str) or len(run_id) <= 60 else run_id[:60] + "..."
        raise errors.BadInput(f"--run-id {shown!r} is not a plain folder name"
                              + (f" ({len(run_id)} characters)" if isinstance(run_id, str) and len(run_id) > 128
                                 else ""), RUN_ID_HINT)


def _count(option: str, value, minimum: int | None, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        raise errors.BadInput(f"{option} must be a whole number" + (f" >= {minimum}" if minimum is not None else "")
                              + f", not {value!r}")


def _seconds(option: str, value, minimum: float | None = None, optional: bool = False) -> None:
    """A time in seconds: a finite number > 0 (and >= minimum)."""
    if value is None and optional:
        return
    ok = (not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0
          and (minimum is None or value >= minimum))
    if not ok:
        floor = f">= {minimum:g}" if minimum is not None else "> 0"
        raise errors.BadInput(f"{option} must be a finite number of seconds {floor}, not {value!r}",
                              f"e.g. {option} {max(minimum or 0, 1.0):g}")


def config_dict(cfg: RunConfig) -> dict:
    """The config as the manifest records it (a replay script is not part of it)."""
    d = asdict(cfg)
    d.pop("script", None)
    return d


def new_run_id(cfg: RunConfig) -> str:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{cfg.engine}-{cfg.backend}-{secrets.token_hex(2)}"


def model_path(cfg: RunConfig) -> Path | None:
    """The model config this run uses (pip MNN defaults to the embedded tiny model)."""
    if cfg.engine == "test":
        return None  # the test engine needs no model
    model = cfg.model
    if cfg.engine == "mnn-pip" and not model and EMBEDDED_MODEL.exists():
        model = str(EMBEDDED_MODEL)
    return resolve_model(model, required=True)


def resolve_model(path: str | None, required: bool) -> Path | None:
    if path:
        from soak.engine.model_info import builtin_model

        path = str(builtin_model(path) or path)  # "tiny": the model shipped in the package
    if not path:
        if required:
            raise errors.BadInput("this engine needs a model: pass --model PATH/config.json",
                                  "the committed tiny model is soak/models/qwen2-tiny/config.json")
        return None
    p = Path(path).expanduser()
    if p.is_dir():
        p = p / "config.json"
    if not p.exists():
        raise errors.BadInput(f"model config not found: {p}",
                              "pass the model's config.json (or its folder) with --model")
    try:
        json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise errors.BadInput(f"model config {p} is not valid JSON: {exc}") from None
    return p.resolve()


def parse_duration(text: str) -> float:
    """'90', '30s', '10m', '8h', '1h30m' -> seconds."""
    text = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise errors.BadInput(f"bad duration {text!r}", "use e.g. 90, 30s, 10m, 8h or 1h30m")
    return sum(float(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)
