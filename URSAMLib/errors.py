"""The one exception type for mistakes a user can fix.

Anything raised as :class:`URSAMError` is reported to the user as a single line
(CLI: on stderr with exit status 2; Slicer: in a dialog) and never as a traceback.
The message says what is wrong *and* what to do about it. Every other exception
is a bug in URSAM and is allowed to show its traceback.
"""


class URSAMError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class Cancelled(Exception):
    """The user cancelled a running segmentation; nothing was written."""
