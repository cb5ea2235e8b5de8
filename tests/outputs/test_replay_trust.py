"""Issue 13.1: a bundle is data from a stranger.  `soak replay BUNDLE` loads only what the
receiver names (or soak's own test engine), writes only in its own run folder, and says what
it will load before it loads anything.  Each hostile bundle below got its way before the fix."""

import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from soak.cli import main
from soak.errors import ExitCode
from soak.native_build import build_test_engine
from soak.outputs.safe_tar import safe_extract

PLAN = [{"kind": "kv_map_error", "at": [3]}]


def verdict_of(out: str) -> dict:
    """The replay verdict: the JSON document printed last (a bundle's own line may come first)."""
    return json.loads(out if out.startswith("{") else out[out.index("\n{\n") + 1:])


def evil_library(tmp_path: Path, name: str) -> tuple[Path, Path]:
    """A library whose constructor leaves a marker: proof that it was loaded."""
    marker = tmp_path / f"{name}.loaded"
    src = tmp_path / f"{name}.c"
    src.write_text('#include <stdio.h>\n'
                   '__attribute__((constructor)) static void evil(void) {\n'
                   f'  FILE *f = fopen("{marker}", "w"); if (f) {{ fputs("pwned\\n", f); fclose(f); }}\n'
                   '}\n')
    lib = tmp_path / f"lib{name}.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return lib, marker


def tampered_bundle(engine_runs, tmp_path: Path, edit) -> Path:
    """A real bundle whose manifest config a stranger rewrote with edit(config)."""
    run = engine_runs("trust", PLAN, iterations=6)
    honest = tmp_path / "honest.tar.gz"
    assert main(["bundle", str(run), "-o", str(honest)]) == ExitCode.OK
    unpacked = tmp_path / "unpacked"
    names = safe_extract(honest, unpacked)
    top = unpacked / names[0].split("/", 1)[0]
    manifest = json.loads((top / "manifest.json").read_text())
    edit(manifest["config"])
    (top / "manifest.json").write_text(json.dumps(manifest))
    bundle = tmp_path / "tampered.tar.gz"
    with tarfile.open(bundle, "w:gz") as tar:
        tar.add(top, arcname=top.name)
    return bundle


def test_a_bundles_teardown_file_does_not_overwrite_the_receivers_files(engine_runs, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    bundle = tampered_bundle(engine_runs, tmp_path, lambda c: c["test_engine"].update(teardown_file=str(victim)))
    code = main(["replay", str(bundle), "--out", str(tmp_path / "replays"), "--json"])
    captured = capsys.readouterr()
    assert code == ExitCode.OK, captured.err
    assert victim.read_text() == "precious\n"
    assert "left out" in captured.err and "teardown_file" in captured.err and str(victim) in captured.err
    verdict = verdict_of(captured.out)
    assert verdict["reproduced"]  # the fault plan (data) still replays
    assert any("teardown_file" in item for item in verdict["ignored"])


def test_a_bundle_naming_libraries_on_the_receivers_disk_gets_none_loaded(engine_runs, tmp_path, capsys):
    engine, engine_marker = evil_library(tmp_path, "engine")
    plugin, plugin_marker = evil_library(tmp_path, "plugin")
    opencl, opencl_marker = evil_library(tmp_path, "opencl")
    model = tmp_path / "config.json"
    model.write_text("{}")

    def hostile(config):
        config.update(engine="lib", engine_lib=str(engine), plugins=[str(plugin)], model=str(model),
                      backend="opencl", test_engine={}, fault_plan=None,
                      intercept={"faults": "", "gpu_override": False, "mem_limit": None, "real_lib": str(opencl)})

    bundle = tampered_bundle(engine_runs, tmp_path, hostile)
    markers = (engine_marker, plugin_marker, opencl_marker)
    out = tmp_path / "replays"
    # nothing named by the receiver: refused, nothing loaded
    assert main(["replay", str(bundle), "--out", str(out)]) == ExitCode.BAD_INPUT
    assert "--engine-lib" in capsys.readouterr().err
    assert not any(m.exists() for m in markers)
    # the receiver names an engine and a model: a dry run says what would load and what is left out
    receiver_lib = str(build_test_engine())
    assert main(["replay", str(bundle), "--out", str(out), "--engine-lib", receiver_lib, "--model", str(model),
                 "--dry-run"]) == ExitCode.OK
    said = capsys.readouterr().err
    assert f"loads: engine library {receiver_lib}" in said
    for lib in (engine, plugin, opencl):
        assert str(lib) in said.split("left out", 1)[1]
    assert "system OpenCL" in said
    assert not out.exists() and not any(m.exists() for m in markers)
    # and the replay itself loads the receiver's library, not the bundle's
    code = main(["replay", str(bundle), "--out", str(out), "--engine-lib", receiver_lib, "--model", str(model),
                 "--json"])
    captured = capsys.readouterr()
    assert code in (ExitCode.OK, ExitCode.FAILED), captured.err
    assert not any(m.exists() for m in markers)
    replay_run = Path(verdict_of(captured.out)["replay_run"])
    manifest = json.loads((replay_run / "manifest.json").read_text())
    assert list(manifest["libraries"]) == [str(Path(receiver_lib).resolve())]
    assert manifest["config"]["intercept"]["real_lib"] is None


@pytest.mark.parametrize("engine,needle", [("mnn", "--mnn-build"), ("lib", "--engine-lib"),
                                           ("tensorflow", "does not know")])
def test_a_bundle_of_another_engine_needs_the_receivers_choice(engine_runs, tmp_path, capsys, monkeypatch,
                                                               engine, needle):
    monkeypatch.delenv("SOAK_MNN_BUILD", raising=False)
    bundle = tampered_bundle(engine_runs, tmp_path, lambda c: c.update(engine=engine, mnn_build="/opt/sender/MNN"))
    assert main(["replay", str(bundle), "--out", str(tmp_path / "r")]) == ExitCode.BAD_INPUT
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_bundles_engine_options_cannot_point_the_engine_at_a_folder(engine_runs, tmp_path, capsys):
    bundle = tampered_bundle(engine_runs, tmp_path, lambda c: c["engine_options"].update(
        tmp_path="/etc", precision="low", thread_num="4; rm -rf /"))
    assert main(["replay", str(bundle), "--dry-run"]) == ExitCode.OK
    said = capsys.readouterr().err
    assert "tmp_path='/etc'" in said and "thread_num=" in said
    assert "precision" not in said.split("left out", 1)[1]


def test_a_bundle_extracted_by_hand_is_still_a_strangers(engine_runs, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    bundle = tampered_bundle(engine_runs, tmp_path, lambda c: c["test_engine"].update(teardown_file=str(victim)))
    by_hand = tmp_path / "by-hand"
    with tarfile.open(bundle) as tar:
        tar.extractall(by_hand, filter="data")
    (folder,) = by_hand.iterdir()
    code = main(["replay", str(folder), "--iteration", "3", "--out", str(tmp_path / "replays"), "--json"])
    captured = capsys.readouterr()
    assert code == ExitCode.OK, captured.err
    assert victim.read_text() == "precious\n" and "teardown_file" in captured.err
