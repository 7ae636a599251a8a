"""What the container runs, read from function/Dockerfile: its CMD and its ENV.

`make serve`, `make monitor` and the end-to-end tests start the service with exactly this command
and build its environment with `process_environment`, so a typo in the Dockerfile's entrypoint
fails here, not on Cloud Run, and every launcher merges settings the same way.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path

DOCKERFILE = Path(__file__).resolve().parent.parent / "function" / "Dockerfile"
# Set by the image for its own layout; a process on this machine keeps its own.
IMAGE_ONLY = {"PATH", "HOME"}


def _instructions(path: Path = DOCKERFILE) -> list[tuple[str, str]]:
    """Return (INSTRUCTION, arguments) pairs of the final stage, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        logical.append(pending + stripped)
        pending = ""
    stages = [i for i, line in enumerate(logical) if line.upper().startswith("FROM ")]
    final = logical[stages[-1] :] if stages else logical
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in final]


def command(path: Path = DOCKERFILE) -> list[str]:
    """Return the final stage's CMD (exec form)."""
    cmds = [args for instruction, args in _instructions(path) if instruction == "CMD"]
    if not cmds:
        raise ValueError(f"{path} has no CMD")
    argv = json.loads(cmds[-1])
    if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
        raise ValueError(f"{path}: CMD must be an exec-form JSON array of strings")
    return argv


def environment(path: Path = DOCKERFILE) -> dict[str, str]:
    """Return the final stage's ENV, less what only makes sense inside the image."""
    env: dict[str, str] = {}
    for instruction, args in _instructions(path):
        if instruction != "ENV":
            continue
        for pair in shlex.split(args):
            key, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"{path}: write ENV as KEY=VALUE (got {pair!r})")
            env[key] = value
    return {k: v for k, v in env.items() if k not in IMAGE_ONLY}


def process_environment(
    overrides: Mapping[str, str], user: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment to start the service with, one precedence for every launcher:

    1. the image's ENV (function/Dockerfile), as the container would have it;
    2. then the user's environment (a THREADS or LOG_LEVEL the user exported wins over the
       image's default, as `docker run -e` would);
    3. then the launcher's own settings (MODEL_URI, API_KEYS, PORT...), which it must control.

    PATH puts this Python's folder first: the image's CMD runs functions-framework through `sh`,
    and it must find the virtualenv's, not another one. Nothing global is changed.
    """
    user = os.environ if user is None else user
    env = {**environment(), **user, **overrides}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env
