"""One module per subcommand.

Each module defines `add_arguments(parser)`, `run(args) -> int` and optionally
DESCRIPTION (the long help).  cli.py imports a module only when its command runs, so
`soak --help` stays fast and a broken optional part can't break the rest.
"""

# command name -> (module under soak.commands, its one-line help).  The help lives here, not
# in the module, so `soak --help` lists every command without importing any of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("run", "run a soak: repeated randomized inference with fault capture and recovery"),
    "reference": ("reference", "make a wrong-answer reference: the seeded workload, greedy, on an oracle engine "
                               "(default: pip MNN, CPU, precision high), for `soak run --reference`"),
    "replay": ("replay", "replay the recorded prompts that led to an iteration and check the fault reappears"),
    "repro": ("repro", "reduce a root cause to the smallest workload and configuration that still show it, "
                       "measure its reliability, and write a standalone MNN reproducer"),
    "compare": ("compare", "run the same seeded workload on several backends; compare tok/s, load time and output agreement"),
    "cl-info": ("cl_info", "show the OpenCL platforms and devices the worker would see (through soak's interposer)"),
    "catalog": ("catalog", "validate, list and show fault-catalog entries"),
    "classify": ("classify", "classify a run's failures against the fault catalog"),
    "status": ("status", "how a run is going (from another terminal): progress, faults so far, memory trend, time left"),
    "gate": ("gate", "judge a run folder against a gate policy (exit 0 pass, 1 fail) and write JUnit XML"),
    "bundle": ("bundle", "write a bug-report bundle (.tar.gz) for a run's faults, replayable with `soak replay BUNDLE`"),
    "profile": ("profile", "where each phase's GPU time went (kernels, transfers, idle, host) from a --cl-profile run; --vs a CPU run"),
    "trace": ("trace", "write a Perfetto trace (ui.perfetto.dev) of a run: iterations, phases, GPU kernels/transfers, errors, counters"),
    "report": ("report", "write a self-contained HTML report of one or more runs (compare CPU vs OpenCL, run vs baseline)"),
    "merge": ("merge", "merge every run folder of a night into one classification table, HTML report and JUnit"),
    "history": ("history", "store run findings night after night (SQLite) and ask what is new, since which build, on which drivers"),
    "devices": ("devices", "list connected Android devices (model, SoC, GPU, ABI) for --target adb:SERIAL"),
}
