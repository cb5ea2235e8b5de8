"""Errors that reach the user: one message, one hint, one exit code.

Every failure soak can foresee is a SoakError subclass.  `soak.cli.main`
prints it (no traceback) and exits with its code.  The codes are listed in
docs/ARCHITECTURE.md and must stay stable: CI scripts depend on them.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    OK = 0
    FAILED = 1  # gate failed, or --fail-fast stopped on a failure
    USAGE = 2
    BAD_INPUT = 3
    LIBRARY_NOT_FOUND = 4
    MISSING_SYMBOL = 5
    WRONG_ARCH = 6
    ABI_MISMATCH = 7
    BUILD_FAILED = 8
    DEVICE_UNAVAILABLE = 9
    CATALOG_INVALID = 10
    OPENCL_SETUP = 11
    HARNESS = 12  # soak's own worker could not start (not the engine's fault)
    DISK_FULL = 13  # the disk holding the run folder filled up: the run ended early, its folder is readable
    INTERRUPTED = 130  # Ctrl-C (SIGINT): the run ended early, run_end and summary written
    TERMINATED = 143  # SIGTERM (a CI timeout): the run ended at once, run_end and summary written


class SoakError(Exception):
    """Base class.  `hint` says what to do about it."""

    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def render(self) -> str:
        text = f"soak: error: {self.message}"
        if self.hint:
            text += f"\n  hint: {self.hint}"
        return text


class BadInput(SoakError):
    exit_code = ExitCode.BAD_INPUT


class LibraryNotFound(SoakError):
    exit_code = ExitCode.LIBRARY_NOT_FOUND


class MissingSymbol(SoakError):
    exit_code = ExitCode.MISSING_SYMBOL


class OracleUnavailable(MissingSymbol):
    """The engine cannot serve the logits oracle (ABI v1, or no forward entry point)."""


class WrongArchitecture(SoakError):
    exit_code = ExitCode.WRONG_ARCH


class AbiMismatch(SoakError):
    exit_code = ExitCode.ABI_MISMATCH


class BuildFailed(SoakError):
    exit_code = ExitCode.BUILD_FAILED


class DeviceUnavailable(SoakError):
    exit_code = ExitCode.DEVICE_UNAVAILABLE


class CatalogInvalid(SoakError):
    exit_code = ExitCode.CATALOG_INVALID


class OpenCLSetupError(SoakError):
    exit_code = ExitCode.OPENCL_SETUP


class HarnessError(SoakError):
    """soak itself cannot run its worker: the interpreter is missing, the worker does not
    import, or it is another soak version.  Never an engine fault: no recovery, no crash event."""

    exit_code = ExitCode.HARNESS


class DiskFull(SoakError):
    """No space left (or over quota) where the run folder is: the run ends, the folder stays readable."""

    exit_code = ExitCode.DISK_FULL


class EngineError(SoakError):
    """The engine refused a call (create or load failed)."""


# The fix for "this needs a hand-built MNN", said the same way everywhere.
HAND_BUILT_MNN_HINT = ("build MNN yourself with its LLM and OpenCL options and the separate OpenCL backend "
                       "(MNN's docs/transformers/llm.md), then use --engine mnn --mnn-build DIR (see README)")
