"""The one exception type that carries a user-facing, one-line message, and the one place that makes such lines from
the failures of libraries (readers, zarr, dask, torch, the file system). Only the CLIs and the napari widget turn
them into an exit code or a notification.
"""
from __future__ import annotations

import argparse
import contextlib
import sys


class ResShiftError(Exception):
    """A problem the user can fix; the message names it and says what to do."""


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message, else its type's name."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def os_message(exc: OSError) -> str:
    """``path: reason; what to do`` for a file-system failure (permissions, read-only or full disk, missing folder)."""
    where = exc.filename or "a file"
    return f"{where}: {exc.strerror or first_line(exc)}; check the path, its permissions and the free space"


@contextlib.contextmanager
def reported(what: str, *, hint: str = ""):
    """Inside the block, any failure of a library becomes ``ResShiftError('what (reason)hint')``: a damaged input,
    an unreachable scheduler or a refused write is a user's problem with one line, never a traceback."""
    try:
        yield
    except (ResShiftError, KeyboardInterrupt):
        raise
    except Exception as exc:  # noqa: BLE001 - readers, zarr, dask and torch fail in many ways for one user problem
        raise ResShiftError(f"{what} ({first_line(exc)}){hint}") from None


class ArgumentParser(argparse.ArgumentParser):
    """argparse with its usage errors as one ``error:`` line (exit 2), like every other refusal."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")


def run_cli(command, argv, *, interrupted: str) -> int:
    """Run a command-line entry point: a ``ResShiftError`` (or a file-system failure) becomes ``error: ...`` and exit
    2, Ctrl-C exit 130."""
    try:
        code = command(argv)
        return code if isinstance(code, int) else 0
    except ResShiftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # the environment, not a bug: a read-only folder, a full disk, a vanished mount
        print(f"error: {os_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
