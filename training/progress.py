"""Progress on a terminal: each step of a training or packaging, as it starts and how long it
took. Written to stderr only when stderr is a terminal, so pipes, logs and tests stay quiet and
the commands' stdout stays theirs."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from typing import TextIO


@contextlib.contextmanager
def step(what: str, stream: TextIO | None = None) -> Iterator[None]:
    """Say `what` is being done, then how long it took (or that it failed)."""
    out = stream or sys.stderr
    if not out.isatty():
        yield
        return
    out.write(f"  {what}…")
    out.flush()
    started = time.perf_counter()
    outcome = "failed after"
    try:
        yield
        outcome = "done in"
    finally:
        out.write(f" {outcome} {time.perf_counter() - started:.1f} s\n")
        out.flush()
