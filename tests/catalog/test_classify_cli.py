"""`soak classify` on one run, several runs and a farm folder; the context
checks behind near misses; bad input."""

from __future__ import annotations

import json

import pytest

from soak.catalog._context import RunContext, check_applies
from soak.catalog.classify import FARM_OUTPUT_NAME, classify_many
from soak.catalog.loader import load_catalog
from soak.cli import main

from _catalog_runs import cl_fault, crash, ctx, iteration, line_fault, make_run


def _farm(tmp_path):
    farm = tmp_path / "farm"
    # three phones/hosts overnight: the same dead-queue flood twice, one new crash
    for n, (model, os_name) in enumerate([({"family": "qwen2", "params": 494e6}, "linux"),
                                          ({"family": "qwen2", "params": 1.5e9}, "android")]):
        ev = [iteration(0)] + [cl_fault(i, "CL ERROR CODE : -36, info:Raster ", count=20) for i in range(1, 4)]
        make_run(farm / "night1", f"run{n}", ctx(model=model, os=os_name), ev)
    lines = ["Fatal signal 11 (SIGSEGV), code 1, fault addr 0x0 in tid 4242 (llm_demo)",
             "#00 pc 00000000001a2b3c  /data/local/tmp/soak/libMNN.so"]
    make_run(farm / "night2", "run2", ctx(os="android"), [iteration(0), crash(1, "SIGSEGV", lines)])
    return farm


def test_farm_of_runs_gives_one_table_of_distinct_faults(tmp_path, capsys):
    farm = _farm(tmp_path)
    assert main(["classify", str(farm)]) == 0
    out = capsys.readouterr().out
    assert "3 runs, 2 distinct faults" in out
    row = next(line for line in out.splitlines() if "soak-dead-queue-flood" in line)
    assert "known" in row and " 2 " in row and "120" in row  # 2 runs, 2 x 3 x 20 lines
    assert "new" in next(line for line in out.splitlines() if "sig-" in line)
    table = json.loads((farm / FARM_OUTPUT_NAME).read_text())
    assert {r["fault"] for r in table["faults"]} == {"soak-dead-queue-flood"} | {
        r["fault"] for r in table["faults"] if r["fault"].startswith("sig-")}
    for run in ("night1/run0", "night1/run1", "night2/run2"):
        assert (farm / run / "classification.json").is_file()


def test_several_run_arguments_and_json(tmp_path, capsys):
    farm = _farm(tmp_path)
    assert main(["classify", "--json", str(farm / "night1" / "run0"), str(farm / "night2")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["runs"]) == 2 and {r["fault"] for r in data["faults"]} >= {"soak-dead-queue-flood"}
    assert "results" not in data


def test_classify_many_api(tmp_path):
    farm = _farm(tmp_path)
    res = classify_many(farm, write=False)
    assert len(res["results"]) == 3 and not (farm / FARM_OUTPUT_NAME).exists()
    crash_row = next(r for r in res["faults"] if not r["known"])
    assert crash_row["runs"] == [str(farm / "night2" / "run2")] and crash_row["kind"] == "crash"


def test_single_run_table(tmp_path, capsys):
    run = make_run(tmp_path, "one", ctx(model={"family": "qwen", "params": 494e6}, mnn_version="2.8.1",
                                        opencl={"device": {"name": "Tesla T4", "vendor": "NVIDIA"}}),
                   [line_fault(0, "Alloc Image 512 x 151936 error, code:-40 ", phase="load")])
    assert main(["classify", str(run)]) == 0
    out = capsys.readouterr().out
    assert "model 494M qwen" in out and "GPU Tesla T4" in out and "MNN 2.8.1" in out
    assert "near misses" in out and "mnnllm-172-t4-embedding-image-40" in out and "model_params is 494M" in out


@pytest.mark.parametrize("make,code,text", [
    (lambda p: p / "missing", 3, "does not exist"),
    (lambda p: (p / "f.txt").write_text("x") and p / "f.txt", 3, "no MNN engine line"),  # a file is a raw log
    (lambda p: (p / "empty").mkdir() or p / "empty", 3, "no run folders"),
])
def test_bad_run_arguments(tmp_path, capsys, make, code, text):
    assert main(["classify", str(make(tmp_path))]) == code
    err = capsys.readouterr().err
    assert text in err and "hint:" in err and "Traceback" not in err


def test_bad_catalog_argument(tmp_path, capsys):
    run = make_run(tmp_path, "r", ctx(), [iteration(0)])
    (tmp_path / "cat").mkdir()
    (tmp_path / "cat" / "x.yaml").write_text("- id: [")
    assert main(["classify", "--catalog", str(tmp_path / "cat"), str(run)]) == 10
    assert "x.yaml:1: YAML syntax error" in capsys.readouterr().err


def test_no_catalog_still_gives_signatures(tmp_path, monkeypatch, capsys):
    import soak.catalog.classify as classify

    monkeypatch.setattr(classify, "default_catalog_dir", lambda: None)
    run = make_run(tmp_path, "r", ctx(), [cl_fault(0, "CL ERROR CODE : -5, info:Raster ")])
    assert main(["classify", str(run)]) == 0
    captured = capsys.readouterr()
    assert "no fault catalog found" in captured.err and "sig-" in captured.out
    data = json.loads((run / "classification.json").read_text())
    assert data["catalog"]["entries"] == 0 and "note" in data["catalog"]


def _applies(entry_id, **context):
    entry = load_catalog().get(entry_id)
    return check_applies(entry.applies_to, RunContext(**context))


def test_context_checks():
    fits, bad, unknown = _applies("mnn-4498-mali-g720-prefill-page-fault", gpu_model="Mali-G720-Immortalis MC10",
                                  model_params=6e8, thread_num=68, mnn_version="3.5.0")
    assert not bad and not unknown and len(fits) == 4
    _, bad, _ = _applies("mnn-4498-mali-g720-prefill-page-fault", gpu_model="Mali-G720-Immortalis MC10",
                         model_params=6e8, thread_num=65, mnn_version="3.5.0")  # 65 = buffer + TUNING_NONE
    assert bad == ["thread_num_mode is 65 (tuning_none+buffer), entry wants "
                   "tuning_fast|tuning_heavy|tuning_normal|tuning_wide"]
    _, bad, _ = _applies("mnn-4498-mali-g720-prefill-page-fault", gpu_model="Mali-G720", model_params=6e8,
                         thread_num=4, mnn_version="3.6.1-87")
    assert bad == ["mnn_version is 3.6.1-87, entry wants >=3.5.0, <3.6.1"]
    _, bad, _ = _applies("mnn-4836-intel-irisxe-garbage", gpu_vendor="Intel(R) Corporation",
                         gpu_model="Intel(R) Iris(R) Xe Graphics", os="windows", backend="opencl",
                         driver_version="32.0.101.8132")
    assert bad == ["driver_version is 32.0.101.8132, entry wants <=32.0.101.7088"]
    _, _, unknown = _applies("mnn-4836-intel-irisxe-garbage", os="windows", driver_version="git-abcdef")
    assert set(unknown) == {"gpu_vendor", "gpu_model", "backend", "driver_version"}
