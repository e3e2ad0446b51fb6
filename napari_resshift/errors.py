"""The one exception type that carries a user-facing, one-line message.

Only the CLIs and the napari widget turn it into an exit code or a notification.
"""


class ResShiftError(Exception):
    """A problem the user can fix; the message names it and says what to do."""
