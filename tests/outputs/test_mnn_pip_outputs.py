"""Every output on a real pip-MNN run (the committed tiny model, CPU): verdicts, gate, bundle, report."""

from __future__ import annotations

import json
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import soak
from soak.cli import main
from soak.errors import ExitCode

TINY = Path(soak.__file__).parent / "models" / "qwen2-tiny" / "config.json"


@pytest.fixture(scope="module")
def mnn_run(tmp_path_factory):
    from soak.loop.config import RunConfig
    from soak.judges import run_judged

    out = tmp_path_factory.mktemp("mnn")
    cfg = RunConfig(engine="mnn-pip", model=str(TINY), iterations=24, seed=5, out_dir=str(out), run_id="mnn-tiny",
                    max_new_tokens=8, quiet=True, argv=["pytest", "mnn"])
    return Path(run_judged(cfg).run_dir)  # with verdicts.json, as `soak run` writes


def test_outputs_on_a_pip_mnn_run(mnn_run, tmp_path, capsys):
    verdicts = json.loads((mnn_run / "verdicts.json").read_text())
    assert verdicts["iterations"] == 24
    assert verdicts["memory"]["series"]["rss"]["verdict"] in ("stable", "leak", "growth_stopped", "decreasing", "ratchet", "retained")
    assert verdicts["perf"]["drift"]["decode_tps"]["median"] > 0

    policy = tmp_path / "cpu.toml"
    policy.write_text('[gate]\nrequired_backend = "cpu"\nmin_iterations = 24\n[errors.severity]\ncritical = { max_count = 0 }\n')
    junit = tmp_path / "junit.xml"
    assert main(["gate", str(mnn_run), "--policy", str(policy), "--junit", str(junit)]) == ExitCode.OK
    assert ET.parse(junit).getroot().find("testsuite").get("failures") == "0"
    opencl = tmp_path / "opencl.toml"
    opencl.write_text('[gate]\nrequired_backend = "opencl"\n')
    assert main(["gate", str(mnn_run), "--policy", str(opencl)]) == ExitCode.FAILED

    bundle = tmp_path / "mnn.tar.gz"
    assert main(["bundle", str(mnn_run), "-o", str(bundle)]) == ExitCode.OK
    with tarfile.open(bundle) as tar:
        names = {m.name.split("/", 1)[1] for m in tar if m.isfile()}
        env = json.loads(tar.extractfile("soak-bundle-mnn-tiny/environment.json").read())
    assert {"README.md", "environment.json", "series/memory.csv", "model/config.json"} <= names
    assert env["model_size_bytes"] > 0

    report = tmp_path / "mnn.html"
    assert main(["report", str(mnn_run), "-o", str(report)]) == ExitCode.OK
    assert "mnn-tiny" in report.read_text() and "<svg" in report.read_text()
