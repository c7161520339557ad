"""The one exception type users see.

Anything raised as `FlaxlmError` is a problem with the user's input (a file, a config key, a flag);
the CLI prints its message as one line and exits non-zero instead of showing a traceback.

A message names the paths the user gave. The libraries that read tokenizers and Hugging Face
directories read local files only, so a `gs://` directory is read from a download (and an output
is staged locally before its upload); the code that finds a fault holds the local path. Rather than
every message translating it, the message is translated once, here, when the error is made.
"""

from __future__ import annotations

import re

# Local directory → the `gs://` path it stands for: `flaxlm.storage`'s downloads and upload
# staging directories, filled in as it makes them.
STAND_INS: dict[str, str] = {}


def user_named(text: str) -> str:
    """`text` with each stand-in directory, and every path under it, named by its remote path."""
    for local in sorted((d for d in STAND_INS if d in text), key=len, reverse=True):
        remote = STAND_INS[local].rstrip("/")
        # Whole path components only: /tmp/flaxlm-download-ab is not /tmp/flaxlm-download-abc.
        text = re.sub(re.escape(local) + r"(?![\w.-])", lambda _: remote, text)
    return text


class FlaxlmError(Exception):
    """A user-facing error whose message names the file, line, key or tensor at fault."""
    def __init__(self, message: str = ""):
        super().__init__(user_named(message))


def check_choice(key: str, value, choices) -> None:
    """Refuses a config value outside its fixed set of `choices`, naming the key and the set."""
    if value not in choices:
        raise FlaxlmError(f"{key} must be one of {', '.join(map(repr, choices))}, got {value!r}")


class CheckpointWriteError(FlaxlmError):
    """A checkpoint could not be written. The command line exits at once after printing it:
    orbax may leave background threads waiting (up to its 300 s timeout) on the failed write,
    and nothing else is left to do, as every earlier checkpoint is complete."""
