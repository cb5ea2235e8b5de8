"""The `soak` command: parse arguments, dispatch, map errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
import sys

from soak import __version__
from soak.commands import COMMANDS
from soak.errors import ExitCode, SoakError


def _load(name: str):
    return importlib.import_module(f"soak.commands.{COMMANDS[name][0]}")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="soak",
        description="Soak-test LLM inference engines (MNN-LLM on OpenCL) for stability.",
    )
    parser.add_argument("--version", action="version", version=f"soak {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_line) in COMMANDS.items():
        if name != only:  # listed by `soak --help` without importing its module
            sub.add_parser(name, help=help_line, add_help=False)
            continue
        module = _load(name)
        long_help = getattr(module, "DESCRIPTION", "").strip("\n")
        p = sub.add_parser(name, help=help_line, description=help_line + ("\n\n" + long_help if long_help else ""),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return ExitCode.USAGE
    try:
        return int(_load(args.command).run(args))
    except SoakError as exc:
        print(exc.render(), file=sys.stderr)
        return int(exc.exit_code)
    except KeyboardInterrupt:
        print("soak: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
