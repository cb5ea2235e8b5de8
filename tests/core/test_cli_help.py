"""`soak --help` lists every command without importing any (issue 15: fast start), and
every command's own --help still works."""

from __future__ import annotations

import subprocess
import sys

import pytest

from soak.commands import COMMANDS


def test_top_level_help_imports_no_command_module():
    code = ("import sys\nfrom soak.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('LOADED', sorted(m for m in sys.modules if m.startswith('soak.commands.')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout
    for name, (_, help_line) in COMMANDS.items():
        assert name in out.stdout
        assert help_line.split()[0] in out.stdout


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_help(name):
    out = subprocess.run([sys.executable, "-m", "soak", name, "--help"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert COMMANDS[name][1][:30] in " ".join(out.stdout.split())
