"""The one exception type that carries a user-facing, one-line message.

Only the CLIs and the napari widget turn it into an exit code or a notification.
"""


class ResShiftError(Exception):
    """A problem the user can fix; the message names it and says what to do."""


def run_cli(command, argv, *, interrupted: str) -> int:
    """Run a command-line entry point: a ``ResShiftError`` becomes ``error: ...`` and exit 2, Ctrl-C exit 130."""
    import sys

    try:
        code = command(argv)
        return code if isinstance(code, int) else 0
    except ResShiftError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return 130
