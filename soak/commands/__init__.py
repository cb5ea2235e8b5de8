"""One module per subcommand.

Each module defines HELP (one line), `add_arguments(parser)` and
`run(args) -> int`.  cli.py imports a module only when its command runs, so
`soak --help` stays fast and a broken optional part can't break the rest.
"""

# command name -> module under soak.commands
COMMANDS: dict[str, str] = {
    "run": "run",
    "replay": "replay",
    "compare": "compare",
    "cl-info": "cl_info",
    "catalog": "catalog",
    "classify": "classify",
    "gate": "gate",
    "bundle": "bundle",
    "report": "report",
    "devices": "devices",
}
