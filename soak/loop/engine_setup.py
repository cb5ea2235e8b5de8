"""RunConfig -> EngineSetup (the worker's `open` spec and the engine config),
and the engine facts the manifest records.  Reads its config, never changes it."""

from __future__ import annotations

import json
from pathlib import Path

from soak import errors
from soak.loop.config import RunConfig, model_path, validate
from soak.loop.session import EngineSetup
from soak.run_folder import TEST_ENGINE


def engine_setup(cfg: RunConfig, run_dir: Path) -> EngineSetup:
    """Build or locate what the engine needs; BadInput (and friends) for what can't work.
    Writes only run_dir/test_engine.json (the test engine's config)."""
    validate(cfg)
    config = {"backend_type": cfg.backend, "reuse_kv": True}
    config.update({k: v for k, v in cfg.engine_options.items() if v is not None})
    if cfg.engine == "test":
        from soak.engine.loader import EngineError, NativeEngine
        from soak.native_build import build_test_engine

        engine_config = {"seed": cfg.seed, "faults": cfg.fault_plan or []}
        engine_config.update(cfg.test_engine)
        path = run_dir / TEST_ENGINE
        path.write_text(json.dumps(engine_config, indent=2) + "\n")
        lib = str(build_test_engine())
        try:  # the engine's own parser judges the plan, before any worker starts
            NativeEngine(lib, str(path)).close()
        except EngineError as exc:
            raise errors.BadInput(f"the fault plan is refused: {exc.message.split(': ', 1)[-1]}",
                                  "fix the plan; its fields are in native/test_engine/FAULTS.md") from None
        spec = {"kind": "native", "engine_lib": lib, "plugins": [], "config_path": str(path)}
        return EngineSetup(spec, config, cfg.backend, per_iteration_config=True)
    model = model_path(cfg)
    if cfg.engine == "mnn-pip":
        return EngineSetup({"kind": "pymnn", "config_path": str(model)}, config, cfg.backend)
    engine_lib, plugins = cfg.engine_lib, list(cfg.plugins)
    if cfg.engine == "mnn":
        # a hand-built MNN: build the shim against it, load libMNN_CL.so first
        from soak.engine.mnn_native import build_shim, locate

        mnn = locate(cfg.mnn_build)
        engine_lib = str(build_shim(mnn))
        plugins = [str(p) for p in [*mnn.extra_libs(), *mnn.plugins] if str(p) not in plugins] + plugins
    if not engine_lib:
        raise errors.BadInput("--engine lib needs --engine-lib PATH (the MNN shim or another soak engine)")
    from soak.engine.loader import check_loadable

    if cfg.target == "local":  # a phone's libraries are checked by the runner on the phone
        check_loadable(Path(engine_lib), "engine library")
        for plugin in plugins:
            check_loadable(Path(plugin), "backend plugin")
    spec = {"kind": "native", "engine_lib": str(Path(engine_lib).resolve()),
            "plugins": [str(Path(p).resolve()) for p in plugins], "config_path": str(model)}
    return EngineSetup(spec, config, cfg.backend)


def manifest_facts(cfg: RunConfig) -> dict:
    """model, opencl, mnn_version and mnn for the manifest: what could be learnt without a worker."""
    return {"model": _model_info(cfg), "opencl": _opencl_info(cfg), "mnn_version": _mnn_version(cfg),
            "mnn": _mnn_build_info(cfg)}


def _model_info(cfg: RunConfig) -> dict | None:
    if cfg.engine == "test":
        return {"family": "test", "params": None, "note": "fault-injecting test engine"}
    from soak.engine.model_info import describe_model

    path = model_path(cfg)
    try:
        return describe_model(str(path))
    except errors.SoakError:
        raise
    except Exception as exc:  # a model we can't describe still runs
        return {"error": f"could not describe model: {exc}"}


def _opencl_info(cfg: RunConfig) -> dict | None:
    if cfg.backend != "opencl" or cfg.engine == "test":
        return None
    from soak.cl.devinfo import describe_opencl

    try:
        return describe_opencl(cfg.intercept.get("real_lib") if cfg.intercept else None)
    except Exception as exc:
        return {"error": str(exc)}


def _mnn_version(cfg: RunConfig) -> str | None:
    if cfg.engine == "mnn-pip":
        try:
            from importlib.metadata import version

            return version("mnn")
        except Exception:
            return None
    if cfg.engine == "mnn":
        from soak.engine.mnn_native import locate

        try:
            return locate(cfg.mnn_build).version
        except Exception:
            return None
    return None


def _mnn_build_info(cfg: RunConfig) -> dict | None:
    """A hand-built MNN's folders, version and library hashes (libllm.so, libMNN.so, plugins)."""
    if cfg.engine != "mnn":
        return None
    from soak.engine.mnn_native import locate

    try:
        return locate(cfg.mnn_build).manifest()
    except Exception as exc:
        return {"error": str(exc)}
