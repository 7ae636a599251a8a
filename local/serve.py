"""`make serve`: the embedded default, or your own model. No cloud, no Docker.

Serves MODEL_URI when it is set; else the model MODEL (default iris) in the store STORE (default
.modelrun/store), training and publishing Iris first if that is the model asked for and nothing
is current yet. Makes a development key (kept in .modelrun/dev-api-key), trusts the development
signing key (.modelrun/dev-signing-key.pem, which publish signs with), prints how to call the
API with a row of the served model's own, then runs the same functions-framework command the
container runs, stopping it on Ctrl-C as Cloud Run does, with SIGTERM (`run_server`). A
port it could not listen on is refused first, in one line, before anything is trained or printed.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path
from types import FrameType

from function.core.errors import IntegrityError, ModelrunError
from function.core.store import ModelStore, model_root, store_models
from local import container
from training.__main__ import main as training

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".modelrun"
NAME = "iris"


def ensure_model(store: str, name: str = NAME) -> str:
    """Return the model's root (MODEL_URI) in the store. Nothing current there: train and
    publish Iris when Iris is asked for, else say how to publish the model asked for."""
    uri = model_root(store, name)
    pointer, _ = ModelStore(uri).current()
    if pointer is None:
        if name != NAME:
            models = store_models(store)
            there = f"models there: {', '.join(models)}" if models else "it holds no model"
            raise SystemExit(
                f"error: no version of {name!r} is current in {store} ({there}): publish one "
                f"with `modelrun publish --store {store} ARTIFACT --promote`, or set MODEL_URI"
            )
        print(f"no model is current in {uri}: training the default Iris model…", flush=True)
        with tempfile.TemporaryDirectory() as out:
            code = training(["train", "--out", out, "--min-accuracy", "0.8"])
            if code == 0:
                # --force: an unpromoted copy of this same model may already be there
                code = training(["publish", "--store", store, out, "--promote", "--force"])
            if code != 0:
                raise SystemExit(code)
    return uri


def example_body(model_uri: str) -> str:
    """A request body for the served model: its recorded example row, else its Iris-like zeros."""
    try:
        metadata = ModelStore(model_uri).resolve()
    except ModelrunError:
        return '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'  # the service will say what is wrong
    row = dict(metadata.input_example or dict.fromkeys(metadata.feature_names, 0.0))
    return json.dumps({"instances": [row]})


def trusted_key(environ: Mapping[str, str]) -> dict[str, str]:
    """MODEL_PUBLIC_KEY for a local service: the user's own, else the public half of the key
    `modelrun publish` signs with (MODELRUN_SIGNING_KEY's, else the development key's), as the
    CLI verifies (training/signers.py)."""
    from training.signers import trusted_public_key

    signing_key = environ.get("MODELRUN_SIGNING_KEY") or None
    return {"MODEL_PUBLIC_KEY": trusted_public_key(environ, signing_key)}


def warn_unverified(model_uri: str, public_key: str) -> None:
    """Say at once why the service will not get ready when the current version does not verify
    (one published before signing, or with another key), and what to do about it."""
    from function.core.config import load_trust

    try:  # the service's own rule for MODEL_PUBLIC_KEY and ALLOW_UNSIGNED_MODELS
        trust = load_trust({**os.environ, "MODEL_PUBLIC_KEY": public_key})
    except ModelrunError:
        return  # the service says what is wrong with the setting, naming it
    if trust.allow_unsigned:
        return
    try:
        ModelStore(model_uri, trust=trust).resolve()
    except IntegrityError as e:  # the store's reason says what to do, the same as /ready's
        print(f"warning: {e}", flush=True)


def dev_key() -> str:
    """Return the development key, made once and kept private to this user."""
    path = STATE / "dev-api-key"
    if not path.exists():
        STATE.mkdir(exist_ok=True)
        path.write_text(f"dev-{secrets.token_urlsafe(24)}\n")
        path.chmod(0o600)
    return path.read_text().strip()


SETTINGS = """settings (environment variables, as `make serve` passes them):
  MODEL       the model to serve from STORE (default iris; trained and published if absent)
  MODEL_URI   a model's root to serve instead (gs://BUCKET/models/NAME or file:///ABS/NAME)
  STORE       where models are published (default file://.modelrun/store in the repository)
  PORT        the port (default 8080); HOST the address (default 127.0.0.1)
  RATE_LIMIT_PER_SECOND  per key (default 0: off)
  PAYLOAD_SAMPLE_RATE    the share of requests recorded (default 0: off), into PAYLOAD_DIR
                         (default .modelrun/payloads)"""


def bind_error(host: str, port: int) -> OSError | None:
    """Why the server could not listen on host:port now, or None if it could.

    The probe binds as gunicorn does (the first address the host resolves to, SO_REUSEADDR), so a
    port an earlier server left in TIME_WAIT counts as free, and one a live server holds does not.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(address)
    except OSError as e:  # socket.gaierror too: a HOST that does not resolve
        return e
    return None


def check_port(host: str, port: str) -> None:
    """Exit with one line if the server could not listen on host:port.

    Otherwise gunicorn finds out only after the banner, retries for five seconds, and meanwhile
    the printed curl line is answered by whatever holds the port.
    """
    try:
        number = int(port)
        if not 0 < number < 65536:
            raise ValueError
    except ValueError:
        raise SystemExit(f"error: PORT={port!r} is not a port number (1 to 65535)") from None
    error = bind_error(host, number)
    if error is None:
        return
    if error.errno != errno.EADDRINUSE:
        raise SystemExit(f"error: cannot listen on {host}:{number}: {error.strerror or error}")
    free = next((p for p in range(number + 1, min(number + 100, 65536))
                 if bind_error(host, p) is None), None)  # fmt: skip
    other = f"PORT={free}" if free else "PORT=<a free port>"
    raise SystemExit(
        f"error: port {number} on {host} is already in use by another program: stop it, or "
        f"serve on another port with {other} (make serve {other})"
    )


def rate_limit_line(rate: str) -> str:
    """The banner's rate-limit line: off unless RATE_LIMIT_PER_SECOND sets one."""
    if rate.strip() in ("", "0", "0.0"):
        return "rate limit: off in development (set RATE_LIMIT_PER_SECOND to test one)"
    return f"rate limit: {rate} requests/s per key (RATE_LIMIT_PER_SECOND)"


def main(argv: list[str] | None = None, prog: str = "python -m local.serve") -> None:
    argparse.ArgumentParser(
        prog=prog,
        description=__doc__,
        epilog=SETTINGS,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    ).parse_args(argv)  # no flags: --help (before anything is trained or served), or a usage error
    port = os.environ.get("PORT", "8080")
    host = os.environ.get("HOST", "127.0.0.1")  # this machine only, unless told otherwise
    check_port(host, port)  # before training or printing anything
    store = os.environ.get("STORE", (STATE / "store").as_uri())
    try:
        model_uri = os.environ.get("MODEL_URI") or ensure_model(
            store, os.environ.get("MODEL", NAME)
        )
    except ModelrunError as e:
        raise SystemExit(f"error: {e}") from None
    key = dev_key()
    trusted = trusted_key(os.environ)
    warn_unverified(model_uri, trusted["MODEL_PUBLIC_KEY"])
    rate = os.environ.get("RATE_LIMIT_PER_SECOND", "0")
    url = f"http://localhost:{port}"
    payload_dir = os.environ.get("PAYLOAD_DIR") or str(STATE / "payloads")
    print(
        f"""
modelrun is starting on {url} (listening on {host}) with the model {model_uri}
development API key: {key}
{rate_limit_line(rate)}
{payload_line(os.environ.get("PAYLOAD_SAMPLE_RATE", ""), payload_dir)}

  open {url}/ in a browser: the prediction page and model card ({url}/docs: the API)

  curl -s -H 'X-API-Key: {key}' {url}/ready
  curl -s -H 'X-API-Key: {key}' -H 'Content-Type: application/json' \\
       -d '{example_body(model_uri)}' {url}/predict

Stop with Ctrl-C.
""",
        flush=True,
    )
    env = container.process_environment(
        {
            "MODEL_URI": model_uri,
            **trusted,
            "API_KEYS": key,
            "ENVIRONMENT": "development",
            "PORT": port,
            "HOST": host,
            # A user's own load test should measure the service, not the limiter.
            "RATE_LIMIT_PER_SECOND": rate,
            # Payload records (with PAYLOAD_SAMPLE_RATE) kept where `modelrun evaluate` reads them.
            "PAYLOAD_DIR": payload_dir,
            "HOME": os.environ.get("HOME") or str(STATE),
        }
    )
    argv = container.command()
    program = shutil.which(argv[0], path=env["PATH"])
    if program is None:
        raise SystemExit(f"{argv[0]} is not on PATH: run `make install`")
    raise SystemExit(run_server(program, argv, env))


def payload_line(rate: str, folder: str) -> str:
    """What the banner says of payload records (the service checks the rate itself)."""
    if rate.strip() in ("", "0", "0.0"):
        return "payload records: off (PAYLOAD_SAMPLE_RATE=0)"
    return f"payload records: {rate.strip()} of the answers, and every feedback, under {folder}"


def run_server(program: str, argv: list[str], env: dict[str, str]) -> int:
    """Run the server until it exits, and return its exit status (128 + N for signal N).

    Stopped as Cloud Run stops it: Ctrl-C and SIGTERM become one SIGTERM to gunicorn's master
    alone, which lets requests in flight finish and then stops its workers with SIGTERM too. A
    second Ctrl-C is passed on as SIGINT: stop now.

    gunicorn's gthread worker answers SIGINT and SIGQUIT (the master's quick stop, after its own
    SIGINT) with ThreadPoolExecutor.shutdown, from a signal handler: arriving while the worker's
    main thread was inside the executor's submit(), or inside a first such handler, it waited
    for a lock its own thread held, until the master killed it 30 s later. SIGTERM's handler
    takes no lock. And the server runs in a process group of its own, because a terminal sends
    Ctrl-C to its whole foreground group: the workers would get SIGINT straight from it.
    """
    relayed: list[int] = []  # the signals passed on so far
    pending: list[int] = []  # a signal that came before the server had started
    server: subprocess.Popen[bytes] | None = None

    def relay(signum: int, frame: FrameType | None) -> None:
        sent = signal.SIGINT if signum == signal.SIGINT and relayed else signal.SIGTERM
        relayed.append(sent)
        if server is None:
            pending.append(sent)
        else:
            server.send_signal(sent)  # nothing, once it has exited

    for stop in (signal.SIGINT, signal.SIGTERM):
        signal.signal(stop, relay)
    server = subprocess.Popen(argv, executable=program, env=env, cwd=ROOT, process_group=0)
    for signum in pending:
        server.send_signal(signum)
    status = server.wait()
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    main()
