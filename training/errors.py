"""What a training command can fail with, and the exit code each gives.

Training is a command line, not the HTTP server: its errors carry an exit code, not a status.
The store's own errors (function.core.errors, shared with the service) also end a command with
EXIT_ERROR and their message.
"""

from __future__ import annotations

import re
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1  # bad arguments or data, an unreachable or refusing store
EXIT_GATE = 3  # trained, but a quality gate refused the model: nothing was written
EXIT_ROLLOUT_ABORTED = 4  # rollout promote --auto: the candidate failed a criterion; aborted
EXIT_ROLLOUT_UNDECIDED = 5  # rollout promote --auto: not enough evidence yet; nothing changed
EXIT_INTERRUPTED = 130
EXIT_PIPE_CLOSED = 141  # stdout's reader left: 128 + SIGPIPE, as a shell reports a command it ended


class TrainingError(Exception):
    """A training command cannot go on; the message names what was wrong."""

    exit_code = EXIT_ERROR


class GateFailed(TrainingError):
    """The model is not good enough to publish; `metadata` is what was built (for tracking)."""

    exit_code = EXIT_GATE

    def __init__(self, message: str, metadata: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.metadata = metadata


def reason(error: BaseException) -> str:
    """One short line for an error that may be a page of text. requests' name the connection
    pool, the URL with its query and urllib3's objects: the cause is the OS error in their chain
    (Connection refused, Name or service not known) or a timeout."""
    seen: list[BaseException] = []
    at: BaseException | None = error
    while at is not None and all(at is not s for s in seen):
        seen.append(at)
        if isinstance(at, TimeoutError) or type(at).__name__.endswith("Timeout"):
            return "no answer in time (timed out)"
        if isinstance(at, OSError) and at.strerror:
            return at.strerror
        inner = getattr(at, "reason", None)  # urllib3's MaxRetryError holds its cause there
        wrapped = at.args[0] if at.args and isinstance(at.args[0], BaseException) else None
        at = (
            inner if isinstance(inner, BaseException) else wrapped or at.__cause__ or at.__context__
        )
    text = str(error) or type(error).__name__
    errno = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    if errno:
        return errno[0].strip()
    first = " ".join(text.split())
    return first[:200] + ("…" if len(first) > 200 else "")
