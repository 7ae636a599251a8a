"""What a training command can fail with, and the exit code each gives.

Training is a command line, not the HTTP server: its errors carry an exit code, not a status.
The store's own errors (function.errors, shared with the service) also end a command with
EXIT_ERROR and their message.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1  # bad arguments or data, an unreachable or refusing store
EXIT_GATE = 3  # trained, but a quality gate refused the model: nothing was written
EXIT_ROLLOUT_ABORTED = 4  # rollout promote --auto: the candidate failed a criterion; aborted
EXIT_ROLLOUT_UNDECIDED = 5  # rollout promote --auto: not enough evidence yet; nothing changed
EXIT_INTERRUPTED = 130


class TrainingError(Exception):
    """A training command cannot go on; the message names what was wrong."""

    exit_code = EXIT_ERROR


class GateFailed(TrainingError):
    """The model is not good enough to publish; `metadata` is what was built (for tracking)."""

    exit_code = EXIT_GATE

    def __init__(self, message: str, metadata: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.metadata = metadata
