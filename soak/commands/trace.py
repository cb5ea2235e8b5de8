"""soak trace RUN -o run.pftrace: the run as a Perfetto trace."""

from __future__ import annotations

import argparse

DESCRIPTION = """Writes a Perfetto trace (open it in ui.perfetto.dev) of a run folder: load and
iteration slices with the engine's prefill/decode inside, the interposer's profile windows per
phase (--cl-profile runs), the top kernels and transfers of each window on GPU queue tracks
(summed device time: the interposer keeps aggregates, not per-command stamps), CL call errors,
faults and recoveries as instants, and RSS, GPU live bytes and decode tok/s as counters.
Needs the `perfetto` Python package (pip install 'soak[trace]').

  soak trace logs/<run-id> -o run.pftrace
"""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", metavar="RUN", help="run folder (logs/<run-id>)")
    p.add_argument("-o", "--output", metavar="FILE", default="run.pftrace", help="trace file (default: run.pftrace)")


def run(args: argparse.Namespace) -> int:
    from soak.outputs.perfetto_trace import write_trace

    info = write_trace(args.run, args.output)
    print(f"trace written: {info['path']} ({info['bytes']} bytes; {info['iterations']} iterations, "
          f"{info['windows']} profile windows, {info['kernel_slices']} kernel and {info['transfer_slices']} "
          f"transfer slices, {info['instants']} instants, {info['counters']} counter values)")
    return 0
