"""engine_setup reads its RunConfig and never changes it."""

import copy

import pytest

from soak import errors
from soak.loop.config import EMBEDDED_MODEL, RunConfig
from soak.loop.engine_setup import engine_setup
from soak.native_build import build_test_engine


def test_pip_mnn_default_model_leaves_the_config_alone(tmp_path):
    cfg = RunConfig(engine="mnn-pip")
    before = copy.deepcopy(cfg)
    setup = engine_setup(cfg, tmp_path)
    assert setup.spec == {"kind": "pymnn", "config_path": str(EMBEDDED_MODEL)} and EMBEDDED_MODEL.exists()
    assert cfg == before and cfg.model is None


def test_engine_lib_setup_leaves_the_config_alone(tmp_path):
    lib = str(build_test_engine())
    cfg = RunConfig(engine="lib", engine_lib=lib, plugins=[], model=str(EMBEDDED_MODEL))
    before = copy.deepcopy(cfg)
    setup = engine_setup(cfg, tmp_path)
    assert setup.spec["engine_lib"] == lib and setup.spec["config_path"] == str(EMBEDDED_MODEL)
    assert cfg == before


def test_pip_mnn_on_opencl_is_bad_input(tmp_path):
    with pytest.raises(errors.BadInput, match="CPU only"):
        engine_setup(RunConfig(engine="mnn-pip", backend="opencl"), tmp_path)
