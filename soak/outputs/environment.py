"""The environment of a run, from its manifest: what a vendor needs to know "on what".

OpenCL platform, device, driver, extensions and limits; host or phone
properties; engine libraries with their hashes; MNN version; the model's
config and size; the seed.
"""

from __future__ import annotations

from pathlib import Path

from soak.analysis.loaded_run import RunFolder


def environment(run: RunFolder) -> dict:
    m = run.manifest
    env = {
        "run_id": run.run_id,
        "seed": run.seed,
        "engine": m.get("engine") or (m.get("config") or {}).get("engine"),
        "engine_name": m.get("engine_name"),
        "backend_requested": run.backend_requested,
        "backend_actual": run.backend_actual,
        "opencl": m.get("opencl"),
        "host": m.get("host"),
        "device": m.get("device") or m.get("phone") or m.get("props"),
        "versions": m.get("versions"),
        "mnn_version": m.get("mnn_version"),
        "libraries": m.get("libraries"),
        "engine_spec": m.get("engine_spec"),
        "engine_config": m.get("engine_config"),
        "model": m.get("model"),
        "target": m.get("target"),
    }
    model_cfg = model_config_path(run)
    if model_cfg is not None:
        env["model_config_path"] = str(model_cfg)
        try:
            folder = model_cfg.parent
            env["model_size_bytes"] = sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
        except OSError:
            pass
    return env


def model_config_path(run: RunFolder) -> Path | None:
    m = run.manifest
    for cand in ((m.get("model") or {}).get("config_path"), (m.get("config") or {}).get("model")):
        if isinstance(cand, str) and cand:
            p = Path(cand)
            p = p / "config.json" if p.is_dir() else p
            if p.is_file() and p.stat().st_size < (1 << 20):
                return p
    return None
