"""The built image, run under buildah as Cloud Run runs a container: the image's own CMD, ENV,
working folder and user, the host's network, the model store mounted read-only.

`make image` builds it (local/image.py); tests/test_image.py and tests/perf/image_start.py run it.
`buildah run --isolation chroot` runs the command in the image's root without a PID namespace,
so the server is an ordinary process of this machine: `server_pid` finds it, to signal it as
Cloud Run signals a container's first process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from local import container
from local.image import BUILDAH, inspect
from tests.conftest import require_binary

IMAGE = os.environ.get("MODELRUN_IMAGE", "localhost/modelrun")
MLFLOW_IMAGE = os.environ.get("MODELRUN_MLFLOW_IMAGE", "localhost/modelrun-mlflow")


@dataclass(frozen=True)
class Image:
    name: str
    container: str  # a working container of the image, shared by the commands run in it
    user: str  # the image's USER
    command: list[str]  # its CMD
    env: dict[str, str]  # its ENV

    def run(
        self,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        volumes: Sequence[str] = (),
        log: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        """Start a command in the image, as its user, on the host's network; its own session,
        so that the whole tree can be ended."""
        options = [f"--volume={v}" for v in volumes] + [
            f"--env={k}={v}" for k, v in (env or {}).items()
        ]
        out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 (the child keeps it)
        try:
            return subprocess.Popen(
                [*BUILDAH, "run", "--isolation", "chroot", "--network", "host",
                 "--user", self.user, *options, self.container, "--", *argv],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        finally:
            if log:
                out.close()  # type: ignore[union-attr]


def require_image(name: str = IMAGE) -> dict[str, Any]:
    """buildah's description of the image; skip without buildah or the image on a laptop, fail
    in CI (where .ci/run builds it first)."""
    require_binary("buildah")
    description = inspect(name)
    if description is None:
        message = f"{name} is not in buildah's storage: run `make image IMAGE_ENGINE=buildah`"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return description


@contextlib.contextmanager
def open_image(name: str = IMAGE) -> Iterator[Image]:
    """A working container of the image (buildah copies its root once), removed afterwards."""
    config = require_image(name)["OCIv1"]["config"]
    made = subprocess.run([*BUILDAH, "from", "--pull=never", "--quiet", name],
                          capture_output=True, text=True, check=True)  # fmt: skip
    container = made.stdout.strip()
    env = dict(pair.split("=", 1) for pair in config.get("Env") or [])
    try:
        yield Image(name, container, config["User"], list(config["Cmd"]), env)
    finally:
        subprocess.run([*BUILDAH, "rm", container], capture_output=True)


def end(process: subprocess.Popen[bytes]) -> None:
    """Kill whatever is left of a command started by Image.run."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def children() -> dict[int, list[int]]:
    """Each process's children, from /proc."""
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # the command name may hold spaces and parentheses: the fields after the last ")"
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def server_pid(process: subprocess.Popen[bytes], marker: str = "function.service.server") -> int:
    """The outermost process under `buildah run` whose command line holds `marker`: the server
    the image's CMD execs (its workers are its children). buildah's own processes in between
    (buildah-chroot-runtime, buildah-chroot-exec, whose arguments hold the command) are passed
    over: they answer SIGTERM by killing the command (SIGKILL), where Docker would forward it."""
    tree = children()
    queue = list(tree.get(process.pid, []))
    while queue:
        pid = queue.pop(0)
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
            if not Path(argv[0]).name.startswith("buildah") and marker in " ".join(argv):
                return pid
        queue += tree.get(pid, [])
    raise AssertionError(f"no {marker} process under buildah run ({process.pid})")


def added_layers(name: str, dockerfile: Path = container.DOCKERFILE) -> list[int]:
    """Sizes in bytes (uncompressed tars, as stored) of the layers an image adds to its base:
    one per RUN, COPY or ADD of the Dockerfile's final stage, the image's last layers."""
    description = inspect(name)
    assert description is not None, f"{name} is not built"
    steps = [i for i, _ in container._instructions(dockerfile) if i in ("RUN", "COPY", "ADD")]
    layers = json.loads(str(description["Manifest"]))["layers"]
    return [int(layer["size"]) for layer in layers[-len(steps) :]]
