"""What a run is asked to do: RunConfig, its validation, and the CLI's value parsers.

Nothing here starts a process or writes a file.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from soak import errors
from soak.loop.ladder import STEPS as LADDER_STEPS
from soak.loop.session import Timeouts

ENGINE_KINDS = ("test", "mnn-pip", "mnn", "lib")
BACKENDS = ("cpu", "opencl", "vulkan")
EMBEDDED_MODEL = Path(__file__).resolve().parent.parent / "models" / "qwen2-tiny" / "config.json"


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


def validate(cfg: RunConfig) -> None:
    """BadInput for a config no run can start from."""
    if cfg.engine not in ENGINE_KINDS:
        raise errors.BadInput(f"unknown engine {cfg.engine!r}", f"use one of {', '.join(ENGINE_KINDS)}")
    if cfg.backend not in BACKENDS:
        raise errors.BadInput(f"unknown backend {cfg.backend!r}", f"use one of {', '.join(BACKENDS)}")
    if cfg.engine == "mnn-pip" and cfg.backend != "cpu":
        raise errors.BadInput(f"pip MNN runs on the CPU only; --backend {cfg.backend} needs a hand-built MNN",
                              errors.HAND_BUILT_MNN_HINT)


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
