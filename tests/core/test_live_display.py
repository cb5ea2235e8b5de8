"""The live display under a pseudo-terminal (issue 15): at 60 and 80 columns no line is
longer than the terminal, nothing wraps (the terminal never has to break a line), the
faults are printed above the live line as they happen, and the live line is redrawn in
place (one on the final screen).  A small VT emulator replays what soak wrote."""

import fcntl
import os
import pty
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CSI = re.compile(r"\x1b\[([0-9;?]*)([A-Za-z])")


class Screen:
    """Enough of a VT100 for rich's Live: text, \\r, \\n, CSI A/B/C/D/G/K/J/m/h/l.  A character
    written past the last column would make the terminal wrap: counted in `wraps`."""

    def __init__(self, cols: int):
        self.cols, self.lines, self.row, self.col, self.wraps = cols, [[]], 0, 0, []

    def _line(self):
        while len(self.lines) <= self.row:
            self.lines.append([])
        return self.lines[self.row]

    def feed(self, text: str) -> None:
        pos = 0
        while pos < len(text):
            m = CSI.match(text, pos)
            if m:
                self._csi(m.group(1), m.group(2))
                pos = m.end()
                continue
            ch = text[pos]
            pos += 1
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self.row, self.col = self.row + 1, 0
                self._line()
            elif ch == "\x1b" or ch < " ":
                continue
            else:
                if self.col >= self.cols:  # autowrap
                    self.wraps.append(self.row)
                    self.row, self.col = self.row + 1, 0
                line = self._line()
                line.extend(" " * (self.col - len(line) + 1)) if len(line) <= self.col else None
                line[self.col] = ch
                self.col += 1

    def _csi(self, arg: str, op: str) -> None:
        n = int(arg) if arg.isdigit() else None
        if op == "A":
            self.row = max(0, self.row - (n or 1))
        elif op == "B":
            self.row += n or 1
        elif op == "C":
            self.col += n or 1
        elif op == "D":
            self.col = max(0, self.col - (n or 1))
        elif op == "G":
            self.col = (n or 1) - 1
        elif op == "K":
            line = self._line()
            if n == 2:
                line.clear()
            elif not n:
                del line[self.col:]
        elif op == "J":
            del self.lines[self.row + 1:]
            del self._line()[self.col:]

    def text(self) -> list[str]:
        return ["".join(line).rstrip() for line in self.lines]


def run_in_pty(cols: int, tmp_path: Path, *args: str) -> tuple[int, str]:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, cols, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "CI")}
    env.update(COLUMNS=str(cols), LINES="40", TERM="xterm-256color", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "soak", "run", "--demo", "--out", str(tmp_path), *args],
                            stdin=slave, stdout=subprocess.DEVNULL, stderr=slave, env=env, cwd=tmp_path)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its side
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=120), b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("cols", [60, 80])
def test_live_display_fits_the_terminal(cols, tmp_path):
    code, raw = run_in_pty(cols, tmp_path, "--iterations", "40", "--run-id", f"live{cols}")
    assert code == 0, raw[-2000:]
    screen = Screen(cols)
    screen.feed(raw.replace("\r\n", "\n"))
    lines = screen.text()
    (tmp_path / "screen.txt").write_text("\n".join(lines))
    summary = lines.index("soak run summary")  # the table after the run may wrap long paths, as any text
    assert [row for row in screen.wraps if row < summary] == [], "\n".join(lines)
    assert all(len(line) <= cols for line in lines[:summary])
    assert "seed 0" in lines[0] and lines[1] == f"  folder live{cols}"
    live = [n for n, line in enumerate(lines) if line.startswith("iter ")]
    assert len(live) == 1, "\n".join(lines)  # redrawn in place, never scrolled
    assert lines[live[0]].startswith("iter 40/40 [") and "100%" in lines[live[0]]
    faults = [n for n, line in enumerate(lines) if line.startswith("fault  iter")]
    assert len(faults) >= 10 and max(faults) < live[0]  # every fault above the bar
    assert any("crash" in lines[n] and "SIGSEGV" in lines[n] for n in faults)
    assert summary > live[0]


def test_plain_lines_when_not_a_terminal_or_no_color(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), NO_COLOR="1")
    out = subprocess.run([sys.executable, "-m", "soak", "run", "--demo", "--iterations", "20", "--out",
                          str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "\x1b" not in out.stderr and "\r" not in out.stderr
    assert out.stdout == ""  # people text on stderr
    assert re.search(r"^fault  iter 19  crash  decode SIGSEGV$", out.stderr, re.M)
    assert re.search(r"^iter 20/20  100%  faults \d+", out.stderr, re.M)


def test_quiet_prints_nothing(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "soak", "run", "--demo", "--iterations", "10", "--quiet",
                          "--out", str(tmp_path)], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout == "" and out.stderr == ""
