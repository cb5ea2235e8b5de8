"""The `soak` command: parse arguments, dispatch, map errors to exit codes."""

from __future__ import annotations

import argparse
import importlib
import sys

from soak import __version__, diagnostics
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
    parser.add_argument("--log-format", choices=diagnostics.FORMATS, default=None,
                        help=f"soak's own diagnostics on stderr: console lines or JSON lines for CI "
                             f"(default ${diagnostics.ENV_FORMAT}, else console)")
    parser.add_argument("--log-level", choices=diagnostics.LEVELS, default=None,
                        help=f"the least level of diagnostic shown; debug adds the supervisor's decisions "
                             f"(default ${diagnostics.ENV_LEVEL}, else info)")
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


def _command(argv: list[str]) -> str | None:
    """The subcommand's name: the first word that is not an option or a global option's value."""
    it = iter(argv)
    for a in it:
        if a in ("--log-format", "--log-level"):
            next(it, None)
        elif not a.startswith("-"):
            return a
    return None


def _exit_message(text: str, event: str, **fields) -> None:
    """Why soak exits: as people text, or with --log-format json one JSON line like every diagnostic."""
    if diagnostics.json_lines():
        diagnostics.get_logger("soak.cli").error(event, **fields)
    else:
        print(text, file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = _command(argv)
    parser = build_parser(only=command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return ExitCode.USAGE
    try:
        diagnostics.configure(args.log_format, args.log_level)
        return int(_load(args.command).run(args))
    except SoakError as exc:
        _exit_message(exc.render(), exc.message, hint=exc.hint, error=type(exc).__name__, exit_code=int(exc.exit_code))
        return int(exc.exit_code)
    except KeyboardInterrupt:
        _exit_message("soak: interrupted", "interrupted", exit_code=int(ExitCode.INTERRUPTED))
        return int(ExitCode.INTERRUPTED)
    except BrokenPipeError:
        return int(ExitCode.OK)


if __name__ == "__main__":
    sys.exit(main())
