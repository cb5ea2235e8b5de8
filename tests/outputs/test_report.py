"""The HTML report: content, self-containedness, and a real render in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import pytest

from soak.cli import main
from soak.errors import ExitCode
from soak.outputs.report import render_report

MIB = 1 << 20
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
                  "--enable-logging=stderr", "--v=0"]


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _runs(make_run):
    cpu = make_run("cpu-run", iterations=80, backend="cpu", tps=lambda i, r: 12 + r.gauss(0, 0.3))
    gpu = make_run("opencl-run", iterations=80, backend="opencl",
                   rss=lambda i, r: 600 * MIB + i * 300_000 + r.gauss(0, MIB),
                   gpu=lambda i, r: 200 * MIB + (i // 10) * 4 * MIB,
                   faults={20: "cl_error", 50: "error_line"},
                   recover={20: ("reset", ["reset"]), 50: ("reload", ["reset", "reinit", "reload"])})
    return cpu, gpu


def test_report_content_is_self_contained(make_run):
    cpu, gpu = _runs(make_run)
    text = render_report([cpu, gpu])
    parser = _Tags()
    parser.feed(text)
    tags = [t for t, _ in parser.tags]
    assert "script" not in tags and "iframe" not in tags
    for tag, attrs in parser.tags:  # nothing is fetched: only <a href> may point outside
        for key in ("src", "srcset"):
            assert key not in attrs, (tag, attrs)
        if tag == "link":
            pytest.fail(f"external stylesheet {attrs}")
    assert tags.count("svg") >= 1 and "<image" not in text
    for heading in ("Summary and verdicts", "Comparison against cpu-run", "Memory and performance over the run",
                    "Faults: opencl-run", "Recovery: opencl-run", "Catalog entries", "Environment: opencl-run"):
        assert heading in text
    # fault table links to catalog entries inside the page, and the entries link their references
    anchors = set(re.findall(r'id=\'(catalog-[^\']+)\'', text))
    links = set(re.findall(r'href="#(catalog-[^"]+)"', text))
    assert links and links <= anchors
    assert re.search(r'href="https://github\.com/alibaba/MNN/', text)
    assert "leak" in text and "Adreno" in text and "cpu → cpu" in text


def test_report_cli(make_run, tmp_path, capsys):
    cpu, gpu = _runs(make_run)
    out = tmp_path / "r.html"
    assert main(["report", str(gpu), "--baseline", str(cpu), "-o", str(out)]) == ExitCode.OK
    assert "Comparison against cpu-run" in out.read_text()
    assert main(["report", str(tmp_path / "missing"), "-o", str(out)]) == ExitCode.BAD_INPUT
    assert "Traceback" not in capsys.readouterr().err


def _chromium(url: str, shot: Path, profile: Path) -> tuple[int, str]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    assert exe, "headless Chromium is required (Debian package `chromium`, see .ci/apt-packages.txt)"
    proc = subprocess.run([exe, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", f"--screenshot={shot}",
                           "--window-size=1280,3000", url], capture_output=True, text=True, timeout=120)
    return proc.returncode, proc.stderr


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def test_report_renders_in_headless_chromium_without_console_errors(make_run, tmp_path, keep_artifact):
    # control: the same detection must see an error a page does log
    bad = tmp_path / "control.html"
    bad.write_text("<!DOCTYPE html><html><body><script>console.error('soak-control-error')</script></body></html>")
    rc, err = _chromium(bad.as_uri(), tmp_path / "control.png", tmp_path / "profile-control")
    assert rc == 0 and any("soak-control-error" in line for line in _console_lines(err)), err[-2000:]

    cpu, gpu = _runs(make_run)
    report = tmp_path / "soak-report.html"
    assert main(["report", str(cpu), str(gpu), "-o", str(report)]) == ExitCode.OK
    shot = tmp_path / "soak-report.png"
    rc, err = _chromium(report.as_uri(), shot, tmp_path / "profile")
    assert rc == 0, err[-2000:]
    assert _console_lines(err) == []
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000  # a page with plots, not a blank one
    keep_artifact(shot)
    keep_artifact(report)
