"""Report additions of issue 15: fault markers labelled (kind, iteration) with hover text
(SVG <title>), a clock-time axis next to the iterations, dense series smoothed, the gate
result at the top, and "in progress" for a run without run_end."""

import re

from soak import run_folder
from soak.outputs.report import render_report


def test_fault_markers_clock_axis_and_gate_at_the_top(make_run):
    run = make_run("opencl-run", iterations=120, faults={30: "cl_error", 70: "crash"})
    text = render_report([run])
    titles = re.findall(r"<title>([^<]*)</title>", text)
    assert any(t.startswith("opencl-run: iteration 30: cl_error") for t in titles)
    assert any(t.startswith("opencl-run: iteration 70: crash") for t in titles)
    assert "elapsed (clock time since the start)" in text
    assert ">30 cl_error<" in text or "30 cl_error" in text  # the label next to the marker
    gate = text.index("<b>gate</b>")
    assert gate < text.index("<h2>Summary and verdicts</h2>")
    assert "FAILED" in text[gate:gate + 600] and "errors.severity.critical" in text[gate:gate + 600]
    assert "in progress" not in text


def test_dense_series_get_a_rolling_median_and_a_running_run_says_in_progress(make_run):
    run = make_run("long", iterations=900)
    events = (run / "events.jsonl").read_text().splitlines()
    (run / "events.jsonl").write_text("\n".join(e for e in events if '"event": "run_end"' not in e) + "\n")
    writer = run_folder.WriterLock(run)  # as `soak run` holds it while the run goes on
    try:
        text = render_report([run])
    finally:
        writer.release()
    assert "long (rolling median)" in text
    assert "long: in progress" in text
    assert "long: ended without run_end" in render_report([run])  # nobody writes it any more
