"""A local MLflow tracking server: `make tracking` without Docker, and the tests' real server.

Runs are kept in SQLite and artifacts in a folder (.modelrun/mlflow unless told otherwise). The
server takes artifact uploads itself (`--artifacts-destination`), so a client logs to it over HTTP
alone, as it would to a remote server, and it listens on loopback only.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

from local import container
from local.mirror import ROOT, wait_for

DOCKERFILE = ROOT / "local" / "mlflow" / "Dockerfile"
MLFLOW = ROOT / ".venv-mlflow" / "bin" / "mlflow"  # `make tracking` and `make test` install it
HOME = ROOT / ".modelrun" / "mlflow"
START_SECONDS = 120  # about 10 s here; a cold disk and a first database migration take longer


def command(root: Path, port: int, mlflow: Path = MLFLOW) -> list[str]:
    """The Compose image's own `mlflow server` command (local/mlflow/Dockerfile's CMD), keeping
    runs in root/mlflow.db and artifacts in root/artifacts, on loopback at `port`."""
    image = container.command(DOCKERFILE)
    here = {
        "--backend-store-uri": f"sqlite:///{root.resolve() / 'mlflow.db'}",
        "--artifacts-destination": str(root.resolve() / "artifacts"),
        "--host": "127.0.0.1",
        "--port": str(port),
    }
    missing = set(here) - set(image)
    if image[:2] != ["mlflow", "server"] or missing:
        raise ValueError(f"{DOCKERFILE}: CMD must be mlflow server with {', '.join(sorted(here))}")
    return [str(mlflow), *(here.get(flag, arg) for flag, arg in itertools.pairwise(image))]


@contextlib.contextmanager
def running(args: Sequence[str], log: Path | None) -> Iterator[subprocess.Popen[bytes]]:
    """Run `mlflow server` ARGS (output to `log`, or this terminal) until the block ends. It
    starts worker processes, which outlive a stopped parent: it runs in a process group of its
    own, and the whole group is stopped."""
    with open(log, "wb") if log else contextlib.nullcontext() as out:
        child = subprocess.Popen(list(args), stdout=out, stderr=subprocess.STDOUT if out else None,
                                 env=environment(), start_new_session=True)  # fmt: skip
    try:
        yield child
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()


@contextlib.contextmanager
def server(args: Sequence[str], log: Path, port: int) -> Iterator[str]:
    """Run `mlflow server` ARGS until the block ends; yield its URL once /health answers."""
    with running(args, log):
        url = f"http://127.0.0.1:{port}"
        wait_for(f"{url}/health", START_SECONDS)
        yield url


def environment() -> dict[str, str]:
    """This process's environment with the image's ENV (local/mlflow/Dockerfile) over it."""
    return {**os.environ, **container.environment(DOCKERFILE)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m local.tracking", description=__doc__)
    parser.add_argument("--port", type=int, default=5000)
    parser.add_argument("--root", type=Path, default=HOME, help="where runs and artifacts are kept")
    parser.add_argument("--mlflow", type=Path, default=MLFLOW, help="the mlflow command")
    args = parser.parse_args(argv)
    if not args.mlflow.exists():
        parser.exit(1, f"{args.mlflow} is missing: `make tracking` installs it\n")
    args.root.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{args.port}"
    print(f"MLflow UI: {url}  (runs and artifacts in {args.root})")
    print(f"log training runs to it: MLFLOW_TRACKING_URI={url} make train")
    # Ctrl-C (the server's own group does not get it) and SIGTERM (make passes it on) unwind
    # `running`, which stops the server's whole group.
    signal.signal(signal.SIGTERM, _interrupt)
    code = 0
    server_command = command(args.root, args.port, args.mlflow)
    with contextlib.suppress(KeyboardInterrupt), running(server_command, log=None) as child:
        code = child.wait()
    raise SystemExit(code)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
