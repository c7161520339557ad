"""The one exception type users see.

Anything raised as `FlaxlmError` is a problem with the user's input (a file, a config key, a flag);
the CLI prints its message as one line and exits non-zero instead of showing a traceback.
"""


class FlaxlmError(Exception):
    """A user-facing error whose message names the file, line, key or tensor at fault."""
