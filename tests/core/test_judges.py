"""The loop produces, the command judges (issue 22): run_soak writes the run folder and
returns; soak.judges adds verdicts.json, classification.json, summary.json's analysis and
the summary table, as `soak run` always did."""

from __future__ import annotations

import dataclasses
import json

from soak import run_folder
from soak.judges import judge_run, run_judged
from soak.loop.config import RunConfig
from soak.loop.runner import run_soak

PLAN = [{"kind": "cl_error", "at": [1], "code": -5, "info": "Raster"}]


def _cfg(tmp_path, run_id: str, quiet: bool = True) -> RunConfig:
    return RunConfig(engine="test", iterations=3, seed=4, out_dir=str(tmp_path), run_id=run_id, fault_plan=PLAN,
                     max_new_tokens=8, quiet=quiet, argv=["pytest", run_id])


def _summary(run_dir) -> dict:
    return json.loads((run_dir / run_folder.SUMMARY).read_text())


def test_the_loop_writes_the_folder_and_no_judgement(tmp_path):
    result = run_soak(_cfg(tmp_path, "loop"))
    assert result.exit_code == 0 and not result.aborted
    assert not (result.run_dir / run_folder.VERDICTS).exists()
    assert not (result.run_dir / run_folder.CLASSIFICATION).exists()
    assert "analysis" not in _summary(result.run_dir) and _summary(result.run_dir)["end_reason"] == "iterations"


def test_the_judges_write_what_soak_run_always_wrote(tmp_path, capsys):
    result = run_judged(_cfg(tmp_path, "judged", quiet=False))
    analysis = _summary(result.run_dir)["analysis"]
    assert analysis["verdicts"]["ok"] is True
    assert analysis["classification"]["findings"] >= 1 and analysis == result.summary["analysis"]
    assert (result.run_dir / run_folder.VERDICTS).is_file() and (result.run_dir / run_folder.CLASSIFICATION).is_file()
    err = capsys.readouterr().err
    assert "soak run summary" in err and f"classified: {analysis['classification']['findings']} distinct" in err


def test_an_aborted_run_is_not_judged(tmp_path, capsys):
    result = dataclasses.replace(run_soak(_cfg(tmp_path, "aborted")), aborted=True)
    result.summary["end_reason"] = "terminated"
    judge_run(result, quiet=True)
    assert _summary(result.run_dir)["analysis"] == {"skipped": "run terminated"}
    assert not (result.run_dir / run_folder.VERDICTS).exists()
    assert capsys.readouterr().err == ""
